"""The per-clip image operations of the data path, on uint8 frames [T, H, W, 3] (numpy in,
numpy out; testable without Ray): VideoMAE's random resized crop box, crop + resize + flip,
RandAugment applied as one draw to every frame of a clip, and the part of a frame that shard
cells cover. `pipeline.clips` composes them into training and evaluation clips.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.vocab import IMAGENET_MEAN

Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels of the resized frame


def random_resized_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    rng: np.random.Generator,
) -> Box:
    """Crop box of torchvision's `RandomResizedCrop.get_params` (which timm uses), drawn from
    a numpy Generator: area fraction ~ U(scale), log aspect (w/h) ~ U(log ratio), 10 tries,
    then the central crop clamped to the aspect range. Returns (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(frames: np.ndarray, box: Box, size: int, flip: bool = False) -> np.ndarray:
    """Crop `box` out of every frame, resize it to size x size, optionally mirror it.

    frames: [T, H, W, 3] uint8. Returns [T, size, size, 3] uint8 (C-contiguous).
    Bilinear, antialiased when shrinking (torchvision's tensor RandomResizedCrop), computed
    on uint8 directly: torch's channels-last uint8 kernel is ~20x faster than going through
    float and differs by at most one level of rounding. A crop that already has the output
    size is copied untouched, so evaluation pixels are exactly the decoded ones.
    """
    top, left, h, w = box
    x = torch.from_numpy(frames[:, top : top + h, left : left + w]).permute(0, 3, 1, 2)  # [T, 3, h, w] view
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if flip:
        x = x.flip(3)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def rand_augment(config: str, size: int) -> Callable:
    """timm's RandAugment (`rand-m7-n4-mstd0.5-inc1`...) with VideoMAE's hparams for S x S."""
    from timm.data.auto_augment import rand_augment_transform

    hparams = {
        "translate_const": int(size * 0.45),
        "img_mean": tuple(round(255 * m) for m in IMAGENET_MEAN),
    }
    return rand_augment_transform(config, hparams)


def augment_clip(frames: np.ndarray, transform: Callable, seed: int) -> np.ndarray:
    """Apply ONE draw of a PIL transform (RandAugment) to every frame of a clip.

    timm's RandAugment picks its ops from numpy's global RNG and their probabilities and
    magnitudes from Python's `random`; both are reset to the same state before each frame, so
    every frame gets the same ops with the same magnitudes (VideoMAE does the same with a
    list-of-frames RandAugment). The global states are this actor's own, seeded per clip.
    frames: [T, H, W, 3] uint8 -> [T, H, W, 3] uint8.
    """
    from PIL import Image

    random.seed(seed)
    np.random.seed(seed % 2**32)
    py_state, np_state = random.getstate(), np.random.get_state()
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        random.setstate(py_state)
        np.random.set_state(np_state)
        out[i] = np.asarray(transform(Image.fromarray(frame)), dtype=np.uint8)
    return out


def covered_size(height: int, width: int, cell: int) -> tuple[int, int]:
    """The part of a resized frame that whole shard cells cover (cells start at 0, 0).

    Random crops stay inside it, so every token of a crop has cell data under it; at most
    `cell - 1` pixels on the bottom / right edge are never cropped."""
    return height // cell * cell, width // cell * cell
