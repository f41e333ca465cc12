"""Evaluation: multi-view test (clips x crops), softmax averaged per video, top-1 / top-5.

VideoMAE's test protocol: every view is classified on its own and the softmax of the views
of one video is averaged (`pipeline.multiview`). Token selection at evaluation is
deterministic per view (`selection.select_views`): a view drops the same tokens whatever
batch or rank it lands in. The model and its weights come from `pipeline.modeling`.

`evaluate(cfg, checkpoint)` runs the test split as a Ray Data `map_batches` over an actor
pool of `ViewClassifier`s (one model per actor, GPU actors when `scaling.use_gpu`) and
reduces the per-view probabilities on the driver, streaming.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import numpy as np
import ray
import torch

from pipeline import storage
from pipeline.clips import clip_dataset, num_clips, to_model_inputs
from pipeline.config import Config, from_dict, to_dict
from pipeline.flops import encoder_shape, gmacs_per_view
from pipeline.modeling import autocast, flush_denormals, load_weights, make_model
from pipeline.multiview import VideoScores
from pipeline.progress import progress
from pipeline.selection import select_views
from pipeline.shards import resolve_tau
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
from pipeline.vocab import forwarded_env

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # our training checkpoints: <checkpoint dir>/state.pt


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
        k = self.cfg.masking
        sel = select_views(k.strategy, scores, ids, views, ratio=k.ratio, tau=self.tau, seed=self.cfg.optim.seed)
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
