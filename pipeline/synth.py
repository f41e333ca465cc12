"""Synthetic motion-classification videos: the label is the motion, never the appearance.

Every video shows one object (random shape, colour, size, orientation) over a random,
textured, static background. The class says only how the object moves (or not); sensor
noise and a small camera shake make static tokens score above zero, so MGTC thresholds
matter, while the object's tokens still score far higher.

Coordinates: frames are `[F, H, W, 3]` uint8 RGB with H = W = `size`; object centres are
`(x, y)` in pixels of the frame, x to the right, y downwards. Rendering happens on a
canvas `2 * SHAKE_MARGIN` pixels larger than the frame so that the shaken crop never
runs off the background.

Public API:
    CLASSES, CLASS_NAMES, class_index
    render_video(cls, rng, *, size, frames, ...) -> [F, H, W, 3] uint8
    (videos are written by `pipeline.encoding.write_video`)
    make_dataset(out_dir, *, videos_per_class, size, frames, fps, seed, ...) -> paths
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from pipeline.encoding import video_codec, write_video

log = logging.getLogger(__name__)

# Bump when rendering or layout changes: a data set written by another version is then
# refused instead of being silently mixed with new videos.
GENERATOR_VERSION = 2

NOISE_STD = 2.0  # sensor noise, std in uint8 levels, independent per pixel and frame
SHAKE_PX = 1.0  # camera shake, std of the per-frame global offset in pixels
SHAKE_MARGIN = 2  # the offset is clipped to +-SHAKE_MARGIN pixels per axis

SIZE_RANGE = (0.15, 0.25)  # object extent as a fraction of the frame side
# Translation speed, fraction of the side per frame. 1-2.5% was learnt markedly slower by
# a tiny ViT than 2-4% (about 40% vs 60% val accuracy after 570 steps, docs/SYNTHETIC.md).
SPEED_RANGE = (0.02, 0.04)
ORBIT_RADIUS_RANGE = (0.15, 0.25)  # fraction of the side
ORBIT_PERIOD_RANGE = (24.0, 48.0)  # frames per revolution
PULSE_PERIOD_RANGE = (12.0, 24.0)  # frames per grow/shrink cycle
PULSE_AMPLITUDE_RANGE = (0.35, 0.5)  # relative change of the object's extent
# Integer periods >= 5 frames: a period that divides the clip's sampling stride (1, 2, 4)
# would alias to a constant and make a blinking object look static.
BLINK_PERIOD_RANGE = (6, 12)
# The object is always brighter than the background, by at least MIN_CONTRAST in luminance.
# With a fixed polarity the first moment of a tubelet's temporal difference is linear in
# the displacement, so a ViT's linear patch embedding can read the direction of motion;
# with random polarity that sign flips per video, and a tiny ViT from scratch stayed at
# chance in our CPU budget (docs/SYNTHETIC.md). Hue, shape, size and background stay random.
MIN_CONTRAST = 90.0  # luminance levels (uint8 scale)
BACKGROUND_RANGE = (25.0, 110.0)  # per-channel base colour of the background
TEXTURE_AMPLITUDE = 25.0  # uint8 levels around the background's base colour
SHAPES = ("disk", "triangle", "square", "hexagon")

# decord 0.6 fails on these frame widths ("DECORDArrayCopyFromTo: The size must exactly
# match"), whatever the codec; every other multiple of 16 up to 256 decodes (measured).
DECORD_BAD_SIZES = (16, 48)

LIST_SPLITS = ("train", "val", "test")
META_NAME = "dataset.json"
CLASSES_NAME = "classes.txt"
VIDEO_DIR = "videos"


@dataclass(frozen=True)
class SynthClass:
    name: str
    description: str


CLASSES: tuple[SynthClass, ...] = (
    SynthClass("static", "the object stays still; only camera shake and sensor noise change"),
    SynthClass("right", "the object translates left to right at constant speed, wrapping around"),
    SynthClass("left", "the object translates right to left at constant speed, wrapping around"),
    SynthClass("down", "the object translates top to bottom at constant speed, wrapping around"),
    SynthClass("up", "the object translates bottom to top at constant speed, wrapping around"),
    SynthClass("pulse", "the object stays in place and periodically grows and shrinks"),
    SynthClass("blink", "the object stays in place and periodically disappears and reappears"),
    SynthClass("orbit", "the object circles a fixed point at constant angular speed (either sense)"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# Classes whose label a horizontal flip changes (left <-> right): recorded in dataset.json
# so that trainers turn flip augmentation off, as VideoMAE does for Something-Something.
FLIP_SENSITIVE = frozenset({"left", "right"})

# Unit direction (dx, dy) of each translation class, y pointing down.
_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}


def class_index(cls: int | str) -> int:
    """Index into `CLASSES` of a class given by index or name."""
    if isinstance(cls, str):
        if cls not in CLASS_NAMES:
            raise ValueError(f"unknown synthetic class {cls!r}; choose from {CLASS_NAMES}")
        return CLASS_NAMES.index(cls)
    if not 0 <= int(cls) < len(CLASSES):
        raise ValueError(f"class index {cls} out of range 0..{len(CLASSES) - 1}")
    return int(cls)


# --------------------------------------------------------------------------- appearance


@dataclass(frozen=True)
class Appearance:
    """What a video looks like; carries no label.

    background: [C, C, 3] float32 in uint8 levels, C = size + 2 * SHAKE_MARGIN.
    color: [3] float32. radius: half the object's extent in pixels.
    """

    background: np.ndarray
    color: np.ndarray
    shape: str
    radius: float
    angle: float


def textured_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Smooth random texture, [side, side, 3] float32 in uint8 levels.

    Coarse blobs plus a faint oriented grating: structured enough that camera shake moves
    it (static tokens score above zero), smooth enough that the object stands out.
    """
    base = rng.uniform(*BACKGROUND_RANGE, size=3)
    blobs = sum(_upsampled_noise(rng, side, cells) for cells in (3, 6))
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    theta = rng.uniform(0.0, math.pi)
    wavelength = rng.uniform(6.0, 14.0)
    grating = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / wavelength
                     + rng.uniform(0.0, 2 * math.pi))
    texture = 0.8 * blobs / 2.0 + 0.2 * grating  # roughly in [-1, 1]
    tint = rng.uniform(0.6, 1.0, size=3)  # per-channel gain: the texture is coloured, not grey
    out = base + TEXTURE_AMPLITUDE * texture[..., None] * tint
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _upsampled_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Uniform [-1, 1] noise on a (cells+1)^2 grid, bilinearly upsampled to [side, side]."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, side)
    i0 = np.minimum(pos.astype(int), cells - 1)
    frac = pos - i0
    rows = grid[i0] * (1 - frac)[:, None] + grid[i0 + 1] * frac[:, None]  # [side, cells+1]
    return (rows[:, i0] * (1 - frac) + rows[:, i0 + 1] * frac).astype(np.float32)


def sample_appearance(rng: np.random.Generator, size: int) -> Appearance:
    """Random background, object colour (contrasting with the background), shape, size."""
    background = textured_background(rng, size + 2 * SHAKE_MARGIN)
    mean = background.reshape(-1, 3).mean(axis=0)
    color = _contrasting_color(rng, mean)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    radius = 0.5 * size * rng.uniform(*SIZE_RANGE)
    angle = rng.uniform(0.0, 2 * math.pi)
    return Appearance(background, color, shape, float(radius), float(angle))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of [..., 3] RGB, same scale as the input."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _contrasting_color(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random colour whose luminance exceeds the background mean's by MIN_CONTRAST.

    A uniform random RGB colour, blended towards white just enough to reach the target
    luminance (the hue is kept; a dark pick becomes a pastel).
    """
    color = rng.uniform(0.0, 255.0, size=3)
    target = float(luminance(background_mean)) + MIN_CONTRAST
    lum = float(luminance(color))
    if lum < target:
        color = color + (target - lum) / (255.0 - lum) * (255.0 - color)
    return color.astype(np.float32)


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Track:
    """How the object moves; this alone defines the class.

    center: [F, 2] (x, y) in frame pixels, not wrapped (translation leaves the frame and
    re-enters on the opposite side when drawn). scale: [F] factor on the object's radius.
    visible: [F] bool.
    """

    center: np.ndarray
    scale: np.ndarray
    visible: np.ndarray


def sample_track(cls: int | str, rng: np.random.Generator, *, frames: int, size: int,
                 radius: float) -> Track:
    """Random motion of class `cls` for an object of half-extent `radius` pixels."""
    name = CLASS_NAMES[class_index(cls)]
    t = np.arange(frames, dtype=np.float64)
    # Stationary objects keep their largest extent (pulse: 1 + amplitude) inside the frame.
    reach = radius * (1 + PULSE_AMPLITUDE_RANGE[1])
    start = rng.uniform(reach, size - reach, size=2)
    center = np.repeat(start[None], frames, axis=0)
    scale = np.ones(frames)
    visible = np.ones(frames, dtype=bool)
    if name in _DIRECTIONS:
        speed = size * rng.uniform(*SPEED_RANGE)
        center = start + speed * t[:, None] * np.asarray(_DIRECTIONS[name])
    elif name == "orbit":
        orbit = size * rng.uniform(*ORBIT_RADIUS_RANGE)
        pivot = rng.uniform(orbit + radius, size - orbit - radius, size=2)
        sense = rng.choice((-1.0, 1.0))
        phase = rng.uniform(0.0, 2 * math.pi) + sense * 2 * math.pi * t / rng.uniform(*ORBIT_PERIOD_RANGE)
        center = pivot + orbit * np.stack([np.cos(phase), np.sin(phase)], axis=1)
    elif name == "pulse":
        period = rng.uniform(*PULSE_PERIOD_RANGE)
        amplitude = rng.uniform(*PULSE_AMPLITUDE_RANGE)
        scale = 1 + amplitude * np.sin(2 * math.pi * t / period + rng.uniform(0.0, 2 * math.pi))
    elif name == "blink":
        period = int(rng.integers(BLINK_PERIOD_RANGE[0], BLINK_PERIOD_RANGE[1] + 1))
        visible = (t.astype(int) + int(rng.integers(period))) % period < period / 2
    return Track(center.astype(np.float32), scale.astype(np.float32), visible)


def sample_shake(rng: np.random.Generator, frames: int, shake_px: float) -> np.ndarray:
    """Per-frame global integer offsets [F, 2] (dx, dy), iid, clipped to +-SHAKE_MARGIN."""
    offsets = np.rint(rng.normal(0.0, shake_px, size=(frames, 2))) if shake_px > 0 else np.zeros((frames, 2))
    return np.clip(offsets, -SHAKE_MARGIN, SHAKE_MARGIN).astype(int)


# --------------------------------------------------------------------------- rendering


def object_alpha(appearance: Appearance, track: Track, side: int, offset: float = 0.0) -> np.ndarray:
    """Anti-aliased object coverage [F, side, side] float32 in [0, 1].

    `offset` shifts frame coordinates into the canvas (SHAKE_MARGIN for the canvas).
    Distances wrap with period `side`, so a translating object leaving one edge
    re-enters at the opposite one.
    """
    coords = np.arange(side, dtype=np.float32) + 0.5 - offset  # pixel centres, frame coords
    cx = track.center[:, 0, None, None]
    cy = track.center[:, 1, None, None]
    dx = _wrap(coords[None, None, :] - cx, side)  # [F, 1, side]
    dy = _wrap(coords[None, :, None] - cy, side)  # [F, side, 1]
    radius = appearance.radius * track.scale[:, None, None]
    sdf = _shape_sdf(appearance.shape, appearance.angle, dx, dy, radius)  # [F, side, side]
    # 1-pixel ramp: coverage changes smoothly under sub-pixel motion.
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)
    return (alpha * track.visible[:, None, None]).astype(np.float32)


def _wrap(d: np.ndarray, period: int) -> np.ndarray:
    return (d + period / 2) % period - period / 2


def _shape_sdf(shape: str, angle: float, dx: np.ndarray, dy: np.ndarray,
               radius: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) to a shape of circumradius `radius`.

    Polygons are intersections of half-planes: exact inside, a close bound outside,
    which is all a 1-pixel anti-aliasing ramp needs.
    """
    if shape == "disk":
        return np.sqrt(dx * dx + dy * dy) - radius
    sides = {"triangle": 3, "square": 4, "hexagon": 6}[shape]
    apothem = radius * math.cos(math.pi / sides)
    normals = angle + 2 * math.pi * np.arange(sides) / sides
    dist = [dx * math.cos(a) + dy * math.sin(a) for a in normals]
    return np.maximum.reduce(dist) - apothem


def compose_frames(appearance: Appearance, track: Track, shake: np.ndarray,
                   noise: np.ndarray | None, size: int) -> np.ndarray:
    """Object over background, shaken crop, plus noise -> [F, size, size, 3] uint8.

    shake: [F, 2] integer (dx, dy) in [-SHAKE_MARGIN, SHAKE_MARGIN];
    noise: [F, size, size, 3] float32 in uint8 levels, or None for none.
    """
    canvas_side = appearance.background.shape[0]
    alpha = object_alpha(appearance, track, canvas_side, offset=SHAKE_MARGIN)[..., None]
    canvas = appearance.background[None] * (1 - alpha) + appearance.color * alpha  # [F, C, C, 3]
    frames = np.empty((len(canvas), size, size, 3), dtype=np.float32)
    for f, (dx, dy) in enumerate(shake):
        y0, x0 = SHAKE_MARGIN + dy, SHAKE_MARGIN + dx
        frames[f] = canvas[f, y0:y0 + size, x0:x0 + size]
    if noise is not None:
        frames += noise
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def render_video(cls: int | str, rng: np.random.Generator, *, size: int = 112, frames: int = 64,
                 noise_std: float = NOISE_STD, shake_px: float = SHAKE_PX) -> np.ndarray:
    """One synthetic video of class `cls` -> [frames, size, size, 3] uint8 RGB.

    Draws, in this order, from `rng`: appearance, track, shake, noise. The same rng state
    gives the same video.
    """
    if size < 8 or frames < 1:
        raise ValueError(f"need size >= 8 and frames >= 1, got size={size}, frames={frames}")
    appearance = sample_appearance(rng, size)
    track = sample_track(cls, rng, frames=frames, size=size, radius=appearance.radius)
    shake = sample_shake(rng, frames, shake_px)
    noise = (rng.normal(0.0, noise_std, size=(frames, size, size, 3)).astype(np.float32)
             if noise_std > 0 else None)
    return compose_frames(appearance, track, shake, noise, size)


def video_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """Generator of one data-set video: independent of every other video, so any subset
    can be (re)written alone, in any order or process."""
    return np.random.default_rng([seed, label, index])


# --------------------------------------------------------------------------- data set


def split_counts(n: int, splits: Sequence[float]) -> list[int]:
    """Videos per split for one class: largest remainder on `n * fraction`, then every
    split with a positive fraction gets at least one video when n allows it.

    Every class has the same n, so every split holds the same number of each class.
    """
    exact = [n * s for s in splits]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(splits)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, frac in enumerate(splits):
        donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
        if frac > 0 and counts[i] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts


def assign_splits(videos_per_class: int, num_classes: int, splits: Sequence[float],
                  seed: int) -> dict[str, list[tuple[int, int]]]:
    """(label, index) pairs of every split; each video in exactly one split.

    Within a class the split of each index is a seeded permutation, so the choice does
    not follow the order in which videos were generated.
    """
    counts = split_counts(videos_per_class, splits)
    out: dict[str, list[tuple[int, int]]] = {name: [] for name in LIST_SPLITS}
    for label in range(num_classes):
        order = np.random.default_rng([seed, label, 2**31]).permutation(videos_per_class)
        bounds = np.cumsum([0] + counts)
        for name, lo, hi in zip(LIST_SPLITS, bounds[:-1], bounds[1:]):
            out[name] += [(label, int(i)) for i in sorted(order[lo:hi])]
    return out


def video_relpath(class_name: str, index: int) -> str:
    """Path of a video relative to the data-set folder (and to its list files)."""
    return f"{VIDEO_DIR}/{class_name}/{class_name}_{index:04d}.mp4"


class DatasetMismatchError(RuntimeError):
    """`out_dir` holds a data set written with other parameters."""


def dataset_params(*, videos_per_class: int, size: int, frames: int, fps: float, seed: int,
                   classes: Sequence[str], splits: Sequence[float], noise_std: float,
                   shake_px: float) -> dict:
    """The parameters that define a data set's content (JSON-ready, compared on rerun)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "classes": list(classes),
        "videos_per_class": int(videos_per_class),
        "size": int(size),
        "frames": int(frames),
        "fps": float(fps),
        "seed": int(seed),
        "splits": [float(s) for s in splits],
        "noise_std": float(noise_std),
        "shake_px": float(shake_px),
    }


def validate_params(params: dict) -> None:
    """Raise ValueError naming the first bad parameter."""
    if params["videos_per_class"] < 1:
        raise ValueError(f"videos_per_class must be >= 1, got {params['videos_per_class']}")
    if params["size"] < 16 or params["size"] % 16:
        raise ValueError(f"size must be a positive multiple of 16 (the patch size), got {params['size']}")
    if params["size"] in DECORD_BAD_SIZES:
        raise ValueError(f"size {params['size']}: decord 0.6 returns mis-sized frames for frame widths "
                         f"{DECORD_BAD_SIZES} (measured); use 32, 64 or more")
    if params["frames"] < 2:
        raise ValueError(f"frames must be >= 2, got {params['frames']}")
    if params["fps"] <= 0:
        raise ValueError(f"fps must be > 0, got {params['fps']}")
    splits = params["splits"]
    if len(splits) != len(LIST_SPLITS) or min(splits) < 0 or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(f"splits must be 3 non-negative fractions (train, val, test) summing to 1, got {splits}")
    classes = params["classes"]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    for name in classes:
        class_index(name)
    if params["noise_std"] < 0 or params["shake_px"] < 0:
        raise ValueError("noise_std and shake_px must be >= 0")


def dataset_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of the list files, classes.txt and dataset.json of a data set folder."""
    out = Path(out_dir)
    paths = {name: out / f"{name}.csv" for name in LIST_SPLITS}
    paths["classes"] = out / CLASSES_NAME
    paths["meta"] = out / META_NAME
    return paths


def make_dataset(out_dir: str | os.PathLike, *, videos_per_class: int, size: int = 112,
                 frames: int = 64, fps: float = 25, seed: int = 0,
                 splits: Sequence[float] = (0.7, 0.15, 0.15),
                 classes: Sequence[str] | None = None, noise_std: float = NOISE_STD,
                 shake_px: float = SHAKE_PX, overwrite: bool = False) -> dict[str, Path]:
    """Write videos, VideoMAE list files, classes.txt and dataset.json under `out_dir`.

    Labels are 0-based indices into `classes` (default: all of CLASS_NAMES, in order).
    Rerun with the same parameters: a complete data set is reused as is, an interrupted
    one is resumed (videos are written atomically, so any present mp4 is complete).
    Other parameters: DatasetMismatchError, unless `overwrite`, which deletes this
    generator's files in `out_dir` (videos/, list files, classes.txt, dataset.json) first.

    Returns {"train", "val", "test", "classes", "meta"} -> Path.
    """
    params = dataset_params(videos_per_class=videos_per_class, size=size, frames=frames, fps=fps,
                            seed=seed, classes=list(classes or CLASS_NAMES), splits=splits,
                            noise_std=noise_std, shake_px=shake_px)
    validate_params(params)
    names = params["classes"]
    return write_dataset(
        out_dir, params, overwrite=overwrite,
        render=lambda name, index: render_video(name, video_rng(seed, CLASS_NAMES.index(name), index),
                                                size=size, frames=frames, noise_std=noise_std,
                                                shake_px=shake_px),
        encode=lambda path, video: write_video(path, video, fps),
        descriptions={c.name: c.description for c in CLASSES},
        flip_safe=not FLIP_SENSITIVE.intersection(names))


def write_dataset(out_dir: str | os.PathLike, params: dict, *, overwrite: bool,
                  render: Callable[[str, int], np.ndarray], encode: Callable[[Path, np.ndarray], None],
                  descriptions: Mapping[str, str], flip_safe: bool) -> dict[str, Path]:
    """The data-set writer behind every named set: reuse / resume / refuse, videos, list files.

    params: validated, JSON-ready, with "classes", "videos_per_class", "splits" and "seed";
    compared with a previous run's dataset.json. render(class_name, index) -> [F, H, W, 3]
    uint8 of one video (its own rng, so any subset can be rewritten alone); encode(path,
    frames) writes it atomically. Returns {"train", "val", "test", "classes", "meta"} -> Path.
    """
    out = Path(out_dir)
    paths = dataset_paths(out)
    if _check_existing(out, params, overwrite) == "complete":
        log.info("reusing the complete synthetic data set in %s", out)
        return paths

    out.mkdir(parents=True, exist_ok=True)
    _write_json(paths["meta"], {"params": params, "complete": False})
    names = params["classes"]
    videos_per_class = params["videos_per_class"]
    todo = []
    for name in names:
        (out / VIDEO_DIR / name).mkdir(parents=True, exist_ok=True)
        todo += [(name, index) for index in range(videos_per_class)
                 if not (out / video_relpath(name, index)).exists()]

    def write(item: tuple[str, int]) -> None:
        encode(out / video_relpath(*item), render(*item))

    # Rendering (numpy) and x264 release the GIL for most of their time: threads fill the
    # cores. Each video has its own rng, so the order they finish in changes nothing.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for _ in pool.map(write, todo):
            pass
    written = len(todo)
    log.info("wrote %d videos, reused %d", written, len(names) * videos_per_class - written)

    assignment = assign_splits(videos_per_class, len(names), params["splits"], params["seed"])
    for split, items in assignment.items():
        lines = [f"{video_relpath(names[label], index)} {label}\n" for label, index in items]
        _write_text(paths[split], "".join(lines))
    _write_text(paths["classes"], "".join(f"{name}\n" for name in names))
    _write_json(paths["meta"], {
        "params": params,
        "complete": True,
        "codec": video_codec(),
        "classes": [{"label": i, "name": n, "description": descriptions[n]} for i, n in enumerate(names)],
        "counts": {split: len(items) for split, items in assignment.items()},
        "horizontal_flip_safe": flip_safe,
    })
    return paths


def _check_existing(out: Path, params: dict, overwrite: bool) -> str:
    """'complete' (reuse), 'resume' or 'new'; deletes our files on overwrite of a mismatch."""
    paths = dataset_paths(out)
    ours = [out / VIDEO_DIR, *paths.values()]
    if not any(p.exists() for p in ours):
        return "new"
    old = _read_json(paths["meta"])
    old_params = old.get("params") if old else None
    if old_params == params:
        if old.get("complete") and _all_files_exist(out, params):
            return "complete"
        return "resume"
    if not overwrite:
        if old_params is None:
            reason = f"it holds {VIDEO_DIR}/ or list files but no readable {META_NAME}"
        else:
            diff = sorted(k for k in params.keys() | old_params.keys() if params.get(k) != old_params.get(k))
            reason = "it was written with different " + ", ".join(
                f"{k} ({old_params.get(k)!r} there, {params.get(k)!r} asked)" for k in diff)
        raise DatasetMismatchError(
            f"refusing to write a synthetic data set into {out}: {reason}. "
            "Choose another folder, or pass --overwrite (overwrite=True) to replace it.")
    log.warning("overwriting the synthetic data set in %s", out)
    shutil.rmtree(out / VIDEO_DIR, ignore_errors=True)
    for p in paths.values():
        p.unlink(missing_ok=True)
    return "new"


def _all_files_exist(out: Path, params: dict) -> bool:
    if not all(p.exists() for p in dataset_paths(out).values()):
        return False
    return all((out / video_relpath(name, i)).exists()
               for name in params["classes"] for i in range(params["videos_per_class"]))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Temp file + rename, so readers never see a half-written list file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_list_file(path: str | os.PathLike) -> list[tuple[Path, int]]:
    """(absolute video path, label) per line of a VideoMAE list file written here."""
    path = Path(path)
    rows = []
    for line in path.read_text().splitlines():
        rel, label = line.rsplit(" ", 1)
        rows.append((path.parent / rel, int(label)))
    return rows
