"""Motion scores: numpy vs torch, the moving-square invariant, scores from shard cells."""

import numpy as np
import pytest
import torch

from pipeline.motion import (
    boundary_distance,
    cell_diff_maps,
    token_scores,
    token_scores_from_cells,
    token_scores_torch,
)
from pipeline.selection import mgtc_ratio_keep, mgtc_threshold_keep
from tests.helpers.videos import clip_frames, moving_square_boxes, moving_square_frames


def moving_square(frames=16, size=64, square=16, step=2, left=4, top=24):
    """The helpers' exact moving square (moving right `step` px per frame) and its top-left
    (y, x) per frame: frames [F, H, W, 3] uint8, where [(y, x)] * F."""
    boxes = moving_square_boxes(frames=frames, size=size, square=square, step=step, top=top, left=left)
    clip = moving_square_frames(frames=frames, size=size, square=square, step=step, top=top, left=left)
    return clip, [(int(y0), int(x0)) for y0, _, x0, _ in boxes]


def touched_tokens(where, square, tubelet, patch, grid, mode="boundary"):
    """Expected moving tokens: patches the square covers in any frame the score compares.

    boundary: frames of tubelet t-1 and t; consecutive: tubelet t and the frame before it.
    """
    t_, h_, w_ = grid
    moving = np.zeros(grid, dtype=bool)
    for t in range(1, t_):
        first = (t - 1) * tubelet if mode == "boundary" else t * tubelet - 1
        for f in range(first, (t + 1) * tubelet):
            y, x = where[f]
            moving[t, y // patch : (y + square - 1) // patch + 1, x // patch : (x + square - 1) // patch + 1] = True
    return moving


@pytest.mark.parametrize("mode", ["boundary", "consecutive"])
def test_numpy_and_torch_agree(mode):
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, (2, 8, 32, 48, 3), dtype=np.uint8)
    ref = np.stack([token_scores(c, 2, 16, mode) for c in clips])
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # [B, 3, T, H, W]
    got_u8 = token_scores_torch(x, 2, 16, mode).numpy()
    got_f = token_scores_torch(x.float() / 255, 2, 16, mode).numpy()
    assert ref.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(got_u8, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_f, ref, rtol=1e-5, atol=1e-6)
    assert np.isinf(ref[:, 0]).all() and np.isfinite(ref[:, 1:]).all()


def test_boundary_mode_compares_last_frame_of_t_with_first_of_t_minus_1():
    clip = np.zeros((6, 16, 16, 3), dtype=np.uint8)
    clip[3] = 255  # last frame of tubelet 1 (frames 2, 3): differs from frame 0 -> score 1
    scores = token_scores(clip, tubelet=2, patch=16)
    assert scores[1, 0, 0] == pytest.approx(1.0)
    assert scores[2, 0, 0] == pytest.approx(0.0)  # frames 5 vs 2: both black
    assert boundary_distance(2) == 3


@pytest.mark.parametrize("mode", ["boundary", "consecutive"])
def test_moving_square_tokens_are_exactly_the_ones_above_tau(mode):
    frames, where = moving_square()
    scores = token_scores(frames, tubelet=2, patch=16, mode=mode)
    expected = touched_tokens(where, 16, 2, 16, scores.shape, mode)
    above = scores > 0.002
    above[0] = False  # slice 0 is +inf by definition
    assert np.array_equal(above, expected)
    # and MGTC at the matching ratio keeps exactly those tokens plus slice 0
    n_keep = int(expected.sum()) + scores[0].size
    ratio = 1 - n_keep / scores.size
    sel = mgtc_ratio_keep(torch.from_numpy(scores)[None], ratio)
    kept = np.zeros(scores.size, dtype=bool)
    kept[sel.ids_keep[0].numpy()] = True
    expected_kept = expected.copy()
    expected_kept[0] = True
    assert np.array_equal(kept.reshape(scores.shape), expected_kept)
    thr = mgtc_threshold_keep(torch.from_numpy(scores)[None], 0.002)
    assert int(thr.lengths[0]) == n_keep


@pytest.mark.parametrize(
    "shape, match",
    [((7, 32, 32, 3), "num_frames=7 must be a positive multiple of tubelet=2"),
     ((8, 30, 32, 3), "height=30 must be a positive multiple of patch=16"),
     ((8, 32, 32), r"frames must be \[T, H, W, 3\]")],
)
def test_bad_clip_shapes_are_named(shape, match):
    with pytest.raises(ValueError, match=match):
        token_scores(np.zeros(shape, dtype=np.uint8))


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="mode='max' is not a score mode; allowed: boundary, consecutive, compensated"):
        token_scores(np.zeros((4, 16, 16, 3), dtype=np.uint8), mode="max")


def _video(frames=40, h=48, w=80, seed=0):
    """A moving object over a textured, noisy background, [F, H, W, 3] uint8."""
    return clip_frames(frames, h, w, seed)


@pytest.mark.parametrize("mode", ["boundary", "consecutive"])
@pytest.mark.parametrize("cell", [4, 8, 16])
def test_eval_view_scores_from_cells_match_the_decoded_clip(mode, cell):
    video = _video()
    pair = cell_diff_maps(video, 1, cell)
    bnd = cell_diff_maps(video, boundary_distance(2), cell)
    for start in (0, 5, 24):
        for left in (0, 16, 32):  # crops aligned to the cell grid, not rescaled
            clip = video[start : start + 16, 0:48, left : left + 48]
            direct = token_scores(clip, 2, 16, mode)
            pooled = token_scores_from_cells(
                pair, bnd, np.arange(start, start + 16), (0, left, 48, 48), (3, 3), cell, 2, mode
            )
            np.testing.assert_allclose(pooled, direct, rtol=1e-5, atol=1e-6)
            a = mgtc_ratio_keep(torch.from_numpy(direct)[None], 0.5).ids_keep
            b = mgtc_ratio_keep(torch.from_numpy(pooled)[None], 0.5).ids_keep
            assert torch.equal(a, b)


def test_flip_mirrors_token_scores():
    video = _video()
    pair, bnd = cell_diff_maps(video, 1, 8), cell_diff_maps(video, 3, 8)
    ids = np.arange(16)
    clip = video[:16, :48, :48]
    direct = token_scores(clip[:, :, ::-1].copy(), 2, 16)
    pooled = token_scores_from_cells(pair, bnd, ids, (0, 0, 48, 48), (3, 3), 8, flip=True)
    np.testing.assert_allclose(pooled, direct, rtol=1e-5, atol=1e-6)


def test_padded_short_clip_repeats_last_frame():
    video = _video(frames=10)
    pair, bnd = cell_diff_maps(video, 1, 8), cell_diff_maps(video, 3, 8)
    ids = np.minimum(np.arange(16), 9)  # VideoMAE test mode pads with the last frame
    clip = video[ids][:, :48, :48]
    direct = token_scores(clip, 2, 16)
    pooled = token_scores_from_cells(pair, bnd, ids, (0, 0, 48, 48), (3, 3), 8)
    # slices whose compared frames exist at a stored distance are exact; the all-padding
    # slices compare a frame with itself -> 0
    np.testing.assert_allclose(pooled[1:5], direct[1:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[6:], 0.0)
