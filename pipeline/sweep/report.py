"""A sweep's results: per-trial summaries, one row per setting (mean and spread over seeds),
the CSV and markdown tables, the paired comparisons and power note of study.md."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline import stats
from pipeline.sweep.spec import SweepSpec, Trial, comparison_pairs, frames_label, mask_label
from pipeline.tracking import metric_key

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


@dataclass
class TrialResult:
    trial: Trial
    status: str  # "FINISHED" or "FAILED"
    metrics: dict[str, float] = field(default_factory=dict)  # canonical summary keys
    error: str = ""
    run_id: str = ""
    predictions: dict[str, list[int]] | None = None  # per test video: video_id, label, pred


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


def key_differences(spec: SweepSpec, results: Sequence[TrialResult]) -> list[stats.Difference]:
    """`sweep.compare` pairs by paired bootstrap over the test videos (seed-averaged per
    video); a pair lacking predictions on either side is left out."""
    preds: dict[str, list[dict]] = {}
    for r in results:
        if r.status == "FINISHED" and r.predictions:
            preds.setdefault(r.trial.setting, []).append(r.predictions)
    return [stats.compare(a, b, preds[a], preds[b], seed=spec.base.optim.seed)
            for a, b in comparison_pairs(spec.options) if preds.get(a) and preds.get(b)]


def per_class_accuracy(results: Sequence[TrialResult], num_classes: int) -> dict[str, list[float]]:
    """{setting: top-1 (%) per class}, each the mean over the setting's finished seeds of the
    share of that class's test videos predicted right (NaN for a class with no test video)."""
    by_setting: dict[str, list[np.ndarray]] = {}
    for r in results:
        if r.status != "FINISHED" or not r.predictions:
            continue
        labels = np.asarray(r.predictions["label"])
        right = labels == np.asarray(r.predictions["pred"])
        counts = np.bincount(labels, minlength=num_classes)[:num_classes]
        hits = np.bincount(labels, weights=right, minlength=num_classes)[:num_classes]
        with np.errstate(invalid="ignore", divide="ignore"):
            by_setting.setdefault(r.trial.setting, []).append(100.0 * hits / counts)
    return {k: np.mean(v, axis=0).tolist() for k, v in by_setting.items()}


def per_class_markdown(results: Sequence[TrialResult], class_names: Sequence[str]) -> str:
    """The per-class table of study.md: which classes each setting gets right (a setting can
    match another's mean top-1 while failing other classes)."""
    table = per_class_accuracy(results, len(class_names))
    if not table:
        return ""
    lines = ["## Top-1 per class (%, mean over seeds)", "",
             "| setting | " + " | ".join(class_names) + " |",
             "|---|" + "---|" * len(class_names)]
    lines += [f"| {setting} | " + " | ".join("" if math.isnan(v) else f"{v:.1f}" for v in values) + " |"
              for setting, values in table.items()]
    return "\n".join(lines) + "\n"


def study_markdown(spec: SweepSpec, results: Sequence[TrialResult], rows: Sequence[dict[str, Any]],
                   class_names: Sequence[str] = ()) -> str:
    """Key differences (paired bootstrap), the statistical power of the test set and, given
    the class names, the per-class top-1 of every setting."""
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
    if class_names:
        lines += [per_class_markdown(results, class_names)]
    return "\n".join(lines)


def parent_metrics(results: Sequence[TrialResult], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The parent run's numbers: trials_finished / trials_failed and, per setting,
    top1/<setting> and gflops_per_view/<setting> (means over seeds), for its charts in the UI."""
    out = {"trials_finished": float(sum(r.status == "FINISHED" for r in results)),
           "trials_failed": float(sum(r.status != "FINISHED" for r in results))}
    for row in rows:
        for key in ("top1", "gflops_per_view"):
            if not math.isnan(row[f"{key}_mean"]):
                out[metric_key(f"{key}/{row['setting']}")] = row[f"{key}_mean"]
    return out
