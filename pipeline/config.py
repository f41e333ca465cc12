"""Typed configuration: one frozen dataclass per concern, loaded from YAML + `--set` overrides.

A config is validated completely before Ray starts: every bad field is reported by its
dotted name (`masking.ratio`) with what is allowed, all problems at once.
`to_dict(cfg)` (plain `asdict`) feeds both `train_loop_config` and `mlflow.log_params`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.vocab import (AUGMENT_ON, DECODERS, SCORE_MODES, SCORE_STRATEGIES, SHARD_SCORE_MODES, STRATEGIES,
                            running_cell_masked)

MODEL_SIZES = ("tiny", "small", "base", "large")
MODES = ("finetune", "pretrain")
PRETRAIN_MASKS = ("tube", "random")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A config that cannot run; the message lists every offending field."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"  # name for tracking and the class count table
    train_manifest: str = ""  # VideoMAE list file (or CSV); local path or s3://
    val_manifest: str = ""
    test_manifest: str = ""
    shards: str = ""  # precompute output (local folder or s3://); motion scores come from here
    num_classes: int = 0
    num_frames: int = 16
    sampling_rate: int = 4  # s, in source frames (16x4 = 16 frames, every 4th source frame)
    # Source frames per frame of the videos the manifests list: 1 for source videos, k for
    # videos written by `mgtc prepare --stride k` (they keep every k-th source frame). Clips
    # read every (sampling_rate / video_stride)-th frame of those files (`video_rate`).
    video_stride: int = 1
    source_fps: float = 30.0  # nominal frame rate of the videos: effective fps = source_fps / sampling_rate
    input_size: int = 224  # network input (crop) size
    short_side: int = 224  # frames are resized to this short side before cropping
    test_clips: int = 5
    test_crops: int = 3
    val_clips: int = 1
    val_crops: int = 1
    decode_actors: int = 1  # Ray Data actor pool size for clip decoding
    # Repeated augmentation (VideoMAE's --num_sample): each training video is decoded once
    # per epoch and gives this many clips (same temporal window, independent crops/flips).
    num_sample: int = 1
    # VideoMAE augmentation (timm implementations)
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area range
    ratio: tuple[float, float] = (0.75, 1.3333)  # random resized crop aspect range
    hflip: bool = True
    rand_augment: str = ""  # e.g. "rand-m7-n4-mstd0.5-inc1"; "" = off
    # Where RandAugment runs: actor (timm's PIL ops in the decode actors), trainer (torchvision
    # tensor ops on the trainer's device, pipeline/augment.py), auto = trainer on GPU training.
    augment_on: str = "auto"
    decoder: str = "decord"  # decord | torchcodec (pip install -e '.[torchcodec]')
    reprob: float = 0.0  # random erasing probability (after scores: see docs/TRAINING.md)
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.1

    @property
    def video_rate(self) -> int:
        """The sampling rate in frames of the listed video files (what the decoder and the
        shards use): sampling_rate / video_stride."""
        return self.sampling_rate // max(self.video_stride, 1)


@dataclass(frozen=True)
class ModelConfig:
    size: str = "small"
    checkpoint: str = ""  # official VideoMAE checkpoint (fine-tuned or pre-trained); "" = random init
    allow_pickle: bool = False  # opt-in for checkpoints that need arbitrary unpickling
    tubelet: int = 2
    patch: int = 16
    drop_path: float = 0.1
    fc_drop: float = 0.0
    fused_attn: bool = True
    # torch.compile of every transformer block, on CUDA only (pipeline/device.py).
    compile: bool = True
    # The classifier head starts at this scale of its initial weights: VideoMAE's 0.001 suits
    # fine-tuning a pre-trained encoder; from scratch use 1.0, or the encoder gets almost no
    # gradient for the first few hundred steps (docs/SYNTHETIC.md, learnability).
    head_init_scale: float = 0.001


@dataclass(frozen=True)
class MaskingConfig:
    strategy: str = "mgtc_ratio"
    ratio: float = 0.25  # masking ratio: fraction of tokens dropped
    tau: float | None = None  # mgtc_threshold: explicit threshold
    calibrated: bool = False  # mgtc_threshold: read tau from <shards>/calibration.json
    score_mode: str = "boundary"
    pretrain_mask: str = "tube"  # pre-training: mask drawn over the MGTC-kept tokens
    pretrain_ratio: float = 0.9


@dataclass(frozen=True)
class OptimConfig:
    mode: str = "finetune"
    epochs: int = 30
    batch_size: int = 8  # per worker
    lr: float = 5e-4  # base lr, scaled by total batch / 256 as VideoMAE
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 0.0  # 0 = off
    seed: int = 0
    val_every: int = 1  # validate every N epochs and after the last one
    fused: bool = True  # AdamW's fused kernel, on CUDA only


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # GPU execution (pipeline/device.py); each is a no-op on CPU.
    precision: str = "bf16"  # bf16 autocast on CUDA (loss in fp32); fp32 on CPU either way
    tf32: bool = True  # fp32 matmuls may use TF32 on CUDA
    pin_memory: bool = True  # pinned host batches, non_blocking copies to the GPU
    storage_path: str = "runs/ray"  # Ray Train storage: local folder or s3://
    name: str = ""  # run name; "" = derived from config + time. Same name = resume.
    max_failures: int = 2


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = ""  # "" = MLFLOW_TRACKING_URI, else sqlite:///<run dir>/mlflow.db
    experiment: str = "mgtc"
    run_name: str = ""
    log_mask_images: bool = True
    parent_run_id: str = ""  # MLflow run to nest this run under (a sweep's parent); "" = top level
    description: str = ""  # the experiment's description when this run creates it; "" = what its runs compare


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def redacted(cfg: Config) -> dict[str, Any]:
    """`to_dict(cfg)` with credentials removed from every string (URI userinfo, secret
    query parameters: `storage.redact`): what config.yaml, params and checkpoints store."""
    from pipeline.storage import redact

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(to_dict(cfg))


def flat_params(cfg: Config) -> dict[str, Any]:
    """Dotted-key view (`masking.ratio`) for MLflow params, credentials redacted."""
    out: dict[str, Any] = {}
    for section, values in redacted(cfg).items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value
    return out


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert YAML / --set values to the annotated type, or raise naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is tuple:
        if isinstance(value, str):  # "2, 4", "2 4", "[2, 4]"
            value = value.strip("()[] ").replace(",", " ").split()
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: any length, one value alone
            items = value if isinstance(value, (list, tuple)) else [value]
            return tuple(_coerce(v, args[0], name) for v in items)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, name) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML reads .inf / .nan; no setting means them
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if value is None:  # an empty YAML value
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{name}: unsupported type {hint!r}")


def coerce_fields(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`values` converted to the field types of dataclass `cls` (nested dataclasses built),
    or ConfigError naming the field (`prefix.name`) and what is allowed."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{prefix or 'config'}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        value = values[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping, got {value!r}")
            kwargs[f.name] = _build(hints[f.name], value, name)
        else:
            kwargs[f.name] = _coerce(value, hints[f.name], name)
    return kwargs


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    return cls(**coerce_fields(cls, values, prefix))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (local path or s3://), or ConfigError saying what is wrong."""
    from pipeline import storage

    try:
        loaded = yaml.safe_load(storage.read_bytes(str(path))) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping")
    return loaded


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: `line L, column C: <problem>` (PyYAML's own text spans
    several lines with a snippet of the file)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def build_sections(raw: dict[str, Any]) -> Config:
    """A Config from a mapping of sections, types converted but not validated (for readers
    that take a few fields of a training config, e.g. the precompute job)."""
    return _build(Config, raw, "")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML scalars) to a raw dict."""
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. masking.ratio=0.5")
        section, name = parts
        if section not in {f.name for f in dataclasses.fields(Config)}:
            allowed = ", ".join(f.name for f in dataclasses.fields(Config))
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; allowed: {allowed}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: not a YAML value: {_yaml_problem(err)}") from None
        raw.setdefault(section, {})[name] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (optional), apply overrides, build and validate. Raises ConfigError."""
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, list(overrides or []))
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from `to_dict` output (e.g. in a Ray worker). Raises ConfigError."""
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def replace(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of cfg with `section.key=value` overrides applied."""
    cfg2 = _build(Config, apply_overrides(to_dict(cfg), overrides), "")
    validate(cfg2)
    return cfg2


def _check(errors: list[str], ok: bool, message: str) -> None:
    if not ok:
        errors.append(message)


def augment_side(cfg: Config) -> str:
    """Where this config's RandAugment runs: "actor" or "trainer" (auto = trainer when
    training on a GPU, where it is cheap; the decode actors on CPU-only training)."""
    if cfg.data.augment_on == "auto":
        return "trainer" if cfg.scaling.use_gpu else "actor"
    return cfg.data.augment_on


def validate(cfg: Config) -> None:
    """Raise ConfigError listing every invalid field."""
    e: list[str] = []
    d, m, k, o, s = cfg.data, cfg.model, cfg.masking, cfg.optim, cfg.scaling
    _check(e, d.num_classes >= 2, f"data.num_classes={d.num_classes}: must be >= 2")
    _check(e, d.num_frames >= m.tubelet and d.num_frames % max(m.tubelet, 1) == 0,
           f"data.num_frames={d.num_frames}: must be a positive multiple of model.tubelet={m.tubelet}")
    _check(e, d.sampling_rate >= 1, f"data.sampling_rate={d.sampling_rate}: must be >= 1")
    _check(e, d.video_stride >= 1 and d.sampling_rate % max(d.video_stride, 1) == 0,
           f"data.video_stride={d.video_stride}: must be >= 1 and divide data.sampling_rate={d.sampling_rate} "
           "(both in source frames: videos prepared with --stride k hold only every k-th source frame)")
    _check(e, math.isfinite(d.source_fps) and d.source_fps > 0, f"data.source_fps={d.source_fps}: must be > 0")
    _check(e, d.input_size >= m.patch and d.input_size % max(m.patch, 1) == 0,
           f"data.input_size={d.input_size}: must be a positive multiple of model.patch={m.patch}")
    _check(e, d.short_side >= d.input_size,
           f"data.short_side={d.short_side}: must be >= data.input_size={d.input_size}")
    for name in ("test_clips", "test_crops", "val_clips", "val_crops", "decode_actors", "num_sample"):
        _check(e, getattr(d, name) >= 1, f"data.{name}={getattr(d, name)}: must be >= 1")
    _check(e, 0 < d.scale[0] <= d.scale[1] <= 1, f"data.scale={d.scale}: need 0 < min <= max <= 1")
    _check(e, 0 < d.ratio[0] <= d.ratio[1], f"data.ratio={d.ratio}: need 0 < min <= max")
    for name in ("reprob", "smoothing"):
        _check(e, 0 <= getattr(d, name) < 1, f"data.{name}={getattr(d, name)}: must be in [0, 1)")
    for name in ("mixup", "cutmix"):
        _check(e, getattr(d, name) >= 0, f"data.{name}={getattr(d, name)}: must be >= 0")
    _check(e, d.augment_on in AUGMENT_ON, f"data.augment_on={d.augment_on!r}: allowed: {', '.join(AUGMENT_ON)}")
    _check(e, d.decoder in DECODERS, f"data.decoder={d.decoder!r}: allowed: {', '.join(DECODERS)}")
    _check(e, bool(d.train_manifest or d.shards),
           "data.train_manifest / data.shards: at least one must be set")

    _check(e, m.size in MODEL_SIZES, f"model.size={m.size!r}: allowed: {', '.join(MODEL_SIZES)}")
    _check(e, m.tubelet >= 1, f"model.tubelet={m.tubelet}: must be >= 1")
    _check(e, m.patch >= 1, f"model.patch={m.patch}: must be >= 1")
    _check(e, 0 <= m.drop_path < 1, f"model.drop_path={m.drop_path}: must be in [0, 1)")
    _check(e, 0 <= m.fc_drop < 1, f"model.fc_drop={m.fc_drop}: must be in [0, 1)")
    _check(e, m.head_init_scale > 0, f"model.head_init_scale={m.head_init_scale}: must be > 0")

    _check(e, k.strategy in STRATEGIES, f"masking.strategy={k.strategy!r}: allowed: {', '.join(STRATEGIES)}")
    _check(e, 0 <= k.ratio < 1, f"masking.ratio={k.ratio}: must be a masking ratio in [0, 1)")
    if k.strategy == "running_cell":
        _check(e, 1 <= running_cell_masked(k.ratio) <= 3,
               f"masking.ratio={k.ratio}: running_cell needs 0.25 <= ratio < 1")
    if k.strategy == "mgtc_threshold":
        _check(e, k.tau is not None or k.calibrated,
               "masking.tau: mgtc_threshold needs masking.tau or masking.calibrated=true")
    if k.tau is not None:
        _check(e, math.isfinite(k.tau) and k.tau >= 0, f"masking.tau={k.tau}: must be a finite value >= 0")
    if k.strategy in SCORE_STRATEGIES or k.calibrated:
        _check(e, bool(d.shards), f"data.shards: masking.strategy={k.strategy!r} needs motion-score shards")
    _check(e, k.score_mode in SCORE_MODES, f"masking.score_mode={k.score_mode!r}: allowed: {', '.join(SCORE_MODES)}")
    _check(e, not (k.calibrated and k.score_mode not in SHARD_SCORE_MODES),
           f"masking.calibrated: calibration reads shard maps, which score_mode={k.score_mode!r} has none of; "
           "give masking.tau instead")
    _check(e, k.pretrain_mask in PRETRAIN_MASKS,
           f"masking.pretrain_mask={k.pretrain_mask!r}: allowed: {', '.join(PRETRAIN_MASKS)}")
    _check(e, 0 < k.pretrain_ratio < 1, f"masking.pretrain_ratio={k.pretrain_ratio}: must be in (0, 1)")

    _check(e, o.mode in MODES, f"optim.mode={o.mode!r}: allowed: {', '.join(MODES)}")
    _check(e, o.epochs >= 1, f"optim.epochs={o.epochs}: must be >= 1")
    _check(e, o.batch_size >= 1, f"optim.batch_size={o.batch_size}: must be >= 1")
    _check(e, o.lr > 0, f"optim.lr={o.lr}: must be > 0")
    _check(e, o.min_lr >= 0 and o.warmup_lr >= 0, "optim.min_lr / optim.warmup_lr: must be >= 0")
    _check(e, o.val_every >= 1, f"optim.val_every={o.val_every}: must be >= 1")
    _check(e, 0 <= o.warmup_epochs < o.epochs or o.warmup_epochs == 0,
           f"optim.warmup_epochs={o.warmup_epochs}: must be < optim.epochs={o.epochs}")
    _check(e, o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay}: must be >= 0")
    _check(e, 0 < o.layer_decay <= 1, f"optim.layer_decay={o.layer_decay}: must be in (0, 1]")
    _check(e, all(0 <= b < 1 for b in o.betas), f"optim.betas={o.betas}: each must be in [0, 1)")
    _check(e, o.clip_grad >= 0, f"optim.clip_grad={o.clip_grad}: must be >= 0 (0 = off)")
    if o.mode == "finetune" and (d.mixup > 0 or d.cutmix > 0):
        # timm's Mixup pairs clip i with clip B-1-i: it needs an even batch.
        _check(e, o.batch_size % 2 == 0,
               f"optim.batch_size={o.batch_size}: data.mixup / data.cutmix need an even batch per worker")
    if o.mode == "pretrain":
        # The MAE encoder needs the same number of visible tokens in every clip of a batch.
        _check(e, k.strategy != "mgtc_threshold",
               "masking.strategy='mgtc_threshold': optim.mode=pretrain needs a fixed-length strategy "
               "(none, random, tube, running_cell, mgtc_ratio)")
        if k.strategy == "running_cell":
            _check(e, (d.input_size // max(m.patch, 1)) % 2 == 0,
                   f"masking.strategy='running_cell': optim.mode=pretrain needs an even token grid "
                   f"(data.input_size / model.patch = {d.input_size // max(m.patch, 1)})")

    _check(e, s.num_workers >= 1, f"scaling.num_workers={s.num_workers}: must be >= 1")
    _check(e, s.cpus_per_worker > 0, f"scaling.cpus_per_worker={s.cpus_per_worker}: must be > 0")
    _check(e, s.precision in PRECISIONS, f"scaling.precision={s.precision!r}: allowed: {', '.join(PRECISIONS)}")
    _check(e, s.max_failures >= 0, f"scaling.max_failures={s.max_failures}: must be >= 0")
    _check(e, bool(s.storage_path), "scaling.storage_path: must be set (local folder or s3://)")
    for name in ("data.train_manifest", "data.val_manifest", "data.test_manifest", "data.shards",
                 "model.checkpoint", "scaling.storage_path"):
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
            scheme = value.split("://", 1)[0]
            _check(e, False, f"{name}: credentials in a URI are not supported ({scheme}://***@...): "
                             "use the AWS credential chain (environment or ~/.aws)")
    if e:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(e))
