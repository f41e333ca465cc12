"""Running a sweep: each trial's `train_fn(cfg)` (by default `train_and_test`: `run_training`,
then the multi-view test) as a Ray Tune function trainable, which launches its TorchTrainer
inside (the Train V2 pattern), one MLflow parent run with every trial's run as its child,
and the aggregated tables and pictures logged on the parent (`pipeline.tracking` does the
MLflow writes).

A trial that raises is recorded as a FAILED child run with an `error` tag and a failed row;
the other trials go on. The sweep counts as a success when at least one trial finished.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline import raylog, tracking
from pipeline.config import Config, flat_params, replace
from pipeline.progress import progress
from pipeline.sweep.figures import write_artifacts
from pipeline.sweep.report import TrialResult, aggregate, parent_metrics, summary_metrics
from pipeline.sweep.spec import SweepOptions, SweepSpec, Trial, frames_label, mask_label
from pipeline.vocab import ray_session

TrainFn = Callable[[Config], Mapping[str, Any]]

# Local paths in a trial config: made absolute, because Tune runs each trial in its own
# working directory (and a cluster job in a fresh one).
PATH_FIELDS = (
    "data.train_manifest", "data.val_manifest", "data.test_manifest", "data.shards",
    "model.checkpoint", "scaling.storage_path",
)
RUN_ID_KEYS = ("mlflow_run_id",)  # where train_fn's result names the trial's MLflow run
# The Tune trainable only drives its TorchTrainer, which asks for the real CPUs. It reserves
# memory, not CPU: even 0.001 CPU would leave a config that fills the node exactly (training
# worker + clip decode actor = all CPUs) one fraction short, and its data actor pending forever.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


@dataclass
class SweepOutcome:
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    results: list[TrialResult]
    rows: list[dict[str, Any]]
    out_dir: Path

    @property
    def ok(self) -> bool:
        return any(r.status == "FINISHED" for r in self.results)


def resolve_tracking_uri(base: Config, explicit: str = "") -> str:
    """explicit, else the trainer's rule (`pipeline.tracking.resolve_tracking_uri`: the
    config's URI, MLFLOW_TRACKING_URI, or sqlite:///<run folder>/mlflow.db).

    A relative sqlite path is made absolute: trials run in other working directories.
    """
    uri = tracking.take_credentials(explicit) if explicit else tracking.resolve_tracking_uri(base)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _absolute(value: str) -> str:
    if not value or "://" in value or Path(value).is_absolute():
        return value
    return str(Path(value).resolve())


def trial_config(trial: Trial, *, parent_run_id: str, tracking_uri: str, experiment: str,
                 run_prefix: str) -> Config:
    """The config a trial really runs: absolute paths, the sweep's store, a unique Ray Train name.

    `scaling.name` must be new per trial: Ray Train resumes a run of the same name.
    `tracking.parent_run_id` lets the trainer create its MLflow run nested under the parent
    (`record_trial` also tags it afterwards, for a trainer that ignores the field).
    """
    cfg = trial.cfg
    flat = flat_params(cfg)
    sets = {key: _absolute(str(flat[key])) for key in PATH_FIELDS if flat.get(key)}
    sets.update({
        "tracking.tracking_uri": tracking_uri,
        "tracking.experiment": experiment,
        "tracking.run_name": trial.name,
        "scaling.name": f"{run_prefix}-{trial.name}",
        "tracking.parent_run_id": parent_run_id,
    })
    return replace(cfg, [f"{k}={json.dumps(v)}" for k, v in sets.items()])


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cpus_per_trial(cfg: Config, options: SweepOptions) -> float:
    """CPUs one trial occupies: the option, else training workers + clip decode actors."""
    if options.cpus_per_trial:
        return float(options.cpus_per_trial)
    return cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + cfg.data.decode_actors


def concurrency(options: SweepOptions, cfg: Config, total_cpus: float, num_trials: int) -> int:
    """Trials at once: the option, else as many as the CPUs hold (at least 1)."""
    if options.max_concurrent:
        return min(options.max_concurrent, num_trials)
    per_trial = max(cpus_per_trial(cfg, options), 1e-3)
    return max(1, min(num_trials, int(total_cpus // per_trial)))


def say(line: str) -> None:
    """The default `log`: a line on stdout. A module function, not `print` itself: Tune
    pickles the progress callback, and Ray Train v2 may have swapped `builtins.print` by
    then, which makes the original `print` unpicklable ("not the same object")."""
    print(line, flush=True)


_BARS: dict[int, Any] = {}  # the driver's live displays, by key (Tune pickles its callbacks)


def _bar(key: int | None) -> Any:
    """The driver's live display for `key`, or None. The callback class below is pickled by
    value, with the globals it names: it must name this function, never `_BARS`, whose
    displays hold the terminal's file objects (which do not pickle)."""
    return _BARS.get(key)


def _progress_callback(total: int, log: Callable[[str], None], bar_key: int | None = None):
    """A Tune callback: one line per trial as it ends, a failed one with its reason, and the
    live display's trials done / running / failed (Tune itself runs silent)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = self.running = self.failed = 0
            self.start = time.monotonic()

        def _draw(self) -> None:
            bar = _bar(bar_key)
            if bar is not None:
                bar.update(self.done, running=self.running, failed=self.failed)

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.running += 1
            self._draw()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            self.running = max(0, self.running - 1)
            payload = (trial.last_result or {}).get("mgtc") or {}
            if payload.get("ok"):
                state = "finished"
            else:
                self.failed += 1
                reason = (payload.get("error") or "no result").strip().splitlines()[0][:300]
                state = f"FAILED: {reason}"
            self._draw()
            log(f"[{self.done}/{total}] {trial.config['trial']}: {state} "
                f"({time.monotonic() - self.start:.0f} s into the sweep)")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            self.failed += 1
            self.running = max(0, self.running - 1)
            self._draw()
            log(f"[{self.done}/{total}] {trial.config['trial']}: FAILED in Tune (see the Ray logs)")

    return Progress()


def run_trials_tune(
    configs: Mapping[str, Config], train_fn: TrainFn, *, max_concurrent: int, storage_path: str,
    name: str, log: Callable[[str], None] | None = None,
) -> dict[str, tuple[dict[str, Any] | None, str]]:
    """Run train_fn on every config as a Ray Tune function trainable.

    Returns {trial name: (metrics, error)}: metrics is train_fn's result (None when it raised),
    error the exception's type, message and traceback ("" on success).
    """
    log = log or say
    from ray import tune

    raylog.quiet_tune()

    def trainable(config: dict[str, Any]) -> dict[str, Any]:
        # Catch here, not in Tune: the traceback text is what the FAILED child run records.
        try:
            return {"mgtc": {"ok": True, "metrics": dict(train_fn(configs[config["trial"]]))}}
        except Exception as err:  # noqa: BLE001 - any trial failure is data, not a sweep crash
            text = f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}"
            return {"mgtc": {"ok": False, "error": text}}

    with progress("sweep", total=len(configs), unit="trials") as bar:
        key = id(bar)
        _BARS[key] = bar
        tuner = tune.Tuner(
            tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),
            param_space={"trial": tune.grid_search(list(configs))},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                      callbacks=[_progress_callback(len(configs), log, key)]),
        )
        try:
            results = tuner.fit()
        finally:
            _BARS.pop(key, None)
    out: dict[str, tuple[dict[str, Any] | None, str]] = {}
    for result in results:
        trial = result.config["trial"]
        payload = (result.metrics or {}).get("mgtc")
        if result.error is not None or not payload:
            cause = getattr(result.error, "cause", None) or result.error
            out[trial] = (None, f"{type(cause).__name__}: {cause}")
        elif payload["ok"]:
            out[trial] = (payload["metrics"], "")
        else:
            out[trial] = (None, payload["error"])
    return out


def train_and_test(cfg: Config) -> dict[str, Any]:
    """The default trial: `pipeline.trainer.run_training`, then, when the data has a test
    split, the multi-view test (`pipeline.evaluate.evaluate`, test_clips x test_crops) of the
    last checkpoint, returned as test_* beside the training summary (the sweep logs them
    into the trial's run)."""
    from pipeline.evaluate import evaluate
    from pipeline.trainer import run_training

    summary = dict(run_training(cfg))
    if cfg.optim.mode != "finetune" or not cfg.data.test_manifest or not summary.get("checkpoint"):
        return summary
    test = evaluate(cfg, summary["checkpoint"], split="test", predictions=True)
    summary.update({f"test_{key}": value for key, value in test.items()})
    return summary


def run_sweep(
    spec: SweepSpec,
    train_fn: TrainFn | None = None,
    *,
    runs_dir: str | Path | None = None,
    tracking_uri: str = "",
    num_cpus: int | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run every trial of `spec` and record the sweep in MLflow; see the module docstring.

    train_fn defaults to `train_and_test`. Ray: the running session, else the cluster in
    RAY_ADDRESS, else a local one with `num_cpus` logical CPUs (default: the cores).
    runs_dir (default: the trainer's run folder, `runs/`) holds Tune's trial folders and a
    copy of the parent's artifacts under sweeps/<parent run name>/.
    """
    log = log or say
    from mlflow import MlflowClient

    train_fn = train_fn or train_and_test
    runs = Path(runs_dir).resolve() if runs_dir else tracking.run_folder(spec.base)
    uri = resolve_tracking_uri(spec.base, tracking_uri)
    experiment = spec.options.experiment or spec.base.tracking.experiment
    client = MlflowClient(uri)
    exp_id = tracking.sweep_experiment(client, experiment, uri)
    run_name = f"{spec.options.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = tracking.start_sweep_run(client, exp_id, run_name, sweep=spec.options.name, base_config=spec.base_name)
    parent_id = parent.info.run_id
    log(f"sweep {spec.options.name}: {len(spec.trials)} trials, MLflow parent run {parent_id} "
        f"({uri}, experiment {experiment!r})")
    out_dir = runs / "sweeps" / run_name
    try:
        tracking.log_sweep_inputs(client, parent_id, sweep_params(spec), spec.base, spec.source)
        configs = {t.name: trial_config(t, parent_run_id=parent_id, tracking_uri=uri,
                                        experiment=experiment, run_prefix=run_name)
                   for t in spec.trials}
        # A local Ray started here runs up to (its CPUs) trials side by side.
        local_trials = num_cpus or os.cpu_count() or 1
        with ray_session(num_cpus=num_cpus, _system_config=raylog.local_system_config(local_trials)):
            width = concurrency(spec.options, spec.base, cluster_cpus(), len(configs))
            log(f"running {len(configs)} trials, {width} at a time")
            raw = run_trials_tune(configs, train_fn, max_concurrent=width, name=run_name,
                                  storage_path=str(runs / "tune"), log=log)
        results = [record_trial(client, exp_id, parent_id, t, configs[t.name], *raw[t.name],
                                parent_start=parent.info.start_time, sweep_name=spec.options.name)
                   for t in spec.trials]
        rows = aggregate(results)
        write_artifacts(out_dir, spec, results, rows, log=log)
        client.log_artifacts(parent_id, str(out_dir))
        tracking.log_new_metrics(client, parent_id, parent_metrics(results, rows), have={})
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    outcome = SweepOutcome(parent_id, uri, exp_id, results, rows, out_dir)
    client.set_terminated(parent_id, "FINISHED" if outcome.ok else "FAILED")
    return outcome


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The parent run's params: the sweep's name, base, grid, size and options."""
    return {
        "sweep.name": spec.options.name,
        "sweep.base_config": spec.base_name,
        "sweep.grid": json.dumps(spec.grid, sort_keys=False, default=str),
        "sweep.num_trials": len(spec.trials),
        "sweep.max_concurrent": spec.options.max_concurrent,
        "sweep.cpus_per_trial": spec.options.cpus_per_trial,
        "sweep.source": spec.source,
    }


def trial_tags(trial: Trial, parent_run_id: str, sweep_name: str) -> dict[str, str]:
    """Tags that group and filter a sweep's children in the MLflow UI."""
    cfg = trial.cfg
    return {
        "mlflow.parentRunId": parent_run_id,
        "mgtc_sweep": sweep_name,
        "mgtc_trial": trial.name,
        "mgtc_setting": trial.setting,
        "mgtc_frames": frames_label(cfg),
        "mgtc_strategy": cfg.masking.strategy,
        "mgtc_mask": mask_label(cfg) or "full",
        "mgtc_seed": str(cfg.optim.seed),
    }


def record_trial(
    client: Any, exp_id: str, parent_id: str, trial: Trial, cfg: Config,
    metrics: Mapping[str, Any] | None, error: str, *, parent_start: int = 0, sweep_name: str = "",
) -> TrialResult:
    """Make the trial's MLflow run a complete child of the parent; return its result.

    The trainer's own run (its id in the metrics, or found by name) is reused; a train_fn that
    logs nothing, or failed before its run existed, gets a child run made here. Params needed
    to filter and the summary metrics are added when the run lacks them; a failed trial's run
    ends FAILED with an `error` tag and error.txt.
    """
    summary = summary_metrics(metrics or {})
    run_id = ""
    if metrics:
        run_id = next((str(metrics[k]) for k in RUN_ID_KEYS if metrics.get(k)), "")
    if not run_id:
        run_id = tracking.find_child_run(client, exp_id, parent_id, trial.name, parent_start)
    created = not run_id
    if created:
        run_id = client.create_run(exp_id, run_name=trial.name).info.run_id
    tracking.complete_child_run(client, run_id, cfg, dict(metrics or {}), trial_tags(trial, parent_id, sweep_name))
    if metrics is None:
        tracking.fail_run(client, run_id, error)
        return TrialResult(trial, "FAILED", summary, error, run_id)
    predictions = metrics.get("test_predictions")
    if isinstance(predictions, dict):
        client.log_dict(run_id, predictions, "test_predictions.json")
    else:
        predictions = None
    if created or client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "FINISHED")
    return TrialResult(trial, "FINISHED", summary, "", run_id, predictions)
