"""Every config in jobs/configs loads and validates; the paper configs carry VideoMAE's recipe
and the compute budgets of the study (16x4 vs 32x2, MGTC 25%, the 50% fixed budget)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.flops import encoder_macs, encoder_shape
from pipeline.selection import num_kept
from pipeline.tracking import lr_batch, scaled_lr


def is_training_config(path: Path) -> bool:
    """Training configs hold config sections; sweep files (a `sweep:` section) are the
    sweep's own business (tests/test_sweep.py)."""
    return "sweep" not in (yaml.safe_load(path.read_text()) or {})


CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "jobs" / "configs").glob("*.yaml")
                 if is_training_config(p))
PAPER = [p for p in CONFIGS if p.stem != "synthetic_tiny"]
SETTINGS = ("16x4_full", "32x2_full", "32x2_mgtc25", "32x2_mgtc50", "32x2_random50", "32x2_cell50")


def test_the_paper_grid_is_complete():
    names = {p.stem for p in CONFIGS}
    for data in ("k400", "ucf101", "hmdb51"):
        for setting in SETTINGS:
            assert f"{data}_vitb_{setting}" in names
    assert "synthetic_tiny" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.scaling.name == path.stem  # a rerun of a config resumes its own run


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_follow_videomae(path):
    cfg = load_config(path)
    d, o, m = cfg.data, cfg.optim, cfg.model
    assert m.size == "base" and m.checkpoint.endswith(".pth") and (m.tubelet, m.patch) == (2, 16)
    assert (d.test_clips, d.test_crops, d.input_size) == (5, 3, 224)
    assert (d.mixup, d.cutmix, d.smoothing, d.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert d.rand_augment == "rand-m7-n4-mstd0.5-inc1" and o.weight_decay == 0.05 and o.warmup_epochs == 5
    assert cfg.scaling.use_gpu and cfg.scaling.precision == "bf16"
    # VideoMAE's --num_sample 2: a step holds batch_size / 2 videos, and lr scales by videos.
    assert d.num_sample == 2 and o.batch_size % d.num_sample == 0
    total = lr_batch(cfg, cfg.scaling.num_workers)
    assert scaled_lr(o.lr, total) == pytest.approx(o.lr * total / 256)
    if path.stem.startswith("k400"):
        assert (total, pytest.approx(o.lr * total / 256), o.epochs, o.layer_decay, m.drop_path) == (384, 7.5e-4, 75, 0.75, 0.1)
        assert d.num_classes == 400
    else:
        assert (total, pytest.approx(o.lr * total / 256), o.epochs, o.layer_decay, m.drop_path, m.fc_drop) == (128, 2.5e-4, 100, 0.7, 0.2, 0.5)
        assert d.num_classes == (101 if path.stem.startswith("ucf101") else 51)
    # 16x4 and 32x2 cover the same ~64-frame span.
    assert d.num_frames * d.sampling_rate == 64


def gmacs(path: Path) -> float:
    cfg = load_config(path)
    shape = encoder_shape("base", num_frames=cfg.data.num_frames)
    kept = shape.num_tokens if cfg.masking.strategy == "none" else num_kept(shape.num_tokens, cfg.masking.ratio)
    return encoder_macs(kept, shape) / 1e9


def test_compute_budgets_of_the_study():
    by = {p.stem.split("_vitb_")[1]: gmacs(p) for p in PAPER if p.stem.startswith("k400")}
    assert by["16x4_full"] == pytest.approx(180.3, abs=0.1)
    assert by["32x2_full"] == pytest.approx(451.3, abs=0.1)
    assert by["32x2_mgtc25"] / by["32x2_full"] == pytest.approx(1 - 0.325, abs=0.002)  # "over 31% less"
    for fixed in ("32x2_mgtc50", "32x2_random50", "32x2_cell50"):
        # The fixed-budget study: the same 1568 tokens through the blocks; only the tubelet
        # embedding, which runs before tokens are dropped, sees 32 frames (+1.85 G, 1%).
        assert by[fixed] == pytest.approx(by["16x4_full"], rel=0.011)
