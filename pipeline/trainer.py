"""The driver of a training run: `run_training(cfg)` resolves tau and the MLflow run, builds
the clip datasets and a Ray Train `TorchTrainer` that runs `training.train_loop_per_worker`
on every worker, and returns the last epoch's summary.

A rerun with the same `scaling.name` and storage resumes from the latest checkpoint and
continues the same MLflow run. Checkpoints and the worker loop are `pipeline.training`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline import storage
from pipeline.clips import clip_dataset, clip_stream, num_clips, source_rows, split_videos
from pipeline.config import Config, to_dict
from pipeline.shards import resolve_tau
from pipeline.tracking import (
    credential_env,
    finish_run,
    last_logged_metrics,
    resolve_tracking_uri,
    start_run,
    summary_params,
)
from pipeline.train_progress import watch_training
from pipeline.training import CRASH_ENV, TrainValDataConfig, completed_epochs, train_loop_per_worker
from pipeline.vocab import forwarded_env

log = logging.getLogger(__name__)


def run_name(cfg: Config) -> str:
    """`scaling.name`, else `<dataset>_<size>_<T>x<rate>_<strategy><ratio>_<UTC time>`."""
    if cfg.scaling.name:
        return cfg.scaling.name
    k, d = cfg.masking, cfg.data
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{d.dataset}_{cfg.model.size}_{d.num_frames}x{d.sampling_rate}_{k.strategy}{k.ratio:g}_{stamp}"


def storage_location(cfg: Config) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train's RunConfig.

    Local folders: made absolute, no filesystem. `s3://bucket/prefix`: ("bucket/prefix", an
    S3FileSystem built from the driver's standard AWS settings: endpoint override, region and,
    when set, credentials). Ray pickles it to the train controller and workers, so they reach
    the same store even on a Ray cluster started without those variables; without explicit
    credentials each process uses its own AWS chain (instance role, service account).
    """
    path = cfg.scaling.storage_path
    if not storage.is_s3(path):
        return str(Path(path).expanduser().resolve()), None
    kwargs: dict[str, Any] = {}
    endpoint = storage.endpoint_from_env()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None)
    if region:
        kwargs["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN") or None)
    return storage.normalize(path)[len("s3://"):], pafs.S3FileSystem(**kwargs)


# A run's epochs stream through one Ray Data execution (one pool of decode actors for the
# whole run) up to this many video rows (videos x epochs); above it each epoch is an
# execution of its own, whose actor start (a few seconds) is nothing against the epoch.
STREAM_MAX_ROWS = 50_000


@dataclasses.dataclass
class RunStream:
    """The train dataset of a whole run (`clips.clip_stream(..., epochs=)`), made where Ray
    Train starts the worker group (its controller), each time it does: from the epoch after
    the latest complete checkpoint, so that a restarted worker group continues the stream
    where its checkpoint stopped. The rows and the driver's environment are the driver's."""

    cfg: Config
    rows: list[dict[str, Any]] = dataclasses.field(repr=False)
    env: dict[str, str]
    path: str
    filesystem: Any = None

    def __call__(self):
        done = completed_epochs(self.path, self.filesystem, self.cfg.scaling.num_workers)
        # A finished run (a rerun) trains nothing: one epoch of rows it never executes.
        first = min(done, self.cfg.optim.epochs - 1)
        return clip_stream(self.cfg, "train", self.rows, seed=self.cfg.optim.seed,
                           epochs=range(first, self.cfg.optim.epochs), env=self.env)


def run_dir(storage_path: str, name: str) -> str:
    """Ray Train's folder of a run: `<storage_path>/<name>` (checkpoints `epoch_NNNN/`)."""
    return f"{storage_path.rstrip('/')}/{name}"


def build_datasets(cfg: Config, name: str) -> tuple[dict[str, Any], bool]:
    """The clip streams of the data path, train (+ val when the data has a val split), and
    whether train is the whole run's stream (`RunStream`) rather than one epoch per execution."""
    rows = source_rows(cfg, split_videos(cfg, "train"))
    if not rows:
        raise ValueError("no videos to make clips from in split 'train' (see the warnings above)")
    streamed = len(rows) * cfg.optim.epochs <= STREAM_MAX_ROWS
    if streamed:
        path, filesystem = storage_location(cfg)
        train: Any = RunStream(cfg, rows, forwarded_env(), run_dir(path, name), filesystem)
    else:
        train = clip_stream(cfg, "train", rows, seed=cfg.optim.seed, env=forwarded_env())
    datasets = {"train": train}
    if cfg.data.val_manifest:
        datasets["val"] = clip_dataset(cfg, "val")
    return datasets, streamed


def steps_per_epoch(num_clips: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch with the equal split and drop_last (at least 1)."""
    return max(1, num_clips // world_size // batch_size)


def training_class_names(cfg: Config) -> list[str] | None:
    """The class names of the training manifest, from a label file beside it (classes.txt,
    classInd.txt, ...: `pipeline.predict.labels.CLASS_FILES`), when there is one that names
    exactly data.num_classes classes; stored in every checkpoint for `mgtc predict`."""
    from pipeline.predict.labels import LabelsError, names_beside

    try:
        found = names_beside(cfg.data.train_manifest)
    except (LabelsError, OSError) as err:
        log.warning("class names beside the training manifest not used: %s", err)
        return None
    if found is None:
        return None
    names, source = found
    if len(names) != cfg.data.num_classes:
        log.warning("class names in %s: %d names for data.num_classes=%d, not stored",
                    storage.redact(source), len(names), cfg.data.num_classes)
        return None
    return names


def run_training(
    cfg: Config,
    *,
    datasets: dict[str, Any] | None = None,
    num_train_clips: int | None = None,
) -> dict[str, Any]:
    """Fit `cfg` with a TorchTrainer; returns a flat summary: the last epoch's metrics
    (loss, top1, top5, kept_ratio, gflops_per_view, clips_per_s, ...), wall_time_s, run_name,
    checkpoint (URI of the last checkpoint), mlflow_run_id, tracking_uri, tau.

    datasets: {"train": ds[, "val": ds]} of clip rows (default: `build_datasets(cfg)`).
    num_train_clips: rows of `train` per epoch, for the per-step lr schedule (default: from
      the manifest and shards, `clips.num_clips`, when `datasets` is None; else counted).
    A rerun with the same `scaling.name` and storage resumes from the latest checkpoint and
    continues the same MLflow run; a worker that dies is restarted (`scaling.max_failures`).
    """
    s = cfg.scaling
    name = run_name(cfg)
    uri = resolve_tracking_uri(cfg)
    if cfg.tracking.tracking_uri:  # the workers' copy carries no credentials (see tracking)
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, tracking_uri=uri))
    tau = resolve_tau(cfg)
    streamed = False
    if datasets is None:
        datasets, streamed = build_datasets(cfg, name)
        num_train_clips = num_clips(cfg, "train") if num_train_clips is None else num_train_clips
    clips = num_train_clips if num_train_clips is not None else datasets["train"].count()
    steps = steps_per_epoch(clips, cfg.optim.batch_size, s.num_workers)
    params = {**summary_params(cfg, world_size=s.num_workers, tau=tau), "steps_per_epoch": steps}
    run_id = start_run(cfg, uri=uri, run_name=name, kind="train", params=params)
    done_before = last_logged_metrics(uri, run_id).get("epoch", 0)  # > 0: a rerun of this run
    start = time.perf_counter()
    with watch_training(f"train {name}", cfg.optim.epochs, steps, first_epoch=int(done_before) + 1) as board:
        result = _fit(cfg, name, uri, run_id, tau, steps, datasets, board, streamed)
    # The last epoch's metrics (top1, kept_ratio, ...); a rerun of a finished run reports
    # none to Ray, so they come from its MLflow run then.
    last = result.metrics or last_logged_metrics(uri, run_id)
    summary = {
        **last,
        "wall_time_s": time.perf_counter() - start,
        # The run had finished before: nothing was trained by this call.
        "reused": done_before >= cfg.optim.epochs,
        "run_name": name,
        "checkpoint": checkpoint_uri(result.checkpoint) if result.checkpoint else None,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "tau": tau,
    }
    finish_run(uri, run_id, final=summary)
    return summary


def _fit(cfg: Config, name: str, uri: str, run_id: str, tau, steps: int, datasets: dict[str, Any], board,
         streamed: bool = False):
    """Build the TorchTrainer and fit it; the run ends FAILED in MLflow if fitting raises."""
    s = cfg.scaling
    env = {CRASH_ENV: os.environ[CRASH_ENV]} if os.environ.get(CRASH_ENV) else {}
    path, filesystem = storage_location(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "tau": tau, "steps_per_epoch": steps,
                           "has_val": "val" in datasets, "progress": board, "streamed": streamed,
                           "run_dir": run_dir(path, name),  # no filesystem here: it may hold credentials
                           "mlflow": {"uri": uri, "run_id": run_id, "env": credential_env()},
                           "class_names": training_class_names(cfg)},
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker={"CPU": s.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
        datasets=datasets,
        dataset_config=TrainValDataConfig(),
    )
    try:
        return trainer.fit()
    except Exception:
        finish_run(uri, run_id, status="FAILED")
        raise


def checkpoint_uri(checkpoint) -> str:
    """A checkpoint's location as a URI `mgtc eval --checkpoint` takes (s3:// restored)."""
    if checkpoint.filesystem is not None and checkpoint.filesystem.type_name == "s3":
        return f"s3://{checkpoint.path}"
    return checkpoint.path
