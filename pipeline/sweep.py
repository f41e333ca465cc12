"""Sweeps: a grid of training configs, run as parallel Ray Tune trials, one nested MLflow run each.

A sweep file (YAML) has four keys:

    base: jobs/configs/synthetic_tiny.yaml     # a training config path, or an inline mapping
    set: ["optim.epochs=2"]                    # optional overrides applied to base
    grid:                                      # axes, crossed in file order
      frames:                                  # a named axis: linked settings, one mapping each
        - {data.num_frames: 8, data.sampling_rate: 4}
        - {data.num_frames: 16, data.sampling_rate: 2}
      optim.seed: [0, 1, 2]                    # a dotted axis: one value each
    sweep: {name: paper, max_concurrent: 0, cpus_per_trial: 0}

Every trial config is built and validated when the file is loaded, before Ray starts; a bad
trial is reported by index, name and field. `run_sweep` then opens one MLflow parent run,
runs each trial's `train_fn(cfg)` (by default `train_and_test`: `run_training`, then the
multi-view test) as a Ray Tune function trainable, which launches its TorchTrainer inside
(the Train V2 pattern), makes each trial's run a child of the parent, and logs on the parent
the aggregated table (`results.csv`, `results.md`), the per-trial table (`trials.csv`), the
accuracy plots and the mask / motion pictures.

A trial that raises is recorded as a FAILED child run with an `error` tag and a failed row;
the other trials go on. The sweep counts as a success when at least one trial finished.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from pipeline import stats
from pipeline.config import Config, ConfigError, flat_params, load_config, replace, to_dict
from pipeline.progress import progress
from pipeline.vocab import git_commit, ray_session

TrainFn = Callable[[Config], Mapping[str, Any]]

SEED_KEY = "optim.seed"
# Keys that the trial name already spells out; any other grid key is appended as key=value.
NAMED_KEYS = frozenset({
    "data.num_frames", "data.sampling_rate", "masking.strategy", "masking.ratio", "masking.tau",
    "masking.calibrated", SEED_KEY,
})
# Local paths in a trial config: made absolute, because Tune runs each trial in its own
# working directory (and a cluster job in a fresh one).
PATH_FIELDS = (
    "data.train_manifest", "data.val_manifest", "data.test_manifest", "data.shards",
    "model.checkpoint", "scaling.storage_path",
)
# A trial's summary: (table key, keys of train_fn's result in order of preference, column
# title, decimals). The test split's multi-view numbers (`train_and_test`) win over the last
# epoch's validation numbers (`run_training` alone); kept tokens, GFLOPs and eval clips/s are
# those of the evaluated views, train clips/s and wall time those of training.
SUMMARY_METRICS: tuple[tuple[str, tuple[str, ...], str, int], ...] = (
    ("top1", ("test_top1", "top1"), "top-1 (%)", 1),
    ("top5", ("test_top5", "top5"), "top-5 (%)", 1),
    ("kept_ratio", ("test_kept_ratio", "val_kept_ratio", "kept_ratio"), "kept tokens", 3),
    ("gflops_per_view", ("test_gflops_per_view", "val_gflops_per_view", "gflops_per_view"),
     "GFLOPs/view", 3),
    ("eval_clips_per_s", ("test_clips_per_s", "val_clips_per_s"), "eval clips/s", 1),
    ("train_clips_per_s", ("clips_per_s",), "train clips/s", 1),
    ("wall_time_s", ("wall_time_s",), "train wall time (s)", 0),
)
TABLE_METRICS = ("top1", "kept_ratio", "gflops_per_view", "eval_clips_per_s", "train_clips_per_s",
                 "wall_time_s")
RUN_ID_KEYS = ("mlflow_run_id",)

# The Tune trainable only drives its TorchTrainer, which asks for the real CPUs. It reserves
# memory, not CPU: even 0.001 CPU would leave a config that fills the node exactly (training
# worker + clip decode actor = all CPUs) one fraction short, and its data actor pending forever.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}
ERROR_TAG_LIMIT = 4000  # MLflow tag values are capped (8000 chars); the full text is an artifact
PARAM_LIMIT = 6000  # MLflow param value limit


class SweepError(ValueError):
    """A sweep file that cannot run; the message names every offending trial and field."""


@dataclass(frozen=True)
class SweepOptions:
    """The `sweep:` section.

    max_concurrent: trials at once; 0 = as many as the cluster's CPUs hold at cpus_per_trial.
    cpus_per_trial: CPUs one trial occupies; 0 = derived from the base config (training
      workers x CPUs per worker + clip decode actors).
    experiment: MLflow experiment; "" = the base config's tracking.experiment.
    mask_video: video for the parent's mask / heat-map pictures; "" = first manifest entry.
    compare: key differences "A vs B" (setting names, as in results.md), each tested by a
      paired bootstrap over the test videos (`pipeline.stats`); checked when the file loads.
    """

    name: str = "sweep"
    max_concurrent: int = 0
    cpus_per_trial: float = 0.0
    experiment: str = ""
    mask_video: str = ""
    compare: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trial:
    """One grid point: its validated config, the grid overrides that made it, its names.

    setting: the name without the seed; trials of one setting are aggregated over seeds.
    """

    index: int
    name: str
    setting: str
    overrides: dict[str, Any]
    cfg: Config


@dataclass(frozen=True)
class SweepSpec:
    options: SweepOptions
    base: Config
    base_name: str
    grid: dict[str, list[dict[str, Any]]]
    trials: tuple[Trial, ...]
    source: str = ""


@dataclass
class TrialResult:
    trial: Trial
    status: str  # "FINISHED" or "FAILED"
    metrics: dict[str, float] = field(default_factory=dict)  # canonical summary keys
    error: str = ""
    run_id: str = ""
    predictions: dict[str, list[int]] | None = None  # per test video: video_id, label, pred


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


# ---------------------------------------------------------------------------------------------
# Loading and expanding


def load_sweep(path: str | Path, overrides: Sequence[str] = (), axes: Sequence[str] = ()) -> SweepSpec:
    """Read a sweep file, build and validate every trial. Raises SweepError naming all problems.

    `overrides` (`section.key=value`, as `mgtc train --set`) apply to the base of every trial.
    `axes` (`axis=<YAML list>`, e.g. `optim.seed=[0, 1]`) replace or add grid axes.
    A relative `base:` path is looked up from the current directory, then next to the file.
    """
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep file {str(p)!r} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{p}: a sweep file holds a mapping with base, grid, sweep (and set)")
    unknown = sorted(set(raw) - {"base", "set", "grid", "sweep"})
    if unknown:
        raise SweepError(f"{p}: unknown key(s) {', '.join(unknown)}; allowed: base, set, grid, sweep")
    base_overrides = list(raw.get("set") or []) + list(overrides)
    base, base_name = _load_base(raw.get("base"), p, base_overrides)
    options = _load_options(raw.get("sweep") or {}, default_name=p.stem)
    grid = normalise_grid({**(raw.get("grid") or {}), **parse_axes(axes)})
    trials = expand_grid(base, grid)
    check_comparisons(options, trials)
    return SweepSpec(options, base, base_name, grid, trials, str(p))


def _load_base(base: Any, sweep_file: Path, overrides: list[str]) -> tuple[Config, str]:
    """The base training config, validated (with overrides), and a name for tracking."""
    try:
        if isinstance(base, str):
            path = Path(base)
            if not path.is_file() and (sweep_file.parent / base).is_file():
                path = sweep_file.parent / base
            return load_config(path, overrides), path.stem
        if isinstance(base, dict):
            # Validated once, with the overrides: an inline base may leave a field to `set`.
            return replace(Config(), _as_overrides(base) + overrides), "inline"
    except ConfigError as err:
        raise SweepError(f"{sweep_file}: base config: {err}") from None
    raise SweepError(f"{sweep_file}: base: expected a training config path or an inline mapping, "
                     f"got {base!r}")


def _as_overrides(sections: dict[str, Any]) -> list[str]:
    """An inline config mapping {section: {field: value}} as `section.field=value` strings
    (JSON values are YAML, so `replace` parses them back to the same types)."""
    out = []
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of fields, got {values!r}")
        out += [f"{section}.{key}={json.dumps(value)}" for key, value in values.items()]
    return out


def _load_options(raw: Any, default_name: str) -> SweepOptions:
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: expected a mapping, got {raw!r}")
    allowed = {f.name for f in fields(SweepOptions)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SweepError(f"sweep: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    opts = SweepOptions(**{"name": default_name, **raw})
    problems = []
    if not opts.name or not str(opts.name).replace("-", "").replace("_", "").replace(".", "").isalnum():
        problems.append(f"sweep.name={opts.name!r}: use letters, digits, '-', '_' or '.'")
    if not isinstance(opts.max_concurrent, int) or opts.max_concurrent < 0:
        problems.append(f"sweep.max_concurrent={opts.max_concurrent!r}: an integer >= 0 (0 = from CPUs)")
    if not isinstance(opts.cpus_per_trial, (int, float)) or opts.cpus_per_trial < 0:
        problems.append(f"sweep.cpus_per_trial={opts.cpus_per_trial!r}: a number >= 0 (0 = from config)")
    if not isinstance(opts.compare, (list, tuple)) or any(
            not isinstance(c, str) or len(c.split(" vs ")) != 2 for c in opts.compare):
        problems.append(f"sweep.compare={opts.compare!r}: a list of 'SETTING_A vs SETTING_B' strings")
    if problems:
        raise SweepError("invalid sweep options:\n  - " + "\n  - ".join(problems))
    return dataclasses.replace(opts, compare=tuple(opts.compare))


def comparison_pairs(options: SweepOptions) -> list[tuple[str, str]]:
    """(A, B) setting names of `sweep.compare`."""
    return [tuple(part.strip() for part in c.split(" vs ")) for c in options.compare]  # type: ignore[misc]


def check_comparisons(options: SweepOptions, trials: Sequence[Trial]) -> None:
    """SweepError naming each compared setting the grid does not make."""
    settings = list(dict.fromkeys(t.setting for t in trials))
    unknown = sorted({name for pair in comparison_pairs(options) for name in pair if name not in settings})
    if unknown:
        raise SweepError(f"sweep.compare names unknown setting(s) {', '.join(unknown)}; "
                         f"the grid makes: {', '.join(settings)}")


def parse_axes(axes: Sequence[str]) -> dict[str, Any]:
    """`axis=<YAML list>` strings -> {axis: values}, e.g. 'optim.seed=[0, 1]'."""
    out = {}
    for item in axes:
        axis, sep, text = item.partition("=")
        if not sep or not axis.strip():
            raise SweepError(f"--grid {item!r}: expected axis=<YAML list>, e.g. 'optim.seed=[0, 1]'")
        try:
            out[axis.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SweepError(f"--grid {item!r}: not YAML: {err}") from None
    return out


def normalise_grid(grid: Any) -> dict[str, list[dict[str, Any]]]:
    """Grid axes as {axis: [ {dotted key: value}, ... ]}.

    A dotted axis (`optim.seed: [0, 1]`) takes scalar values; a named axis
    (`frames: [{data.num_frames: 8, data.sampling_rate: 4}, ...]`) takes mappings of
    dotted keys, set together (linked settings).
    """
    if not isinstance(grid, dict):
        raise SweepError(f"grid: expected a mapping of axes, got {grid!r}")
    axes: dict[str, list[dict[str, Any]]] = {}
    problems = []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            problems.append(f"grid.{axis}: expected a non-empty list of values")
            continue
        points = []
        for i, value in enumerate(values):
            if isinstance(value, dict):
                bad = [k for k in value if not _is_dotted(k)]
                if bad:
                    problems.append(f"grid.{axis}[{i}]: keys must be section.field, got {bad}")
                points.append(dict(value))
            elif _is_dotted(axis):
                points.append({axis: value})
            else:
                problems.append(f"grid.{axis}[{i}]: a named axis takes mappings of section.field "
                                f"keys; use a dotted axis name for scalar values")
        axes[str(axis)] = points
    if problems:
        raise SweepError("invalid grid:\n  - " + "\n  - ".join(problems))
    return axes


def _is_dotted(key: Any) -> bool:
    parts = str(key).split(".")
    return len(parts) == 2 and all(parts)


def expand_grid(base: Config, grid: Mapping[str, list[dict[str, Any]]]) -> tuple[Trial, ...]:
    """The cross product of the axes, each point a validated Config.

    Raises SweepError listing every invalid trial ("trial 3 (...): masking.tau: ..."), two axes
    setting the same key, and duplicate trials (two points that make the same setting).
    """
    problems: list[str] = []
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    axes = list(grid.values()) or [[{}]]
    for index, combo in enumerate(itertools.product(*axes)):
        overrides: dict[str, Any] = {}
        for point in combo:
            clash = sorted(set(overrides) & set(point))
            if clash:
                problems.append(f"trial {index} ({_describe(overrides)}): {', '.join(clash)} "
                                f"set by two grid axes")
            overrides.update(point)
        try:
            cfg = replace(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
        except ConfigError as err:
            problems.append(f"trial {index} ({_describe(overrides)}): {err}")
            continue
        setting = setting_name(cfg, overrides)
        name = f"{setting}-s{cfg.optim.seed}"
        if name in seen:
            problems.append(f"trial {index} ({_describe(overrides)}): same setting as trial "
                            f"{seen[name]} ({name})")
            continue
        seen[name] = index
        trials.append(Trial(index, name, setting, overrides, cfg))
    if problems:
        raise SweepError("invalid sweep:\n  - " + "\n  - ".join(problems))
    return tuple(trials)


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def frames_label(cfg: Config) -> str:
    """Frame-rate setting as the paper writes it: frames x sampling stride, e.g. '16x2'."""
    return f"{cfg.data.num_frames}x{cfg.data.sampling_rate}"


def mask_label(cfg: Config) -> str:
    """How much the strategy masks: 'r0.5' (masking ratio), 'tau0.02', 'tau@r0.5' (calibrated)."""
    k = cfg.masking
    if k.strategy == "none":
        return ""
    if k.strategy == "mgtc_threshold":
        return f"tau{k.tau:g}" if k.tau is not None else f"tau@r{k.ratio:g}"
    return f"r{k.ratio:g}"


def setting_name(cfg: Config, overrides: Mapping[str, Any]) -> str:
    """'16x2-mgtc_ratio-r0.5' plus any other grid key as key=value (the seed is left out)."""
    parts = [frames_label(cfg), cfg.masking.strategy, mask_label(cfg)]
    parts += [f"{k.split('.', 1)[1]}={v}" for k, v in overrides.items() if k not in NAMED_KEYS]
    return "-".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Running


def resolve_tracking_uri(base: Config, explicit: str = "") -> str:
    """explicit, else the trainer's rule (`pipeline.tracking.resolve_tracking_uri`: the
    config's URI, MLFLOW_TRACKING_URI, or sqlite:///<run folder>/mlflow.db).

    A relative sqlite path is made absolute: trials run in other working directories.
    """
    from pipeline.tracking import resolve_tracking_uri as trainer_uri

    from pipeline.tracking import take_credentials

    uri = take_credentials(explicit) if explicit else trainer_uri(base)
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
    """The default trial: `pipeline.training.run_training`, then, when the data has a test
    split, the multi-view test (`pipeline.evaluate.evaluate`, test_clips x test_crops) of the
    last checkpoint, returned as test_* beside the training summary (the sweep logs them
    into the trial's run)."""
    from pipeline.evaluate import evaluate
    from pipeline.training import run_training

    summary = dict(run_training(cfg))
    if cfg.optim.mode != "finetune" or not cfg.data.test_manifest or not summary.get("checkpoint"):
        return summary
    test = evaluate(cfg, summary["checkpoint"], split="test", predictions=True)
    summary.update({f"test_{key}": value for key, value in test.items()})
    return summary


def summary_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """train_fn's result reduced to the canonical summary keys (finite numbers only)."""
    out: dict[str, float] = {}
    for key, accepted, _, _ in SUMMARY_METRICS:
        for name in accepted:
            value = metrics.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[key] = float(value)
                break
    return out


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

    from pipeline.tracking import run_folder

    train_fn = train_fn or train_and_test
    runs = Path(runs_dir).resolve() if runs_dir else run_folder(spec.base)
    uri = resolve_tracking_uri(spec.base, tracking_uri)
    experiment = spec.options.experiment or spec.base.tracking.experiment
    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, uri)
    run_name = f"{spec.options.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = client.create_run(exp_id, run_name=run_name, tags=_parent_tags(spec))
    parent_id = parent.info.run_id
    log(f"sweep {spec.options.name}: {len(spec.trials)} trials, MLflow parent run {parent_id} "
        f"({uri}, experiment {experiment!r})")
    out_dir = runs / "sweeps" / run_name
    try:
        _log_parent_params(client, parent_id, spec)
        configs = {t.name: trial_config(t, parent_run_id=parent_id, tracking_uri=uri,
                                        experiment=experiment, run_prefix=run_name)
                   for t in spec.trials}
        with ray_session(num_cpus=num_cpus):
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
        _log_parent_metrics(client, parent_id, results, rows)
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    outcome = SweepOutcome(parent_id, uri, exp_id, results, rows, out_dir)
    client.set_terminated(parent_id, "FINISHED" if outcome.ok else "FAILED")
    return outcome


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The experiment's id, creating it if needed; in a local SQLite store its artifacts go
    to mlartifacts/ beside the database file, as the trainer's embedded default does."""
    from pipeline.tracking import ensure_experiment, sqlite_artifacts

    return ensure_experiment(client, name, artifact_location=sqlite_artifacts(uri),
                             description=f"sweep {name}: runs compare frame rate x strategy x ratio x seed; "
                                         "each trial is a child of its sweep's parent run")


def _parent_tags(spec: SweepSpec) -> dict[str, str]:
    from pipeline.tracking import KIND_TAG

    commit = git_commit()
    return {
        KIND_TAG: "sweep",
        "mgtc_sweep": spec.options.name,
        "mgtc_base_config": spec.base_name,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
    }


def _log_parent_params(client: Any, run_id: str, spec: SweepSpec) -> None:
    from mlflow.entities import Param


    grid = json.dumps(spec.grid, sort_keys=False, default=str)
    params = {
        "sweep.name": spec.options.name,
        "sweep.base_config": spec.base_name,
        "sweep.grid": grid[:PARAM_LIMIT],
        "sweep.num_trials": len(spec.trials),
        "sweep.max_concurrent": spec.options.max_concurrent,
        "sweep.cpus_per_trial": spec.options.cpus_per_trial,
        "sweep.source": spec.source,
        "code_version": git_commit(),
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    # JSON round trip: tuples become lists, which safe_dump can write.
    base = json.loads(json.dumps(to_dict(spec.base)))
    client.log_text(run_id, yaml.safe_dump(base, sort_keys=False), "base_config.yaml")
    if spec.source and Path(spec.source).is_file():
        client.log_artifact(run_id, spec.source)


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


def find_child_run(client: Any, exp_id: str, parent_id: str, run_name: str, parent_start: int) -> str:
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
    from mlflow.entities import RunTag

    summary = summary_metrics(metrics or {})
    run_id = ""
    if metrics:
        run_id = next((str(metrics[k]) for k in RUN_ID_KEYS if metrics.get(k)), "")
    if not run_id:
        run_id = find_child_run(client, exp_id, parent_id, trial.name, parent_start)
    created = not run_id
    if created:
        run_id = client.create_run(exp_id, run_name=trial.name).info.run_id
    tags = trial_tags(trial, parent_id, sweep_name)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    _ensure_params(client, run_id, cfg)
    _ensure_metrics(client, run_id, metrics or {})
    if metrics is None:
        client.set_tag(run_id, "error", error.splitlines()[0][:ERROR_TAG_LIMIT] if error else "failed")
        client.log_text(run_id, error or "failed", "error.txt")
        client.set_terminated(run_id, "FAILED")
        return TrialResult(trial, "FAILED", summary, error, run_id)
    predictions = metrics.get("test_predictions")
    if isinstance(predictions, dict):
        client.log_dict(run_id, predictions, "test_predictions.json")
    else:
        predictions = None
    if created or client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "FINISHED")
    return TrialResult(trial, "FINISHED", summary, "", run_id, predictions)


def _param_text(value: Any) -> str:
    """As the trainer writes params: tuples as 'a,b', everything else str()."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)[:PARAM_LIMIT]


def _ensure_params(client: Any, run_id: str, cfg: Config) -> None:
    """Log the params the trainer logs (every `section.key` plus the short comparison names:
    num_frames, sampling_rate, effective_fps, strategy, mask_ratio, tau, ...) that the run
    does not have yet; a param already logged is never changed."""
    from mlflow.entities import Param

    from pipeline.tracking import summary_params

    have = client.get_run(run_id).data.params
    wanted = {**flat_params(cfg),
              **summary_params(cfg, world_size=cfg.scaling.num_workers, tau=cfg.masking.tau)}
    missing = [Param(k, _param_text(v)) for k, v in wanted.items() if k not in have]
    for start in range(0, len(missing), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run_id, params=missing[start : start + 100])


def _ensure_metrics(client: Any, run_id: str, result: Mapping[str, Any]) -> None:
    """Log the numbers of train_fn's result that the run lacks (wall time, test metrics, or
    everything when train_fn tracks nothing); a metric the trainer logged is left alone."""
    from mlflow.entities import Metric

    have = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    missing = [Metric(k, float(v), now, 0) for k, v in result.items()
               if k not in have and isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)]
    if missing:
        client.log_batch(run_id, metrics=missing)


# ---------------------------------------------------------------------------------------------
# Aggregating and reporting


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(results: Sequence[TrialResult]) -> list[dict[str, Any]]:
    """One row per setting (in grid order): mean and std over the seeds that finished.

    Row keys: setting, frames, num_frames, sampling_rate, strategy, mask, ratio, tau, seeds,
    ok, failed (names of failed trials), status ('ok', 'partial' or 'failed'), and
    <metric>_mean / <metric>_std for every summary metric, top1_ci_low / top1_ci_high (95% t
    interval of the mean over seeds; NaN below two seeds).
    """
    groups: dict[str, list[TrialResult]] = {}
    for r in results:
        groups.setdefault(r.trial.setting, []).append(r)
    rows = []
    for setting, members in groups.items():
        cfg = members[0].trial.cfg
        done = [r for r in members if r.status == "FINISHED"]
        failed = [r.trial.name for r in members if r.status != "FINISHED"]
        row: dict[str, Any] = {
            "setting": setting,
            "frames": frames_label(cfg),
            "num_frames": cfg.data.num_frames,
            "sampling_rate": cfg.data.sampling_rate,
            "strategy": cfg.masking.strategy,
            "mask": mask_label(cfg) or "full",
            "ratio": cfg.masking.ratio if cfg.masking.strategy != "none" else 0.0,
            "tau": cfg.masking.tau,
            "seeds": len(members),
            "ok": len(done),
            "failed": " ".join(failed),
            "status": "ok" if not failed else ("failed" if not done else "partial"),
        }
        for key, *_ in SUMMARY_METRICS:
            mean, std = _mean_std([r.metrics[key] for r in done if key in r.metrics])
            row[f"{key}_mean"], row[f"{key}_std"] = mean, std
        row["top1_ci_low"], row["top1_ci_high"] = stats.t_interval([r.metrics["top1"] for r in done
                                                                   if "top1" in r.metrics])
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v, 6) for k, v in row.items()})
    return buf.getvalue()


def trials_csv(results: Sequence[TrialResult]) -> str:
    buf = io.StringIO()
    keys = [k for k, *_ in SUMMARY_METRICS]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trial", "setting", "seed", "status", "run_id", *keys, "error"])
    for r in results:
        writer.writerow([r.trial.name, r.trial.setting, r.trial.cfg.optim.seed, r.status, r.run_id,
                         *[_fmt(r.metrics.get(k), 6) for k in keys],
                         r.error.splitlines()[0] if r.error else ""])
    return buf.getvalue()


def results_markdown(rows: Sequence[dict[str, Any]], results: Sequence[TrialResult] = ()) -> str:
    """The table of the issue: top-1 mean ± std over seeds, kept tokens, GFLOPs/view, clips/s,
    wall time; failed trials listed below it."""
    spec = {key: (title, digits) for key, _, title, digits in SUMMARY_METRICS}
    head = ["setting", "frames", "strategy", "mask", "seeds ok", *(spec[k][0] for k in TABLE_METRICS)]
    head.insert(6, "top-1 95% interval")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        seeds = f"{row['ok']}/{row['seeds']}" + (" (failed)" if row["status"] == "failed" else "")
        cells = [_pm(row[f"{k}_mean"], row[f"{k}_std"], spec[k][1]) for k in TABLE_METRICS]
        low, high = row.get("top1_ci_low", math.nan), row.get("top1_ci_high", math.nan)
        cells.insert(1, "-" if math.isnan(low) else f"[{low:.1f}, {high:.1f}]")
        lines.append("| " + " | ".join([row["setting"], row["frames"], row["strategy"], row["mask"],
                                         seeds, *cells]) + " |")
    failed = [r for r in results if r.status != "FINISHED"]
    if failed:
        lines += ["", "Failed trials:", ""]
        lines += [f"- `{r.trial.name}`: {(r.error.splitlines() or ['failed'])[0]}" for r in failed]
    return "\n".join(lines) + "\n"


def _style_maps(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """Colour per frame-rate setting, marker per strategy (stable across plots)."""
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    markers = {"none": "o", "random": "s", "running_cell": "D", "mgtc_ratio": "^",
               "mgtc_threshold": "v", "tube": "P"}
    frames = list(dict.fromkeys(r["frames"] for r in rows))
    return ({f: colours[i % len(colours)] for i, f in enumerate(frames)}, markers)


def dodge(xs: Sequence[float], fraction: float = 0.012) -> list[float]:
    """x positions with points of (nearly) equal x spread sideways, so that settings at the
    same cost (the fixed-budget study) do not hide each other; shifts are a `fraction` of
    the x range per point and keep the group centred on its true x."""
    finite = [x for x in xs if not math.isnan(x)]
    if not finite:
        return list(xs)
    span = (max(finite) - min(finite)) or abs(finite[0]) or 1.0
    step = fraction * span
    order = sorted((x, i) for i, x in enumerate(xs) if not math.isnan(x))
    groups: list[list[int]] = []
    for x, i in order:
        if groups and x - xs[groups[-1][0]] <= step:
            groups[-1].append(i)
        else:
            groups.append([i])
    out = list(xs)
    for group in groups:
        for k, i in enumerate(group):
            out[i] = xs[i] + (k - (len(group) - 1) / 2) * step
    return out


def accuracy_plot(rows: Sequence[dict[str, Any]], x_key: str, x_label: str, title: str,
                  chance: float | None = None):
    """Top-1 (mean, bars = 95% t interval over seeds) against one cost; colour = frames, marker = strategy,
    label = masking (r = ratio, tau = threshold); `chance` (%) draws the guessing level."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colours, markers = _style_maps(rows)
    fig = Figure(figsize=(6.8, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    drawn = [r for r in rows if not (math.isnan(r[f"{x_key}_mean"]) or math.isnan(r["top1_mean"]))]
    xs = dodge([r[f"{x_key}_mean"] for r in drawn])
    for x, row in zip(xs, drawn):
        y = row["top1_mean"]
        xerr = None if math.isnan(row[f"{x_key}_std"]) else row[f"{x_key}_std"]
        low = row.get("top1_ci_low", math.nan)
        yerr = None if math.isnan(low) else y - low  # 95% t interval of the mean over seeds
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=colours[row["frames"]],
                    marker=markers.get(row["strategy"], "o"), markersize=8, capsize=3, linestyle="")
        ax.annotate(row["mask"], (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=f) for f, c in colours.items()]
    used = dict.fromkeys(r["strategy"] for r in rows)
    handles += [Line2D([], [], color="grey", marker=markers.get(s, "o"), linestyle="", label=s)
                for s in used]
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="grey", linestyle="--", label=f"chance ({chance:.3g}%)"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xlabel(x_label + " (equal costs spread sideways)")
    ax.set_ylabel("top-1 (%), mean and 95% interval over seeds")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_artifacts(
    out_dir: Path, spec: SweepSpec, results: Sequence[TrialResult], rows: Sequence[dict[str, Any]],
    log: Callable[[str], None] | None = None,
) -> None:
    """Tables, plots and (best effort) mask / heat-map pictures of the sweep into out_dir."""
    log = log or say
    from pipeline.viz import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.csv").write_text(results_csv(rows))
    (out_dir / "trials.csv").write_text(trials_csv(results))
    study = study_markdown(spec, results, rows)
    (out_dir / "study.md").write_text(study)
    (out_dir / "results.md").write_text(results_markdown(rows, results) + "\n" + study)
    name = spec.options.name
    chance = 100.0 / spec.base.data.num_classes
    save_png(accuracy_plot(rows, "gflops_per_view", "encoder GFLOPs per view",
                           f"{name}: accuracy vs compute", chance), out_dir / "acc_vs_gflops.png")
    save_png(accuracy_plot(rows, "wall_time_s", "training wall-clock per trial (s, fit incl. validation)",
                           f"{name}: accuracy vs wall-clock", chance), out_dir / "acc_vs_wallclock.png")
    try:
        write_mask_pictures(out_dir, spec)
    except Exception as err:  # noqa: BLE001 - pictures are a bonus; the table must still land
        log(f"mask pictures skipped: {type(err).__name__}: {err}")


def key_differences(spec: SweepSpec, results: Sequence[TrialResult]) -> list[stats.Difference]:
    """`sweep.compare` pairs by paired bootstrap over the test videos (seed-averaged per
    video); a pair lacking predictions on either side is left out."""
    preds: dict[str, list[dict]] = {}
    for r in results:
        if r.status == "FINISHED" and r.predictions:
            preds.setdefault(r.trial.setting, []).append(r.predictions)
    return [stats.compare(a, b, preds[a], preds[b], seed=spec.base.optim.seed)
            for a, b in comparison_pairs(spec.options) if preds.get(a) and preds.get(b)]


def study_markdown(spec: SweepSpec, results: Sequence[TrialResult], rows: Sequence[dict[str, Any]]) -> str:
    """Key differences (paired bootstrap) and the statistical power of the test set."""
    diffs = key_differences(spec, results)
    videos = max((len(r.predictions["video_id"]) for r in results if r.predictions), default=0)
    accuracy = [row["top1_mean"] / 100 for row in rows if not math.isnan(row["top1_mean"])]
    typical = float(np.median(accuracy)) if accuracy else 0.6
    lines = ["## Key differences (paired bootstrap over test videos, 10000 resamples)", ""]
    lines += [stats.differences_markdown(diffs)] if diffs else ["(no comparison with test predictions on both sides)", ""]
    lines += ["## Power", "",
              f"{videos} test videos per model. With independent errors at the median top-1 "
              f"({100 * typical:.0f}%), a difference of {stats.planning_resolvable(videos, typical):.1f} points "
              "is resolvable (5% two-sided, 80% power); paired on the same videos, the figure is "
              "`resolvable` in the table above (it falls with the share of videos the two settings "
              "disagree on). Seeds: the 95% interval per setting is a t interval over the seeds.", ""]
    return "\n".join(lines)


def metric_key(name: str) -> str:
    """`name` with the characters MLflow refuses in metric keys (e.g. the '@' of 'tau@r0.5')
    replaced by '_'; MLflow allows letters, digits, '_', '-', '.', ' ', ':' and '/'."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _log_parent_metrics(client: Any, run_id: str, results: Sequence[TrialResult],
                        rows: Sequence[dict[str, Any]]) -> None:
    """trials_finished / trials_failed and, per setting, top1/<setting> and
    gflops_per_view/<setting> (means over seeds), for the parent's charts in the UI."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric("trials_finished", sum(r.status == "FINISHED" for r in results), now, 0),
               Metric("trials_failed", sum(r.status != "FINISHED" for r in results), now, 0)]
    for row in rows:
        for key in ("top1", "gflops_per_view"):
            if not math.isnan(row[f"{key}_mean"]):
                metrics.append(Metric(metric_key(f"{key}/{row['setting']}"), row[f"{key}_mean"], now, 0))
    client.log_batch(run_id, metrics=metrics)


# ---------------------------------------------------------------------------------------------
# Pictures for the parent run


def picture_strategies(trials: Sequence[Trial], frames: str) -> list[tuple[str, str, float, float | None]]:
    """(label, strategy, ratio, tau) rows for the mask picture of one frame-rate setting.

    One row per distinct masking setting the sweep trains at that frame rate. A calibrated
    threshold uses the tau stored with the shards; it is left out when that is unreadable.
    """
    rows: dict[str, tuple[str, str, float, float | None]] = {}
    for t in trials:
        k = t.cfg.masking
        label = f"{k.strategy} {mask_label(t.cfg)}".strip()
        if frames_label(t.cfg) != frames or label in rows:
            continue
        tau = k.tau
        if k.strategy == "mgtc_threshold" and tau is None:
            tau = calibrated_tau(t.cfg)
            if tau is None:
                continue
            label = f"{label} (tau={tau:.3g})"
        rows[label] = (label, k.strategy, k.ratio, tau)
    return list(rows.values())


def calibrated_tau(cfg: Config) -> float | None:
    """The calibrated tau of an mgtc_threshold config (None when the shards have none)."""
    from pipeline.shards import resolve_tau

    try:
        return resolve_tau(cfg)
    except (OSError, ValueError, KeyError) as err:
        print(f"no calibrated tau for {frames_label(cfg)}: {type(err).__name__}: {err}")
        return None


def first_video(cfg: Config) -> str:
    """The first usable video of the test, val or train manifest ('' when there is none)."""
    from pipeline.manifest import read_manifest

    for manifest in (cfg.data.test_manifest, cfg.data.val_manifest, cfg.data.train_manifest):
        if manifest:
            usable = [row.path for row in read_manifest(manifest) if not row.error]
            if usable:
                return usable[0]
    return ""


def write_mask_pictures(out_dir: Path, spec: SweepSpec) -> list[Path]:
    """masks_<frames>.png (one row per strategy) and motion_<frames>.png for one sweep video."""
    from pipeline.viz import heatmap_figure, keep_masks, load_clip, mask_figure, save_png

    video = spec.options.mask_video or first_video(spec.base)
    if not video:
        raise FileNotFoundError("no video for the mask pictures (set sweep.mask_video)")
    written = []
    for frames in dict.fromkeys(frames_label(t.cfg) for t in spec.trials):
        cfg = next(t.cfg for t in spec.trials if frames_label(t.cfg) == frames)
        clip, scores = load_clip(video, cfg.data.num_frames, cfg.data.sampling_rate,
                                 cfg.data.input_size, cfg.data.short_side, cfg.model.tubelet,
                                 cfg.model.patch, cfg.masking.score_mode)
        rows = picture_strategies(spec.trials, frames)
        keeps = keep_masks(scores, rows)
        title = f"{Path(video).name}, {frames} (frames x stride)"
        written.append(save_png(mask_figure(clip, keeps, cfg.model.tubelet, cfg.model.patch,
                                            title=title), out_dir / f"masks_{frames}.png"))
        written.append(save_png(heatmap_figure(clip, scores, cfg.model.tubelet, cfg.model.patch,
                                               title=f"motion, {title}"),
                                out_dir / f"motion_{frames}.png"))
    return written
