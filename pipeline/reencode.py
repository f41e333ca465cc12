"""Re-encoding one video for training (`mgtc prepare`): short side, keyframe interval,
temporal stride, even sizes, yuv420p H.264 through PyAV. No Ray, no torch.

Why: with x264's default keyframe interval (250) a 16-frame window at stride 4 still decodes
140-200 frames (decord seeks to the previous keyframe); re-encoded at short side 224-320
with a keyframe every 16 frames and only the sampling lattice kept, a window decodes ~20
frames, 4-30x cheaper (reference/DATAPATH_NOTES.md).

The source is decoded once with decord at the prepared size (the resize the trainer would
apply: `video.resized_size`, long side rounded to even), keeping source frames
0, k, 2k, ... (k = `stride`); those frames are encoded at fps / k. Frame j of the prepared
video is therefore source frame j*k, and a clip at sampling rate s in source frames is a
clip at rate s/k in prepared frames (`pipeline.prepared` checks configs against that).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from pipeline import video
from pipeline.encoding import to_yuv420p

class EncodeError(Exception):
    """A video that could not be re-encoded; `stage` / `reason` become its error row."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason

    def __reduce__(self):  # picklable across processes
        return (EncodeError, (self.stage, self.reason))


@dataclass(frozen=True)
class EncodeSettings:
    """How prepared videos are encoded. short_side: px of the short side (even; 0 keeps the
    source size rounded down to even); keyint: frames between keyframes (x264 keyint =
    min-keyint, no scene-cut keyframes, so every window's seek cost is bounded); stride:
    keep every k-th source frame; crf / preset: x264 rate control and speed."""

    short_side: int = 320
    keyint: int = 16
    stride: int = 1
    crf: int = 23
    preset: str = "medium"
    chunk_frames: int = 64
    decode_threads: int = 1


def prepared_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of the prepared frames: `video.resized_size`, both sides even
    (yuv420p), never larger than the source (a smaller source keeps its size)."""
    if short_side <= 0 or short_side >= min(height, width):
        return max(2, height // 2 * 2), max(2, width // 2 * 2)
    h, w = video.resized_size(height, width, short_side)
    return max(2, h // 2 * 2), max(2, w // 2 * 2)


def reencode(src: str, dst: str, settings: EncodeSettings) -> dict[str, Any]:
    """Re-encode the local video `src` into the local mp4 `dst` (written in place: the
    caller writes to a temporary name and commits it).

    Returns {num_frames (source, as decord reports), fps (source), height, width (source),
    prepared_frames, prepared_fps, prepared_height, prepared_width, bytes, decode_s,
    encode_s}. Raises EncodeError(stage, reason) for anything wrong with the source.
    """
    try:
        size = os.path.getsize(src)
    except OSError as err:
        raise EncodeError("read", f"not found: {src}" if isinstance(err, FileNotFoundError)
                          else f"unreadable: {err.strerror}") from None
    if size == 0:
        raise EncodeError("read", "empty file: 0 bytes")
    try:
        info = video.probe(src, threads=settings.decode_threads)
        hw = prepared_size(info.height, info.width, settings.short_side)
        reader = video.open_reader(src, hw, threads=settings.decode_threads)
    except Exception as err:  # noqa: BLE001  (decord raises RuntimeError, DECORDError, ...)
        raise EncodeError("decode", f"decode error: {video.clean_decoder_error(str(err))}") from None
    if info.num_frames < 1:
        raise EncodeError("validate", "no frames")
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    out_fps = fps / settings.stride
    decode_s = encode_s = 0.0
    written = 0
    with av.open(dst, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=out_fps)
        stream.height, stream.width, stream.pix_fmt = hw[0], hw[1], "yuv420p"
        k = settings.keyint
        stream.options = {"crf": str(settings.crf), "preset": settings.preset,
                          "x264-params": f"keyint={k}:min-keyint={k}:scenecut=0"}
        stream.codec_context.thread_count = 1  # one core per actor; frame threads only add CPU
        for chunk in video.frames_in_chunks(info.num_frames, settings.stride, settings.chunk_frames):
            t0 = time.perf_counter()
            try:
                frames = reader.get_batch(chunk.tolist()).asnumpy()
            except Exception as err:  # noqa: BLE001  (a damaged frame mid-stream)
                raise EncodeError("decode", f"decode error: {video.clean_decoder_error(str(err))}") from None
            t1 = time.perf_counter()
            for frame in frames:
                container.mux(stream.encode(to_yuv420p(np.ascontiguousarray(frame))))
            written += len(frames)
            decode_s, encode_s = decode_s + t1 - t0, encode_s + time.perf_counter() - t1
        t1 = time.perf_counter()
        container.mux(stream.encode())  # flush delayed (B-)frames
        encode_s += time.perf_counter() - t1
    del reader
    return {
        "num_frames": info.num_frames, "fps": info.fps, "height": info.height, "width": info.width,
        "prepared_frames": written, "prepared_fps": float(out_fps), "prepared_height": hw[0],
        "prepared_width": hw[1], "bytes": os.path.getsize(dst), "decode_s": decode_s, "encode_s": encode_s,
    }
