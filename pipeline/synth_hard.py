"""The "hard" synthetic set: camera motion, appearance classes, distractors, aliasing motion.

The original set (`pipeline/synth.py`) lets frame differencing win by construction: the
class is the motion of the only moving thing over a still background. Here every factor
that the paper's motion signal could be fooled by is a switch:

- camera motion per video (`camera`): "pan" (a sinusoidal sweep along a random direction),
  "zoom" (zooming out and back in about the frame centre), "shake" (iid per-frame jitter),
  or "none"; drawn uniformly per video from the modes allowed. Under pan or zoom every
  textured token differs from the previous slice, whether the object moved or not.
- appearance matters: a class is (identity, motion), identity = "disk" or "cross", so a
  `static` object's class lives only in tokens that did not move.
- `distractors` objects (triangle / hexagon) sway slowly along a line, with no label.
- fast orbits near the stride-4 Nyquist limit: the `cw` / `ccw` orbit takes
  `orbit_period` = 6..10.7 frames per turn, i.e. 67-120 degrees per step at stride 2
  (unambiguous) and 135-240 degrees at stride 4, where a step beyond 180 degrees looks like
  the other sense: stride 4 cannot tell the sense apart for part of the videos, stride 2 can.
- sensor noise (`noise_std`) and x264 compression (`crf`), so static pixels are not static.

Coordinates: the scene lives in *world* pixels, equal to view pixels of a still camera
(x right, y down, the view covers [0, size)^2). Camera state per frame f: a view-centre
offset `offset[f]` (world px) and a `scale[f]` >= 1 (world px per view px; > 1 = zoomed
out). View pixel (u, v) shows world point `size/2 + offset + scale * ((u, v) + 0.5 - size/2)`.
The background is a texture of side size + 2 * margin sampled bilinearly there; objects are
drawn analytically (signed distances), so zoom keeps them sharp.

Public API: CLASS_NAMES, CAMERA_MODES, render_video(cls, rng, ...), make_dataset(out, ...).
The data-set files, list files, reuse and refusal rules are those of `pipeline.synth`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import encoding, synth

SET_NAME = "hard"
# Bump when rendering changes (recorded in dataset.json; a mismatch is refused).
GENERATOR_VERSION = 1

IDENTITIES = ("disk", "cross")
MOTIONS = ("static", "pulse", "cw", "ccw")
CLASS_NAMES: tuple[str, ...] = tuple(f"{i}_{m}" for i in IDENTITIES for m in MOTIONS)
MOTION_TEXT = {
    "static": "stays still in the scene (it moves in the view only with the camera)",
    "pulse": "stays in place and periodically grows and shrinks",
    "cw": "orbits a fixed point clockwise (on screen), fast: 6-10.7 frames per turn",
    "ccw": "orbits a fixed point counter-clockwise (on screen), fast: 6-10.7 frames per turn",
}
DESCRIPTIONS = {f"{i}_{m}": f"a {i}: {MOTION_TEXT[m]}" for i in IDENTITIES for m in MOTIONS}

CAMERA_MODES = ("none", "pan", "zoom", "shake")
DEFAULT_CAMERA = ("pan", "zoom", "shake")  # every video of the default set has camera motion
DISTRACTOR_SHAPES = ("triangle", "hexagon")

NOISE_STD = 3.0  # uint8 levels, per pixel, channel and frame
CRF = 28  # x264 constant rate factor (the original set writes crf 18)
DISTRACTORS = 1
ORBIT_PERIOD = (6.0, 10.7)  # frames per turn; 8 = the stride-4 Nyquist limit (180 degrees)

SIZE_RANGE = (0.16, 0.22)  # object extent, fraction of the side
DISTRACTOR_SIZE_RANGE = (0.12, 0.16)
ORBIT_RADIUS_RANGE = (0.10, 0.15)  # fraction of the side: 4.5-12 px per frame at 64 px
PULSE_PERIOD_RANGE = (12.0, 24.0)
PULSE_AMPLITUDE_RANGE = (0.35, 0.5)
SWAY_AMPLITUDE_RANGE = (0.08, 0.15)  # distractor sway, fraction of the side
SWAY_PERIOD_RANGE = (32.0, 64.0)
PAN_AMPLITUDE_RANGE = (0.08, 0.15)  # fraction of the side; 1-2.5 px/frame at most, at 64 px
PAN_PERIOD_RANGE = (24.0, 48.0)
ZOOM_RANGE = (0.2, 0.3)  # the view grows by up to this fraction (zooming out)
ZOOM_PERIOD_RANGE = (24.0, 48.0)
SHAKE_STD = 2.0  # px per axis, clipped to +-SHAKE_CLIP
SHAKE_CLIP = 3
CROSS_ARM = 0.35  # half-width of a cross arm relative to its half-length
# Background texture: the original set's smooth texture plus a finer, stronger octave, so
# that a moving camera changes every token as real scenes' edges do (with the smooth one
# alone a 1 px pan moved pixels by ~1 level, below the sensor noise).
FINE_CELLS = (10, 20)
FINE_AMPLITUDE = 70.0  # uint8 levels


def class_parts(name: str) -> tuple[str, str]:
    """'disk_cw' -> ('disk', 'cw'); ValueError naming the classes on an unknown name."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r} of the {SET_NAME!r} set; choose from {CLASS_NAMES}")
    identity, motion = name.split("_")
    return identity, motion


def margin(size: int) -> int:
    """Background border (px) that every camera mode stays inside."""
    return int(math.ceil(size * max(PAN_AMPLITUDE_RANGE[1], ZOOM_RANGE[1] / 2))) + SHAKE_CLIP + 2


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Thing:
    """One drawn object. center: [F, 2] world (x, y); scale: [F] factor on `radius` (px)."""

    shape: str
    color: np.ndarray
    radius: float
    angle: float
    center: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class Camera:
    """offset: [F, 2] world px of the view centre; scale: [F] world px per view px (>= 1)."""

    mode: str
    offset: np.ndarray
    scale: np.ndarray


def sample_motion(motion: str, rng: np.random.Generator, *, frames: int, size: int, radius: float,
                  orbit_period: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(center [F, 2], scale [F]) of the labelled object, kept inside the view's inner part
    so that a panning or zooming camera never loses it."""
    t = np.arange(frames, dtype=np.float64)
    keep_out = radius * (1 + PULSE_AMPLITUDE_RANGE[1]) + size * PAN_AMPLITUDE_RANGE[1]
    scale = np.ones(frames)
    if motion in ("cw", "ccw"):
        orbit = size * rng.uniform(*ORBIT_RADIUS_RANGE)
        pivot = rng.uniform(orbit + keep_out, size - orbit - keep_out, size=2)
        sense = 1.0 if motion == "cw" else -1.0  # angle grows clockwise on screen (y down)
        phase = rng.uniform(0, 2 * math.pi) + sense * 2 * math.pi * t / rng.uniform(*orbit_period)
        center = pivot + orbit * np.stack([np.cos(phase), np.sin(phase)], axis=1)
        return center, scale
    center = np.repeat(rng.uniform(keep_out, size - keep_out, size=2)[None], frames, axis=0)
    if motion == "pulse":
        period = rng.uniform(*PULSE_PERIOD_RANGE)
        amplitude = rng.uniform(*PULSE_AMPLITUDE_RANGE)
        scale = 1 + amplitude * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
    return center, scale


def sample_distractor(rng: np.random.Generator, *, frames: int, size: int, background_mean: np.ndarray) -> Thing:
    """A triangle or hexagon swaying slowly along a random line (no label)."""
    t = np.arange(frames, dtype=np.float64)
    radius = 0.5 * size * rng.uniform(*DISTRACTOR_SIZE_RANGE)
    amplitude = size * rng.uniform(*SWAY_AMPLITUDE_RANGE)
    start = rng.uniform(radius + amplitude, size - radius - amplitude, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    sway = amplitude * np.sin(2 * math.pi * t / rng.uniform(*SWAY_PERIOD_RANGE) + rng.uniform(0, 2 * math.pi))
    center = start + sway[:, None] * np.array([math.cos(theta), math.sin(theta)])
    shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
    color = synth._contrasting_color(rng, background_mean)
    return Thing(shape, color, float(radius), float(rng.uniform(0, 2 * math.pi)), center, np.ones(frames))


def sample_camera(mode: str, rng: np.random.Generator, *, frames: int, size: int) -> Camera:
    """Per-frame camera state of one video (see the module docstring)."""
    t = np.arange(frames, dtype=np.float64)
    offset = np.zeros((frames, 2))
    scale = np.ones(frames)
    if mode == "pan":
        amplitude = size * rng.uniform(*PAN_AMPLITUDE_RANGE)
        theta = rng.uniform(0, 2 * math.pi)
        sweep = amplitude * np.sin(2 * math.pi * t / rng.uniform(*PAN_PERIOD_RANGE) + rng.uniform(0, 2 * math.pi))
        offset = sweep[:, None] * np.array([math.cos(theta), math.sin(theta)])
    elif mode == "zoom":
        depth = rng.uniform(*ZOOM_RANGE)
        phase = 2 * math.pi * t / rng.uniform(*ZOOM_PERIOD_RANGE) + rng.uniform(0, 2 * math.pi)
        scale = 1 + depth * 0.5 * (1 - np.cos(phase))
    elif mode == "shake":
        offset = np.clip(rng.normal(0.0, SHAKE_STD, size=(frames, 2)), -SHAKE_CLIP, SHAKE_CLIP)
    elif mode != "none":
        raise ValueError(f"camera mode {mode!r}: allowed: {', '.join(CAMERA_MODES)}")
    return Camera(mode, offset.astype(np.float32), scale.astype(np.float32))


# --------------------------------------------------------------------------- rendering


def _shape_sdf(shape: str, angle: float, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (< 0 inside); the cross is the union of two rotated bars."""
    if shape != "cross":
        return synth._shape_sdf(shape, angle, dx, dy, radius)
    c, s = math.cos(angle), math.sin(angle)
    u, v = np.abs(dx * c + dy * s), np.abs(-dx * s + dy * c)
    arm = CROSS_ARM * radius
    bar_u = np.maximum(u - radius, v - arm)
    bar_v = np.maximum(v - radius, u - arm)
    return np.minimum(bar_u, bar_v)


def textured_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """[side, side, 3] float32 in uint8 levels: `synth.textured_background` plus fine
    value noise (FINE_CELLS cells per side, FINE_AMPLITUDE levels, grey)."""
    base = synth.textured_background(rng, side)
    cells = [max(2, round(c * side / 64)) for c in FINE_CELLS]  # the same feature size at any side
    fine = sum(synth._upsampled_noise(rng, side, c) for c in cells) / len(cells)
    return np.clip(base + FINE_AMPLITUDE * fine[..., None], 0.0, 255.0).astype(np.float32)


def view_coords(camera: Camera, f: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """World (x [1, S], y [S, 1]) of the view's pixel centres in frame f."""
    u = np.arange(size, dtype=np.float32) + 0.5 - size / 2
    half = size / 2
    x = half + camera.offset[f, 0] + camera.scale[f] * u
    y = half + camera.offset[f, 1] + camera.scale[f] * u
    return x[None, :], y[:, None]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image [H, W, 3] sampled at pixel-centre coordinates x [1, S], y [S, 1] -> [S, S, 3]."""
    h, w, _ = image.shape
    xs = np.clip(x - 0.5, 0, w - 1.001)
    ys = np.clip(y - 0.5, 0, h - 1.001)
    x0, y0 = xs.astype(int), ys.astype(int)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    xb, yb = np.broadcast_arrays(x0, y0)
    fxb, fyb = np.broadcast_arrays(fx, fy)
    top = image[yb, xb] * (1 - fxb) + image[yb, xb + 1] * fxb
    bottom = image[yb + 1, xb] * (1 - fxb) + image[yb + 1, xb + 1] * fxb
    return top * (1 - fyb) + bottom * fyb


def compose(background: np.ndarray, things: Sequence[Thing], camera: Camera, size: int,
            noise: np.ndarray | None) -> np.ndarray:
    """Scene through the camera -> [F, size, size, 3] uint8; things drawn in order (last on top).

    background: [B, B, 3] float32 covering world [-margin, size + margin)^2."""
    m = (background.shape[0] - size) / 2
    frames = len(camera.scale)
    out = np.empty((frames, size, size, 3), dtype=np.float32)
    for f in range(frames):
        x, y = view_coords(camera, f, size)
        img = _bilinear(background, x + m, y + m)
        for thing in things:
            dx, dy = x - thing.center[f, 0], y - thing.center[f, 1]
            sdf = _shape_sdf(thing.shape, thing.angle, dx, dy, thing.radius * thing.scale[f])
            # One view pixel of anti-aliasing ramp, whatever the zoom.
            alpha = np.clip(0.5 - sdf / camera.scale[f], 0.0, 1.0)[..., None]
            img = img * (1 - alpha) + thing.color * alpha
        out[f] = img
    if noise is not None:
        out += noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Scene:
    """Everything one video is made of (for tests and pictures): things[0] is labelled."""

    background: np.ndarray
    things: tuple[Thing, ...]
    camera: Camera


def sample_scene(cls: str, rng: np.random.Generator, *, size: int, frames: int,
                 camera: Sequence[str] = DEFAULT_CAMERA, distractors: int = DISTRACTORS,
                 orbit_period: tuple[float, float] = ORBIT_PERIOD) -> Scene:
    """Draws, in this order: background, object, its motion, distractors, camera mode, camera."""
    identity, motion = class_parts(cls)
    background = textured_background(rng, size + 2 * margin(size))
    mean = background.reshape(-1, 3).mean(axis=0)
    color = synth._contrasting_color(rng, mean)
    radius = 0.5 * size * rng.uniform(*SIZE_RANGE)
    angle = rng.uniform(0, 2 * math.pi)
    center, scale = sample_motion(motion, rng, frames=frames, size=size, radius=radius,
                                  orbit_period=orbit_period)
    obj = Thing(identity, color, float(radius), float(angle), center.astype(np.float32), scale.astype(np.float32))
    others = tuple(sample_distractor(rng, frames=frames, size=size, background_mean=mean)
                   for _ in range(distractors))
    mode = camera[int(rng.integers(len(camera)))]
    cam = sample_camera(mode, rng, frames=frames, size=size)
    return Scene(background, (*others, obj), cam)  # the labelled object drawn on top


def render_video(cls: str, rng: np.random.Generator, *, size: int = 64, frames: int = 48,
                 noise_std: float = NOISE_STD, camera: Sequence[str] = DEFAULT_CAMERA,
                 distractors: int = DISTRACTORS, orbit_period: tuple[float, float] = ORBIT_PERIOD) -> np.ndarray:
    """One video of class `cls` -> [frames, size, size, 3] uint8 RGB (scene, then noise)."""
    scene = sample_scene(cls, rng, size=size, frames=frames, camera=camera, distractors=distractors,
                         orbit_period=orbit_period)
    noise = (rng.normal(0.0, noise_std, size=(frames, size, size, 3)).astype(np.float32)
             if noise_std > 0 else None)
    return compose(scene.background, scene.things, scene.camera, size, noise)


def object_mask(scene: Scene, size: int, index: int = -1) -> np.ndarray:
    """[F, S, S] bool: view pixels covered by things[index] (default: the labelled object)."""
    thing = scene.things[index]
    out = np.empty((len(scene.camera.scale), size, size), dtype=bool)
    for f in range(len(out)):
        x, y = view_coords(scene.camera, f, size)
        sdf = _shape_sdf(thing.shape, thing.angle, x - thing.center[f, 0], y - thing.center[f, 1],
                         thing.radius * thing.scale[f])
        out[f] = sdf < 0.5 * scene.camera.scale[f]
    return out


# --------------------------------------------------------------------------- data set


def dataset_params(*, videos_per_class: int, size: int, frames: int, fps: float, seed: int,
                   classes: Sequence[str], splits: Sequence[float], noise_std: float, crf: int,
                   camera: Sequence[str], distractors: int, orbit_period: Sequence[float]) -> dict:
    """JSON-ready parameters of a hard data set (compared on rerun)."""
    return {
        "set": SET_NAME,
        "generator_version": GENERATOR_VERSION,
        "classes": list(classes),
        "videos_per_class": int(videos_per_class),
        "size": int(size),
        "frames": int(frames),
        "fps": float(fps),
        "seed": int(seed),
        "splits": [float(s) for s in splits],
        "noise_std": float(noise_std),
        "crf": int(crf),
        "camera": list(camera),
        "distractors": int(distractors),
        "orbit_period": [float(p) for p in orbit_period],
    }


def validate_params(params: dict) -> None:
    """ValueError naming the first bad parameter (the shared ones as `pipeline.synth`)."""
    shared = {k: params[k] for k in ("videos_per_class", "size", "frames", "fps", "splits", "noise_std")}
    synth.validate_params({**shared, "classes": ["static"], "shake_px": 0.0})
    classes = params["classes"]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    for name in classes:
        class_parts(name)
    if not params["camera"] or any(m not in CAMERA_MODES for m in params["camera"]):
        raise ValueError(f"camera must be a non-empty list of {', '.join(CAMERA_MODES)}, got {params['camera']}")
    if not 0 <= params["crf"] <= 51:
        raise ValueError(f"crf must be in 0..51 (x264), got {params['crf']}")
    if params["distractors"] < 0:
        raise ValueError(f"distractors must be >= 0, got {params['distractors']}")
    lo, hi = params["orbit_period"]
    if not 2 < lo <= hi:
        raise ValueError(f"orbit_period must be LO <= HI frames per turn, LO > 2, got {params['orbit_period']}")


def make_dataset(out_dir: str | os.PathLike, *, videos_per_class: int, size: int = 64, frames: int = 48,
                 fps: float = 25, seed: int = 0, splits: Sequence[float] = (0.7, 0.15, 0.15),
                 classes: Sequence[str] | None = None, noise_std: float = NOISE_STD, crf: int = CRF,
                 camera: Sequence[str] = DEFAULT_CAMERA, distractors: int = DISTRACTORS,
                 orbit_period: Sequence[float] = ORBIT_PERIOD, overwrite: bool = False) -> dict[str, Path]:
    """Write the hard set under `out_dir`; same files and rerun rules as `synth.make_dataset`.

    Every switch is recorded in dataset.json. A video's rng is
    `default_rng([seed, class index in CLASS_NAMES, index, 1])` (the trailing 1 keeps it
    apart from the original set's generators).
    """
    params = dataset_params(videos_per_class=videos_per_class, size=size, frames=frames, fps=fps, seed=seed,
                            classes=list(classes or CLASS_NAMES), splits=splits, noise_std=noise_std, crf=crf,
                            camera=camera, distractors=distractors, orbit_period=orbit_period)
    validate_params(params)
    period = (float(orbit_period[0]), float(orbit_period[1]))

    def render(name: str, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, CLASS_NAMES.index(name), index, 1])
        return render_video(name, rng, size=size, frames=frames, noise_std=noise_std, camera=tuple(camera),
                            distractors=distractors, orbit_period=period)

    return synth.write_dataset(
        out_dir, params, overwrite=overwrite, render=render,
        encode=lambda path, video: encoding.write_video(path, video, fps, crf=crf),
        descriptions=DESCRIPTIONS, flip_safe=False)  # a flip swaps cw and ccw
