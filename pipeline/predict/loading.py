"""A checkpoint ready for inference: its config, its weights in a model, its class names.

Two kinds of checkpoint (local or s3://):
- a training checkpoint directory (`<storage>/<run>/epoch_NNNN/state.pt`): the config it
  was trained with and, when the training manifest named them, the class names are stored
  in `state.pt`, so `--config` is optional;
- an official VideoMAE `.pth` (or any state-dict file): the model size, tubelet, patch and
  class count are read off the weights' shapes, the clip settings (frames, input size,
  sampling rate, test views) from the `args` the official scripts store, with VideoMAE's
  Kinetics defaults where a field is absent. `--config` overrides all of it.

Inference settings (strategy, masking ratio, tau) are checked by `inference_masking`
before anything is read, and applied to the config without its training-only checks (the
scores come from the decoded clip at inference, so MGTC needs no shards).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline import storage
from pipeline.checkpoints import CheckpointError, extract_state_dict, plan_load, to_model_keys
from pipeline.config import Config
from pipeline.model import VIT_SIZES
from pipeline.modeling import flush_denormals, make_model, read_checkpoint_uri
from pipeline.predict.labels import check_class_count, read_class_names
from pipeline.selection import STRATEGIES, check_ratio


@dataclass(frozen=True)
class Masking:
    """Token selection at inference: strategy, masking ratio (fraction dropped) or tau."""

    strategy: str
    ratio: float = 0.0
    tau: float | None = None


def inference_masking(strategy: str | None, ratio: float | None, tau: float | None) -> Masking | None:
    """Check the command line's selection arguments; None = keep the checkpoint's own.

    `--tau` alone means mgtc_threshold. Raises ValueError naming the bad argument, before
    any checkpoint or video is read.
    """
    if strategy is None and ratio is None and tau is None:
        return None
    if strategy is None:
        strategy = "mgtc_threshold" if tau is not None else "mgtc_ratio"
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r} is unknown; allowed: {', '.join(STRATEGIES)}")
    if strategy == "mgtc_threshold":
        if tau is None:
            raise ValueError("--strategy mgtc_threshold needs --tau T (mgtc calibrate prints one)")
        if ratio is not None:
            raise ValueError("--ratio and --tau exclude each other: mgtc_threshold drops tokens under tau")
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"--tau {tau}: must be a finite value >= 0")
        return Masking(strategy, 0.0, float(tau))
    if tau is not None:
        raise ValueError(f"--tau is for mgtc_threshold, not --strategy {strategy}")
    ratio = 0.0 if ratio is None else ratio
    try:
        check_ratio(ratio, "--ratio")
    except ValueError:
        raise ValueError(f"--ratio {ratio}: must be a masking ratio (fraction of tokens dropped) in [0, 1)") from None
    if strategy == "running_cell" and not 1 <= int(4 * ratio) <= 3:
        raise ValueError(f"--ratio {ratio}: running_cell drops 1-3 of every 4 tokens: 0.25 <= ratio < 1")
    if strategy == "none":
        ratio = 0.0
    return Masking(strategy, float(ratio))


def with_masking(cfg: Config, masking: Masking | None) -> Config:
    """cfg with the inference strategy (no shards needed: scores come from the clip)."""
    if masking is None:
        m = cfg.masking
        if m.strategy == "mgtc_threshold" and m.tau is None:
            raise ValueError("the checkpoint was trained with a calibrated tau: give --tau T "
                             "(the training log and MLflow param 'tau' have it)")
        return dataclasses.replace(cfg, masking=dataclasses.replace(m, calibrated=False))
    return dataclasses.replace(cfg, masking=dataclasses.replace(
        cfg.masking, strategy=masking.strategy, ratio=masking.ratio, tau=masking.tau, calibrated=False))


# ------------------------------------------------------------------------- reading


def _arg(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, None) if args is not None else None
    if isinstance(args, Mapping):
        value = args.get(name)
    return default if value is None else value


def config_from_weights(state: Mapping[str, torch.Tensor], args: Any = None) -> Config:
    """A Config for an official checkpoint: size / tubelet / patch / classes from the weight
    shapes, frames / input size / sampling rate / test views from its `args` (or VideoMAE's
    Kinetics-400 defaults: 16 frames, stride 4, 224 px, 5 x 3 views)."""
    state = to_model_keys(state, nn.Module())
    proj = state.get("patch_embed.proj.weight")
    head = state.get("head.weight")
    if proj is None or head is None:
        missing = "patch_embed.proj.weight" if proj is None else "head.weight"
        raise CheckpointError(f"checkpoint has no {missing}: not a fine-tuned VideoMAE classifier "
                              "(a pre-training checkpoint cannot classify; fine-tune it first)")
    dim, _, tubelet, patch, _ = proj.shape
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    sizes = [n for n, s in VIT_SIZES.items() if s.dim == dim and s.depth == depth]
    if not sizes:
        raise CheckpointError(f"checkpoint: width {dim} x {depth} blocks is none of the model sizes "
                              f"({', '.join(VIT_SIZES)})")
    input_size = int(_arg(args, "input_size", 224))
    raw = {
        "data": {
            "dataset": str(_arg(args, "data_set", "official")), "train_manifest": "(checkpoint)",
            "num_classes": int(head.shape[0]), "num_frames": int(_arg(args, "num_frames", 16)),
            "sampling_rate": int(_arg(args, "sampling_rate", 4)), "input_size": input_size,
            "short_side": int(_arg(args, "short_side_size", input_size)),
            "test_clips": int(_arg(args, "test_num_segment", 5)), "test_crops": int(_arg(args, "test_num_crop", 3)),
        },
        "model": {"size": sizes[0], "tubelet": int(tubelet), "patch": int(patch)},
        "masking": {"strategy": "none", "ratio": 0.0},
    }
    return _config(raw)


def _config(raw: dict) -> Config:
    from pipeline.config import _build  # the typed builder, without the training checks

    return _build(Config, raw, "")


@dataclass
class InferenceModel:
    """A classifier loaded for inference (eval mode, on `device`)."""

    model: nn.Module
    cfg: Config
    class_names: list[str] | None
    source: str
    device: torch.device

    @property
    def num_classes(self) -> int:
        return int(self.model.head.out_features)


def pick_device(prefer: str = "auto") -> torch.device:
    """cuda when present (or asked for), else cpu."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(prefer)


def load_for_inference(
    checkpoint: str, *, config: str | None = None, overrides: list[str] | None = None,
    masking: Masking | None = None, labels: str | None = None, device: str = "auto",
    allow_pickle: bool = False,
) -> InferenceModel:
    """Read `checkpoint` once, resolve its config and class names, load the weights.

    Order of failure (each one line, nothing half-loaded): the checkpoint file, the label
    file's class count against the head's, the config, then the weights' shapes.
    """
    ckpt, shown, _ = read_checkpoint_uri(checkpoint, allow_pickle=allow_pickle)
    training = isinstance(ckpt.get("model"), Mapping) and "optimizer" in ckpt
    weights = extract_state_dict(ckpt)
    if config:
        cfg = _config(_config_file(config))
    elif isinstance(ckpt.get("config"), Mapping):
        cfg = _config(dict(ckpt["config"]))
    else:
        cfg = config_from_weights(weights, ckpt.get("args"))
    if overrides:
        cfg = _config(_apply(cfg, list(overrides)))
    if cfg.optim.mode != "finetune":
        raise CheckpointError(f"checkpoint {shown}: optim.mode={cfg.optim.mode}: a pre-training checkpoint "
                              "cannot classify; fine-tune it first")
    head = to_model_keys(weights, nn.Module()).get("head.weight")
    if head is None:
        raise CheckpointError(f"checkpoint {shown}: no classifier head (head.weight): not a fine-tuned model")
    num_classes = int(head.shape[0])
    names = None
    if labels:
        names = read_class_names(labels)
        check_class_count(names, num_classes, storage.redact(labels))
    elif isinstance(ckpt.get("class_names"), (list, tuple)):
        names = [str(n) for n in ckpt["class_names"]]
        if len(names) != num_classes:
            names = None
    if cfg.data.num_classes != num_classes:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_classes=num_classes))
    cfg = with_masking(cfg, masking)
    dev = pick_device(device)
    flush_denormals(dev)
    model = make_model(cfg)
    state, _ = plan_load(model, to_model_keys(weights, model), shown, strict=training)
    if "head.weight" not in state:
        raise CheckpointError(f"checkpoint {shown}: head does not fit data.num_classes={cfg.data.num_classes}")
    model.load_state_dict(state, strict=training)
    model.to(dev).eval()
    return InferenceModel(model, cfg, names, shown, dev)


def _config_file(path: str) -> dict:
    """The raw sections of a YAML config file (checked by `_config`, not `validate`: an
    inference config needs no manifests or shards)."""
    import yaml

    from pipeline.config import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
    return raw


def _apply(cfg: Config, overrides: list[str]) -> dict:
    from pipeline.config import apply_overrides, to_dict

    return apply_overrides(to_dict(cfg), overrides)

