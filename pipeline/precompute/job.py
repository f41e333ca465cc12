"""The precompute job: decode every video once and write motion cell maps to Parquet shards.

    manifest -> parts of `part_size` lines -> Ray Data (one row per part)
      -> map_batches(PartWorker, actor pool of `actors`) -> per part, committed atomically:
         shards/part-N.parquet + errors/part-N.parquet + _parts/part-N.json (marker, last)

Why parts, and why the actor writes them instead of `Dataset.write_parquet`: Ray's writer
names files by write UUID and writes them in place, so a killed job leaves partial files
that look complete and a rerun duplicates rows. A part is a deterministic slice of the
manifest, written under deterministic names and committed by a marker written last, so
a rerun skips committed parts, rewrites the others and ends with the same files as an
uninterrupted run. Only one summary row per part travels back through Ray.

Per video (`score_video`): decode once at stride gcd(rates), resized at decode time to the
short side, in chunks (memory stays at one chunk), and derive every sampling rate from that
sequence: pair cells (distance 1), boundary cells (distance 2*tubelet-1) and whole-frame
scores. Decoding runs in a child process per actor (`DecoderProcess`): a segfault, an OOM
kill or a hang in the native decoder becomes that video's error row and a fresh child,
never a lost actor, and Ray's own retries are capped so that nothing can loop forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from pipeline import shards, storage, video
from pipeline.manifest import ManifestRow, check_labels, read_manifest

# Same as pipeline.motion.SCORE_MODES; not imported from there because motion imports torch,
# which the decoder processes never need (a test checks the two agree).
SCORE_MODES = ("boundary", "consecutive")
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
# Fields that change what the shards contain: a rerun into the same output must match them.
SHARD_FIELDS = ("sampling_rates", "short_side", "cell", "tubelet", "num_frames", "pad_short", "part_size")
# Test hooks (see _fault_hooks and PartWorker.process_part); inert unless set.
FAULT_ENV = ("MGTC_FAULT_CRASH", "MGTC_FAULT_HANG", "MGTC_FAULT_DELAY_S", "MGTC_FAULT_WORKER_EXIT")
# Environment handed to workers: the AWS chain the driver sees (Ray workers started before
# these were set would not see them) and the fault-injection hooks used by the tests.
FORWARDED_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CA_BUNDLE",
    *FAULT_ENV,
)


class ConfigError(ValueError):
    """Invalid precompute settings; the message names every bad field."""


@dataclass(frozen=True)
class PrecomputeConfig:
    """Settings of `mgtc precompute` (YAML `precompute:` section or flat keys, then flags).

    Shard content: sampling_rates, short_side (0 = keep source size), cell (px), tubelet,
    num_frames (clip length T: a video whose stride-s sequence is shorter than T at any rate
    is rejected unless pad_short), part_size (videos per committed part).
    Execution: actors (0 = one per cluster CPU), decode_threads per decoder, chunk_frames
    decoded at a time, timeout_s per video, crash_retries (fresh decoder per retry),
    max_task_retries (Ray actor restarts / task retries, capped: never -1), compression,
    s3_endpoint (overrides AWS_ENDPOINT_URL), forward_env, progress_interval_s.
    score_mode is recorded for calibrate/train; shards hold the maps of both modes.
    """

    sampling_rates: tuple[int, ...] = (2, 4)
    short_side: int = 224
    cell: int = 8
    tubelet: int = 2
    num_frames: int = 16
    pad_short: bool = False
    score_mode: str = "boundary"
    part_size: int = 32
    actors: int = 0
    decode_threads: int = 1
    chunk_frames: int = 64
    timeout_s: float = 300.0
    crash_retries: int = 1
    max_task_retries: int = 2
    compression: str = "zstd"
    s3_endpoint: str = ""
    forward_env: bool = True
    progress_interval_s: float = 10.0
    path_column: str = ""
    label_column: str = ""
    num_classes: int = 0  # labels must be in 0..num_classes-1 (a train config's data.num_classes); 0 = unchecked

    def validate(self) -> "PrecomputeConfig":
        """Raise ConfigError listing every invalid field; returns self."""
        e: list[str] = []
        rates = self.sampling_rates
        if not rates or any(not isinstance(r, int) or r < 1 for r in rates) or len(set(rates)) != len(rates):
            e.append(f"sampling_rates={rates!r}: need distinct integers >= 1")
        if self.cell < 1:
            e.append(f"cell={self.cell}: must be >= 1")
        if self.short_side < 0 or 0 < self.short_side < self.cell:
            e.append(f"short_side={self.short_side}: must be 0 (keep size) or >= cell={self.cell}")
        if self.tubelet < 1:
            e.append(f"tubelet={self.tubelet}: must be >= 1")
        if self.num_frames < 2 * max(self.tubelet, 1) or self.num_frames % max(self.tubelet, 1):
            e.append(f"num_frames={self.num_frames}: must be a multiple of tubelet={self.tubelet}, "
                     "at least two tubelets")
        if self.score_mode not in SCORE_MODES:
            e.append(f"score_mode={self.score_mode!r}: allowed: {', '.join(SCORE_MODES)}")
        for name in ("part_size", "decode_threads", "chunk_frames"):
            if getattr(self, name) < 1:
                e.append(f"{name}={getattr(self, name)}: must be >= 1")
        for name in ("actors", "crash_retries", "max_task_retries", "num_classes"):
            if getattr(self, name) < 0:
                e.append(f"{name}={getattr(self, name)}: must be >= 0")
        for name in ("timeout_s", "progress_interval_s"):
            if not getattr(self, name) > 0:
                e.append(f"{name}={getattr(self, name)}: must be > 0")
        if self.compression not in COMPRESSIONS:
            e.append(f"compression={self.compression!r}: allowed: {', '.join(COMPRESSIONS)}")
        if e:
            raise ConfigError("invalid precompute config:\n  - " + "\n  - ".join(e))
        return self

    @property
    def base_stride(self) -> int:
        """Decode stride: every sampling rate is a multiple of it."""
        return math.gcd(*self.sampling_rates)

    def shard_settings(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if k in SHARD_FIELDS}


def _coerce_field(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
        try:
            return tuple(int(v) for v in items)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r}: expected a list of integers") from None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return str(value).lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name}={value!r}: expected true/false")
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or str(value).lstrip("-").isdigit()):
            raise ConfigError(f"{name}={value!r}: expected an integer")
        return int(value)
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r}: expected a number") from None
    return "" if value is None else str(value)


def config_from_mapping(values: dict[str, Any], base: PrecomputeConfig | None = None) -> PrecomputeConfig:
    """A config from plain values (YAML / flags); unknown keys are errors naming them."""
    base = base or PrecomputeConfig()
    known = {f.name: getattr(base, f.name) for f in dataclasses.fields(PrecomputeConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown precompute setting(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(known))}")
    coerced = {k: _coerce_field(k, v, known[k]) for k, v in values.items()}
    return dataclasses.replace(base, **coerced)


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> PrecomputeConfig:
    """Settings from a YAML file, then `overrides` (flags), validated before Ray starts.

    The file may hold a `precompute:` section, flat precompute keys, or a training config:
    `data.short_side`, `data.num_frames`, `model.tubelet` and `masking.score_mode` of a
    training config are taken as defaults so that shards match what `train` will sample.
    """
    values: dict[str, Any] = {}
    if path:
        import yaml

        try:
            loaded = yaml.safe_load(storage.read_bytes(path)) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping")
        sections = {"precompute", "data", "model", "masking", "optim", "scaling", "tracking"}
        if set(loaded) & sections:
            data, model, masking = (loaded.get(k) or {} for k in ("data", "model", "masking"))
            for key, src in (("short_side", data), ("num_frames", data), ("num_classes", data),
                             ("tubelet", model), ("score_mode", masking)):
                if key in src:
                    values[key] = src[key]
            values.update(loaded.get("precompute") or {})
        else:
            values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_mapping(values).validate()


# --------------------------------------------------------------------------- scoring


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
    if "cannot find video stream" in message:
        return "no video stream: the file has no video track"
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "no video stream: the file has no video track"
    except av.error.FFmpegError as ff:
        message = ff.strerror or message
    except (OSError, ValueError) as ff:
        message = str(ff)
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


def score_video(path: str, cfg: PrecomputeConfig) -> dict[str, Any]:
    """Decode one local video once and compute its motion maps for every sampling rate.

    Returns {num_frames, fps, height, width, resized_height, resized_width,
    decoded_frames, decode_s, score_s (wall), decode_cpu_s, score_cpu_s (CPU time: the
    scoring thread's, and the rest of the process's for decoding; less sensitive to other
    load than wall time), rates: {s: CellScorer.result()[s]}}.
    Raises VideoError for anything wrong with the file.
    """
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
        info = video.probe(path, threads=cfg.decode_threads)
    except Exception as err:  # noqa: BLE001  (decord raises RuntimeError, DECORDError, AssertionError)
        raise VideoError("decode", _explain_open_failure(path, err)) from None
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


# --------------------------------------------------------------------------- isolation

_HEADER = struct.Struct("<Q")


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv_blocking(stream) -> Any | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(n))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the Ray actor) dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _fault_hooks(path: str) -> None:
    """Test hooks (env): MGTC_FAULT_CRASH / MGTC_FAULT_HANG = substring of a path that makes
    the decoder segfault / hang; MGTC_FAULT_DELAY_S = seconds to sleep before each video.
    (MGTC_FAULT_WORKER_EXIT makes the actor itself exit, in PartWorker.process_part.)"""
    crash, hang = os.environ.get("MGTC_FAULT_CRASH"), os.environ.get("MGTC_FAULT_HANG")
    if crash and crash in path:
        os.kill(os.getpid(), signal.SIGSEGV)
    if hang and hang in path:
        time.sleep(3600)
    delay = float(os.environ.get("MGTC_FAULT_DELAY_S") or 0)
    if delay > 0:
        time.sleep(delay)


def child_main() -> None:
    """Decoder process: reads {path, config} requests on stdin, answers on stdout."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed (ffmpeg, stray prints) goes to stderr, not the protocol
    _die_with_parent()
    video.TORCH_FIRST = False  # this process never imports torch
    video.load_decord()  # import now, while the parent waits for its first task
    warm_up_scoring()
    _send(protocol_out, {"ready": True})
    while True:
        request = _recv_blocking(sys.stdin.buffer)
        if request is None:
            return
        _fault_hooks(request["path"])
        try:
            cfg = PrecomputeConfig(**request["config"])
            reply = {"ok": True, "result": score_video(request["path"], cfg)}
        except VideoError as err:
            reply = {"ok": False, "stage": err.stage, "error": err.reason}
        except Exception as err:  # noqa: BLE001  (a bug must cost one video, not the actor)
            import traceback

            traceback.print_exc()
            reply = {"ok": False, "stage": "decode", "error": f"internal error: {type(err).__name__}: {err}"}
        _send(protocol_out, reply)


def _signal_reason(returncode: int | None) -> str:
    if returncode is None:
        return "decoder crashed: no exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        hint = " (killed: out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"decoder crashed: signal {-returncode} ({name}){hint}"
    return f"decoder crashed: exit code {returncode}"


class DecoderProcess:
    """A persistent child process that runs `score_video`, restarted when it dies.

    `run` never raises for a bad video: a crash (segfault, OOM kill, abort) or a timeout
    becomes {"ok": False, "stage": "decode", "error": ...}. A crashed video is retried
    `crash_retries` times in a fresh process (an OOM kill may be transient); a timeout is not.
    `timeout_s` counts from the request; a new child's start-up (imports) has its own
    `startup_s`, so a loaded machine does not turn a slow start into a video's timeout.
    """

    def __init__(self, timeout_s: float, crash_retries: int = 1, startup_s: float = 120.0):
        self.timeout_s, self.crash_retries, self.startup_s = timeout_s, crash_retries, startup_s
        self.proc: subprocess.Popen | None = None
        self.ready = False

    def _start(self) -> subprocess.Popen:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        return subprocess.Popen(
            [sys.executable, "-c", "from pipeline.precompute.job import child_main; child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )

    def _kill(self) -> int | None:
        proc, self.proc, self.ready = self.proc, None, False
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        return proc.returncode

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, min(n - got, 1 << 20))
            if not data:
                return None  # EOF: the child died
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _recv(self, deadline: float) -> dict | None:
        header = self._read_exact(_HEADER.size, deadline)
        body = None if header is None else self._read_exact(_HEADER.unpack(header)[0], deadline)
        return None if body is None else pickle.loads(body)

    def _wait_ready(self) -> str:
        """'' once the child has imported its decoder, else why it did not."""
        if self.ready:
            return ""
        try:
            self.ready = self._recv(time.monotonic() + self.startup_s) is not None
        except TimeoutError:
            self._kill()
            return f"decoder crashed: did not start within {self.startup_s:g} s"
        return "" if self.ready else _signal_reason(self._kill()) + " while starting"

    def _once(self, request: dict) -> dict:
        self.start()
        failed = self._wait_ready()
        if failed:
            return {"ok": False, "stage": "decode", "crash": True, "error": failed}
        deadline = time.monotonic() + self.timeout_s
        try:
            _send(self.proc.stdin, request)
            reply = self._recv(deadline)
        except TimeoutError:
            self._kill()
            return {"ok": False, "stage": "decode", "crash": False,
                    "error": f"timed out: no result after {self.timeout_s:g} s"}
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        if reply is None:
            return {"ok": False, "stage": "decode", "crash": True, "error": _signal_reason(self._kill())}
        return reply

    def run(self, path: str, config: dict) -> dict:
        request = {"path": path, "config": config}
        reply = self._once(request)
        for _ in range(self.crash_retries):
            if not reply.get("crash"):
                break
            reply = self._once(request)
        reply.pop("crash", None)
        return reply

    def start(self) -> None:
        """Start the child now (it imports decord while the caller does other work)."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self.proc = self._start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the child exits on its own
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._kill()


# --------------------------------------------------------------------------- parts


def reason_category(reason: str) -> str:
    """'decoder crashed: signal 11 (SIGSEGV)' -> 'decoder crashed' (summary grouping)."""
    return reason.split(":", 1)[0].strip() or "unknown"


class ForwardedEnv:
    """Environment variables handed to the workers. The repr shows names only, so that
    credentials never land in a log line that prints actor arguments."""

    def __init__(self, values: dict[str, str]):
        self.values = dict(values)

    def __repr__(self) -> str:
        return f"ForwardedEnv({sorted(self.values)})"

    @classmethod
    def from_environ(cls) -> "ForwardedEnv":
        return cls({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})


def _apply_endpoint(cfg: PrecomputeConfig) -> None:
    """`s3_endpoint` becomes AWS_ENDPOINT_URL_S3 of this process (and of the decoder processes
    and readers it starts), so every S3 client of the job uses the same store."""
    if cfg.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = cfg.s3_endpoint


def _row_dict(row: ManifestRow) -> dict[str, Any]:
    return dataclasses.asdict(row)


def _error_record(row: dict, part: int, stage: str, error: str) -> dict[str, Any]:
    return {"video": row["video"], "path": row["path"], "label": row["label"], "line": row["line"],
            "part": part, "stage": stage, "error": storage.redact(error)}


def _shard_records(row: dict, part: int, result: dict, cfg: PrecomputeConfig) -> list[dict[str, Any]]:
    hc = result["resized_height"] // cfg.cell
    wc = result["resized_width"] // cfg.cell
    records = []
    for s in cfg.sampling_rates:
        r = result["rates"][s]
        records.append({
            "video": row["video"], "path": row["path"], "label": row["label"], "line": row["line"],
            "part": part, "sampling_rate": s, "num_frames": result["num_frames"], "fps": result["fps"],
            "height": result["height"], "width": result["width"], "short_side": cfg.short_side,
            "resized_height": result["resized_height"], "resized_width": result["resized_width"],
            "num_sampled": r["num_sampled"], "tubelet": cfg.tubelet, "cell": cfg.cell,
            "cells_height": hc, "cells_width": wc, "cell_scale": float(shards.cell_scale(cfg.cell)),
            "frame_scores": r["frame_scores"], "pair_cells": r["pair"], "boundary_cells": r["boundary"],
        })
    return records


def _fetch(path: str, folder: str, endpoint: str | None) -> tuple[str, str | None]:
    """(local path, error) of one video: s3:// objects are downloaded into `folder`."""
    if not storage.is_s3(path):
        return path, None
    fd, local = tempfile.mkstemp(prefix="video-", suffix=os.path.splitext(path)[1][:16], dir=folder)
    os.close(fd)
    try:
        storage.download(path, local, endpoint=endpoint)
    except FileNotFoundError:
        os.remove(local)
        return "", f"not found: {path}"
    except OSError as err:
        os.remove(local)
        return "", f"download failed: {storage.redact(str(err))[:300]}"
    return local, None


class PartWorker:
    """Ray Data UDF (one instance per actor): scores and commits whole manifest parts.

    Batch in: {"part": [P] int, "rows": [P] JSON list of manifest rows}. Batch out:
    {"part": [P] int, "summary": [P] JSON str}, one per committed part. Usable without Ray:
    `PartWorker(config, out)(batch)` on a numpy batch.
    """

    def __init__(self, config: dict, out: str, env: ForwardedEnv | None = None):
        if env is not None:
            for key in FAULT_ENV:  # the driver's hooks only, never a stale one
                os.environ.pop(key, None)
            os.environ.update(env.values)
        self.config = dict(config)
        self.cfg = PrecomputeConfig(**self.config)
        _apply_endpoint(self.cfg)
        self.out = out
        self.endpoint = self.cfg.s3_endpoint or None
        self.decoder = DecoderProcess(self.cfg.timeout_s, self.cfg.crash_retries)
        self.decoder.start()  # boots while Ray schedules the first part
        self.scratch = tempfile.mkdtemp(prefix="mgtc-videos-")
        # Downloads of the next videos overlap the decode of the current one.
        self.pool = ThreadPoolExecutor(max_workers=2)
        # pyarrow imports pandas on its first array (~0.5 s): pay that while the first
        # videos decode, not on the first commit.
        self.pool.submit(shards.error_table, [])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [int(p) for p in batch["part"]]
        summaries = [json.dumps(self.process_part(p, json.loads(str(r)))) for p, r in zip(parts, batch["rows"])]
        return {"part": np.asarray(parts, dtype=np.int64), "summary": np.asarray(summaries, dtype=object)}

    def process_part(self, part: int, rows: list[dict]) -> dict[str, Any]:
        """Score every row of one part and commit it; returns the part's summary (marker)."""
        t0 = time.perf_counter()
        exit_on = os.environ.get("MGTC_FAULT_WORKER_EXIT")
        if exit_on and any(exit_on in r["path"] for r in rows):
            os._exit(3)  # test hook: the actor process dies (not the decoder child)
        ok_records: list[dict] = []
        errors: list[dict] = []
        stats = Counter()
        todo = [r for r in rows if not r["error"]]
        errors += [_error_record(r, part, "manifest", r["error"]) for r in rows if r["error"]]
        futures = {}

        def prefetch(i: int) -> None:
            if i < len(todo) and i not in futures:
                futures[i] = self.pool.submit(_fetch, todo[i]["path"], self.scratch, self.endpoint)

        prefetch(0)
        for i, row in enumerate(todo):
            prefetch(i + 1)
            prefetch(i + 2)
            local, fetch_error = futures.pop(i).result()
            if fetch_error:
                errors.append(_error_record(row, part, "read", fetch_error))
                continue
            try:
                reply = self.decoder.run(local, self.config)
            finally:
                if local != row["path"]:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(local)
            if not reply["ok"]:
                errors.append(_error_record(row, part, reply["stage"], reply["error"]))
                continue
            result = reply["result"]
            ok_records += _shard_records(row, part, result, self.cfg)
            stats["frames_decoded"] += result["decoded_frames"]
            stats["source_frames"] += result["num_frames"]
            stats["decode_s"] += result["decode_s"]
            stats["score_s"] += result["score_s"]
        errors.sort(key=lambda e: e["line"])
        summary = {
            "part": part, "videos": len(rows), "ok": len(rows) - len(errors), "failed": len(errors),
            "failed_by_reason": dict(Counter(reason_category(e["error"]) for e in errors)),
            "rows": len(ok_records), "frames_decoded": int(stats["frames_decoded"]),
            "source_frames": int(stats["source_frames"]),
            "decode_s": round(stats["decode_s"], 4), "score_s": round(stats["score_s"], 4),
            "seconds": round(time.perf_counter() - t0, 4), "retry": False,
            "schema_version": shards.SCHEMA_VERSION,
        }
        commit_part(self.out, part, shards.shard_table(ok_records, self.cfg.cell),
                    shards.error_table(errors), summary, compression=self.cfg.compression,
                    endpoint=self.endpoint)
        return summary

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter teardown: best effort only
            self.decoder.close()
            self.pool.shutdown(wait=False)


def commit_part(out: str, part: int, table, errors, summary: dict, *, compression: str = "zstd",
                endpoint: str | None = None) -> None:
    """Write a part's shard and errors files, then its marker: the part exists for readers
    only from the moment the marker does (each write is atomic on its own)."""
    compression = None if compression == "none" else compression
    storage.write_table_atomic(shards.shard_file(out, part), table, compression=compression, endpoint=endpoint)
    storage.write_table_atomic(shards.error_file(out, part), errors, compression=compression, endpoint=endpoint)
    storage.write_json_atomic(shards.marker_file(out, part), summary, endpoint=endpoint)


# --------------------------------------------------------------------------- driver


@dataclass
class Summary:
    """Outcome of a run over the whole output (committed parts of earlier runs included)."""

    out: str
    parts: int = 0
    parts_run: int = 0
    parts_skipped: int = 0
    parts_failed: int = 0
    videos: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    rows: int = 0
    frames_decoded: int = 0
    source_frames: int = 0
    decode_s: float = 0.0
    score_s: float = 0.0
    videos_run: int = 0
    seconds: float = 0.0

    def add(self, marker: dict, *, this_run: bool) -> None:
        self.videos += marker["videos"]
        self.ok += marker["ok"]
        self.failed += marker["failed"]
        self.failed_by_reason.update(marker["failed_by_reason"])
        self.rows += marker["rows"]
        self.frames_decoded += marker["frames_decoded"]
        self.source_frames += marker["source_frames"]
        self.parts_failed += int(bool(marker.get("retry")))
        if this_run:
            self.videos_run += marker["videos"]
            self.decode_s += marker["decode_s"]
            self.score_s += marker["score_s"]

    @property
    def complete(self) -> bool:
        """Every manifest line ended as a shard row or an error row, no part left to retry."""
        return self.parts_failed == 0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failed_by_reason"] = dict(self.failed_by_reason)
        d["complete"] = self.complete
        return d


def format_summary(s: Summary) -> str:
    rate = s.videos_run / s.seconds if s.seconds > 0 else 0.0
    fps = s.frames_decoded / s.seconds if s.seconds > 0 and s.videos_run == s.videos else None
    lines = [
        f"[precompute] done in {s.seconds:.1f} s: {s.parts} parts "
        f"({s.parts_run} run now, {s.parts_skipped} already committed"
        + (f", {s.parts_failed} FAILED: rerun to retry" if s.parts_failed else "") + ")",
        f"  videos ok       {s.ok}",
        f"  videos failed   {s.failed}",
    ]
    lines += [f"    {name:<22}{n}" for name, n in sorted(s.failed_by_reason.items(), key=lambda kv: -kv[1])]
    lines += [
        f"  shard rows      {s.rows} (one per video and sampling rate)",
        f"  frames decoded  {s.frames_decoded}" + (f" ({fps:.0f} frames/s)" if fps else ""),
        f"  videos/s        {rate:.2f} ({s.videos_run} videos this run)",
        f"  decode / score  {s.decode_s:.1f} s / {s.score_s:.1f} s of decoder time",
        f"  output          {storage.redact(s.out)} ({shards.SHARDS_DIR}/, {shards.ERRORS_DIR}/)",
    ]
    return "\n".join(lines)


def split_parts(rows: list[ManifestRow], part_size: int) -> list[list[ManifestRow]]:
    """Deterministic parts: consecutive manifest rows, `part_size` per part."""
    return [rows[i:i + part_size] for i in range(0, len(rows), part_size)]


def manifest_fingerprint(rows: list[ManifestRow]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r.line, r.video, r.path, r.label, r.error]).encode())
    return digest.hexdigest()


def _check_or_write_meta(out: str, cfg: PrecomputeConfig, manifest_uri: str, rows: list[ManifestRow],
                         endpoint: str | None) -> None:
    """Record the settings and manifest of an output; refuse to mix in a different run."""
    meta = {
        "schema_version": shards.SCHEMA_VERSION,
        "config": cfg.shard_settings(),
        "score_mode": cfg.score_mode,
        "manifest": {"uri": storage.redact(manifest_uri), "sha256": manifest_fingerprint(rows),
                     "videos": len(rows)},
    }
    uri = storage.join(out, shards.META_FILE)
    if not storage.exists(uri, endpoint=endpoint):
        storage.write_json_atomic(uri, meta, endpoint=endpoint)
        return
    old = storage.read_json(uri, endpoint=endpoint)
    diffs = [f"{k}: {old.get('config', {}).get(k)!r} there, {v!r} now"
             for k, v in meta["config"].items() if old.get("config", {}).get(k) != v]
    if old.get("schema_version") != shards.SCHEMA_VERSION:
        diffs.append(f"schema_version: {old.get('schema_version')} there, {shards.SCHEMA_VERSION} now")
    if old.get("manifest", {}).get("sha256") != meta["manifest"]["sha256"]:
        diffs.append("manifest: a different list of videos")
    if diffs:
        raise ConfigError(
            f"output {storage.redact(out)} holds shards of a different run ({'; '.join(diffs)}); "
            "resume needs the same manifest and settings: use another --out or delete it"
        )


def _ensure_ray() -> bool:
    """Connect to the cluster in RAY_ADDRESS (ray job submit), or reuse / start a local Ray.
    Returns True when this call started Ray (and the caller must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=os.environ.get("RAY_ADDRESS") or None)
    return True


@contextlib.contextmanager
def _data_context(**settings):
    """Set DataContext fields for this job only (the driver may run other datasets)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in settings}
    for k, v in settings.items():
        setattr(ctx, k, v)
    try:
        yield ctx
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)


class _Progress:
    def __init__(self, total_parts: int, total_videos: int, interval: float, log: Callable[[str], None]):
        self.total_parts, self.total_videos = total_parts, total_videos
        self.interval, self.log = interval, log
        self.t0 = self.last = time.monotonic()
        self.parts = self.videos = self.ok = self.failed = self.frames = 0

    def update(self, marker: dict) -> None:
        self.parts += 1
        self.videos += marker["videos"]
        self.ok += marker["ok"]
        self.failed += marker["failed"]
        self.frames += marker["frames_decoded"]
        now = time.monotonic()
        if now - self.last >= self.interval or self.parts == self.total_parts:
            self.last = now
            elapsed = now - self.t0
            rate = self.videos / elapsed if elapsed > 0 else 0.0
            eta = (self.total_videos - self.videos) / rate if rate > 0 else float("nan")
            self.log(f"[precompute] parts {self.parts}/{self.total_parts} | videos ok {self.ok} "
                     f"failed {self.failed} | {self.frames} frames | {rate:.2f} videos/s | "
                     f"{self.frames / elapsed if elapsed > 0 else 0:.0f} frames/s | ETA {eta:.0f} s")


def _run_parts(out: str, cfg: PrecomputeConfig, todo: dict[int, list[ManifestRow]],
               log: Callable[[str], None]) -> tuple[dict[int, dict], str]:
    """Run the pending parts through Ray Data; returns (summaries by part, failure text)."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    started = _ensure_ray()
    try:
        actors = cfg.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actors = min(actors, len(todo))
        items = [{"part": p, "rows": json.dumps([_row_dict(r) for r in rows])} for p, rows in todo.items()]
        log(f"[precompute] {len(todo)} parts to run ({sum(map(len, todo.values()))} videos) "
            f"on {actors} actor(s)")
        progress = _Progress(len(todo), sum(map(len, todo.values())), cfg.progress_interval_s, log)
        done: dict[int, dict] = {}
        failure = ""
        # Native crashes are absorbed by DecoderProcess; these caps are the second line:
        # Ray's defaults (max_restarts=-1, max_task_retries=-1) would retry a poison part
        # forever, and max_errored_blocks=-1 lets the other parts finish when one cannot.
        with _data_context(max_errored_blocks=-1, actor_task_retry_on_errors=False):
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            with warnings.catch_warnings():
                # max_restarts/max_task_retries only exist as ray_remote_args (deprecated
                # spelling in 2.60, no named replacement yet).
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
                ds = ds.map_batches(
                    PartWorker,
                    fn_constructor_kwargs={
                        "config": dataclasses.asdict(cfg), "out": out,
                        "env": ForwardedEnv.from_environ() if cfg.forward_env else None,
                    },
                    batch_size=1,
                    compute=ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                    num_cpus=1,
                    max_restarts=cfg.max_task_retries,
                    max_task_retries=cfg.max_task_retries,
                )
            try:
                for row in ds.iter_rows():
                    marker = json.loads(row["summary"])
                    done[int(row["part"])] = marker
                    progress.update(marker)
            except Exception as err:  # noqa: BLE001  (Ray surfaces worker failures as many types)
                failure = storage.redact(f"{type(err).__name__}: {err}")[:500]
                log(f"[precompute] Ray Data stopped early: {failure}")
        return done, failure
    finally:
        if started:
            ray.shutdown()


def _commit_failed_part(out: str, part: int, rows: list[ManifestRow], reason: str,
                        cfg: PrecomputeConfig) -> dict:
    """Every video of a part that Ray could not finish becomes a 'worker' error, in a part
    marked retry=True: visible to readers, redone by the next run."""
    errors = [_error_record(_row_dict(r), part, "manifest" if r.error else "worker",
                            r.error or f"worker failed: {reason or 'the part did not finish'}; rerun to retry")
              for r in rows]
    summary = {
        "part": part, "videos": len(rows), "ok": 0, "failed": len(rows),
        "failed_by_reason": dict(Counter(reason_category(e["error"]) for e in errors)),
        "rows": 0, "frames_decoded": 0, "source_frames": 0, "decode_s": 0.0, "score_s": 0.0,
        "seconds": 0.0, "retry": True, "schema_version": shards.SCHEMA_VERSION,
    }
    commit_part(out, part, shards.shard_table([], cfg.cell), shards.error_table(errors), summary,
                compression=cfg.compression, endpoint=cfg.s3_endpoint or None)
    return summary


def run_precompute(manifest: str, out: str, cfg: PrecomputeConfig,
                   log: Callable[[str], None] = print) -> Summary:
    """Run (or resume) the precompute job; returns the summary of the whole output."""
    cfg.validate()
    t0 = time.monotonic()
    _apply_endpoint(cfg)
    endpoint = cfg.s3_endpoint or None
    out = storage.normalize(out)
    rows = read_manifest(manifest, path_column=cfg.path_column or None,
                         label_column=cfg.label_column or None, endpoint=endpoint)
    check_labels(rows, cfg.num_classes, manifest)
    parts = split_parts(rows, cfg.part_size)
    _check_or_write_meta(out, cfg, manifest, rows, endpoint)
    for folder in (shards.SHARDS_DIR, shards.ERRORS_DIR, shards.PARTS_DIR, ""):
        storage.delete_hidden(storage.join(out, folder) if folder else out)
    markers = shards.read_markers(out, [p for p in shards.committed_parts(out) if p < len(parts)])
    todo = {p: rows_ for p, rows_ in enumerate(parts) if p not in markers or markers[p].get("retry")}
    for p in todo:
        if p in markers:  # a failed part is hidden while it is redone
            storage.delete(shards.marker_file(out, p), endpoint=endpoint)
    summary = Summary(out=out, parts=len(parts), parts_skipped=len(parts) - len(todo), parts_run=len(todo))
    for p, marker in markers.items():
        if p not in todo:
            summary.add(marker, this_run=False)
    if todo:
        done, failure = _run_parts(out, cfg, todo, log)
        # A part whose summary never reached the driver may still have been committed.
        committed = set(shards.committed_parts(out))
        late = shards.read_markers(out, [p for p in todo if p not in done and p in committed])
        for p, part_rows in todo.items():
            marker = done.get(p) or late.get(p) or _commit_failed_part(out, p, part_rows, failure, cfg)
            summary.add(marker, this_run=True)
    else:
        log(f"[precompute] all {len(parts)} parts of {storage.redact(out)} are already committed")
    summary.seconds = time.monotonic() - t0
    if summary.complete:
        storage.write_json_atomic(storage.join(out, shards.SUCCESS_FILE), summary.as_dict(), endpoint=endpoint)
    else:
        storage.delete(storage.join(out, shards.SUCCESS_FILE), endpoint=endpoint)
    return summary

