"""Tracking: URI resolution (embedded SQLite default), the run of a job (params, tags, reopen
by run name, nesting under a sweep), each epoch logged once, no secrets, mask images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import replace
from pipeline.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    NOTE_TAG,
    RUN_NAME_TAG,
    RunLogger,
    finish_run,
    mask_overlay,
    ray_submission_id,
    resolve_tracking_uri,
    run_description,
    start_run,
    summary_params,
)
from pipeline.vocab import git_commit
from tests.helpers.configs import yaml_config

CONFIG = """
data: {{train_manifest: data/train.csv, shards: data/shards, num_classes: 5, num_frames: 16, sampling_rate: 2}}
model: {{size: tiny}}
masking: {{strategy: mgtc_ratio, ratio: 0.25}}
optim: {{epochs: 3, batch_size: 4, warmup_epochs: 1, lr: 1.0e-3}}
scaling: {{num_workers: 2, storage_path: {tmp}/runs/ray}}
tracking: {{experiment: test-tracking}}
"""


@pytest.fixture
def cfg(tmp_path):
    return yaml_config(tmp_path, CONFIG.format(tmp=tmp_path))


def test_tracking_uri_precedence(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path}/runs/mlflow.db"  # beside runs/ray
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(cfg) == "http://tracking:5000"
    assert resolve_tracking_uri(replace(cfg, ["tracking.tracking_uri=http://x:1"])) == "http://x:1"


def test_submission_id_comes_from_the_job_config_ray_passes(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert ray_submission_id() is None
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc"}}))
    assert ray_submission_id() == "raysubmit_abc"


def test_git_commit_outside_a_checkout_comes_from_the_submission_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert git_commit(tmp_path) == "unknown"  # an uploaded working dir has no .git
    meta = {"metadata": {"job_submission_id": "raysubmit_abc", "git_commit": "0123abcd"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(meta))
    assert git_commit(tmp_path) == "0123abcd"
    assert len(git_commit()) == 40  # inside this checkout HEAD wins


def test_summary_params(cfg):
    p = summary_params(cfg, world_size=2, tau=None)
    assert p["effective_fps"] == 15.0 and p["total_batch"] == 8 and p["lr"] == pytest.approx(1e-3 * 8 / 256)
    assert (p["strategy"], p["mask_ratio"], p["tau"], p["model"], p["world_size"]) == ("mgtc_ratio", 0.25, "none", "tiny", 2)


def test_run_created_reopened_nested_and_free_of_secrets(cfg, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "raysubmit_1"}}))
    uri = resolve_tracking_uri(cfg)
    params = summary_params(cfg, world_size=2, tau=None)
    run_id = start_run(cfg, uri=uri, run_name="r1", kind="train", params=params)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags[RUN_NAME_TAG] == "r1" and run.data.tags[KIND_TAG] == "train"
    assert run.data.tags["ray_submission_id"] == "raysubmit_1" and run.data.tags["shards"] == "data/shards"
    assert run.data.params["masking.ratio"] == "0.25" and run.data.params["data.scale"] == "0.08,1.0"
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml"}
    # Artifacts of the embedded store sit beside mlflow.db.
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith(f"file://{tmp_path}/runs/mlartifacts")
    everything = json.dumps([run.data.params, run.data.tags])
    assert "s3cr3t" not in everything

    # Rerun with the same name and storage: the same run, RUNNING again; a changed param keeps
    # its first value (MLflow params are immutable) and is reported, not overwritten.
    finish_run(uri, run_id, status="FAILED")
    again = start_run(replace(cfg, ["optim.epochs=5"]), uri=uri, run_name="r1", kind="train", params=params)
    assert again == run_id and client.get_run(run_id).info.status == "RUNNING"
    assert client.get_run(run_id).data.params["optim.epochs"] == "3"
    # Another storage path or an eval: a new run; a sweep child is nested under its parent.
    other = start_run(replace(cfg, [f"scaling.storage_path={tmp_path}/elsewhere"]), uri=uri, run_name="r1",
                      kind="train", params=params)
    assert other != run_id
    child = start_run(replace(cfg, ["tracking.parent_run_id=" + run_id]), uri=uri, run_name="e1", kind="eval", params={})
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == run_id

    finish_run(uri, run_id, final={"top1": 50.0})
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "final_metrics.json" in {a.path for a in client.list_artifacts(run_id)}


def test_experiment_opens_on_its_runs_and_runs_say_what_they_are(cfg, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(cfg)
    client = MlflowClient(uri)
    untyped = client.create_experiment("test-tracking")  # made by an older version: no type, no note
    run_id = start_run(cfg, uri=uri, run_name="r3", kind="train", params=summary_params(cfg, world_size=2, tau=None))
    tags = client.get_experiment(untyped).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert "synthetic (5 classes" in tags[NOTE_TAG] and "strategies" in tags[NOTE_TAG]
    client.set_experiment_tag(untyped, NOTE_TAG, "my own words")  # a description edited in the UI is kept
    start_run(cfg, uri=uri, run_name="r4", kind="train", params={})
    assert client.get_experiment(untyped).tags[NOTE_TAG] == "my own words"
    note = client.get_run(run_id).data.tags[NOTE_TAG]
    assert note == "mgtc_ratio ratio 0.25 (75% kept) · 16 frames x stride 2 · 15 fps · ViT-tiny finetune on synthetic"
    assert run_description(replace(cfg, ["masking.strategy=none"]), None).startswith("all tokens · ")
    threshold = replace(cfg, ["masking.strategy=mgtc_threshold", "masking.tau=0.0125"])
    assert run_description(threshold, None).startswith("mgtc_threshold tau 0.0125 · 16 frames")
    described = replace(cfg, ["tracking.experiment=other", "tracking.description=MGTC 50% vs all tokens"])
    start_run(described, uri=uri, run_name="r5", kind="train", params={})
    assert client.get_experiment_by_name("other").tags[NOTE_TAG] == "MGTC 50% vs all tokens"


def test_each_epoch_is_logged_once_even_after_a_restart(cfg, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, uri=uri, run_name="r2", kind="train", params={})
    logger = RunLogger(uri, run_id)
    assert logger.log_epoch({"loss": 1.0, "epoch_time": 2.0, "top1": float("nan")}, 1)
    assert not logger.log_epoch({"loss": 9.0, "epoch_time": 2.0}, 1)
    restarted = RunLogger(uri, run_id)  # a new rank 0 after a worker-group restart
    assert restarted.has_epoch(1) and not restarted.log_epoch({"loss": 9.0, "epoch_time": 2.0}, 1)
    assert restarted.log_epoch({"loss": 0.5, "epoch_time": 2.0}, 2)
    history = MlflowClient(uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5)]
    assert MlflowClient(uri).get_metric_history(run_id, "top1") == []  # non-finite values are skipped
    restarted.log_image(np.zeros((8, 8, 3), np.uint8), "masks/epoch_001.png")
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id, "masks")] == ["masks/epoch_001.png"]


def test_mask_overlay_greys_out_dropped_tokens():
    pixels = np.full((8, 32, 32, 3), 200, np.uint8)  # T=8, 2x2 tokens of 16 px, tubelet 2
    keep = np.ones((4, 2, 2), bool)
    keep[1, 0, 1] = False
    image = mask_overlay(pixels, keep, tubelet=2, patch=16, min_side=32)
    assert image.shape == (32, 4 * 32 + 3 * 4, 3) and image.dtype == np.uint8
    panel1 = image[:, 36:68]
    assert (panel1[:16, 16:] == round(0.25 * 200 + 0.75 * 128)).all()  # the dropped token
    assert (panel1[16:] == 200).all() and (image[:, :32] == 200).all()
    assert (image[:, 32:36] == 255).all()  # gap between slices
    big = mask_overlay(pixels, keep, tubelet=2, patch=16)  # upscaled to >= 112 px
    assert big.shape[0] == 128
    with pytest.raises(ValueError, match="do not tile"):
        mask_overlay(pixels[:6], keep, tubelet=2, patch=16)
