"""A sweep file: its base config, grid axes and options, expanded into validated trials.

    base: jobs/configs/synthetic_tiny.yaml     # a training config path, or an inline mapping
    set: ["optim.epochs=2"]                    # optional overrides applied to base
    grid:                                      # axes, crossed in file order
      frames:                                  # a named axis: linked settings, one mapping each
        - {data.num_frames: 8, data.sampling_rate: 4}
        - {data.num_frames: 16, data.sampling_rate: 2}
      optim.seed: [0, 1, 2]                    # a dotted axis: one value each
    sweep: {name: paper, max_concurrent: 0, cpus_per_trial: 0}

Every trial config is built and validated when the file is loaded, before Ray starts; a bad
trial is reported by index, name and field. The `sweep:` options go through the training
config's conversion (`config.coerce_fields`): a wrong type or unknown option is named.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pipeline.config import Config, ConfigError, coerce_fields, load_config, replace

SEED_KEY = "optim.seed"
# Keys that the trial name already spells out; any other grid key is appended as key=value.
NAMED_KEYS = frozenset({
    "data.num_frames", "data.sampling_rate", "masking.strategy", "masking.ratio", "masking.tau",
    "masking.calibrated", SEED_KEY,
})


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
    """The `sweep:` section, converted by the training config's rules (`config.coerce_fields`)."""
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: expected a mapping, got {raw!r}")
    try:
        opts = SweepOptions(**{"name": default_name, **coerce_fields(SweepOptions, raw, "sweep")})
    except ConfigError as err:
        raise SweepError(str(err)) from None
    problems = []
    if not opts.name or not str(opts.name).replace("-", "").replace("_", "").replace(".", "").isalnum():
        problems.append(f"sweep.name={opts.name!r}: use letters, digits, '-', '_' or '.'")
    if opts.max_concurrent < 0:
        problems.append(f"sweep.max_concurrent={opts.max_concurrent!r}: an integer >= 0 (0 = from CPUs)")
    if opts.cpus_per_trial < 0:
        problems.append(f"sweep.cpus_per_trial={opts.cpus_per_trial!r}: a number >= 0 (0 = from config)")
    if any(len(c.split(" vs ")) != 2 for c in opts.compare):
        problems.append(f"sweep.compare={list(opts.compare)!r}: a list of 'SETTING_A vs SETTING_B' strings")
    if problems:
        raise SweepError("invalid sweep options:\n  - " + "\n  - ".join(problems))
    return opts


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
