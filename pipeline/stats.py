"""Statistics of a study: intervals over seeds, paired bootstrap over test videos, power.

A sweep trains every setting with several seeds and tests each model on the same test
videos. Two sources of noise: the seed (init, data order, augmentation) and the finite test
set. Reported per setting: mean +- sample std over seeds and a 95% t interval of the mean.
For a key difference A - B the test videos are the unit: per video, correctness averaged
over A's seeds minus the same for B, resampled with replacement (paired bootstrap; the
same videos in both arms, so per-video difficulty cancels), giving a 95% percentile
interval and a two-sided bootstrap p-value. The interval covers test-set noise and, via
the seed average, part of the seed noise; with 3 seeds the seed spread is read from the
per-setting std, not resolved finely.

Pure functions on numpy arrays; no Ray, no MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

Z_975 = 1.959964  # two-sided 5% level
Z_80 = 0.841621  # 80% power


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the t interval of the mean of `values` (NaN for fewer than two)."""
    from scipy import stats as st

    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    half = st.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def per_video_correct(predictions: Sequence[Mapping[str, Sequence[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """(video ids [V] ascending, correct [V] float in [0, 1]: the share of the given runs
    (seeds) that classified the video right). Only videos every run predicted are kept.

    predictions: one mapping per run with equal-length "video_id", "label", "pred" lists.
    """
    if not predictions:
        return np.zeros(0, np.int64), np.zeros(0)
    per_run = []
    for p in predictions:
        ids = np.asarray(p["video_id"], np.int64)
        per_run.append(dict(zip(ids.tolist(), (np.asarray(p["pred"]) == np.asarray(p["label"])).tolist())))
    common = sorted(set.intersection(*(set(r) for r in per_run)))
    correct = np.array([[r[v] for v in common] for r in per_run], dtype=np.float64).mean(axis=0)
    return np.asarray(common, np.int64), correct


@dataclass(frozen=True)
class Difference:
    """A - B in top-1 points over the videos both tested. `discordant`: share of videos on
    which the two differ (averaged over seeds, |a - b|), what a paired test's power rests on;
    `resolvable`: the difference this many videos resolve at 5% two-sided with 80% power."""

    a: str
    b: str
    videos: int
    diff: float
    low: float
    high: float
    p_value: float
    discordant: float
    resolvable: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """a, b: [V] per-video correctness (0..1) of two settings on the same videos.

    Returns (mean difference, low, high, two-sided p) in points (x 100): the percentile
    interval of the mean of a - b over videos resampled with replacement, and p = twice
    the smaller tail share of resampled means on either side of 0 (capped at 1).
    """
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal-length non-empty per-video arrays, got {a.shape} and {b.shape}")
    d = (a - b) * 100.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return float(d.mean()), float(low), float(high), float(p)


def resolvable_difference(videos: int, discordant: float) -> float:
    """Smallest paired difference (points) detectable at 5% two-sided with 80% power when a
    share `discordant` of the videos differ between the arms (normal approximation)."""
    if videos <= 0:
        return math.nan
    return 100.0 * (Z_975 + Z_80) * math.sqrt(max(discordant, 1e-12) / videos)


def planning_resolvable(videos: int, accuracy: float = 0.6) -> float:
    """The same for independent errors (no pairing benefit; discordance 2 p (1 - p)): the
    conservative figure for planning a test-set size before any run."""
    return resolvable_difference(videos, 2 * accuracy * (1 - accuracy))


def compare(name_a: str, name_b: str, preds_a: Sequence[Mapping], preds_b: Sequence[Mapping], *,
            resamples: int = 10000, seed: int = 0) -> Difference:
    """Paired bootstrap of setting A against B (each: one predictions mapping per seed)."""
    ids_a, ca = per_video_correct(preds_a)
    ids_b, cb = per_video_correct(preds_b)
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    if len(common) == 0:
        raise ValueError(f"{name_a} and {name_b} share no test videos with predictions")
    a, b = ca[ia], cb[ib]
    diff, low, high, p = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    discordant = float(np.abs(a - b).mean())
    return Difference(name_a, name_b, len(common), diff, low, high, p, discordant,
                      resolvable_difference(len(common), discordant))


def differences_markdown(diffs: Sequence[Difference]) -> str:
    """The key differences as a Markdown table."""
    lines = ["| A - B | videos | difference (points) | 95% interval | p | discordant | resolvable (80% power) |",
             "|---|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d.a} - {d.b} | {d.videos} | {d.diff:+.1f} | [{d.low:+.1f}, {d.high:+.1f}] | "
                     f"{d.p_value:.3f} | {d.discordant:.2f} | {d.resolvable:.1f} |")
    return "\n".join(lines) + "\n"
