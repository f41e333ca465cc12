"""Invariants of the token-selection strategies (pure functions, no Ray)."""

import math

import numpy as np
import pytest
import torch

from pipeline.selection import (
    STRATEGIES,
    Selection,
    calibrate_tau,
    gather_tokens,
    ids_to_mask,
    mgtc_ratio_keep,
    mgtc_threshold_keep,
    num_kept,
    restore_tokens,
    running_cell_keep,
    running_cell_pattern,
    pretrain_visible,
    select_tokens,
    select_views,
)

GRID = (8, 14, 14)
N = 8 * 14 * 14


def _scores(batch=3, grid=GRID, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(batch, *grid, generator=g)
    s[:, 0] = float("inf")
    return s


def _check_sorted_unique(sel: Selection):
    for b in range(sel.ids_keep.shape[0]):
        row = sel.ids_keep[b]
        if sel.keep_mask is not None:
            row = row[sel.keep_mask[b]]
        assert torch.all(row[1:] > row[:-1]), "kept ids must be strictly ascending (sorted, unique)"
        assert row.min() >= 0 and row.max() < N


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_every_strategy_keeps_sorted_unique_ids(strategy, ratio):
    sel = select_tokens(
        strategy, scores=_scores(), ratio=ratio, tau=0.5, generator=torch.Generator().manual_seed(1)
    )
    _check_sorted_unique(sel)


@pytest.mark.parametrize("strategy", ["random", "mgtc_ratio", "running_cell"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_fixed_ratio_counts_are_exact(strategy, ratio):
    sel = select_tokens(strategy, scores=_scores(), ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert sel.keep_mask is None
    assert sel.ids_keep.shape == (3, num_kept(N, ratio)) == (3, round((1 - ratio) * N))


def test_none_keeps_everything():
    sel = select_tokens("none", grid=GRID, batch=2)
    assert torch.equal(sel.ids_keep, torch.arange(N).expand(2, N))


def test_tube_mask_is_identical_across_slices():
    sel = select_tokens("tube", grid=GRID, batch=4, ratio=0.9, generator=torch.Generator().manual_seed(3))
    keep = ids_to_mask(sel, N).reshape(4, *GRID)
    assert torch.equal(keep, keep[:, :1].expand_as(keep))
    assert keep[:, 0].sum(dim=(1, 2)).eq(196 - int(0.9 * 196)).all()  # VideoMAE: int(ratio * HW)
    assert not torch.equal(keep[0], keep[1]), "clips draw their own tube"


def test_running_cell_matches_videomae_v2_pattern():
    # VideoMAE V2 RunningCellMaskingGenerator at 0.5: slices of phase 0 cycle through these
    # 2x2 masks (1 = masked), raster order, one position shift per slice.
    expected_masked = [[[1, 0], [0, 1]], [[0, 0], [1, 1]], [[0, 1], [1, 0]], [[1, 1], [0, 0]]]
    keep = running_cell_pattern((8, 14, 14), 0.5, phase=0)
    for t in range(8):
        cell = (~keep[t, :2, :2]).int().tolist()
        assert cell == expected_masked[t % 4]
        # the 2x2 pattern tiles the whole slice
        assert torch.equal(keep[t], keep[t, :2, :2].repeat(7, 7))
    # each position visible in exactly 2 of every 4 slices, 98 visible per slice
    assert keep[:4].sum(dim=0).eq(2).all()
    assert keep.sum(dim=(1, 2)).eq(98).all()


def test_running_cell_is_deterministic_without_generator():
    a = running_cell_keep(3, GRID, 0.5)
    b = running_cell_keep(3, GRID, 0.5)
    assert torch.equal(a.ids_keep, b.ids_keep)
    assert torch.equal(a.ids_keep[0], a.ids_keep[2])


def test_random_is_seeded():
    a = select_tokens("random", grid=GRID, batch=2, ratio=0.5, generator=torch.Generator().manual_seed(7))
    b = select_tokens("random", grid=GRID, batch=2, ratio=0.5, generator=torch.Generator().manual_seed(7))
    c = select_tokens("random", grid=GRID, batch=2, ratio=0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.ids_keep, c.ids_keep)


def test_mgtc_ratio_keeps_the_highest_scores_slice_zero_first():
    scores = _scores(batch=2)
    sel = mgtc_ratio_keep(scores, 0.5)
    flat = scores.reshape(2, -1)
    for b in range(2):
        kept = flat[b, sel.ids_keep[b]]
        dropped_mask = torch.ones(N, dtype=torch.bool)
        dropped_mask[sel.ids_keep[b]] = False
        assert kept.min() >= flat[b, dropped_mask].max()
        assert set(range(196)) <= set(sel.ids_keep[b].tolist()), "slice 0 always kept"


def test_mgtc_ratio_ties_keep_the_earlier_token():
    scores = torch.zeros(1, 2, 2, 2)
    scores[:, 0] = float("inf")
    sel = mgtc_ratio_keep(scores, 0.25)  # keep 6 of 8: slice 0 + the first two tied tokens
    assert sel.ids_keep.tolist() == [[0, 1, 2, 3, 4, 5]]


def test_mgtc_threshold_drops_below_tau_and_pads():
    scores = _scores(batch=4)
    sel = mgtc_threshold_keep(scores, 0.6)
    assert sel.keep_mask is not None
    flat = scores.reshape(4, -1)
    for b in range(4):
        ids = sel.ids_keep[b][sel.keep_mask[b]]
        assert torch.equal(ids, (flat[b] >= 0.6).nonzero().squeeze(1))
        assert not sel.keep_mask[b, len(ids):].any()
    assert len(set(sel.lengths.tolist())) > 1, "lengths vary per clip"


def test_gather_then_restore_is_identity_on_kept_tokens():
    x = torch.randn(3, N, 5)
    sel = mgtc_ratio_keep(_scores(), 0.5)
    kept = gather_tokens(x, sel.ids_keep)
    back = restore_tokens(kept, sel.ids_keep, N)
    mask = ids_to_mask(sel, N)
    assert torch.equal(back[mask], x[mask])
    assert back[~mask].abs().sum() == 0
    assert torch.equal(gather_tokens(back, sel.ids_keep), kept)


def test_calibrate_tau_hits_the_target_ratio():
    scores = _scores(batch=20).numpy()
    for ratio in (0.1, 0.25, 0.5):
        tau = calibrate_tau(scores, ratio)
        dropped = (scores < tau).mean()
        assert abs(dropped - ratio) < 1.0 / scores.size + 1e-9
    assert calibrate_tau(scores, 0.0) == 0.0
    with pytest.raises(ValueError, match="slice 0 is always kept"):
        calibrate_tau(scores, 0.95)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(strategy="bogus", grid=GRID, batch=1), "strategy='bogus' is unknown; allowed: none, random"),
        (dict(strategy="random", grid=GRID, batch=1, ratio=1.0), r"ratio=1.0 must be a masking ratio in \[0, 1\)"),
        (dict(strategy="random", grid=GRID, batch=1, ratio=-0.1), "ratio=-0.1"),
        (dict(strategy="mgtc_threshold", scores=torch.ones(1, 2, 2, 2), tau=-1.0), "tau=-1.0 must be"),
        (dict(strategy="mgtc_ratio", grid=GRID, batch=1), "needs motion scores"),
        (dict(strategy="running_cell", grid=GRID, batch=1, ratio=0.1), "running_cell needs"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    strategy = kwargs.pop("strategy")
    with pytest.raises(ValueError, match=match):
        select_tokens(strategy, **kwargs)


def test_calibrated_tau_reproduces_ratio_through_threshold_strategy():
    scores = _scores(batch=8)
    tau = calibrate_tau(scores.numpy(), 0.25)
    sel = mgtc_threshold_keep(scores, tau)
    assert abs(1 - sel.lengths.sum().item() / scores.numel() - 0.25) < 1e-3
    assert np.isfinite(tau)


def test_eval_selection_is_deterministic_per_view():
    grid = (4, 2, 2)
    scores = torch.rand(3, *grid)
    ids, views = torch.tensor([5, 5, 9]), torch.tensor([0, 1, 0])
    a = select_views("random", scores, ids, views, ratio=0.5).ids_keep
    b = select_views("random", scores[[2, 0]], ids[[2, 0]], views[[2, 0]], ratio=0.5).ids_keep
    assert torch.equal(a[[2, 0]], b)  # same (video, view) -> same tokens, whatever the batch
    assert not torch.equal(a[0], a[1])  # views of one video differ
    assert a.shape == (3, 8)
    cell = select_views("running_cell", scores, ids, views, ratio=0.5).ids_keep
    assert torch.equal(cell, select_tokens("running_cell", grid=grid, batch=3, ratio=0.5).ids_keep)
    mgtc = select_views("mgtc_ratio", scores, ids, views, ratio=0.5).ids_keep
    assert torch.equal(mgtc, select_tokens("mgtc_ratio", scores=scores, ratio=0.5).ids_keep)
    other_seed = select_views("random", scores, ids, views, ratio=0.5, seed=1).ids_keep
    assert not torch.equal(a, other_seed)  # the seed decides the views' draws


def test_pretrain_visible_is_a_fixed_size_subset_of_the_kept_tokens():
    grid, n = (4, 2, 2), 16
    scores = torch.rand(6, *grid)
    scores[:, 0] = math.inf
    kept = select_tokens("mgtc_ratio", scores=scores, ratio=0.25).ids_keep  # [6, 12]
    for mode in ("tube", "random"):
        visible = pretrain_visible(kept, grid, 0.5, mode, torch.Generator().manual_seed(0))
        assert visible.shape == (6, 12 - int(0.5 * 12))
        for v, k in zip(visible, kept):
            assert set(v.tolist()) <= set(k.tolist())
            assert torch.equal(v, v.sort().values) and len(set(v.tolist())) == len(v)
    # Tube: with every token kept, the visible set is whole tubes (all slices of a position).
    full = torch.arange(n).expand(3, n)
    visible = pretrain_visible(full, grid, 0.5, "tube", torch.Generator().manual_seed(1))
    for row in visible:
        positions = row % (grid[1] * grid[2])
        assert all((positions == p).sum() == grid[0] for p in positions.unique())
    with pytest.raises(ValueError, match="pretrain_ratio"):
        pretrain_visible(kept[:, :1], grid, 0.5, "tube", torch.Generator())
