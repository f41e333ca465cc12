"""Trainer-side RandAugment (pipeline/augment.py): timm's draws, torchvision's tensor ops.

Draws are compared with timm's own RandAugment under the same RNG state, the tensor ops with
timm's PIL ops on a textured 64 px image, and the trainer path with the actor path on tiny
synthetic videos (no Ray).
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import augment, clips
from pipeline.config import Config, ConfigError, DataConfig, ScalingConfig, augment_side, validate

CONFIG = "rand-m7-n4-mstd0.5-inc1"


def seed(s: int) -> None:
    random.seed(s)
    np.random.seed(s)


def textured(size: int = 64, seed_: int = 0) -> np.ndarray:
    """[size, size, 3] uint8: gradients, a bright bar and noise (every op changes it)."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx * 3, yy * 3, (xx + yy) * 2 % 256], -1)
    img[20:30, 10:40] = 250
    img = img + np.random.default_rng(seed_).integers(0, 30, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def test_draws_are_timms_own_for_the_same_rng_state():
    ra = augment.rand_augment_ops(CONFIG, 64)
    recorded: list = []
    for op in ra.ops:  # timm's ops with the pixel kernel replaced by a recorder
        op.aug_fn = (lambda name: lambda img, *args, **kw: recorded.append((name, args)) or img)(op.name)
    img = Image.fromarray(textured())
    for s in range(200):
        seed(s)
        recorded.clear()
        ra(img)
        seed(s)
        assert augment.draw_clip(ra) == recorded


def test_every_op_is_reachable_with_magnitudes_in_range():
    ra = augment.rand_augment_ops(CONFIG, 64)
    seed(0)
    args = defaultdict(list)
    lengths = []
    for _ in range(4000):
        draws = augment.draw_clip(ra)
        lengths.append(len(draws))
        for name, a in draws:
            args[name].append(a[0] if a else 0.0)
    assert set(args) == set(augment.TENSOR_OPS)
    assert max(lengths) <= 4 and 1.8 < np.mean(lengths) < 2.2  # 4 ops, each with p = 0.5
    # m = 7 +- 0.5 (clipped to [0, 10]) through timm's level maps:
    limits = {"Rotate": 30, "ShearX": 0.3, "ShearY": 0.3, "TranslateXRel": 0.45, "TranslateYRel": 0.45}
    for name, limit in limits.items():
        v = np.abs(args[name])
        assert v.max() <= limit and 0.5 * limit < np.median(v) < 0.9 * limit, name
        assert (np.asarray(args[name]) < 0).mean() == pytest.approx(0.5, abs=0.1)  # random sign
    for name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        v = np.asarray(args[name])
        assert v.min() >= 0.1 and v.max() <= 1.9 and (np.abs(v - 1) > 0.4).all(), name
    assert set(args["PosterizeIncreasing"]) <= {1, 2, 3}
    assert 0 <= min(args["SolarizeIncreasing"]) and max(args["SolarizeIncreasing"]) <= 256
    assert 0 <= min(args["SolarizeAdd"]) and max(args["SolarizeAdd"]) <= 110


# (op, level args, largest mean |ours - PIL| in grey levels): pixel ops exact or 1 level of
# rounding; geometric ops differ only where bilinear sampling meets edges and the fill.
OPS = [
    ("Rotate", (20.0,), 2.0), ("ShearX", (0.2,), 2.0), ("ShearY", (-0.2,), 2.0),
    ("TranslateXRel", (0.3,), 2.0), ("TranslateYRel", (-0.3,), 2.0), ("PosterizeIncreasing", (2,), 0.0),
    ("SolarizeIncreasing", (100,), 0.0), ("SolarizeAdd", (77,), 0.0), ("ColorIncreasing", (1.6,), 1.0),
    ("ContrastIncreasing", (0.4,), 1.0), ("BrightnessIncreasing", (1.5,), 0.0),
    ("SharpnessIncreasing", (1.7,), 0.0), ("AutoContrast", (), 0.1), ("Equalize", (), 0.0), ("Invert", (), 0.0),
]


@pytest.mark.parametrize("name,args,tolerance", OPS, ids=[o[0] for o in OPS])
def test_tensor_ops_match_timms_pil_ops(name, args, tolerance):
    from timm.data.auto_augment import NAME_TO_OP

    img = textured()
    fill = (124, 116, 104)
    pil = np.asarray(NAME_TO_OP[name](Image.fromarray(img), *args, fillcolor=fill, resample=Image.BILINEAR))
    ours = augment.apply_op(torch.from_numpy(img).permute(2, 0, 1)[None], name, args, [float(f) for f in fill])
    diff = np.abs(pil.astype(int) - ours[0].permute(1, 2, 0).numpy().astype(int)).mean()
    assert diff <= tolerance
    assert np.abs(pil.astype(int) - img).mean() > 1  # the op did something


def test_one_draw_per_clip_the_same_on_every_frame():
    aug = augment.TrainerAugment(CONFIG, 64)
    frame = torch.from_numpy(textured())
    moving = torch.stack([torch.roll(torch.from_numpy(textured(seed_=1)), k, dims=1) for k in range(4)])
    pixels = torch.stack([frame.expand(4, -1, -1, -1), moving] * 4)  # [8, 4, 64, 64, 3]
    seed(3)
    out = aug(pixels)
    assert out.shape == pixels.shape and out.dtype == torch.uint8
    for b in range(0, 8, 2):  # identical frames stay identical: one op and magnitude per clip
        assert all(torch.equal(out[b, 0], out[b, t]) for t in range(4))
    # Replaying the draws frame by frame gives the clip's frames.
    seed(3)
    draws = [augment.draw_clip(aug.ra) for _ in range(8)]
    for b in (1, 3):
        for t in range(4):
            one = augment.apply_ops(pixels[b, t].permute(2, 0, 1)[None], draws[b], aug.fill)
            assert torch.equal(one[0].permute(1, 2, 0), out[b, t])
    changed = [not torch.equal(out[b], pixels[b]) for b in range(8)]
    assert sum(changed) >= 5  # P(no op in a clip) = 1/16
    assert len({tuple(map(str, d)) for d in draws}) > 4  # clips get independent draws


def test_augment_on_is_validated_and_auto_follows_the_device():
    def cfg(augment_on: str = "auto", use_gpu: bool = False) -> Config:
        return Config(data=DataConfig(train_manifest="m", shards="s", num_classes=2, augment_on=augment_on),
                      scaling=ScalingConfig(use_gpu=use_gpu, storage_path="/tmp/x"))

    assert augment_side(cfg()) == "actor" and augment_side(cfg(use_gpu=True)) == "trainer"
    assert augment_side(cfg("trainer")) == "trainer" and augment_side(cfg("actor", use_gpu=True)) == "actor"
    validate(cfg("trainer"))
    with pytest.raises(ConfigError, match="data.augment_on='gpu'"):
        validate(cfg("gpu"))


def test_trainer_path_hands_over_unaugmented_clips_with_the_same_scores(tmp_path):
    from tests.test_clips import as_batch, make_cfg, shard_row
    from pipeline import encoding, synth

    frames = synth.render_video("right", np.random.default_rng(0), size=80, frames=32)[:, 8:72]
    path = tmp_path / "right.mp4"
    encoding.write_video(path, frames, fps=25)
    row = shard_row(str(path), 2, 64)
    actor = clips.ClipMaker(make_cfg(rand_augment=CONFIG, augment_on="actor"), "train", entropy=5)
    trainer = clips.ClipMaker(make_cfg(rand_augment=CONFIG, augment_on="trainer"), "train", entropy=5)
    plain = clips.ClipMaker(make_cfg(), "train", entropy=5)
    a, t, p = (m(as_batch([row, row])) for m in (actor, trainer, plain))
    assert trainer._augment is None and actor._augment is not None
    for key in a:
        assert t[key].shape == a[key].shape and t[key].dtype == a[key].dtype
    assert np.array_equal(t["pixels"], p["pixels"]) and not np.array_equal(a["pixels"], p["pixels"])
    assert np.array_equal(t["scores"], p["scores"])
    # The actor path draws a RandAugment seed after each clip's crop: the first clips agree.
    assert np.array_equal(t["scores"][0], a["scores"][0])

    batch = {k: torch.as_tensor(v) for k, v in t.items()}
    seed(0)
    x, scores, _ = clips.to_model_inputs(batch, "cpu", augment.TrainerAugment(CONFIG, 48))
    x0, _, _ = clips.to_model_inputs(batch, "cpu")
    assert x.shape == x0.shape == (2, 3, 8, 48, 48) and x.dtype == torch.float32
    assert not torch.equal(x, x0) and torch.equal(scores, torch.as_tensor(t["scores"]))
