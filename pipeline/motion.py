"""Motion scores: the MGTC signal.

Tokens are tubelets of `tubelet` frames x `patch` x `patch` pixels. A clip of T frames at
H x W has the token grid (T' , H', W') = (T / tubelet, H / patch, W / patch), flattened
t-major, then h, then w (VideoMAE order: index = t*H'*W' + i*W' + j).

Score of token (t, i, j), t >= 1, on pixels scaled to [0, 1]:
- "boundary" (default, RLT's choice): mean |diff| over the patch's pixels and 3 channels
  between the LAST frame of tubelet t and the FIRST frame of tubelet t-1, i.e. frames
  t*tubelet + tubelet - 1 and (t-1)*tubelet, which are `2*tubelet - 1` frames apart.
- "consecutive": the mean over the `tubelet` consecutive frame pairs ending inside tubelet t
  (the pair across the boundary with tubelet t-1 plus the pairs inside tubelet t).
- "compensated": the "boundary" pair after removing the dominant global translation
  between the two frames (camera pan / shake; `pipeline/compensation.py`). Shards hold no
  maps for it: clips are scored on their decoded, cropped pixels.
Slice t = 0 has no predecessor: its score is +inf, so every strategy keeps it.

Shards (see `pipeline/shards.py`) do not store clips. For the stride-s frame sequence
g_0, g_1, ... of a video they store *cell maps*: the mean |g_m - g_{m-d}| over small
`cell` x `cell` pixel cells of the resized frame, for d = 1 and d = 2*tubelet - 1. Any clip
that is a window of that sequence, under any crop and flip, gets its token scores by pooling
those cells (`token_scores_from_cells`). When the crop is aligned to the cell grid and not
rescaled (evaluation views) the pooled score equals the direct score up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.compensation import compensated_token_scores
from pipeline.vocab import SCORE_MODES, SHARD_SCORE_MODES, boundary_distance, token_grid


def _check_mode(mode: str, allowed: tuple[str, ...] = SCORE_MODES) -> None:
    if mode not in allowed:
        kind = "score mode" if allowed == SCORE_MODES else "score mode with shard maps or torch scores"
        raise ValueError(f"mode={mode!r} is not a {kind}; allowed: {', '.join(allowed)}")


def token_scores(
    frames: np.ndarray, tubelet: int = 2, patch: int = 16, mode: str = "boundary"
) -> np.ndarray:
    """Per-token motion scores of one clip, in numpy (for Ray Data workers: no torch needed).

    frames: [T, H, W, 3] uint8 (decoded RGB).
    Returns [T', H', W'] float32 with slice 0 = +inf; higher = more motion.
    """
    _check_mode(mode)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")
    t, h, w, _ = frames.shape
    token_grid(t, h, w, tubelet, patch)  # ValueError naming what does not tile
    if mode == "compensated":
        return compensated_token_scores(frames, tubelet, patch)
    x = frames.astype(np.float32) * np.float32(1 / 255)
    if mode == "boundary":
        last = x[2 * tubelet - 1 :: tubelet]  # last frame of tubelets 1..T'-1
        first = x[: t - tubelet : tubelet]  # first frame of tubelets 0..T'-2
        diff = np.abs(last - first)  # [T'-1, H, W, 3]
    else:
        pair = np.abs(x[1:] - x[:-1])  # pair k ends at frame k+1: [T-1, H, W, 3]
        ends = pair[tubelet - 1 :]  # pairs ending at frames tubelet .. T-1
        diff = ends.reshape(t // tubelet - 1, tubelet, h, w, 3).mean(axis=1)
    tokens = diff.reshape(-1, h // patch, patch, w // patch, patch, 3).mean(axis=(2, 4, 5))
    first_slice = np.full((1, h // patch, w // patch), np.inf, dtype=np.float32)
    return np.concatenate([first_slice, tokens.astype(np.float32)], axis=0)


def token_scores_torch(
    x: torch.Tensor, tubelet: int = 2, patch: int = 16, mode: str = "boundary"
) -> torch.Tensor:
    """Batched per-token motion scores.

    x: [B, 3, T, H, W]; uint8 (scaled by 1/255) or float already in [0, 1].
    Returns [B, T', H', W'] float32 with slice 0 = +inf. "compensated" is numpy-only
    (`token_scores`).
    """
    _check_mode(mode, SHARD_SCORE_MODES)
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"x must be [B, 3, T, H, W], got shape {tuple(x.shape)}")
    b, _, t, h, w = x.shape
    token_grid(t, h, w, tubelet, patch)  # ValueError naming what does not tile
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if mode == "boundary":
        diff = (x[:, :, 2 * tubelet - 1 :: tubelet] - x[:, :, : t - tubelet : tubelet]).abs()
    else:
        pair = (x[:, :, 1:] - x[:, :, :-1]).abs()[:, :, tubelet - 1 :]
        diff = pair.reshape(b, 3, t // tubelet - 1, tubelet, h, w).mean(dim=3)
    tokens = torch.nn.functional.avg_pool3d(diff, (1, patch, patch)).mean(dim=1)
    first_slice = torch.full((b, 1, h // patch, w // patch), math.inf, device=x.device)
    return torch.cat([first_slice, tokens], dim=1)


def cell_diff_maps(frames: np.ndarray, distance: int, cell: int) -> np.ndarray:
    """Mean |frame m - frame (m - distance)| over `cell` x `cell` pixel cells and channels.

    frames: [M, H, W, 3] uint8, the stride-s frame sequence of a video (resized).
    Returns [M - distance, H // cell, W // cell] float32 on [0, 1] pixels; row r compares
    frames r + distance and r. Pixels beyond the last whole cell are not covered.
    """
    m, h, w, _ = frames.shape
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    hc, wc = h // cell, w // cell
    if hc == 0 or wc == 0:
        raise ValueError(f"frame size {h}x{w} is smaller than one cell of {cell} px")
    if m <= distance:
        return np.zeros((0, hc, wc), dtype=np.float32)
    # int16 differences are exact; summing in float32 per cell keeps memory at one frame pair.
    out = np.empty((m - distance, hc, wc), dtype=np.float32)
    crop = frames[:, : hc * cell, : wc * cell].astype(np.int16)
    scale = np.float32(1 / (255 * 3 * cell * cell))
    for r in range(m - distance):
        d = np.abs(crop[r + distance] - crop[r]).astype(np.float32)
        out[r] = d.reshape(hc, cell, wc, cell, 3).sum(axis=(1, 3, 4)) * scale
    return out


def _area_weights(start: float, length: float, out: int, cells: int, cell: int) -> np.ndarray:
    """[out, cells] weights: share of each output bin's source interval inside each cell."""
    edges = start + length * np.arange(out + 1) / out  # output bin edges in pixels
    lo = np.arange(cells) * cell
    hi = lo + cell
    overlap = np.clip(
        np.minimum(edges[1:, None], hi[None, :]) - np.maximum(edges[:-1, None], lo[None, :]),
        0,
        None,
    )
    total = overlap.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError(
            f"crop [{start}, {start + length}) px leaves the {cells * cell} px covered by cells"
        )
    return overlap / total


def pool_cells(
    cells: np.ndarray,
    crop: tuple[float, float, float, float],
    grid: tuple[int, int],
    cell: int,
    flip: bool = False,
) -> np.ndarray:
    """Resample cell maps onto a token grid for a crop of the resized frame.

    cells: [K, Hc, Wc]; crop: (top, left, height, width) in pixels of the frame the cells were
    computed on; grid: (H', W') tokens of the network input made from that crop.
    Returns [K, H', W']: each token's mean of the cell values, weighted by area.
    `flip` mirrors horizontally, as the clip's horizontal flip does.
    """
    top, left, height, width = crop
    ry = _area_weights(top, height, grid[0], cells.shape[1], cell)
    rx = _area_weights(left, width, grid[1], cells.shape[2], cell)
    pooled = np.einsum("ia,kab,jb->kij", ry, cells, rx, optimize=True).astype(np.float32)
    return pooled[:, :, ::-1].copy() if flip else pooled


def token_scores_from_cells(
    pair_cells: np.ndarray,
    boundary_cells: np.ndarray,
    frame_ids: np.ndarray,
    crop: tuple[float, float, float, float],
    grid: tuple[int, int],
    cell: int,
    tubelet: int = 2,
    mode: str = "boundary",
    flip: bool = False,
) -> np.ndarray:
    """Token scores of a clip taken from shard cell maps.

    pair_cells: [M-1, Hc, Wc], distance-1 cell maps of the stride-s sequence (row r: r+1 vs r).
    boundary_cells: [M-d, Hc, Wc], distance d = 2*tubelet-1 maps (row r: r+d vs r).
    frame_ids: [T] positions in the stride-s sequence of the clip's frames (ascending; a short
      video repeats its last frame, so ids may repeat at the end).
    Returns [T', H', W'] float32 with slice 0 = +inf, like `token_scores` on the clip.
    A frame pair at a distance that no stored map covers (only in the repeated tail of a
    padded short clip) takes the map of the nearest stored pair ending at the same frame.
    "compensated" has no shard maps: its scores come from the decoded clip (`token_scores`).
    """
    _check_mode(mode, SHARD_SCORE_MODES)
    t = len(frame_ids)
    if t % tubelet or t < tubelet:
        raise ValueError(f"clip of {t} frames must be a positive multiple of tubelet={tubelet}")
    d = boundary_distance(tubelet)
    zeros = np.zeros(pair_cells.shape[1:], dtype=np.float32)

    def pair_map(a: int, b: int) -> np.ndarray:
        if a == b:
            return zeros
        if b - a == 1 and a < len(pair_cells):
            return pair_cells[a]
        if b - a == d and a < len(boundary_cells):
            return boundary_cells[a]
        maps = boundary_cells if len(boundary_cells) else pair_cells
        dist = d if len(boundary_cells) else 1
        return maps[min(max(b - dist, 0), len(maps) - 1)]

    slices = []
    for s in range(1, t // tubelet):
        if mode == "boundary":
            m = pair_map(int(frame_ids[(s - 1) * tubelet]), int(frame_ids[s * tubelet + tubelet - 1]))
        else:
            ends = range(s * tubelet, s * tubelet + tubelet)
            m = np.mean([pair_map(int(frame_ids[k - 1]), int(frame_ids[k])) for k in ends], axis=0)
        slices.append(m)
    grid_h, grid_w = grid
    first = np.full((1, grid_h, grid_w), np.inf, dtype=np.float32)
    if not slices:
        return first
    pooled = pool_cells(np.stack(slices), crop, grid, cell, flip=flip)
    return np.concatenate([first, pooled], axis=0)
