"""Motion scores of one video: the numba kernel, `CellScorer` and `score_video`
(decode once at the base stride, score every sampling rate from that sequence)."""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Iterable

import numpy as np

from pipeline import shards, video
from pipeline.precompute.config import PrecomputeConfig


def _cell_abs_diff(a, b, cell, acc, cells):  # compiled by numba: see _kernel
    """Sum |a - b| over every cell x cell x 3 block into `cells` [Hc, Wc]; return the sum
    over the whole frame, the strips right of and below the cells included.

    a, b: [H, W*3] uint8 rows of two frames; acc: [W*3] scratch (uint16 while cell*255 fits).
    One pass over both frames: |a - b| as max - min in uint8 (exact), added down the rows of
    a band of `cell` rows, then across each cell's cell*3 columns.
    """
    height, width = a.shape
    hc, wc = cells.shape
    span = cell * 3
    total = 0
    for band in range(-(-height // cell)):
        acc[:] = 0
        for y in range(band * cell, min(band * cell + cell, height)):
            ar = a[y]
            br = b[y]
            for x in range(width):  # written so that LLVM vectorises it (uint8 max - min)
                p = ar[x]
                q = br[x]
                hi = p if p > q else q
                lo = q if p > q else p
                acc[x] = acc[x] + np.uint16(np.uint8(hi - lo))
        if band < hc:
            for cx in range(wc):
                s = acc[cx * span:cx * span + span].sum()
                cells[band, cx] = s
                total += s
            total += acc[wc * span:].sum()
        else:
            total += acc.sum()
    return total


@functools.cache
def _kernel() -> Callable:
    """`_cell_abs_diff` compiled by numba (imported here: only processes that score pay for
    it). 3-4x faster than the same sums as numpy passes (max, min, subtract, two reductions),
    which is what keeps scoring under 10% of decode time (docs/BENCHMARKS.md). The machine
    code is cached beside this file, or in numba's user cache if that is read-only."""
    import numba

    options = {"nogil": True, "boundscheck": False}
    try:
        return numba.njit(cache=True, **options)(_cell_abs_diff)
    except RuntimeError:  # no writable cache location: compile in every process
        return numba.njit(**options)(_cell_abs_diff)


def warm_up_scoring() -> None:
    """Load (or compile) the scoring kernel now, for the usual cell sizes (uint16 sums):
    decoder processes do this before they report ready, so no video's time is compiling."""
    frame = np.zeros((1, 3), np.uint8)
    _kernel()(frame, frame, 1, np.zeros(3, np.uint16), np.zeros((1, 1), np.uint16))


class CellScorer:
    """Integer cell sums of |frame difference| for several stride-s sequences at once.

    Feed the base-stride sequence (source frames 0, g, 2g, ...; g = gcd of the rates) in
    order, in chunks of any size; for rate s (step r = s / g in the fed sequence) it keeps:
      pair[m]     = sums of |g_{m+1} - g_m| over cell x cell x 3 values  -> [M-1, Hc, Wc]
      boundary[m] = sums of |g_{m+d} - g_m|, d = 2*tubelet - 1          -> [M-d, Hc, Wc]
      total[m]    = sum of |g_{m+1} - g_m| over the whole frame           -> [M-1]
    Sums are exact integers (uint16 for cells up to 9 px, else uint32); times
    `shards.cell_scale(cell)` they equal `motion.cell_diff_maps` bit for bit. Only the last
    r*d frames are kept, so memory is one chunk plus that window.
    """

    def __init__(self, rates: Iterable[int], base: int, tubelet: int, cell: int, height: int, width: int):
        self.steps = {int(s): int(s) // base for s in rates}
        self.distance = shards.boundary_distance(tubelet)
        self.cell, self.height, self.width = cell, height, width
        self.hc, self.wc = height // cell, width // cell
        if self.hc == 0 or self.wc == 0:
            raise ValueError(f"frame {height}x{width} is smaller than one cell of {cell} px")
        self.dtype = shards.cell_sum_dtype(cell)
        self.lag = max(self.steps.values()) * self.distance
        self.window: dict[int, np.ndarray] = {}
        self.count = 0
        self.out = {s: {"pair": [], "boundary": [], "total": []} for s in self.steps}
        self._kernel = _kernel()
        self._acc = np.empty(width * 3, np.uint16 if 255 * cell <= np.iinfo(np.uint16).max else np.uint32)

    def _pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
        """(cell sums [Hc, Wc], whole-frame sum) of |a - b| for two [H, W, 3] uint8 frames."""
        cells = np.empty((self.hc, self.wc), self.dtype)
        shape = (self.height, self.width * 3)
        whole = self._kernel(a.reshape(shape), b.reshape(shape), self.cell, self._acc, cells)
        return cells, int(whole)

    def feed(self, frames: np.ndarray) -> None:
        """frames: [K, H, W, 3] uint8, the next K frames of the base-stride sequence."""
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 [K, {self.height}, {self.width}, 3], got {frames.dtype} {frames.shape}")
        for frame in frames:
            i = self.count
            self.window[i] = frame
            for s, r in self.steps.items():
                if i % r:
                    continue
                for dist, key in ((1, "pair"), (self.distance, "boundary")):
                    j = i - dist * r
                    if j < 0:
                        continue
                    cells, whole = self._pair(frame, self.window[j])
                    self.out[s][key].append(cells)
                    if key == "pair":
                        self.out[s]["total"].append(whole)
            self.window.pop(i - self.lag, None)
            self.count += 1

    def result(self) -> dict[int, dict[str, np.ndarray]]:
        """Per rate: num_sampled M, pair [M-1,Hc,Wc], boundary [max(M-d,0),Hc,Wc] sums,
        frame_scores [M-1] float32 (whole-frame mean |diff| on [0, 1] pixels)."""
        out = {}
        denominator = float(self.height * self.width * 3 * 255)
        for s, r in self.steps.items():
            o = self.out[s]
            empty = np.zeros((0, self.hc, self.wc), self.dtype)
            out[s] = {
                "num_sampled": -(-self.count // r),
                "pair": np.stack(o["pair"]) if o["pair"] else empty,
                "boundary": np.stack(o["boundary"]) if o["boundary"] else empty,
                "frame_scores": (np.asarray(o["total"], np.float64) / denominator).astype(np.float32),
            }
        return out


class VideoError(Exception):
    """A video that cannot be scored: `stage` (see shards.ERROR_STAGES) and `reason`
    ('<category>: <detail>')."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason

    def __reduce__(self):  # picklable across processes (the default passes one argument)
        return type(self), (self.stage, self.reason)


# Leading bytes of containers decord can read: a file that starts like one but does not
# open is a corrupt video (e.g. truncated), anything else is not a video at all.
_SIGNATURES = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"),
               (0, b"OggS"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"))


def _looks_like_video(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[o:o + len(sig)] == sig for o, sig in _SIGNATURES)


def _explain_open_failure(path: str, err: Exception) -> str:
    """A reason for a file decord cannot open: 'no video stream', 'corrupt video' (a
    container that does not open, e.g. truncated) or 'not a video'; ffmpeg's own words
    (through PyAV) as the detail, since decord's are only 'Error reading <path>'."""
    message = video.clean_decoder_error(str(err))
    no_stream = "cannot find video stream" in message
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "no video stream: the file has no video track"
            if no_stream:  # a video track decord's bundled FFmpeg has no decoder for (AV1)
                codec = container.streams.video[0].codec_context.codec.canonical_name
                return f"unsupported codec: codec {codec} is not supported by the decoder"
    except av.error.FFmpegError as ff:
        message = ff.strerror or message
    except (OSError, ValueError) as ff:
        message = str(ff)
    if no_stream:
        return "no video stream: the file has no video track"
    kind = "corrupt video" if _looks_like_video(path) else "not a video"
    return f"{kind}: {message}"


def check_length(num_frames: int, cfg: PrecomputeConfig) -> None:
    """Raise VideoError('validate', ...) for a video too short to give a clip."""
    if num_frames < 2:
        raise VideoError("validate", f"single frame: the video has {num_frames} frame(s), "
                                     "motion needs at least 2")
    for s in sorted(cfg.sampling_rates, reverse=True):
        m = video.num_sampled(num_frames, s)
        need = 2 if cfg.pad_short else cfg.num_frames
        if m < need:
            raise VideoError(
                "validate",
                f"too short: {num_frames} frames give {m} sampled frame(s) at sampling rate {s}, "
                f"fewer than {need}" + ("" if cfg.pad_short else f" (num_frames={cfg.num_frames})"),
            )


def probe_file(path: str, threads: int = 1) -> video.VideoInfo:
    """`video.probe` of a local file, or VideoError('read' | 'decode', reason) saying why not."""
    if os.path.isdir(path):
        raise VideoError("read", "is a directory: a manifest path must name a video file")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise VideoError("read", f"not found: {path}") from None
    except OSError as err:
        raise VideoError("read", f"unreadable: {err.strerror}") from None
    if size == 0:
        raise VideoError("read", "empty file: 0 bytes")
    # Decoder boundary: any failure of the native decoder on one file is that file's error.
    try:
        return video.probe(path, threads=threads)
    except Exception as err:  # noqa: BLE001  (decord raises RuntimeError, DECORDError, AssertionError)
        raise VideoError("decode", _explain_open_failure(path, err)) from None


def score_video(path: str, cfg: PrecomputeConfig) -> dict[str, Any]:
    """Decode one local video once and compute its motion maps for every sampling rate.

    Returns {num_frames, fps, height, width, resized_height, resized_width,
    decoded_frames, decode_s, score_s (wall), decode_cpu_s, score_cpu_s (CPU time: the
    scoring thread's, and the rest of the process's for decoding; less sensitive to other
    load than wall time), rates: {s: CellScorer.result()[s]}}.
    Raises VideoError for anything wrong with the file.
    """
    info = probe_file(path, cfg.decode_threads)
    check_length(info.num_frames, cfg)
    size_hw = video.resized_size(info.height, info.width, cfg.short_side)
    if min(size_hw) < cfg.cell:
        raise VideoError("validate", f"too small: {size_hw[0]}x{size_hw[1]} px after resizing, "
                                     f"smaller than one cell of {cfg.cell} px")
    scorer = CellScorer(cfg.sampling_rates, cfg.base_stride, cfg.tubelet, cfg.cell, *size_hw)
    # CPU: scoring is this thread's CPU time while it scores; decoding is the rest of the
    # process's CPU time, decord's own threads included (they may run on while we score).
    decode_s = score_s = score_cpu = 0.0
    decoded = 0
    c_start = time.process_time()
    t0 = time.perf_counter()
    try:
        reader = video.open_reader(path, size_hw, threads=cfg.decode_threads)
    except Exception as err:  # noqa: BLE001  (same decoder boundary as above)
        raise VideoError("decode", f"decode error: {video.clean_decoder_error(str(err))}") from None
    for chunk in video.frames_in_chunks(info.num_frames, cfg.base_stride, cfg.chunk_frames):
        try:
            frames = reader.get_batch(chunk.tolist()).asnumpy()
        except Exception as err:  # noqa: BLE001  (same decoder boundary as above)
            raise VideoError("decode", f"decode error: {video.clean_decoder_error(str(err))}") from None
        t1, th1 = time.perf_counter(), time.thread_time()
        decode_s += t1 - t0
        scorer.feed(frames)
        decoded += len(frames)
        t0 = time.perf_counter()
        score_s, score_cpu = score_s + t0 - t1, score_cpu + time.thread_time() - th1
    th1 = time.thread_time()
    rates = scorer.result()
    score_s, score_cpu = score_s + time.perf_counter() - t0, score_cpu + time.thread_time() - th1
    del reader
    decode_cpu = time.process_time() - c_start - score_cpu
    return {
        "num_frames": info.num_frames, "fps": info.fps, "height": info.height, "width": info.width,
        "resized_height": size_hw[0], "resized_width": size_hw[1], "decoded_frames": decoded,
        "decode_s": decode_s, "score_s": score_s, "decode_cpu_s": decode_cpu, "score_cpu_s": score_cpu,
        "rates": rates,
    }
