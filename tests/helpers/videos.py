"""Test videos: tiny synthetic clips, the exact moving square, and the bad inputs the
precompute job must survive."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.encoding import write_video
from pipeline.synth import render_video, textured_background

# Unicode and quotes are legal in a VideoMAE list file (spaces are not).
ODD_NAME = "vidéo_ü'\"名.mp4"


def clip_frames(frames: int = 40, height: int = 64, width: int = 80, seed: int = 0,
                cls: str = "right") -> np.ndarray:
    """[F, H, W, 3] uint8: a moving object over a textured, noisy background."""
    square = render_video(cls, np.random.default_rng(seed), size=max(height, width), frames=frames)
    return np.ascontiguousarray(square[:, :height, :width])


def make_video(path: Path, frames: int = 40, height: int = 64, width: int = 80, seed: int = 0,
               cls: str = "right") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, clip_frames(frames, height, width, seed, cls), 25)
    return path


def write_audio_only(path: Path) -> Path:
    """An .mp4 with one AAC audio stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def av1_encoder() -> str | None:
    """The name of an AV1 encoder in this PyAV build (libsvtav1 / libaom-av1), else None."""
    for name in ("libsvtav1", "libaom-av1"):
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):
            continue
    return None


def write_av1(path: Path, frames: int = 20) -> Path:
    """A 64x64 AV1 video in MP4 (decord's bundled FFmpeg has no AV1 decoder)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(av1_encoder(), rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in clip_frames(frames, 64, 64):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def corrupt_middle(src: Path, dst: Path, seed: int = 0) -> Path:
    """A copy of `src` with random bytes over 10% of the file at its middle (inside the
    media data: PyAV writes the index at the end)."""
    data = bytearray(Path(src).read_bytes())
    start, n = len(data) // 2, max(len(data) // 10, 64)
    data[start:start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def make_bad_inputs(folder: Path, good: Path) -> dict[str, Path]:
    """Every bad input of the issue, as files next to each other (`missing` is not created).

    The values are the paths; the keys are the expected failure (used by the tests)."""
    folder = Path(folder)
    data = Path(good).read_bytes()
    bad = {
        "missing": folder / "missing.mp4",
        "empty": folder / "empty.mp4",
        "text": folder / "text.mp4",
        "truncated": folder / "truncated.mp4",
        "corrupt_middle": folder / "corrupt_middle.mp4",
        "short": folder / "short.mp4",
        "single_frame": folder / "single_frame.mp4",
        "audio_only": folder / "audio_only.mp4",
        "directory": folder / "a_folder.mp4",
    }
    bad["directory"].mkdir(exist_ok=True)
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is a text file, not a video\n" * 20)
    bad["truncated"].write_bytes(data[: len(data) // 2])
    corrupt_middle(good, bad["corrupt_middle"])
    make_video(bad["short"], frames=12, seed=3)
    make_video(bad["single_frame"], frames=1, seed=4)
    write_audio_only(bad["audio_only"])
    return bad


def copy_as(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return Path(dst)


# The moving square: a white square moving right over a static textured background, so
# that a test knows exactly which pixels (and tokens) move.
def moving_square_boxes(*, frames: int = 16, size: int = 64, square: int = 16, step: int = 4,
                        top: int | None = None, left: int = 0) -> np.ndarray:
    """Square's pixel box per frame, [F, 4] int (y0, y1, x0, x1), half-open, clipped.

    Frame f: rows top..top+square, columns left + f*step .. + square; `top` defaults to
    (size - square) // 2. The square leaves the frame on the right (x0 == x1 once gone).
    """
    top = (size - square) // 2 if top is None else top
    x0 = left + step * np.arange(frames)
    boxes = np.stack([np.full(frames, top), np.full(frames, top + square), x0, x0 + square], axis=1)
    return np.clip(boxes, 0, size)


def moving_square_frames(*, frames: int = 16, size: int = 64, square: int = 16, step: int = 4,
                         seed: int = 0, top: int | None = None, left: int = 0) -> np.ndarray:
    """[F, size, size, 3] uint8: a white square moving right `step` px per frame over a
    static textured background (values <= 135). No noise, no shake, no anti-aliasing:
    exactly the pixels in `moving_square_boxes(...)` differ from the background."""
    background = textured_background(np.random.default_rng(seed), size)
    out = np.repeat(np.rint(background)[None].astype(np.uint8), frames, axis=0)
    for f, (y0, y1, x0, x1) in enumerate(moving_square_boxes(
            frames=frames, size=size, square=square, step=step, top=top, left=left)):
        out[f, y0:y1, x0:x1] = 255
    return out


def write_moving_square_video(path: str | os.PathLike, *, frames: int = 16, size: int = 64,
                              fps: float = 25, square: int = 16, step: int = 4, seed: int = 0) -> Path:
    """Write `moving_square_frames(...)` as an mp4 at high quality; returns the path."""
    path = Path(path)
    write_video(path, moving_square_frames(frames=frames, size=size, square=square, step=step,
                                           seed=seed), fps, crf=4)
    return path
