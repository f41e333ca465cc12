"""Video decoding (decord, or torchcodec behind the same reader) and VideoMAE frame sampling.

Frame sequences: for a sampling rate s, the *stride-s sequence* of a video of n source
frames is g_m = source frame m*s, m = 0 .. M-1 with M = ceil(n / s) (`num_sampled`). Shards
store motion for that sequence, and every clip is a list of positions in it:
- training (`train_window`): T consecutive positions from a random start, so temporal
  jitter is quantized to s source frames (VideoMAE draws any start and spaces T frames by
  ~s with linspace; the difference is at most s-1 frames of offset);
- test (`test_views`): VideoMAE's test protocol, T consecutive positions at
  temporal_start = int(chunk * max((M - T) / (clips - 1), 0)), centred for one clip.
Short videos repeat their last position (VideoMAE pads the same way).

Spatial: frames are resized at decode time so the short side is `short_side`, keeping the
aspect ratio (`resized_size`). Test crops (`spatial_crops`) follow VideoMAE (left / centre /
right along the long side) but are snapped to multiples of `align` (the shard cell size) so
that scores from shard cell maps are exact for every evaluation view.

Decoders (`data.decoder`): `open_frames` returns a `FrameReader` (length + frames at
indices, resized while decoding) backed by decord (default) or torchcodec (PyTorch's
decoder; optional extra `pip install -e '.[torchcodec]'` plus FFmpeg's shared libraries).
At the source size both give the same pixels (tested: identical on the test videos); when
resizing, both use FFmpeg's swscale with different filters: within a mean of 1.5 grey levels
(edges differ by up to ~30).

decord must be imported after torch in any process that uses both (decord before CUDA
torch segfaults, dmlc/decord#293), so `load_decord()` imports torch first. A process that
never touches torch (the precompute decoder child, bench precompute's workers) calls
`use_decord_without_torch()` once at its start instead: importing torch there would only
cost its import time and memory.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import numpy as np

_torch_first = True  # set only by use_decord_without_torch()


def load_decord():
    """The decord module, imported after torch (unless this process chose
    `use_decord_without_torch()`)."""
    if _torch_first and "torch" not in sys.modules:
        import torch  # noqa: F401  (import order: torch before decord)
    import decord

    return decord


def use_decord_without_torch():
    """For a process that never imports torch: import decord now, without torch, and never
    import torch for it later in this process. Call once, at the process's start; returns decord."""
    global _torch_first
    _torch_first = False
    return load_decord()


@dataclass(frozen=True)
class VideoInfo:
    """Source properties: frame count (as the container reports it), fps, size in pixels."""

    num_frames: int
    fps: float
    height: int
    width: int


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to `short_side`, keeping the aspect
    ratio; the long side is rounded to an even number. short_side <= 0 keeps the size."""
    if short_side <= 0:
        return height, width
    if height <= width:
        long = max(2, int(round(width * short_side / height / 2)) * 2)
        return short_side, long
    long = max(2, int(round(height * short_side / width / 2)) * 2)
    return long, short_side


def num_sampled(num_frames: int, rate: int) -> int:
    """M = ceil(n / s): length of the stride-s sequence of a video of n frames."""
    return -(-num_frames // rate)


def sequence_indices(num_frames: int, rate: int) -> np.ndarray:
    """Source frame of each position of the stride-s sequence: [M] int64 = m * s."""
    return np.arange(0, num_frames, rate, dtype=np.int64)


def clean_decoder_error(message: str, limit: int = 300) -> str:
    """decord's errors carry C++ log prefixes and nested 'Check failed' noise; keep the
    human part, e.g. 'Error sending packet' or 'cannot find video stream ...'."""
    text = " ".join(str(message).split())
    text = re.sub(r"\[\d\d:\d\d:\d\d\]\s*\S+\.(?:cc|h|cpp):\d+:\s*", "", text)
    text = re.sub(r"Check failed: .*?\(-?\d+ vs\. -?\d+\)\s*", "", text)
    return text.strip()[:limit] or "unknown decoder error"


def probe(path: str, *, threads: int = 1) -> VideoInfo:
    """Frame count, fps and size of a local video file (decodes the first frame for the
    size: decord exposes no header-only query)."""
    decord = load_decord()
    vr = decord.VideoReader(path, num_threads=threads)
    first = vr.next().asnumpy()
    info = VideoInfo(len(vr), float(vr.get_avg_fps()), int(first.shape[0]), int(first.shape[1]))
    del vr
    return info


def frame_size(path: str) -> tuple[int, int]:
    """(height, width) of a local video's frames from its stream header (PyAV; nothing is
    decoded): what `read_frames` needs to resize a video that has no shard row, at a fifth
    of `probe`'s CPU (2 vs 9.5 ms on a prepared 224 px copy; decord has no header-only query)."""
    import av

    with av.open(path) as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.height), int(ctx.width)


def open_reader(path: str, size: tuple[int, int], *, threads: int = 1):
    """A decord VideoReader that resizes to `size` = (height, width) while decoding."""
    decord = load_decord()
    return decord.VideoReader(path, num_threads=threads, height=size[0], width=size[1])


class FrameReader:
    """One open video: `len(reader)` source frames, `reader.frames(indices)` -> [K, H, W, 3]
    uint8 RGB at the size given to `open_frames`. Decoders seek to the keyframe before the
    first index and decode forward, so a window costs what its GOP span costs."""

    def __init__(self, num_frames: int, get):
        self._n, self._get = num_frames, get

    def __len__(self) -> int:
        return self._n

    def frames(self, indices) -> np.ndarray:
        return self._get([int(i) for i in indices])


def torchcodec_reason() -> str:
    """Why torchcodec cannot decode here ("" when it can): not installed, or FFmpeg's shared
    libraries missing (torchcodec loads them at import)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError or FFmpeg's loader RuntimeError
        return (f"torchcodec unavailable ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                "install it with pip install -e '.[torchcodec]' and FFmpeg's shared libraries "
                "(Debian: apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 "
                "libavfilter8 libavdevice59)")
    return ""


def _torchcodec_decoder(path: str, size: tuple[int, int] | None, threads: int, device: str):
    reason = torchcodec_reason()
    if reason:
        raise RuntimeError(f"data.decoder=torchcodec: {reason}")
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    # CUDA (NVDEC) decodes at the source size; the resize then runs on the device (below).
    transforms = [Resize(size=tuple(size))] if size is not None and device == "cpu" else None
    return VideoDecoder(path, device=device, dimension_order="NHWC", num_ffmpeg_threads=threads,
                        seek_mode="exact", transforms=transforms)


def probe_with(path: str, decoder: str = "decord", *, threads: int = 1) -> VideoInfo:
    """`probe` through `decoder`; torchcodec reads the size from the stream header."""
    if decoder == "decord":
        return probe(path, threads=threads)
    md = _torchcodec_decoder(path, None, threads, "cpu").metadata
    return VideoInfo(int(md.num_frames), float(md.average_fps), int(md.height), int(md.width))


def open_frames(path: str, size: tuple[int, int], *, decoder: str = "decord", threads: int = 1,
                device: str = "cpu") -> FrameReader:
    """A FrameReader over a local video file that resizes to `size` = (height, width).

    decoder: "decord" | "torchcodec". device: "cpu", or "cuda" for torchcodec's NVDEC decode
    (frames resized on the GPU, antialiased bilinear, then copied to host memory; written for
    a GPU decode actor, not exercised by the CPU-only test suite).
    """
    if decoder == "decord":
        vr = open_reader(path, size, threads=threads)
        return FrameReader(len(vr), lambda idx: vr.get_batch(idx).asnumpy())
    if decoder != "torchcodec":
        raise ValueError(f"decoder={decoder!r}: allowed: decord, torchcodec")
    dec = _torchcodec_decoder(path, size, threads, device)

    def get(idx: list[int]) -> np.ndarray:
        data = dec.get_frames_at(idx).data  # [K, H, W, 3] uint8
        if device != "cpu" and tuple(data.shape[1:3]) != tuple(size):
            import torch.nn.functional as F

            data = F.interpolate(data.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear",
                                 antialias=True).permute(0, 2, 3, 1)
        return np.ascontiguousarray(data.cpu().numpy())

    return FrameReader(len(dec), get)


def decode_frames(path_or_uri: str, indices, short_side: int, *, threads: int = 1) -> np.ndarray:
    """Source frames `indices` of a video, resized to short side `short_side`:
    [T, H, W, 3] uint8 RGB. The same resize as the precompute job, so pixels match the
    frames the shard cell maps were computed on. s3:// URIs are downloaded first."""
    from pipeline import storage

    with storage.download_to_temp(path_or_uri) as local:
        info = probe(local, threads=threads)
        vr = open_reader(local, resized_size(info.height, info.width, short_side), threads=threads)
        frames = vr.get_batch(list(map(int, indices))).asnumpy()
        del vr
    return frames


def _pad_window(start: int, num_sampled: int, num_frames: int) -> np.ndarray:
    ids = np.arange(start, start + num_frames, dtype=np.int64)
    return np.minimum(ids, max(num_sampled - 1, 0))


def train_window(num_sampled: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """T = num_frames consecutive positions of a stride-s sequence of length M, from a
    uniform random start; [T] int64. A sequence shorter than T repeats its last position."""
    if num_sampled < 1 or num_frames < 1:
        raise ValueError(f"need num_sampled >= 1 and num_frames >= 1, got {num_sampled}, {num_frames}")
    start = int(rng.integers(0, num_sampled - num_frames + 1)) if num_sampled > num_frames else 0
    return _pad_window(start, num_sampled, num_frames)


def test_views(num_sampled: int, num_frames: int, clips: int) -> list[np.ndarray]:
    """VideoMAE's test clips: `clips` windows of T positions, window k starting at
    int(k * max((M - T) / (clips - 1), 0)); a single clip is centred. [T] int64 each."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if num_sampled < 1 or num_frames < 1:
        raise ValueError(f"need num_sampled >= 1 and num_frames >= 1, got {num_sampled}, {num_frames}")
    if clips == 1:
        return [_pad_window(max(num_sampled - num_frames, 0) // 2, num_sampled, num_frames)]
    step = max((num_sampled - num_frames) / (clips - 1), 0)
    return [_pad_window(int(k * step), num_sampled, num_frames) for k in range(clips)]


def spatial_crops(height: int, width: int, crop: int, crops: int, align: int = 1) -> list[tuple[int, int]]:
    """(top, left) of `crops` square crops of side `crop` in a height x width frame.

    VideoMAE's test crops: evenly spaced along the long side (left / centre / right for 3),
    centred on the short side; one crop is centred. Offsets are rounded to multiples of
    `align` (and kept inside the frame), so crops sit on the shard's cell grid.
    """
    if crop > min(height, width):
        raise ValueError(f"crop={crop} does not fit in a {height}x{width} frame")
    if crops < 1 or align < 1:
        raise ValueError(f"crops and align must be >= 1, got crops={crops}, align={align}")

    def snap(offset: float, room: int) -> int:
        top_aligned = (room // align) * align
        return int(min(max(round(offset / align) * align, 0), top_aligned))

    long_room = max(height, width) - crop
    short_off = snap((min(height, width) - crop) / 2, min(height, width) - crop)
    if crops == 1:
        longs = [long_room / 2]
    else:
        longs = [k * long_room / (crops - 1) for k in range(crops)]
    out = []
    for off in longs:
        long_off = snap(off, long_room)
        out.append((long_off, short_off) if height > width else (short_off, long_off))
    return out


def frames_in_chunks(num_frames: int, rate: int, chunk: int) -> list[np.ndarray]:
    """The stride-`rate` source indices of a video split into chunks of <= `chunk` frames
    (decoding a long video chunk by chunk keeps memory at one chunk)."""
    idx = sequence_indices(num_frames, rate)
    return [idx[i:i + chunk] for i in range(0, len(idx), max(chunk, 1))] or [idx]

