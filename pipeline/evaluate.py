"""Evaluation: multi-view test (clips x crops), softmax averaged per video, top-1 / top-5.

VideoMAE's test protocol (`run_class_finetuning.py: merge`): every view of a video is
classified on its own, the softmax of each view is taken, and the probabilities of all views
of one video are averaged; top-k is read off the average. `average_views` is that rule as a
pure function; `VideoScores` accumulates it batch by batch and merges across ranks (sums and
counts all-reduce exactly, whatever rank saw which view).

Token selection at evaluation is deterministic: `none`, `mgtc_*` (from the clip's scores),
`running_cell` (phase 0, as MAR's test mask), and `random` / `tube` seeded per view from
(seed, video_id, view), so a view drops the same tokens whatever batch or rank it lands in.

`evaluate(cfg, checkpoint)` runs the test split as a Ray Data `map_batches` over an actor
pool of `ViewClassifier`s (one model per actor, GPU actors when `scaling.use_gpu`) and
reduces the per-view probabilities on the driver, streaming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
import torch.distributed as dist
from torch import nn

from pipeline import storage
from pipeline.clips import clip_dataset, num_clips, to_model_inputs
from pipeline.config import Config, from_dict, to_dict
from pipeline.flops import encoder_shape, gmacs_per_view
from pipeline.model import (
    CheckpointError,
    LoadReport,
    build_model,
    build_pretrain_model,
    extract_state_dict,
    load_videomae_checkpoint,
    plan_load,
    read_checkpoint,
    to_model_keys,
)
from pipeline.progress import progress
from pipeline.selection import Selection, select_tokens
from pipeline.shards import calibrated_tau
from pipeline.tracking import (
    TEST_PREFIX,
    find_train_run,
    finish_run,
    log_artifact_dict,
    log_metrics,
    log_tags,
    resolve_tracking_uri,
    start_run,
    summary_params,
)
from pipeline.vocab import SCORE_STRATEGIES, forwarded_env

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # our training checkpoints: <checkpoint dir>/state.pt


# ------------------------------------------------------------------------- multi-view rule


def average_views(
    video_ids: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax per view, then the mean per video.

    video_ids: [M] int, logits: [M, C], labels: [M] (the same label on every view of a video).
    Returns (ids [V] ascending unique, probs [V, C] mean softmax, labels [V]).
    """
    ids, inverse = torch.unique(video_ids, return_inverse=True)
    probs = logits.float().softmax(dim=-1)
    sums = probs.new_zeros(len(ids), probs.shape[1]).index_add_(0, inverse, probs)
    counts = torch.bincount(inverse, minlength=len(ids)).to(probs.dtype)
    video_labels = labels.new_zeros(len(ids)).scatter_(0, inverse, labels)
    return ids, sums / counts[:, None], video_labels


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """probs: [V, C], labels: [V] -> {"top1": %, "top5": %}; k is capped at C."""
    if len(labels) == 0:
        return {f"top{k}": float("nan") for k in ks}
    top = probs.topk(min(max(ks), probs.shape[1]), dim=1).indices  # [V, kmax]
    hits = top == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


@dataclass
class VideoScores:
    """Running per-video sums of view probabilities: {video_id: (sum [C], views, label)}.

    Dictionary-backed so a rank only holds the videos it saw; `merge_across_ranks` turns it
    into dense tensors over the largest id of any rank and all-reduces them.
    """

    num_classes: int
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    views: int = 0

    def add(self, video_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
        """video_ids: [B], probs: [B, C] softmax of each view, labels: [B]."""
        for vid, p, y in zip(video_ids.tolist(), probs, labels.tolist()):
            if vid in self.sums:
                self.sums[vid] += p
                self.counts[vid] += 1
            else:
                self.sums[vid], self.counts[vid], self.labels[vid] = p.astype(np.float64), 1, y
        self.views += len(video_ids)

    def dense(self, num_videos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sums [V, C] float64, counts [V] float64, labels [V] int64, -1 where unseen)."""
        sums = torch.zeros(num_videos, self.num_classes, dtype=torch.float64)
        counts = torch.zeros(num_videos, dtype=torch.float64)
        labels = torch.full((num_videos,), -1, dtype=torch.int64)
        if self.sums:
            ids = torch.tensor(list(self.sums))
            sums[ids] = torch.from_numpy(np.stack(list(self.sums.values())))
            counts[ids] = torch.tensor(list(self.counts.values()), dtype=torch.float64)
            labels[ids] = torch.tensor([self.labels[i] for i in self.sums])
        return sums, counts, labels

    def predictions(self) -> dict[str, list[int]]:
        """Per video seen here, ascending id: {"video_id", "label", "pred"} (argmax of the
        averaged softmax), for paired comparisons across runs (`pipeline.stats`)."""
        ids = sorted(self.sums)
        return {"video_id": ids, "label": [int(self.labels[i]) for i in ids],
                "pred": [int(np.argmax(self.sums[i])) for i in ids]}

    def merge_across_ranks(self, device: torch.device) -> dict[str, float]:
        """All-reduce over the process group (if any) and score: top1, top5, videos, views."""
        distributed = dist.is_available() and dist.is_initialized()
        top_id = torch.tensor([max(self.sums, default=-1), self.views], device=device)
        if distributed:
            dist.all_reduce(top_id[:1], op=dist.ReduceOp.MAX)
            dist.all_reduce(top_id[1:], op=dist.ReduceOp.SUM)
        sums, counts, labels = (t.to(device) for t in self.dense(int(top_id[0]) + 1))
        if distributed:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
            dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        seen = counts > 0
        probs = sums[seen] / counts[seen, None]
        metrics = topk_accuracy(probs, labels[seen])
        return {**metrics, "videos": float(seen.sum()), "views": float(top_id[1])}


# ------------------------------------------------------------------------- selection at eval


def view_generator(seed: int, video_id: int, view: int) -> torch.Generator:
    """The generator of one view: the same tokens whatever batch / rank the view is in."""
    return torch.Generator().manual_seed(hash((int(seed), int(video_id), int(view))) % 2**63)


def select_eval(
    cfg: Config, scores: torch.Tensor, video_ids: torch.Tensor, views: torch.Tensor, tau: float | None
) -> Selection:
    """Deterministic token selection of a batch of views; see the module docstring.

    scores: [B, T', H', W'] (on any device); video_ids, views: [B]. Returns CPU/device
    tensors as `select_tokens` gives them (callers move them to the model's device).
    """
    k = cfg.masking
    if k.strategy in ("random", "tube"):
        grid = tuple(scores.shape[1:])
        rows = [
            select_tokens(k.strategy, grid=grid, batch=1, ratio=k.ratio, generator=view_generator(cfg.optim.seed, v, w))
            for v, w in zip(video_ids.tolist(), views.tolist())
        ]
        return Selection(torch.cat([r.ids_keep for r in rows]))
    on_scores = scores if k.strategy in SCORE_STRATEGIES else None
    return select_tokens(
        k.strategy, scores=on_scores, grid=tuple(scores.shape[1:]), batch=scores.shape[0], ratio=k.ratio, tau=tau
    )


# ------------------------------------------------------------------------- tau


def resolve_tau(cfg: Config) -> float | None:
    """The threshold of `mgtc_threshold`: `masking.tau`, or the calibrated one from
    `<data.shards>/calibration.json` (`mgtc calibrate`) for this sampling rate and score mode
    when `masking.calibrated`. None for every other strategy."""
    k = cfg.masking
    if k.strategy != "mgtc_threshold":
        return None
    if not k.calibrated:
        return float(k.tau)
    return calibrated_tau(cfg.data.shards, cfg.data.sampling_rate, score_mode=k.score_mode)


# ------------------------------------------------------------------------- model + checkpoint


def flush_denormals(device: torch.device) -> None:
    """On CPU, treat denormal floats as zero. Trained weights produce denormal intermediates
    (attention softmax, gradients) that x86 CPUs compute 10-100x slower: measured, a trained
    ViT-tiny step cost 1.26x that of the same step with flushing (fresh weights: 1.01x), so
    the runs that learn best ran slowest. The values involved are below 1.2e-38."""
    if torch.device(device).type == "cpu":
        torch.set_flush_denormal(True)


def make_model(cfg: Config) -> nn.Module:
    """The network of `cfg`: VideoMAE classifier (finetune) or MAE model (pretrain)."""
    m, d = cfg.model, cfg.data
    common = dict(
        num_frames=d.num_frames, img_size=d.input_size, patch_size=m.patch, tubelet_size=m.tubelet,
        drop_path_rate=m.drop_path, fused_attn=m.fused_attn,
    )
    if cfg.optim.mode == "pretrain":
        return build_pretrain_model(m.size, **common)
    return build_model(m.size, d.num_classes, fc_drop_rate=m.fc_drop, head_init_scale=m.head_init_scale, **common)


def load_weights(model: nn.Module, uri: str, *, allow_pickle: bool = False) -> str:
    """Load weights from a checkpoint URI (local or s3://) into `model`; returns what was read.

    A directory is one of our training checkpoints (`state.pt`, loaded strictly with the
    weights-only unpickler); a file is an official VideoMAE / our own `.pt`, loaded through
    `load_videomae_checkpoint` (non-strict, prefixes handled, head dropped on a class-count
    change, refused when it lacks the encoder). Raises CheckpointError naming the file.
    """
    fs, path = storage.filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        state_uri = storage.join(uri, STATE_FILE)
        with _local_copy(state_uri) as local:
            state = read_checkpoint(local)
        weights, _ = plan_load(model, _training_weights(state, state_uri), storage.redact(state_uri), strict=True)
        model.load_state_dict(weights)
        return state_uri
    with _local_copy(uri) as local:
        try:
            load_videomae_checkpoint(model, local, allow_pickle=allow_pickle)
        except CheckpointError as err:
            raise CheckpointError(str(err).replace(str(local), storage.redact(uri))) from None
    return uri


@contextlib.contextmanager
def _local_copy(uri: str):
    """`storage.download_to_temp`, with a missing file as a CheckpointError naming the URI."""
    try:
        with storage.download_to_temp(uri) as local:
            yield local
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {storage.redact(uri)}: no such file") from None


def _training_weights(state: Any, uri: str) -> dict:
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {storage.redact(uri)}: not a training checkpoint (no 'model' weights)")
    return state["model"]


def check_weights(cfg: Config, uri: str) -> LoadReport:
    """Read and validate the checkpoint `uri` for `cfg`'s model in the driver, before Ray
    starts, so a wrong file fails in seconds with one line instead of inside every actor.

    The model is built on the meta device (names and shapes only, no memory). Returns the
    LoadReport (missing / unexpected / dropped keys) for the caller to print; raises
    CheckpointError (missing, empty, truncated, not a checkpoint, needs allow_pickle, lacks
    the encoder, other shapes).
    """
    with torch.device("meta"):
        model = make_model(cfg)
    shown = storage.redact(uri)
    fs, path = storage.filesystem_for(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise CheckpointError(f"checkpoint {shown}: no such file or directory")
    if info.type == pafs.FileType.Directory:
        state_uri = storage.join(uri, STATE_FILE)
        with _local_copy(state_uri) as local:
            state = read_checkpoint(local)
        _, report = plan_load(model, _training_weights(state, state_uri), storage.redact(state_uri), strict=True)
        return report
    with _local_copy(uri) as local:
        try:
            checkpoint = read_checkpoint(local, allow_pickle=cfg.model.allow_pickle)
        except CheckpointError as err:
            raise CheckpointError(str(err).replace(str(local), shown)) from None
    _, report = plan_load(model, to_model_keys(extract_state_dict(checkpoint), model), shown)
    return report


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on GPU when `scaling.precision == "bf16"`, else a no-op context."""
    enabled = cfg.scaling.precision == "bf16" and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------- Ray Data eval



class ViewClassifier:
    """Ray Data callable class: a batch of views -> per-view softmax and kept-token counts.

    Input columns: `pixels`, `scores`, `label`, `video_id`, `view` (docs/INTERFACES.md).
    Output: `video_id`, `label`, `view`, `probs` [B, C] float32, `kept` [B] int64.
    """

    def __init__(self, cfg_dict: dict, checkpoint: str, tau: float | None, env: dict[str, str] | None = None) -> None:
        # S3 settings of the driver, for a Ray started without them (see `evaluate`).
        os.environ.update(env or {})
        self.cfg = from_dict(cfg_dict)
        self.tau = tau
        self.device = torch.device("cuda" if torch.cuda.is_available() and self.cfg.scaling.use_gpu else "cpu")
        flush_denormals(self.device)
        self.model = make_model(self.cfg)
        load_weights(self.model, checkpoint, allow_pickle=self.cfg.model.allow_pickle)
        self.model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, scores, labels = to_model_inputs(batch, self.device)
        ids = torch.as_tensor(batch["video_id"])
        views = torch.as_tensor(batch["view"])
        sel = select_eval(self.cfg, scores, ids, views, self.tau)
        keep_mask = None if sel.keep_mask is None else sel.keep_mask.to(self.device)
        with autocast(self.cfg, self.device):
            logits = self.model(x, sel.ids_keep.to(self.device), keep_mask)
        return {
            "video_id": batch["video_id"],
            "label": batch["label"],
            "view": batch["view"],
            "probs": logits.float().softmax(-1).cpu().numpy(),
            "kept": sel.lengths.cpu().numpy(),
        }


def evaluate(cfg: Config, checkpoint: str, *, dataset=None, split: str = "test",
             predictions: bool = False) -> dict[str, Any]:
    """Multi-view evaluation of `checkpoint` on `split`; returns the metrics.

    predictions: also return "predictions" = `VideoScores.predictions()` (per-video label
    and prediction, the input of the sweep's paired bootstrap).

    dataset: a Ray Dataset of views (default `clip_dataset(cfg, split)`).
    Metrics: top1, top5 (%), videos, views, kept_ratio, gflops_per_view (encoder multiply-
    adds, mean over views), gflops_per_video (x clips x crops), clips_per_s (views per wall
    second, data loading included), eval_time (s).
    """
    if cfg.optim.mode != "finetune":
        raise ValueError("evaluation needs a classifier: optim.mode must be 'finetune'")
    expected_views = None  # a caller's dataset: unknown until it is read
    if dataset is None:
        dataset = clip_dataset(cfg, split)
        expected_views = num_clips(cfg, split)
    tau = resolve_tau(cfg)
    s = cfg.scaling
    # The driver's AWS chain, for actors that read the checkpoint from S3.
    env = forwarded_env() if storage.is_s3(checkpoint) else None
    preds = dataset.map_batches(
        ViewClassifier,
        fn_constructor_kwargs={"cfg_dict": to_dict(cfg), "checkpoint": checkpoint, "tau": tau, "env": env},
        batch_size=cfg.optim.batch_size,
        compute=ray.data.ActorPoolStrategy(size=s.num_workers),
        num_cpus=s.cpus_per_worker,
        num_gpus=1 if s.use_gpu else 0,
        batch_format="numpy",
    )
    shape = encoder_shape(
        cfg.model.size, num_frames=cfg.data.num_frames, img_size=cfg.data.input_size,
        patch_size=cfg.model.patch, tubelet_size=cfg.model.tubelet,
    )
    scores = VideoScores(cfg.data.num_classes)
    kept, gmacs = 0.0, 0.0
    start = time.perf_counter()
    title = f"{split} {cfg.scaling.name or cfg.data.dataset}"
    with progress(title, total=expected_views, unit="views") as bar:
        for batch in preds.iter_batches(batch_size=None, batch_format="numpy"):
            scores.add(batch["video_id"], batch["probs"], batch["label"])
            kept += float(batch["kept"].sum())
            gmacs += gmacs_per_view(batch["kept"].tolist(), shape) * len(batch["kept"])
            bar.update(advance=len(batch["kept"]))
    elapsed = time.perf_counter() - start
    metrics = scores.merge_across_ranks(torch.device("cpu"))
    views = max(scores.views, 1)
    per_view = gmacs / views
    views_per_video = (cfg.data.test_clips * cfg.data.test_crops) if split == "test" else (cfg.data.val_clips * cfg.data.val_crops)
    extra = {"predictions": scores.predictions()} if predictions else {}
    return {
        **extra,
        **metrics,
        "views_per_video": views_per_video,
        "kept_ratio": kept / views / shape.num_tokens,
        "gflops_per_view": per_view,
        "gflops_per_video": per_view * views_per_video,
        "clips_per_s": scores.views / elapsed if elapsed > 0 else math.nan,
        "eval_time": elapsed,
    }


def run_evaluation(cfg: Config, checkpoint: str, *, dataset=None, split: str = "test",
                   train_run_id: str | None = None) -> dict[str, Any]:
    """`evaluate` tracked in MLflow; returns the metrics plus mlflow_run_id, tracking_uri and
    checkpoint. The per-video predictions go to the run as `<split>_predictions.json`.

    train_run_id (the training run of `checkpoint`, as `mgtc demo` passes it): the test
    result goes into that run as `test_*` metrics (test_top1, test_top5, test_gflops_per_view,
    test_gflops_per_video, test_views, ...), so one run holds a model's curves and its test.
    Otherwise the evaluation is a run of its own, named `<training run>-<split>-<strategy>-
    <UTC time>` and nested under the checkpoint's training run when the store has it (found
    by the checkpoint folder's run name and the storage path), so no two runs share a name.
    """
    uri = resolve_tracking_uri(cfg)
    if cfg.tracking.tracking_uri:  # the actors' copy carries no credentials (see tracking)
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, tracking_uri=uri))
    tau = resolve_tau(cfg)
    views = (cfg.data.test_clips, cfg.data.test_crops) if split == "test" else (cfg.data.val_clips, cfg.data.val_crops)
    if train_run_id:
        log_tags(uri, train_run_id, {"test_checkpoint": checkpoint, "test_views_per_video": f"{views[0]}x{views[1]}"})
        metrics = evaluate(cfg, checkpoint, dataset=dataset, split=split, predictions=True)
        log_artifact_dict(uri, train_run_id, metrics.pop("predictions"), f"{split}_predictions.json")
        log_metrics(uri, train_run_id, {f"{TEST_PREFIX}{k}": v for k, v in metrics.items()}, step=0)
        log_artifact_dict(uri, train_run_id, metrics, f"{split}_metrics.json")
        return {**metrics, "checkpoint": checkpoint, "mlflow_run_id": train_run_id, "tracking_uri": uri}
    params = {
        **summary_params(cfg, world_size=cfg.scaling.num_workers, tau=tau),
        "checkpoint": checkpoint, "split": split, "views_per_video": f"{views[0]}x{views[1]}",
    }
    trained = checkpoint_run_name(checkpoint)
    parent = find_train_run(cfg, uri, trained) if trained else None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"{trained or cfg.tracking.run_name or cfg.scaling.name or cfg.data.dataset}-{split}-{cfg.masking.strategy}-{stamp}"
    tracking = dataclasses.replace(cfg.tracking, run_name=name, parent_run_id=parent or cfg.tracking.parent_run_id)
    run_cfg = dataclasses.replace(cfg, tracking=tracking)
    run_id = start_run(run_cfg, uri=uri, run_name=name, kind="eval", params=params)
    try:
        metrics = evaluate(cfg, checkpoint, dataset=dataset, split=split, predictions=True)
    except Exception:
        finish_run(uri, run_id, status="FAILED")
        raise
    log_artifact_dict(uri, run_id, metrics.pop("predictions"), f"{split}_predictions.json")
    log_metrics(uri, run_id, metrics, step=0)
    finish_run(uri, run_id, final=metrics)
    return {**metrics, "checkpoint": checkpoint, "mlflow_run_id": run_id, "tracking_uri": uri}


def checkpoint_run_name(checkpoint: str) -> str:
    """The training run a checkpoint folder belongs to (`<storage>/<name>/epoch_NNNN`), else ''."""
    parts = checkpoint.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1].startswith("epoch_") else ""


def format_table(metrics: dict[str, Any]) -> str:
    """A markdown table of one evaluation."""
    views = metrics["views_per_video"]
    head = ("videos", "views", "top-1 (%)", "top-5 (%)", "kept tokens (%)", "GFLOPs/view",
            f"GFLOPs/video (x{views})", "clips/s")
    row = (
        f"{metrics['videos']:.0f}", f"{metrics['views']:.0f}", f"{metrics['top1']:.2f}", f"{metrics['top5']:.2f}",
        f"{100 * metrics['kept_ratio']:.1f}", f"{metrics['gflops_per_view']:.3g}",
        f"{metrics['gflops_per_video']:.3g}", f"{metrics['clips_per_s']:.2f}",
    )
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"])
