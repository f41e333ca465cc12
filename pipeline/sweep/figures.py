"""A sweep's pictures: accuracy against compute and against wall-clock (matplotlib), the
mask and motion pictures of one video per frame-rate setting; `write_artifacts` puts them
beside the tables in the parent run's folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.config import Config
from pipeline.sweep.report import TrialResult, results_csv, results_markdown, study_markdown, trials_csv
from pipeline.sweep.spec import SweepSpec, Trial, frames_label, mask_label


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


def point_label(row: dict[str, Any]) -> str:
    """A point's label: the masking (r = ratio, tau = threshold, full) and any other grid key
    of its setting ('r0.5 score_mode=compensated'), so settings that differ only there
    (same frames and strategy: same colour and marker) still read apart."""
    # `spec.setting_name`: frames-strategy[-masking], then the other keys as key=value.
    named = "-".join([row["frames"], row["strategy"], *([] if row["mask"] == "full" else [row["mask"]])])
    extra = row["setting"][len(named) + 1:]
    return f"{row['mask']} {extra}" if extra else row["mask"]


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
        ax.annotate(point_label(row), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
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
    log: Callable[[str], None] = print,
) -> None:
    """Tables, plots and (best effort) mask / heat-map pictures of the sweep into out_dir."""
    from pipeline.viz import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.csv").write_text(results_csv(rows))
    (out_dir / "trials.csv").write_text(trials_csv(results))
    from pipeline.trainer import training_class_names

    names = training_class_names(spec.base) or [str(c) for c in range(spec.base.data.num_classes)]
    study = study_markdown(spec, results, rows, names)
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
