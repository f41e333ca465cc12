"""Sweeps: grid expansion and validation, aggregation over seeds, failed trials, MLflow REST."""

from __future__ import annotations

from pipeline.config import flat_params, load_config


def test_tracking_parent_run_id_is_an_optional_config_field(tmp_path):
    base = ["data.num_classes=3", "data.train_manifest=train.txt", "masking.strategy=none"]
    assert load_config(None, base).tracking.parent_run_id == ""
    cfg = load_config(None, [*base, "tracking.parent_run_id=0123abcd"])
    assert cfg.tracking.parent_run_id == "0123abcd"
    assert flat_params(cfg)["tracking.parent_run_id"] == "0123abcd"
