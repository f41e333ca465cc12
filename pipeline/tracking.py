"""MLflow tracking: one run per train / eval job, created on the driver, written by rank 0.

The driver resolves the tracking URI, creates (or, for a rerun with the same run name,
reopens) the run, and logs params, tags and the resolved config. It passes `run_id` and the
URI to the workers in `train_loop_config`; only rank 0 opens a `RunLogger` and writes
per-epoch metrics and mask images. A worker-group restart (Ray Train `FailureConfig`) or a
rerun therefore keeps appending to the same run, and `RunLogger.log_epoch` skips an epoch
that is already in the run, so a replayed epoch is never logged twice.

Embedded default URI: `sqlite:///<run folder>/mlflow.db` (MLflow 3.17 refuses the file
store), with artifacts in `<run folder>/mlartifacts`; the run folder is the parent of a local
`scaling.storage_path` (`runs/` by default). `tracking.tracking_uri`, then
`MLFLOW_TRACKING_URI`, override it (e.g. an `mlflow server`; use one when workers run on
other nodes: a SQLite file is only reachable from the machine that holds it).

Nothing here logs environment variables: credentials never reach params, tags or artifacts.
A tracking URI with a password (`http://alice:PW@host`) is split once, in the driver: the
user and password go to `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (MLflow's
own basic-auth settings, read by its REST client) and the URI used, logged and printed
from then on is `http://host`; rank 0 gets the two values in a `vocab.LogSafeEnv` (repr hides them).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from pipeline.config import Config, flat_params, redacted
from pipeline.storage import redact
from pipeline.vocab import LogSafeEnv, forwarded_env, git_commit, job_metadata

log = logging.getLogger(__name__)

RUN_NAME_TAG = "mgtc_run_name"  # Ray Train run name: a rerun with the same name reopens the run
STORAGE_TAG = "mgtc_storage"
KIND_TAG = "mgtc_kind"  # "train" | "eval"
# MLflow 3's UI opens an experiment on the view of its kind, read from this experiment tag;
# an untyped experiment opens on the GenAI overview (traces), not on its training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # MLflow's description of an experiment or a run
TEST_PREFIX = "test_"  # a run's multi-view test metrics, beside its per-epoch ones
EPOCH_KEY = "epoch_time"  # every logged epoch has it: the marker of "epoch already logged"
GREY = 128
PARAM_LIMIT = 6000  # MLflow's param value limit (characters)
PARAM_BATCH = 100  # MLflow's cap on params per log_batch
ERROR_TAG_LIMIT = 4000  # MLflow tag values are capped (8000 chars); the full text is an artifact


def run_folder(cfg: Config) -> Path:
    """The project's run folder: the parent of a local storage path, else `./runs`."""
    storage = cfg.scaling.storage_path
    if "://" in storage:
        return Path("runs").resolve()
    return Path(storage).expanduser().resolve().parent


CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def take_credentials(uri: str) -> str:
    """`uri` without `user:password@`; the two go to MLflow's basic-auth environment
    variables of this process (see module doc). URIs without userinfo are returned as they are."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    os.environ[CREDENTIAL_ENV[0]] = unquote(user)
    if password:
        os.environ[CREDENTIAL_ENV[1]] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))


def credential_env() -> LogSafeEnv:
    """The MLflow basic-auth variables of this process, for rank 0 on another node."""
    return forwarded_env(CREDENTIAL_ENV)


def resolve_tracking_uri(cfg: Config) -> str:
    """`tracking.tracking_uri`, else `MLFLOW_TRACKING_URI`, else the embedded SQLite store;
    credentials in the URI are moved out (`take_credentials`)."""
    if cfg.tracking.tracking_uri:
        return take_credentials(cfg.tracking.tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = take_credentials(os.environ["MLFLOW_TRACKING_URI"])
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = run_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def ray_submission_id() -> str | None:
    """The Ray Jobs submission id when this process is a submitted job's entrypoint.

    Ray 2.60 sets no dedicated variable: the job supervisor passes the job's metadata as
    JSON in `RAY_JOB_CONFIG_JSON_ENV_VAR`, under `metadata.job_submission_id`.
    """
    return job_metadata().get("job_submission_id")


def summary_params(cfg: Config, *, world_size: int, tau: float | None) -> dict[str, Any]:
    """The comparison params of a run (short names), beside every `section.key` param."""
    d, o = cfg.data, cfg.optim
    total_batch = o.batch_size * world_size
    return {
        "dataset": d.dataset,
        "mode": o.mode,
        "num_frames": d.num_frames,
        "sampling_rate": d.sampling_rate,
        "effective_fps": round(d.source_fps / d.sampling_rate, 4),
        "strategy": cfg.masking.strategy,
        "mask_ratio": cfg.masking.ratio,
        "tau": "none" if tau is None else tau,
        "model": cfg.model.size,
        "world_size": world_size,
        "batch_size": o.batch_size,
        "total_batch": total_batch,
        "num_sample": d.num_sample,
        "lr": scaled_lr(o.lr, lr_batch(cfg, world_size)),
        "epochs": o.epochs,
        "seed": o.seed,
        "git_commit": git_commit(),
    }


def lr_batch(cfg: Config, world_size: int) -> float:
    """The batch VideoMAE's lr scaling counts: videos per step over all workers.

    `optim.batch_size` counts clips per worker; with repeated augmentation
    (`data.num_sample` clips per video) a step holds batch_size / num_sample videos, as
    VideoMAE's `--batch_size 6 --num_sample 2` holds 12 clips and scales lr by 6."""
    return cfg.optim.batch_size * world_size / cfg.data.num_sample


def scaled_lr(base_lr: float, total_batch: float) -> float:
    """VideoMAE's linear scaling rule: base lr x total batch / 256."""
    return base_lr * total_batch / 256


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_description(cfg: Config) -> str:
    """The experiment's description: `tracking.description`, else what its runs compare."""
    if cfg.tracking.description:
        return cfg.tracking.description
    d = cfg.data
    return (f"{d.dataset} ({d.num_classes} classes; train list {d.train_manifest}). Each run trains a "
            f"{cfg.model.size} VideoMAE ViT with one token strategy; runs compare strategies (strategy, "
            "mask_ratio or tau) and frame rates (num_frames x sampling_rate, effective_fps) by accuracy "
            "(top1 per epoch on val, test_top1 / test_top5 multi-view on test) against cost "
            "(gflops_per_view, test_gflops_per_video, clips_per_s).")


def ensure_experiment(client, name: str, *, artifact_location: str | None = None, description: str = "") -> str:
    """The id of experiment `name`, created if needed, typed so that MLflow's UI opens it on
    its training runs (`EXPERIMENT_KIND`) and described; an existing experiment gets the type
    and description only where it has none (a user's edit in the UI is kept)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **({NOTE_TAG: description} if description else {})}
        return client.create_experiment(name, artifact_location=artifact_location, tags=tags)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if description and not exp.tags.get(NOTE_TAG):
        client.set_experiment_tag(exp.experiment_id, NOTE_TAG, description)
    return exp.experiment_id


def _experiment_id(client, name: str, uri: str, cfg: Config) -> str:
    return ensure_experiment(client, name, artifact_location=sqlite_artifacts(uri),
                             description=experiment_description(cfg))


def run_description(cfg: Config, tau: float | None) -> str:
    """One line saying what a run is: strategy, ratio / tau, frames x stride, fps, model."""
    k, d = cfg.masking, cfg.data
    if k.strategy == "none":
        tokens = "all tokens"
    elif k.strategy == "mgtc_threshold":
        tokens = f"mgtc_threshold tau {tau if tau is not None else k.tau:.4g}"
    else:
        tokens = f"{k.strategy} ratio {k.ratio:g} ({100 * (1 - k.ratio):.0f}% kept)"
    fps = d.source_fps / d.sampling_rate
    return (f"{tokens} · {d.num_frames} frames x stride {d.sampling_rate} · {fps:.3g} fps "
            f"· ViT-{cfg.model.size} {cfg.optim.mode} on {d.dataset}")


def sqlite_artifacts(uri: str) -> str | None:
    """Artifact location of a new experiment in a SQLite store: `mlartifacts/` beside the
    database file (the embedded default and an explicit `sqlite:///...` alike), not MLflow's
    `./mlruns` of whatever folder the job was started from. None (MLflow's choice: the
    server's artifact root) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts").as_uri()


def start_run(
    cfg: Config,
    *,
    uri: str,
    run_name: str,
    kind: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> str:
    """Create the MLflow run of a job, or reopen the one of a rerun; returns its run id.

    A train run is found again by (run name, storage path), the key under which Ray Train
    resumes; eval runs are always new. Params already in a reopened run are kept (MLflow
    params are immutable); a changed value is reported in the log, not overwritten.
    """
    from mlflow.entities import RunStatus

    client = _client(uri)
    exp_id = _experiment_id(client, cfg.tracking.experiment, uri, cfg)
    run_tags = {
        RUN_NAME_TAG: run_name,
        STORAGE_TAG: cfg.scaling.storage_path,
        KIND_TAG: kind,
        "git_commit": git_commit(),
        "shards": cfg.data.shards,
        NOTE_TAG: run_description(cfg, params.get("tau") if isinstance(params.get("tau"), float) else None),
        **(tags or {}),
    }
    run_tags = {k: redact(str(v)) for k, v in run_tags.items()}
    submission = ray_submission_id()
    if submission:
        run_tags["ray_submission_id"] = submission
    if cfg.tracking.parent_run_id:  # a sweep's child: nested under its parent in the UI
        run_tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    existing = _find_run(client, exp_id, run_name, cfg.scaling.storage_path) if kind == "train" else None
    if existing is None:
        run = client.create_run(exp_id, run_name=cfg.tracking.run_name or run_name, tags=run_tags)
        run_id, old = run.info.run_id, {}
    else:
        run_id, old = existing.info.run_id, existing.data.params
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key, value in run_tags.items():
            client.set_tag(run_id, key, value)
    new = run_params(cfg, params)
    changed = sorted(k for k, v in new.items() if k in old and old[k] != v)
    if changed:
        log.warning("run %s reopened with changed params (kept the first values): %s", run_id, ", ".join(changed))
    log_new_params(client, run_id, new, have=old)
    client.log_dict(run_id, redacted(cfg), "config.yaml")
    return run_id


def find_train_run(cfg: Config, uri: str, run_name: str) -> str | None:
    """The id of the training run `run_name` under `cfg`'s storage path, if the store has it."""
    client = _client(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return None
    found = _find_run(client, exp.experiment_id, run_name, cfg.scaling.storage_path)
    return found.info.run_id if found is not None else None


def _find_run(client, exp_id: str, run_name: str, storage: str):
    quoted = run_name.replace("'", "\\'")
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.{RUN_NAME_TAG} = '{quoted}'", max_results=50
    )
    same = [r for r in runs if r.data.tags.get(STORAGE_TAG) == storage]
    return same[0] if same else None


def _param_value(value: Any) -> str:
    """Params as strings, formatted once (0.9 never becomes 0.90 elsewhere): tuples as 'a,b'."""
    if isinstance(value, (tuple, list)):
        return ",".join(_param_value(v) for v in value)
    return str(value)[:PARAM_LIMIT]


def run_params(cfg: Config, extra: dict[str, Any]) -> dict[str, str]:
    """The params of a run as MLflow strings: every `section.key` of `cfg`, then `extra`
    (`summary_params` and job fields), redacted."""
    return {**{k: _param_value(v) for k, v in flat_params(cfg).items()},
            **{k: redact(_param_value(v)) for k, v in extra.items()}}


def log_new_params(client, run_id: str, params: dict[str, str], *, have: dict[str, str]) -> None:
    """Log the params not in `have` (a run's params are immutable: a logged one stays)."""
    from mlflow.entities import Param

    fresh = [Param(k, v) for k, v in params.items() if k not in have]
    for i in range(0, len(fresh), PARAM_BATCH):  # MLflow caps a batch at 100 params
        client.log_batch(run_id, params=fresh[i : i + PARAM_BATCH])


def log_new_metrics(client, run_id: str, values: dict[str, Any], *, have: dict[str, float]) -> None:
    """Log, at step 0, the finite numbers of `values` whose keys are not in `have`."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    fresh = [Metric(k, float(v), now, 0) for k, v in values.items()
             if k not in have and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if fresh:
        client.log_batch(run_id, metrics=fresh)


def finish_run(uri: str, run_id: str, *, status: str = "FINISHED", final: dict[str, Any] | None = None) -> None:
    """Driver side, after the job: final metrics as a JSON artifact, then the run status."""
    client = _client(uri)
    if final is not None:
        client.log_dict(run_id, {k: redact(v) if isinstance(v, str) else v for k, v in final.items()},
                        "final_metrics.json")
    client.set_terminated(run_id, status)


# ------------------------------------------------------------------------- sweeps (pipeline.sweep)


def sweep_experiment(client, name: str, uri: str) -> str:
    """A sweep's experiment id, created if needed; in a local SQLite store its artifacts go
    to mlartifacts/ beside the database file, as the trainer's embedded default does."""
    return ensure_experiment(client, name, artifact_location=sqlite_artifacts(uri),
                             description=f"sweep {name}: runs compare frame rate x strategy x ratio x seed; "
                                         "each trial is a child of its sweep's parent run")


def start_sweep_run(client, exp_id: str, run_name: str, *, sweep: str, base_config: str):
    """The sweep's parent run (an MLflow Run: its id and start time nest and find the children)."""
    commit = git_commit()
    tags = {KIND_TAG: "sweep", "mgtc_sweep": sweep, "mgtc_base_config": base_config,
            "git_commit": commit, "mlflow.source.git.commit": commit}
    return client.create_run(exp_id, run_name=run_name, tags=tags)


def log_sweep_inputs(client, run_id: str, params: dict[str, Any], base: Config, source: str) -> None:
    """The parent's params (plus code_version), the base config as base_config.yaml
    (redacted) and the sweep file itself."""
    import json

    import yaml

    values = {**{k: _param_value(v) for k, v in params.items()}, "code_version": git_commit()}
    log_new_params(client, run_id, values, have={})
    # JSON round trip: tuples become lists, which safe_dump can write.
    client.log_text(run_id, yaml.safe_dump(json.loads(json.dumps(redacted(base))), sort_keys=False),
                    "base_config.yaml")
    if source and Path(source).is_file():
        client.log_artifact(run_id, source)


def find_child_run(client, exp_id: str, parent_id: str, run_name: str, parent_start: int) -> str:
    """Run id of the trainer's run for a trial that raised before returning it ('' if none).

    Matches the nested run of that name first, then any run of that name started after the
    parent (a trainer that did not know the parent).
    """
    filters = (
        f"tags.mlflow.parentRunId = '{parent_id}' and attributes.run_name = '{run_name}'",
        f"attributes.run_name = '{run_name}' and attributes.start_time >= {parent_start}",
    )
    for filter_string in filters:
        runs = client.search_runs([exp_id], filter_string, max_results=1,
                                  order_by=["attributes.start_time DESC"])
        if runs:
            return runs[0].info.run_id
    return ""


def complete_child_run(client, run_id: str, cfg: Config, result: dict[str, Any], tags: dict[str, str]) -> None:
    """Make a sweep trial's run complete: `tags`, then the params the trainer logs (every
    `section.key` plus `summary_params`) and the numbers of `result` that the run lacks; a
    param or metric already logged is left alone."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    run = client.get_run(run_id)
    params = run_params(cfg, summary_params(cfg, world_size=cfg.scaling.num_workers, tau=cfg.masking.tau))
    log_new_params(client, run_id, params, have=run.data.params)
    log_new_metrics(client, run_id, result, have=run.data.metrics)


def fail_run(client, run_id: str, error: str) -> None:
    """End a run FAILED: the error's first line as the `error` tag, the full text as error.txt."""
    client.set_tag(run_id, "error", error.splitlines()[0][:ERROR_TAG_LIMIT] if error else "failed")
    client.log_text(run_id, error or "failed", "error.txt")
    client.set_terminated(run_id, "FAILED")


def metric_key(name: str) -> str:
    """`name` with the characters MLflow refuses in metric keys (e.g. the '@' of 'tau@r0.5')
    replaced by '_'; MLflow allows letters, digits, '_', '-', '.', ' ', ':' and '/'."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int) -> None:
    """Log the finite values of `metrics` at `step` in one batch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    _client(uri).log_batch(run_id, metrics=batch)


def log_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    _client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_artifact_dict(uri: str, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
    _client(uri).log_dict(run_id, data, artifact_file)


def last_logged_metrics(uri: str, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run, with `epoch` = the last logged epoch."""
    client = _client(uri)
    metrics = dict(client.get_run(run_id).data.metrics)
    epochs = [m.step for m in client.get_metric_history(run_id, EPOCH_KEY)]
    if epochs:
        metrics["epoch"] = max(epochs)
    return metrics


class RunLogger:
    """Rank 0's handle on the job's run: epoch metrics and images, each epoch logged once."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.client = _client(uri)
        self.uri = uri
        self.run_id = run_id
        self._logged = {m.step for m in self.client.get_metric_history(run_id, EPOCH_KEY)}

    def has_epoch(self, epoch: int) -> bool:
        return epoch in self._logged

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> bool:
        """Log `metrics` at step `epoch`; False (nothing logged) if that epoch is already in."""
        if self.has_epoch(epoch):
            return False
        log_metrics(self.uri, self.run_id, metrics, step=epoch)
        self._logged.add(epoch)
        return True

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """image: [H, W, 3] uint8."""
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)


def mask_overlay(
    pixels: np.ndarray, keep: np.ndarray, *, tubelet: int, patch: int, max_slices: int = 8, min_side: int = 112
) -> np.ndarray:
    """Kept tokens over time as one image: dropped tokens greyed out.

    pixels: [T, H, W, 3] uint8 (un-normalised clip); keep: [T', H', W'] bool, True = kept.
    Shows the first frame of up to `max_slices` tubelets side by side (4 px gaps), each
    upscaled (nearest) so its short side is at least `min_side`. Returns [h, w, 3] uint8.
    """
    t_tok, h_tok, w_tok = keep.shape
    if pixels.shape[0] != t_tok * tubelet or pixels.shape[1:3] != (h_tok * patch, w_tok * patch):
        raise ValueError(f"pixels {pixels.shape} do not tile into keep {keep.shape} with tubelet={tubelet}, patch={patch}")
    slices = np.linspace(0, t_tok - 1, min(max_slices, t_tok)).round().astype(int)
    scale = max(1, math.ceil(min_side / min(pixels.shape[1:3])))
    panels = []
    for t in slices:
        frame = pixels[t * tubelet].astype(np.float32)
        kept = np.repeat(np.repeat(keep[t], patch, axis=0), patch, axis=1)[..., None]
        frame = np.where(kept, frame, 0.25 * frame + 0.75 * GREY)
        panels.append(np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1))
    gap = np.full((panels[0].shape[0], 4, 3), 255.0, dtype=np.float32)
    row = [p for panel in panels for p in (panel, gap)][:-1]
    return np.concatenate(row, axis=1).round().clip(0, 255).astype(np.uint8)
