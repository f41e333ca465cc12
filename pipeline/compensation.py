"""Motion-compensated differencing: remove the dominant global translation, then difference.

Plain MGTC scores a token by |frame b - frame a| at the same pixel, so a panning or
shaking camera makes every textured token "move" and the moving object's tokens no longer
stand out. Score mode "compensated" first estimates the global translation between the
two frames by phase correlation on downscaled grey frames, shifts frame a by it (integer
pixels, edges clamped), and differences the aligned pair:

    score(b, a) = |b[y, x] - a[y - dy, x - dx]|,   (dx, dy) = global_shift(a, b)

A still camera gives (0, 0) (the static background dominates the correlation), so the
score equals the plain one there. Zoom is not a translation and is not removed.

Numpy only (no torch): precompute's decoder processes import it. Shapes: frames are
[H, W, 3] uint8 RGB; shifts are (dx, dy) integers in pixels of those frames, x right,
y down, meaning "b shows a's content moved by (dx, dy)".
"""

from __future__ import annotations

import functools

import numpy as np

# Phase correlation runs on frames block-averaged down to about this short side: 64 px
# resolves the global shift to a pixel at 64-128 px frames and to 2-5 px (before the
# sub-pixel refinement) at K400's 256-320 px, for a few hundred microseconds per pair.
CORRELATION_SIDE = 64
CANDIDATES = 4  # phase-correlation peaks tried as the dominant shift (besides no shift)


def downscale_factor(height: int, width: int, side: int = CORRELATION_SIDE) -> int:
    """Integer block size that brings the short side to about `side` pixels (>= 1)."""
    return max(1, min(height, width) // side)


def correlation_frame(frame: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """[H, W, 3] uint8 -> (small, spectrum): the green channel sampled every `factor` pixels,
    [ceil(H / factor), ceil(W / factor)] float32, and the real FFT of it mean-removed and
    Hann-windowed; computed once per frame, reused for every pair it is in.
    Green alone and plain subsampling: a grey block mean cost 5x more for the same shifts."""
    small = frame[::factor, ::factor, 1].astype(np.float32)
    centred = small - small.mean()
    return small, np.fft.rfft2(centred * _window(small.shape))


@functools.lru_cache(maxsize=8)
def _window(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def _peaks(corr: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(iy, ix) of the `count` highest local peaks (each peak's 3x3 neighbourhood suppressed)."""
    corr = corr.copy()
    h, w = corr.shape
    out = []
    for _ in range(count):
        iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
        out.append((int(iy), int(ix)))
        rows = np.array([(iy - 1) % h, iy, (iy + 1) % h])[:, None]
        corr[rows, [(ix - 1) % w, ix, (ix + 1) % w]] = -np.inf
    return out


def estimate_shift(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], factor: int,
                   candidates: int = CANDIDATES, max_shift: float = 0.25) -> tuple[int, int]:
    """(dx, dy) in full-resolution pixels with b ~ a moved by (dx, dy); a, b from
    `correlation_frame`.

    Phase correlation whitens the spectrum, which lets a small sharp object outweigh a
    smooth background: its top peak was the orbiting object's displacement, not the
    camera's, on most of our hard-set pairs. So the `candidates` highest peaks and (0, 0)
    are each tried, and the one that aligns the most pixels wins (least median |b - a
    moved| on the small frames): the *dominant* motion. The winner is refined to sub-pixel
    by a parabola through its neighbours, scaled by `factor` and rounded. Shifts beyond
    `max_shift` of the side (wrap-around ambiguity) are not candidates.
    """
    (small_a, fa), (small_b, fb) = a, b
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-9
    corr = np.fft.irfft2(cross, s=small_a.shape)
    h, w = corr.shape

    def signed(iy: int, ix: int) -> tuple[int, int]:
        return (iy - h if iy > h // 2 else iy), (ix - w if ix > w // 2 else ix)

    best, best_cost = (0, 0), np.inf
    for iy, ix in [(0, 0), *_peaks(corr, candidates)]:
        dy, dx = signed(iy, ix)
        if abs(dy) > max_shift * h or abs(dx) > max_shift * w:
            continue
        # Every other pixel is enough for a median (and halves its cost).
        cost = float(np.median(np.abs(small_b[::2, ::2] - shift_frame(small_a, dx, dy)[::2, ::2])))
        if cost < best_cost:
            best, best_cost = (iy, ix), cost

    def refine(c_minus: float, c0: float, c_plus: float) -> float:
        denominator = c_minus - 2 * c0 + c_plus
        return 0.0 if denominator >= 0 else 0.5 * (c_minus - c_plus) / denominator

    iy, ix = best
    dy, dx = signed(iy, ix)
    if factor > 1:  # at full resolution the integer peak is already the answer
        dy += refine(corr[(iy - 1) % h, ix], corr[iy, ix], corr[(iy + 1) % h, ix])
        dx += refine(corr[iy, (ix - 1) % w], corr[iy, ix], corr[iy, (ix + 1) % w])
    return int(round(dx * factor)), int(round(dy * factor))


def global_shift(a: np.ndarray, b: np.ndarray, factor: int | None = None) -> tuple[int, int]:
    """(dx, dy): the dominant translation taking frame a [H, W, 3] to frame b."""
    factor = factor or downscale_factor(a.shape[0], a.shape[1])
    return estimate_shift(correlation_frame(a, factor), correlation_frame(b, factor), factor)


def shift_frame(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """frame [H, W, C] moved by (dx, dy): out[y, x] = frame[y - dy, x - dx], edges clamped
    (uncovered pixels repeat the nearest border pixel, so they score like their neighbours).
    Slice copies, not fancy indexing (10x cheaper at 340x256)."""
    if dx == 0 and dy == 0:
        return frame
    h, w = frame.shape[:2]
    dx, dy = max(-w + 1, min(w - 1, dx)), max(-h + 1, min(h - 1, dy))
    out = np.empty_like(frame)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = frame[ys, xs]
    if dx > 0:
        out[yd, :dx] = out[yd, dx:dx + 1]
    elif dx < 0:
        out[yd, w + dx:] = out[yd, w + dx - 1:w + dx]
    if dy > 0:
        out[:dy] = out[dy:dy + 1]
    elif dy < 0:
        out[h + dy:] = out[h + dy - 1:h + dy]
    return out


def aligned_abs_diff(a: np.ndarray, b: np.ndarray, factor: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(|b - a aligned to b| [H, W, 3] float32 on [0, 1] pixels, (dx, dy))."""
    dx, dy = global_shift(a, b, factor)
    moved = shift_frame(a, dx, dy)
    return np.abs(b.astype(np.float32) - moved.astype(np.float32)) * np.float32(1 / 255), (dx, dy)


def compensated_token_scores(frames: np.ndarray, tubelet: int = 2, patch: int = 16) -> np.ndarray:
    """Score mode "compensated" of one clip: the "boundary" pair (last frame of tubelet t,
    first frame of tubelet t-1), aligned before differencing.

    frames: [T, H, W, 3] uint8. Returns [T', H', W'] float32, slice 0 = +inf. The shift is
    estimated on the clip itself (at the clip's own downscale factor), so scores pooled from
    shard maps (estimated on the whole resized frame) agree closely, not exactly.
    """
    t, h, w, _ = frames.shape
    factor = downscale_factor(h, w)
    slices = [np.full((h // patch, w // patch), np.inf, dtype=np.float32)]
    for s in range(1, t // tubelet):
        diff, _ = aligned_abs_diff(frames[(s - 1) * tubelet], frames[s * tubelet + tubelet - 1], factor)
        slices.append(diff[: h // patch * patch, : w // patch * patch]
                      .reshape(h // patch, patch, w // patch, patch, 3).mean(axis=(1, 3, 4)))
    return np.stack(slices).astype(np.float32)

