"""Token selection: where the mask is chosen.

Every strategy is a pure function from (scores or grid shape, ratio or threshold, generator)
to the tokens to KEEP, returned as a `Selection`: `ids_keep` [B, K], sorted ascending per
row (original token order, t-major then h then w). Nothing here lives inside an nn.Module;
the model only gathers what it is told to keep.

"ratio" is always the MASKING ratio: the fraction of tokens dropped. Fixed-ratio strategies
keep exactly `num_kept(N, ratio)` tokens per clip, so a batch is a dense [B, K] tensor.
`mgtc_threshold` keeps a different number per clip; its rows keep all N slots, real entries
first, padded with index 0, and `keep_mask` marks the real entries. Selection runs on the
scores' device and never reads a tensor back to the host.

Besides the strategies: `select_views`, the deterministic per-view selection of evaluation
(random / tube views seeded from (seed, video, view)), and `pretrain_visible`, MAE's mask
drawn over the tokens a strategy kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.vocab import SCORE_STRATEGIES, STRATEGIES, running_cell_masked

# Entropy of the per-view generators at evaluation (`view_generator`): fixed, so that
# `optim.seed` alone decides which tokens a random / tube view drops.
VIEW_ENTROPY = 0x6D677476


@dataclass(frozen=True)
class Selection:
    """Kept tokens of a batch.

    ids_keep: [B, K] int64, ascending per row over the real entries.
    keep_mask: [B, K] bool, True = real token, False = padding (padding ids are 0 and sit at
      the end of the row); None when every row keeps exactly K tokens. `mgtc_threshold`
      always gives one, with K = N.
    """

    ids_keep: torch.Tensor
    keep_mask: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        """[B] number of real kept tokens per clip."""
        b, k = self.ids_keep.shape
        if self.keep_mask is None:
            return torch.full((b,), k, dtype=torch.long, device=self.ids_keep.device)
        return self.keep_mask.sum(dim=1)


def check_ratio(ratio: float, name: str = "ratio") -> float:
    if not (isinstance(ratio, (int, float)) and 0.0 <= float(ratio) < 1.0):
        raise ValueError(f"{name}={ratio!r} must be a masking ratio in [0, 1)")
    return float(ratio)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; allowed: {', '.join(STRATEGIES)}")
    return strategy


def num_kept(num_tokens: int, ratio: float) -> int:
    """Tokens kept per clip at a masking ratio: round((1 - ratio) * N), at least 1."""
    return max(1, int(round((1.0 - check_ratio(ratio)) * num_tokens)))


def _grid_size(grid: tuple[int, int, int]) -> int:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid={grid!r} must be a token grid (T', H', W') of positive sizes")
    return grid[0] * grid[1] * grid[2]


def keep_all(batch: int, grid: tuple[int, int, int], device=None) -> Selection:
    """Strategy `none`: every token, [B, N]."""
    n = _grid_size(grid)
    return Selection(torch.arange(n, device=device).expand(batch, n).clone())


def random_keep(
    batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None
) -> Selection:
    """Strategy `random`: a uniform random subset of num_kept(N, ratio) tokens per clip.

    Pass a seeded generator at evaluation so every run drops the same tokens (MAE's
    noise -> argsort recipe).
    """
    n = _grid_size(grid)
    k = num_kept(n, ratio)
    noise = torch.rand(batch, n, generator=generator)
    ids = torch.argsort(noise, dim=1)[:, :k]
    return Selection(ids.sort(dim=1).values)


def tube_keep(
    batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None
) -> Selection:
    """Strategy `tube` (VideoMAE pre-training): one random spatial mask repeated over slices.

    As VideoMAE's TubeMaskingGenerator, int(ratio * H'W') positions are masked per slice.
    """
    t, h, w = grid
    hw = h * w
    masked = int(check_ratio(ratio) * hw)
    keep_per_slice = max(1, hw - masked)
    noise = torch.rand(batch, hw, generator=generator)
    spatial = torch.argsort(noise, dim=1)[:, :keep_per_slice].sort(dim=1).values  # [B, k]
    offsets = torch.arange(t).repeat_interleave(keep_per_slice) * hw  # [t*k]
    ids = spatial.repeat(1, t) + offsets  # slices stay t-major: ascending
    return Selection(ids)


def running_cell_pattern(grid: tuple[int, int, int], ratio: float, phase: int = 0) -> torch.Tensor:
    """Keep mask [T', H', W'] (True = keep) of the VideoMAE V2 / MAR running cell.

    2x2 cells hold the queue [1]*n + [0]*(4-n) (1 = masked), n = int(4 * ratio); slice t reads
    the queue rotated by phase + t + 1 and lays it out in raster order (top-left, top-right,
    bottom-left, bottom-right), tiled over the grid (cropped when H' or W' is odd).
    """
    t, h, w = grid
    n_mask = running_cell_masked(check_ratio(ratio))
    if not 0 < n_mask < 4:
        raise ValueError(
            f"running_cell needs 0.25 <= ratio < 1 (int(4*ratio) in 1..3 masked per 2x2 cell), "
            f"got ratio={ratio}"
        )
    queue = torch.tensor([1] * n_mask + [0] * (4 - n_mask), dtype=torch.bool)
    slices = []
    for s in range(t):
        cell = queue[(torch.arange(4) + phase + s + 1) % 4].reshape(2, 2)
        tiled = cell.repeat((h + 1) // 2, (w + 1) // 2)[:h, :w]
        slices.append(~tiled)
    return torch.stack(slices)


def running_cell_keep(
    batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None
) -> Selection:
    """Strategy `running_cell`: MAR / VideoMAE V2 running-cell mask.

    With a generator, each clip draws one of the 4 phases (VideoMAE V2 training); without one
    every clip uses phase 0 (deterministic evaluation, as MAR's test mask).
    With odd H' or W' the cropped tiling keeps a slightly different count per slice; rows are
    then padded like `mgtc_threshold`.
    """
    _grid_size(grid)
    if generator is None:
        phases = [0] * batch
    else:
        phases = torch.randint(0, 4, (batch,), generator=generator).tolist()
    patterns = {p: running_cell_pattern(grid, ratio, p).flatten() for p in set(phases)}
    return _pad_rows([patterns[p].nonzero().squeeze(1) for p in phases])


def mgtc_ratio_keep(scores: torch.Tensor, ratio: float) -> Selection:
    """Strategy `mgtc_ratio`: per clip, drop the round(ratio * N) lowest-score tokens.

    scores: [B, T', H', W'] (slice 0 = +inf, so it is kept first).
    Ties keep the earlier token (stable sort), so the result is deterministic.
    """
    b = scores.shape[0]
    flat = scores.reshape(b, -1)
    k = num_kept(flat.shape[1], ratio)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    return Selection(order.sort(dim=1).values)


def mgtc_threshold_keep(scores: torch.Tensor, tau: float) -> Selection:
    """Strategy `mgtc_threshold`: drop every token with score < tau; variable length per clip.

    scores: [B, T', H', W']; slice 0 (+inf) is always kept, so no clip is empty.
    Returns ids_keep and keep_mask [B, N] (N slots per row, the real ones first).
    """
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau={tau!r} must be a finite threshold >= 0")
    flat = scores.reshape(scores.shape[0], -1)
    keep = flat >= tau  # [B, N]
    # Kept indices first, ascending (a stable sort of "dropped?"), then the dropped ones.
    # Rows keep all N slots: trimming to the longest clip would read the lengths to the host;
    # the model's packing does that once per step anyway.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    slots = torch.arange(flat.shape[1], device=flat.device)
    mask = slots < keep.sum(1, keepdim=True)
    return Selection(torch.where(mask, order, 0), mask)


def _pad_rows(rows: list[torch.Tensor]) -> Selection:
    """Stack ascending index rows of different lengths, padding with 0 at the end."""
    lengths = [len(r) for r in rows]
    k = max(lengths)
    if min(lengths) == k:
        return Selection(torch.stack(rows))
    device = rows[0].device
    ids = torch.zeros(len(rows), k, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), k, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    return Selection(ids, mask)


def select_tokens(
    strategy: str,
    *,
    scores: torch.Tensor | None = None,
    grid: tuple[int, int, int] | None = None,
    batch: int | None = None,
    ratio: float = 0.0,
    tau: float | None = None,
    generator: torch.Generator | None = None,
) -> Selection:
    """Dispatch a strategy by name (the only place a strategy string is looked at).

    Score-based strategies need `scores` [B, T', H', W']; the others need `grid` and `batch`
    (taken from `scores` when given).
    """
    check_strategy(strategy)
    if scores is not None:
        batch, grid = scores.shape[0], tuple(scores.shape[1:])
    if strategy in SCORE_STRATEGIES and scores is None:
        raise ValueError(f"strategy={strategy!r} needs motion scores")
    if grid is None or batch is None:
        raise ValueError(f"strategy={strategy!r} needs grid and batch (or scores)")
    if strategy == "none":
        return keep_all(batch, grid)
    if strategy == "random":
        return random_keep(batch, grid, ratio, generator)
    if strategy == "tube":
        return tube_keep(batch, grid, ratio, generator)
    if strategy == "running_cell":
        return running_cell_keep(batch, grid, ratio, generator)
    if strategy == "mgtc_ratio":
        return mgtc_ratio_keep(scores, ratio)
    if tau is None:
        raise ValueError("strategy='mgtc_threshold' needs tau (or a calibrated tau)")
    return mgtc_threshold_keep(scores, tau)


def view_generator(seed: int, video_id: int, view: int) -> torch.Generator:
    """The generator of one test / validation view, from `SeedSequence(VIEW_ENTROPY,
    spawn_key=(seed, video_id, view))` (as the data path seeds its actors): the same tokens
    whatever batch or rank the view is in."""
    seq = np.random.SeedSequence(VIEW_ENTROPY, spawn_key=(int(seed) % 2**63, int(video_id), int(view)))
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))  # 63 bits


def select_views(
    strategy: str, scores: torch.Tensor, video_ids: torch.Tensor, views: torch.Tensor, *,
    ratio: float, tau: float | None = None, seed: int = 0,
) -> Selection:
    """Deterministic selection of a batch of evaluation views.

    scores: [B, T', H', W'] (on any device); video_ids, views: [B]. `none`, `mgtc_*` (from
    the scores) and `running_cell` (phase 0, as MAR's test mask) are deterministic already;
    `random` / `tube` draw from `view_generator(seed, video_id, view)`, one view at a time.
    Tensors come back where `select_tokens` puts them (callers move them to the model).
    """
    grid = tuple(scores.shape[1:])
    if strategy in ("random", "tube"):
        rows = [
            select_tokens(strategy, grid=grid, batch=1, ratio=ratio, generator=view_generator(seed, v, w))
            for v, w in zip(video_ids.tolist(), views.tolist())
        ]
        return Selection(torch.cat([r.ids_keep for r in rows]))
    on_scores = scores if strategy in SCORE_STRATEGIES else None
    return select_tokens(strategy, scores=on_scores, grid=grid, batch=scores.shape[0], ratio=ratio, tau=tau)


def pretrain_visible(
    ids_keep: torch.Tensor, grid: tuple[int, int, int], ratio: float, mode: str, generator: torch.Generator
) -> torch.Tensor:
    """The MAE mask drawn over the kept tokens: encoder-visible ids [B, V], sorted.

    ids_keep: [B, K] (same K per row). int(ratio * K) kept tokens are masked per clip, so
    V = K - int(ratio * K) is the same in every row, as the MAE encoder needs.
    mode "tube": one noise value per spatial position, shared by all slices (VideoMAE's tube:
    the visible tokens are whole tubes of the lowest-noise positions, minus the tokens MGTC
    dropped; the last tube may be cut); "random": one value per token.
    """
    b, k = ids_keep.shape
    t, h, w = grid
    masked = int(ratio * k)
    if not 0 < masked < k:
        raise ValueError(f"masking.pretrain_ratio={ratio} masks {masked} of {k} kept tokens; need 1..{k - 1}")
    # The noise comes from the (CPU, checkpointed) generator and goes to the ids' device:
    # reading ids_keep back instead would be a device -> host sync per step.
    if mode == "tube":
        noise = torch.rand(b, h * w, generator=generator).repeat(1, t)  # [B, N]
    else:
        noise = torch.rand(b, t * h * w, generator=generator)
    noise = noise.to(ids_keep.device, non_blocking=True)
    order = torch.sort(noise.gather(1, ids_keep), dim=1, stable=True).indices[:, : k - masked]
    return ids_keep.gather(1, order).sort(dim=1).values


def calibrate_tau(scores: np.ndarray, mask_ratio: float) -> float:
    """Threshold tau that drops `mask_ratio` of all tokens data-set wide.

    scores: any array of token scores, slice-0 tokens included as +inf (they are never
    dropped, so they count in the total but cannot be below tau).
    Tokens with score < tau are dropped; tau is the quantile of the finite scores that
    leaves mask_ratio * total below it.
    """
    check_ratio(mask_ratio, "mask_ratio")
    flat = np.asarray(scores, dtype=np.float64).ravel()
    finite = np.sort(flat[np.isfinite(flat)])
    want = int(round(mask_ratio * flat.size))
    if want > finite.size:
        raise ValueError(
            f"mask_ratio={mask_ratio} would drop {want} tokens but only {finite.size} of "
            f"{flat.size} can be dropped (slice 0 is always kept)"
        )
    if want == 0:
        return 0.0
    if want == finite.size:
        return float(np.nextafter(finite[-1], np.inf))
    # Midway between the last dropped and the first kept score: robust to float rounding
    # when the same scores are recomputed from shards.
    return float((finite[want - 1] + finite[want]) / 2)


def ids_to_mask(selection: Selection, num_tokens: int) -> torch.Tensor:
    """[B, N] bool keep mask (True = kept) from a Selection."""
    ids = selection.ids_keep
    mask = torch.zeros(ids.shape[0], num_tokens, dtype=torch.bool, device=ids.device)
    valid = selection.keep_mask if selection.keep_mask is not None else torch.ones_like(ids, dtype=torch.bool)
    rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1).expand_as(ids)
    mask[rows[valid], ids[valid]] = True
    return mask


def gather_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """x: [B, N, D], ids_keep: [B, K] -> [B, K, D] (MAE's gather)."""
    return torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restore_tokens(x_kept: torch.Tensor, ids_keep: torch.Tensor, num_tokens: int, fill: float = 0.0) -> torch.Tensor:
    """Inverse of `gather_tokens`: scatter [B, K, D] back to [B, N, D], `fill` elsewhere."""
    b, _, d = x_kept.shape
    out = x_kept.new_full((b, num_tokens, d), fill)
    return out.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, d), x_kept)
