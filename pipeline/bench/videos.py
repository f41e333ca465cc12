"""Synthetic input videos for the benchmarks, generated once and kept between runs."""

from __future__ import annotations

import shutil
from pathlib import Path


def rendered_copies(folder: Path, count: int, *, unique: int, frames: int, height: int, width: int,
                    fps: int) -> list[str]:
    """`count` mp4 files in `folder`, copies of `unique` distinct `pipeline.synth` renders of
    `frames` frames at height x width; files already there are reused."""
    import numpy as np

    from pipeline.encoding import write_video
    from pipeline.synth import CLASSES, render_video

    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(unique):
        path = folder / f"u{i}.mp4"
        if not path.exists():
            video = render_video(i % len(CLASSES), np.random.default_rng(i), size=max(height, width), frames=frames)
            write_video(path, np.ascontiguousarray(video[:, :height, :width]), fps)
        sources.append(path)
    paths = []
    for k in range(count):
        path = folder / f"v{k:04d}.mp4"
        if not path.exists():
            shutil.copyfile(sources[k % unique], path)
        paths.append(str(path))
    return paths
