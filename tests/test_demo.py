"""`mgtc demo`: its configs come from synthetic_tiny.yaml plus the demo's paths, validated
before anything starts; its table marks reused runs. (The pipeline it drives is covered end
to end by tests/test_training.py::test_end_to_end_on_the_real_data_path.)"""

from __future__ import annotations

from pathlib import Path

from jobs import demo


def test_demo_configs_mgtc_then_baseline(tmp_path: Path):
    args = demo.build_parser().parse_args(["--out", str(tmp_path), "--epochs", "3", "--mask-ratio", "0.25"])
    mgtc, base = demo.demo_configs(args, tmp_path / "data", tmp_path / "shards", tmp_path / "ray")
    assert (mgtc.masking.strategy, mgtc.masking.ratio, mgtc.scaling.name) == ("mgtc_ratio", 0.25, "demo-mgtc")
    assert (base.masking.strategy, base.scaling.name) == ("none", "demo-all-tokens")
    for cfg in (mgtc, base):
        assert cfg.optim.epochs == 3 and cfg.data.shards == str(tmp_path / "shards")
        assert cfg.data.train_manifest == str(tmp_path / "data" / "train.csv")
        assert cfg.model.head_init_scale == 1.0 and cfg.data.hflip is False  # from scratch; left/right classes
    only = demo.build_parser().parse_args(["--no-baseline"])
    assert len(demo.demo_configs(only, tmp_path, tmp_path, tmp_path)) == 1


def test_bad_override_fails_before_anything_runs(tmp_path: Path, capsys):
    assert demo.main(["--out", str(tmp_path), "--set", "masking.ratio=1.5"]) == 2
    assert "masking.ratio=1.5" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_result_table_marks_reused_runs():
    row = {"name": "demo-mgtc", "strategy": "mgtc_ratio", "top1": 58.33, "top5": 91.7, "kept_ratio": 0.5,
           "gflops_per_view": 0.0771, "train_clips_per_s": 66.8, "test_clips_per_s": 14.5, "train_wall_s": 220.4}
    fresh = demo.result_table([{**row, "reused": False}]).splitlines()[-1]
    again = demo.result_table([{**row, "reused": True}]).splitlines()[-1]
    assert fresh == "| demo-mgtc | mgtc_ratio | 58.3 | 91.7 | 50.0 | 0.077 | 66.8 | 14.5 | 220 |"
    assert again.endswith("| reused |")
