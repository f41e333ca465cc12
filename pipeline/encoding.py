"""Writing mp4 files through PyAV, reproducibly: the codec this PyAV build can write, the
RGB -> yuv420p conversion (single-threaded, bit-exact) and an atomic `write_video`. Shared by
the synthetic data sets (`synth`, `synth_hard`), the benchmarks' test videos and `mgtc
prepare`'s re-encoder (`reencode`)."""

from __future__ import annotations

import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np


@lru_cache(maxsize=1)
def video_codec() -> str:
    """'libx264' when PyAV's bundled ffmpeg can open it for writing, else 'mpeg4'."""
    try:
        av.codec.Codec("libx264", "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return "mpeg4"
    return "libx264"


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18,
                codec: str | None = None) -> None:
    """Encode [F, H, W, 3] uint8 RGB frames as an mp4 (yuv420p), atomically.

    H and W must be even (yuv420p). `crf` is used by libx264 (lower = closer to the
    input); mpeg4 gets a bit rate instead. The file appears under `path` only once
    complete: an interrupted write leaves at most a hidden `.part` file.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    num, height, width, _ = frames.shape
    if num < 1 or height % 2 or width % 2:
        raise ValueError(f"need >= 1 frame and even height/width for yuv420p, got {frames.shape}")
    codec = codec or video_codec()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        # format= because the temporary name does not end in .mp4.
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                # mbtree off: with it, x264 (PyAV 18's bundled build) wrote different
                # bitstreams, and decoded pixels, for identical yuv input from run to run
                # (measured; asm=0 also cured it), which breaks "same seed, same frames".
                stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
            else:
                stream.bit_rate = int(4 * width * height * float(fps))  # ~4 bits/pixel
            for frame in frames:
                container.mux(stream.encode(to_yuv420p(frame)))
            container.mux(stream.encode())  # flush delayed (B-)frames
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_BITEXACT = (av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.ACCURATE_RND
             | av.video.reformatter.Interpolation.BITEXACT)


def to_yuv420p(frame: np.ndarray) -> av.VideoFrame:
    """[H, W, 3] uint8 RGB -> yuv420p VideoFrame, reproducibly.

    Converted here rather than by `encode`, which picks swscale threads from the codec's
    thread count: one thread and bit-exact flags keep the yuv independent of scheduling
    and of the CPU's SIMD paths.
    """
    rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
    return rgb.reformat(format="yuv420p", interpolation=_BITEXACT, threads=1)
