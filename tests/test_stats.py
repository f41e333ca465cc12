"""Study statistics: t interval over seeds, paired bootstrap over test videos, power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import stats


def test_t_interval_matches_the_textbook():
    low, high = stats.t_interval([60.0, 70.0, 80.0])
    # mean 70, std 10, n 3: t(0.975, 2) = 4.303 -> half width 4.303 * 10 / sqrt(3) = 24.84
    assert low == pytest.approx(70 - 24.84, abs=0.01) and high == pytest.approx(70 + 24.84, abs=0.01)
    assert all(math.isnan(v) for v in stats.t_interval([50.0]))


def test_per_video_correct_averages_seeds_on_common_videos():
    runs = [{"video_id": [0, 1, 2], "label": [1, 1, 0], "pred": [1, 0, 0]},
            {"video_id": [2, 0, 1], "label": [0, 1, 1], "pred": [1, 1, 1]}]
    ids, correct = stats.per_video_correct(runs)
    assert ids.tolist() == [0, 1, 2] and correct.tolist() == [1.0, 0.5, 0.5]


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = (rng.random(800) < 0.6).astype(float)
    better = base.copy()
    flip = np.flatnonzero(base == 0)[:80]  # +10 points on the same videos
    better[flip] = 1.0
    diff, low, high, p = stats.paired_bootstrap(better, base)
    # SE of a 10% discordance over 800 videos: 100 * sqrt(0.1 * 0.9 / 800) = 1.06 points
    assert diff == pytest.approx(10.0) and 7 < low < 9 and 11 < high < 13 and p < 0.001
    same = base[rng.permutation(800)]  # same accuracy, unrelated errors
    diff, low, high, p = stats.paired_bootstrap(same, base)
    assert low < 0 < high and p > 0.05
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_bootstrap(base, base[:10])


def test_bootstrap_interval_covers_the_truth_at_about_the_nominal_rate():
    """200 test sets of 400 videos from two models 5 points apart: the 95% interval holds
    the true difference in about 190 of them (measured 188; binomial sd ~3)."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        a = (rng.random(400) < 0.65).astype(float)
        b = (rng.random(400) < 0.60).astype(float)
        _, low, high, _ = stats.paired_bootstrap(a, b, resamples=2000)
        hits += low <= 5.0 <= high
    assert 180 <= hits <= 198


def test_resolvable_difference_shrinks_with_videos_and_pairing():
    assert stats.planning_resolvable(800, 0.6) == pytest.approx(100 * 2.8016 * math.sqrt(0.48 / 800), rel=1e-3)
    assert stats.planning_resolvable(3200, 0.6) == pytest.approx(stats.planning_resolvable(800, 0.6) / 2, rel=1e-6)
    assert stats.resolvable_difference(800, 0.2) < stats.planning_resolvable(800, 0.6)


def test_compare_and_table():
    a = [{"video_id": list(range(10)), "label": [0] * 10, "pred": [0] * 8 + [1] * 2}]
    b = [{"video_id": list(range(10)), "label": [0] * 10, "pred": [0] * 5 + [1] * 5}]
    d = stats.compare("A", "B", a, b, resamples=500)
    assert (d.videos, d.diff, d.discordant) == (10, pytest.approx(30.0), pytest.approx(0.3))
    assert "| A - B | 10 | +30.0 |" in stats.differences_markdown([d])
    with pytest.raises(ValueError, match="share no test videos"):
        stats.compare("A", "B", a, [{"video_id": [99], "label": [0], "pred": [0]}])
