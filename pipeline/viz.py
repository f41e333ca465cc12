"""Pictures of what a token strategy keeps and where the motion is.

- `grey_out`: one clip with its dropped tokens greyed out (every pixel of a dropped tubelet
  blended towards mid grey; kept pixels untouched).
- `mask_panel` / `mask_figure`: one row per strategy, one column per frame, side by side.
- `motion_heatmap` / `heatmap_figure`: the MGTC token scores of one clip over its frames.

Token order follows `pipeline.motion`: token (t, i, j) covers frames t*tubelet ..
t*tubelet + tubelet - 1 and pixels [i*patch, (i+1)*patch) x [j*patch, (j+1)*patch).
Arrays are numpy; figures are bare `matplotlib.figure.Figure`s (rendered by Agg when saved,
never through pyplot), so nothing here needs a display or changes the process's backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.image import imsave

from pipeline.selection import ids_to_mask, select_tokens
from pipeline.vocab import token_grid

GREY = 128  # the value dropped pixels are pulled towards
GREY_STRENGTH = 0.75  # 1.0 = solid grey; below 1 the dropped content stays faintly visible
GAP_VALUE = 255  # white separators between panel cells


def expand_keep(keep: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    """Token keep mask [T', H', W'] -> pixel keep mask [T, H, W] (True = kept)."""
    keep = np.asarray(keep, dtype=bool)
    return keep.repeat(tubelet, axis=0).repeat(patch, axis=1).repeat(patch, axis=2)


def grey_out(
    frames: np.ndarray, keep: np.ndarray, tubelet: int = 2, patch: int = 16,
    strength: float = GREY_STRENGTH,
) -> np.ndarray:
    """Clip with dropped tokens greyed out.

    frames: [T, H, W, 3] uint8; keep: [T', H', W'] bool, True = kept.
    Returns [T, H, W, 3] uint8: kept pixels unchanged, dropped pixels
    round((1 - strength) * pixel + strength * GREY).
    """
    grid = token_grid(*frames.shape[:3], tubelet, patch)
    if tuple(np.shape(keep)) != grid:
        raise ValueError(f"keep mask shape {np.shape(keep)} != token grid {grid}")
    pixel_keep = expand_keep(keep, tubelet, patch)[..., None]  # [T, H, W, 1]
    greyed = np.rint((1.0 - strength) * frames.astype(np.float32) + strength * GREY)
    return np.where(pixel_keep, frames, greyed.astype(np.uint8))


def keep_masks(
    scores: np.ndarray,
    strategies: Sequence[tuple[str, str, float, float | None]],
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Token keep masks of one clip for several strategies.

    scores: [T', H', W'] motion scores (slice 0 = +inf), as `pipeline.motion.token_scores`.
    strategies: (label, strategy, ratio, tau) per row; tau only for `mgtc_threshold`.
    Random strategies draw from a generator seeded with `seed`, so a picture is reproducible.
    Returns {label: [T', H', W'] bool}, True = kept, in the given order.
    """
    batch = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None]
    n = int(np.prod(scores.shape))
    out: dict[str, np.ndarray] = {}
    for label, strategy, ratio, tau in strategies:
        gen = torch.Generator().manual_seed(seed)
        sel = select_tokens(strategy, scores=batch, ratio=ratio, tau=tau, generator=gen)
        out[label] = ids_to_mask(sel, n)[0].numpy().reshape(scores.shape)
    return out


def mask_panel(
    frames: np.ndarray, keeps: Mapping[str, np.ndarray], tubelet: int = 2, patch: int = 16,
    every: int = 1, gap: int = 2, strength: float = GREY_STRENGTH,
) -> np.ndarray:
    """Side-by-side picture: one row per strategy, columns = frames (every `every`-th).

    frames: [T, H, W, 3] uint8; keeps: {label: [T', H', W'] bool}.
    Returns [R*H + (R-1)*gap, C*W + (C-1)*gap, 3] uint8 with white gaps; row r, column c is
    `grey_out(frames, keeps[r])[c * every]`.
    """
    if not keeps:
        raise ValueError("keeps is empty: nothing to draw")
    t, h, w, _ = frames.shape
    cols = list(range(0, t, every))
    rows = len(keeps)
    panel = np.full((rows * h + (rows - 1) * gap, len(cols) * w + (len(cols) - 1) * gap, 3),
                    GAP_VALUE, dtype=np.uint8)
    for r, keep in enumerate(keeps.values()):
        clip = grey_out(frames, keep, tubelet, patch, strength)
        for c, f in enumerate(cols):
            y, x = r * (h + gap), c * (w + gap)
            panel[y : y + h, x : x + w] = clip[f]
    return panel


def mask_figure(
    frames: np.ndarray, keeps: Mapping[str, np.ndarray], tubelet: int = 2, patch: int = 16,
    every: int = 1, title: str = "",
) -> Figure:
    """`mask_panel` with each row labelled by strategy and the share of tokens it keeps."""
    h, w = frames.shape[1:3]
    gap = 2
    panel = mask_panel(frames, keeps, tubelet, patch, every=every, gap=gap)
    cols = len(range(0, frames.shape[0], every))
    inches_per_px = 1 / 80
    fig = Figure(figsize=(max(4.0, panel.shape[1] * inches_per_px + 2.2),
                          max(2.0, panel.shape[0] * inches_per_px + 0.9)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(panel, interpolation="nearest")
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(keeps))])
    ax.set_yticklabels([f"{label}\nkeeps {100 * keep.mean():.0f}%" for label, keep in keeps.items()])
    ax.set_xticks([c * (w + gap) + w / 2 for c in range(cols)])
    ax.set_xticklabels([str(f) for f in range(0, frames.shape[0], every)], fontsize=7)
    ax.set_xlabel("frame (grey = dropped token)")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def motion_heatmap(scores: np.ndarray) -> np.ndarray:
    """Mean motion score per spatial token over the slices that have a predecessor.

    scores: [T', H', W'] with slice 0 = +inf. Returns [H', W'] float32 (zeros when T' = 1).
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be [T', H', W'], got shape {scores.shape}")
    moving = scores[1:]
    if not len(moving):
        return np.zeros(scores.shape[1:], dtype=np.float32)
    return moving.mean(axis=0).astype(np.float32)


def heatmap_figure(
    frames: np.ndarray, scores: np.ndarray, tubelet: int = 2, patch: int = 16, title: str = "",
) -> Figure:
    """Motion heat map of one clip.

    One column per token slice t >= 1 (the last frame of tubelet t, in grey, with that
    slice's token scores on top) and a last column with the mean over slices
    (`motion_heatmap`). One colour scale for all columns, so brightness compares across time.
    """
    grid = token_grid(*frames.shape[:3], tubelet, patch)
    if tuple(scores.shape) != grid:
        raise ValueError(f"scores shape {scores.shape} != token grid {grid}")
    slices = list(range(1, grid[0]))
    mean_map = motion_heatmap(scores)
    finite = scores[1:] if slices else mean_map[None]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ncol = len(slices) + 1
    fig = Figure(figsize=(1.3 * ncol + 1.0, 1.9))
    axes = fig.subplots(1, ncol, squeeze=False)[0]
    image = None
    for ax, t in zip(axes, slices):
        frame = frames[t * tubelet + tubelet - 1].astype(np.float32).mean(axis=-1)
        ax.imshow(frame, cmap="gray", vmin=0, vmax=255)
        heat = np.kron(scores[t], np.ones((patch, patch), dtype=np.float32))
        image = ax.imshow(heat, cmap="inferno", vmin=0, vmax=vmax, alpha=0.6)
        ax.set_title(f"t'={t}", fontsize=7)
    last = axes[-1]
    image = last.imshow(np.kron(mean_map, np.ones((patch, patch), dtype=np.float32)),
                        cmap="inferno", vmin=0, vmax=vmax)
    last.set_title("mean", fontsize=7)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01, label="mean |diff|")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_png(picture: Figure | np.ndarray, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure or a uint8 [H, W, 3] image as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(picture, Figure):
        picture.savefig(path, dpi=dpi, bbox_inches="tight")
    else:
        imsave(path, np.asarray(picture, dtype=np.uint8))
    return path


def load_clip(
    video: str, num_frames: int, sampling_rate: int, size: int, short_side: int = 0,
    tubelet: int = 2, patch: int = 16, score_mode: str = "boundary",
) -> tuple[np.ndarray, np.ndarray]:
    """The single centred evaluation view of a video and its token scores.

    Temporal: VideoMAE's one-clip test window of the stride-`sampling_rate` sequence (a short
    video repeats its last frame); spatial: resized to short side `short_side` (default:
    `size`), then the centre `size` x `size` crop. video: local path or s3:// URI.
    Returns (frames [T, size, size, 3] uint8, scores [T', size/patch, size/patch] float32).
    """
    from pipeline import storage
    from pipeline.motion import token_scores
    from pipeline.video import decode_frames, num_sampled, probe, spatial_crops, test_views

    with storage.download_to_temp(video) as local:
        length = probe(local).num_frames
        positions = test_views(num_sampled(length, sampling_rate), num_frames, 1)[0]
        frames = decode_frames(local, positions * sampling_rate, short_side or size)
    top, left = spatial_crops(frames.shape[1], frames.shape[2], size, 1)[0]
    clip = np.ascontiguousarray(frames[:, top : top + size, left : left + size])
    return clip, token_scores(clip, tubelet, patch, score_mode)
