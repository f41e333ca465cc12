"""Mask pictures and motion heat maps: grey exactly where the selection dropped tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import imread

from jobs import visualize
from pipeline import viz
from pipeline.motion import token_scores
from pipeline.selection import ids_to_mask, select_tokens
from tests.helpers.videos import moving_square_boxes, moving_square_frames, write_moving_square_video

TUBELET, PATCH = 2, 16


@pytest.fixture
def clip():
    """16 frames of 64 px: a white 16 px square moving right 4 px per frame."""
    return moving_square_frames(frames=16, size=64, square=16, step=4, seed=0)


@pytest.mark.parametrize("strategy", ["random", "running_cell", "mgtc_ratio", "none"])
def test_dropped_tokens_are_grey_exactly_where_the_selection_dropped_them(clip, strategy):
    scores = token_scores(clip, TUBELET, PATCH)
    sel = select_tokens(strategy, scores=torch.from_numpy(scores)[None], ratio=0.5,
                        generator=torch.Generator().manual_seed(3))
    keep = ids_to_mask(sel, scores.size)[0].numpy().reshape(scores.shape)
    out = viz.grey_out(clip, keep, TUBELET, PATCH)

    greyed = np.rint(0.25 * clip.astype(np.float32) + 0.75 * viz.GREY).astype(np.uint8)
    for t, i, j in np.ndindex(*keep.shape):
        frames = slice(t * TUBELET, (t + 1) * TUBELET)
        rows, cols = slice(i * PATCH, (i + 1) * PATCH), slice(j * PATCH, (j + 1) * PATCH)
        expected = clip if keep[t, i, j] else greyed
        np.testing.assert_array_equal(out[frames, rows, cols], expected[frames, rows, cols])
    assert out.dtype == np.uint8 and out.shape == clip.shape


def test_keep_masks_follow_each_strategy_and_mgtc_keeps_the_moving_square(clip):
    scores = token_scores(clip, TUBELET, PATCH)
    rows = [("all", "none", 0.0, None), ("mgtc", "mgtc_ratio", 0.5, None),
            ("rand", "random", 0.5, None), ("cell", "running_cell", 0.5, None)]
    keeps = viz.keep_masks(scores, rows, seed=0)
    assert list(keeps) == ["all", "mgtc", "rand", "cell"]
    assert keeps["all"].all()
    n = scores.size
    for label in ("mgtc", "rand", "cell"):
        assert keeps[label].shape == scores.shape
        assert keeps[label].sum() == round(0.5 * n)
    assert keeps["mgtc"][0].all()  # slice 0 has no predecessor: always kept
    # Every token the square covers in the later frame of a slice's boundary pair is kept.
    boxes = moving_square_boxes(frames=16, size=64, square=16, step=4)
    for t in range(1, scores.shape[0]):
        y0, y1, x0, x1 = boxes[t * TUBELET + TUBELET - 1]
        for i in range(y0 // PATCH, -(-y1 // PATCH)):
            for j in range(x0 // PATCH, -(-x1 // PATCH)):
                assert keeps["mgtc"][t, i, j], (t, i, j)
    # Seeded: the same picture twice.
    np.testing.assert_array_equal(viz.keep_masks(scores, rows, seed=0)["rand"], keeps["rand"])


def test_mask_panel_is_rows_of_strategies_and_columns_of_frames(clip):
    keep_all = np.ones((8, 4, 4), dtype=bool)
    keep_none = np.zeros((8, 4, 4), dtype=bool)
    panel = viz.mask_panel(clip, {"a": keep_all, "b": keep_none}, TUBELET, PATCH, every=2, gap=2)
    cols = 8  # frames 0, 2, ..., 14
    assert panel.shape == (2 * 64 + 2, cols * 64 + (cols - 1) * 2, 3)
    np.testing.assert_array_equal(panel[:64, 66:130], clip[2])  # row a, column 1 = frame 2
    np.testing.assert_array_equal(panel[66:130, 66:130], viz.grey_out(clip, keep_none)[2])
    assert (panel[64:66] == viz.GAP_VALUE).all()
    fig = viz.mask_figure(clip, {"a": keep_all, "b": keep_none}, TUBELET, PATCH, title="t")
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["a\nkeeps 100%", "b\nkeeps 0%"]


def test_motion_heatmap_shape_and_where_it_is_hot(clip):
    scores = token_scores(clip, TUBELET, PATCH)
    heat = viz.motion_heatmap(scores)
    assert heat.shape == (4, 4) and np.isfinite(heat).all()
    assert heat[0].max() == 0 and heat[3].max() == 0  # the square moves along rows 1-2 only
    assert heat[1:3].max() > 0
    fig = viz.heatmap_figure(clip, scores, TUBELET, PATCH)
    assert len([ax for ax in fig.axes if ax.images]) == scores.shape[0]  # T'-1 slices + the mean
    with pytest.raises(ValueError, match="token grid"):
        viz.heatmap_figure(clip, scores[:, :2], TUBELET, PATCH)


def test_visualize_cli_writes_the_mask_and_heat_map_pngs(tmp_path):
    video = write_moving_square_video(tmp_path / "square.mp4", frames=40, size=64, step=1)
    out = tmp_path / "pics" / "x.png"
    code = visualize.main([str(video), "--strategy", "mgtc_ratio", "random", "running_cell",
                           "--ratio", "0.5", "--num-frames", "16", "--sampling-rate", "2",
                           "--size", "64", "--out", str(out)])
    assert code == 0
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 16 * 64
    assert imread(tmp_path / "pics" / "x_motion.png").ndim == 3


def test_visualize_cli_refuses_a_threshold_without_tau(tmp_path, capsys):
    assert visualize.main(["v.mp4", "--strategy", "mgtc_threshold", "--out", str(tmp_path / "x.png")]) == 2
    assert "--tau" in capsys.readouterr().err


def test_save_png_takes_arrays_and_figures(tmp_path):
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :10] = 255
    back = imread(viz.save_png(arr, tmp_path / "a.png"))
    assert back.shape[:2] == (10, 20) and back[0, 0, 0] == 1.0 and back[0, 15, 0] == 0.0
    assert viz.save_png(Figure(), tmp_path / "f.png").is_file()
