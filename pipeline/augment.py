"""RandAugment on the trainer's device: one draw per clip, applied to every frame as tensors.

The decode actors hand over uint8 clips [T, S, S, 3] after crop / resize / flip (and after
the token scores were taken); with `data.augment_on=trainer` RandAugment runs here, on the
device the batch already went to (the GPU when there is one), instead of timm's PIL ops in
the actor (`transforms.augment_clip`). Random erasing, normalisation and mixup / cutmix were
already trainer-side (`training.finetune_loss`, `clips.to_model_inputs`).

Same distributions as the actor path: the ops, their probability (0.5), the magnitude noise
(gauss(m, mstd) clipped to [0, 10]) and the level -> argument maps are timm's own
(`rand_augment_transform(...).ops`, `AugmentOp.level_fn`), drawn from the same global RNGs
timm uses (numpy for the op choice, Python's `random` for the rest; both are in the
per-rank checkpoint state). Only the pixel kernels differ: torchvision's tensor ops instead
of PIL. Differences that remain: geometric ops are bilinear (timm picks bilinear or bicubic
at random; torchvision's tensor affine has no bicubic), and solarize-add is written here
(torchvision has none).

`draw_clip` gives one clip's [(op name, args)], `apply_ops` applies them to all T frames
of the clip at once (every op is one call on the [T, 3, H, W] tensor, so every frame gets
the same op with the same magnitude).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

Draw = tuple[str, tuple]  # (timm op name, level arguments)


def rand_augment_ops(config: str, size: int):
    """timm's RandAugment for `config` (e.g. rand-m7-n4-mstd0.5-inc1) at crop size `size`
    with VideoMAE's hparams: the same object the actor path applies (`transforms.rand_augment`)."""
    from pipeline.transforms import rand_augment

    return rand_augment(config, size)


def draw_clip(ra) -> list[Draw]:
    """One clip's RandAugment draw: the ops timm's `RandAugment.__call__` would apply, each
    with its level arguments, in order. Ops skipped by their probability are left out."""
    ops = np.random.choice(ra.ops, ra.num_layers, replace=ra.choice_weights is None, p=ra.choice_weights)
    out = []
    for op in ops:  # timm's AugmentOp.__call__, without the image
        if op.prob < 1.0 and random.random() > op.prob:
            continue
        magnitude = op.magnitude
        if op.magnitude_std == float("inf"):
            magnitude = random.uniform(0, magnitude)
        elif op.magnitude_std > 0:
            magnitude = random.gauss(magnitude, op.magnitude_std)
        magnitude = max(0.0, min(magnitude, op.magnitude_max or 10.0))
        out.append((op.name, op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()))
    return out


def _solarize_add(x: torch.Tensor, add: int, thresh: int = 128) -> torch.Tensor:
    """timm's solarize_add: pixels below `thresh` get `add` (saturating), uint8."""
    added = (x.to(torch.int16) + add).clamp_(max=255).to(torch.uint8)
    return torch.where(x < thresh, added, x)


def _affine(x: torch.Tensor, fill: list[float], *, angle=0.0, translate=(0.0, 0.0), shear=(0.0, 0.0),
            center=None) -> torch.Tensor:
    return TF.affine(x, angle=angle, translate=list(translate), scale=1.0, shear=list(shear),
                     interpolation=InterpolationMode.BILINEAR, fill=fill, center=center)


def apply_op(x: torch.Tensor, name: str, args: tuple, fill: list[float]) -> torch.Tensor:
    """One timm RandAugment op on a clip x [T, 3, H, W] uint8 (any device) -> same shape.

    Conventions follow timm's PIL ops: PIL's AFFINE data (1, f, 0, 0, 1, 0) samples the input
    at (x + f*y, y) from the top-left corner, i.e. torchvision's shear of atan(f) degrees
    about (0, 0); a PIL translation by +p pixels samples x + p, i.e. torchvision's translate -p.
    """
    h, w = x.shape[-2:]
    if name == "AutoContrast":
        return TF.autocontrast(x)
    if name == "Equalize":
        return TF.equalize(x)
    if name == "Invert":
        return TF.invert(x)
    if name == "Rotate":
        return TF.rotate(x, args[0], interpolation=InterpolationMode.BILINEAR, fill=fill)
    if name == "PosterizeIncreasing":
        return x if args[0] >= 8 else TF.posterize(x, int(args[0]))
    if name == "SolarizeIncreasing":
        return x if args[0] > 255 else TF.solarize(x, float(args[0]))
    if name == "SolarizeAdd":
        return _solarize_add(x, int(args[0]))
    if name == "ColorIncreasing":
        return TF.adjust_saturation(x, args[0])
    if name == "ContrastIncreasing":
        return TF.adjust_contrast(x, args[0])
    if name == "BrightnessIncreasing":
        return TF.adjust_brightness(x, args[0])
    if name == "SharpnessIncreasing":
        return TF.adjust_sharpness(x, args[0])
    if name == "ShearX":
        return _affine(x, fill, shear=(float(np.degrees(np.arctan(args[0]))), 0.0), center=[0, 0])
    if name == "ShearY":
        return _affine(x, fill, shear=(0.0, float(np.degrees(np.arctan(args[0])))), center=[0, 0])
    if name == "TranslateXRel":
        return _affine(x, fill, translate=(-args[0] * w, 0.0))
    if name == "TranslateYRel":
        return _affine(x, fill, translate=(0.0, -args[0] * h))
    raise ValueError(f"RandAugment op {name!r} has no tensor version (supported: {', '.join(TENSOR_OPS)})")


TENSOR_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)


def apply_ops(x: torch.Tensor, draws: list[Draw], fill: list[float]) -> torch.Tensor:
    """A clip's draw applied in order to all its frames: x [T, 3, H, W] uint8 -> same."""
    for name, args in draws:
        x = apply_op(x, name, args, fill)
    return x


class TrainerAugment:
    """RandAugment of a training batch on its device (`data.augment_on=trainer`).

    Call with pixels uint8 [B, T, S, S, 3] (the data path's layout, already on the device);
    returns uint8 [B, T, S, S, 3] with one independent draw per clip.
    """

    def __init__(self, config: str, size: int):
        self.ra = rand_augment_ops(config, size)
        unknown = sorted({op.name for op in self.ra.ops} - set(TENSOR_OPS))
        if unknown:
            raise ValueError(f"data.rand_augment={config!r}: ops {unknown} have no trainer-side version; "
                             "use data.augment_on=actor")
        self.fill = [float(v) for v in self.ra.ops[0].kwargs["fillcolor"]]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        clips = pixels.permute(0, 1, 4, 2, 3)  # [B, T, 3, S, S] view
        out = torch.stack([apply_ops(clip, draw_clip(self.ra), self.fill) for clip in clips])
        return out.permute(0, 1, 3, 4, 2).contiguous()
