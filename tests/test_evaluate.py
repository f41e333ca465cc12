"""Evaluation: VideoMAE's multi-view rule (softmax per view, mean per video), its merge across
ranks, deterministic token selection at test time, and the Ray Data evaluation end to end
(local and s3:// checkpoints, one MLflow run)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.config import replace
from pipeline.evaluate import evaluate, format_table, run_evaluation
from pipeline.modeling import STATE_FILE, make_model
from pipeline.multiview import VideoScores, average_views, topk_accuracy
from pipeline.selection import select_views
from pipeline.shards import resolve_tau
from tests.helpers.configs import yaml_config

CONFIG = """
data: {{dataset: synthetic, shards: {tmp}/shards, num_classes: 4, num_frames: 8, sampling_rate: 1,
        input_size: 32, short_side: 32, test_clips: 3, test_crops: 1}}
model: {{size: tiny}}
masking: {{strategy: random, ratio: 0.5}}
optim: {{batch_size: 4}}
scaling: {{num_workers: 1, cpus_per_worker: 0.5, storage_path: {tmp}/ray}}
tracking: {{tracking_uri: "{uri}", experiment: test-eval}}
"""


def config(tmp_path, uri="", *overrides):
    return yaml_config(tmp_path, CONFIG.format(tmp=tmp_path, uri=uri), *overrides)


def test_softmax_per_view_then_mean_per_video():
    # Video 7: one over-confident view for class 0, two clear views for class 1. Averaging
    # logits says class 0 (20 / 3 > 3 * 2 / 3); VideoMAE's softmax average says class 1.
    logits = torch.tensor([[20.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0]])
    ids = torch.tensor([7, 7, 7, 3])
    labels = torch.tensor([1, 1, 1, 2])
    vids, probs, vlabels = average_views(ids, logits, labels)
    assert vids.tolist() == [3, 7] and vlabels.tolist() == [2, 1]
    expect7 = logits[:3].softmax(-1).mean(0)
    assert torch.allclose(probs[1], expect7) and probs[1].argmax() == 1
    assert logits[:3].mean(0).argmax() == 0  # the rule matters
    assert torch.allclose(probs.sum(1), torch.ones(2))
    assert topk_accuracy(probs, vlabels, ks=(1, 5)) == {"top1": 100.0, "top5": 100.0}  # k capped at C


def test_topk_accuracy():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(probs, torch.tensor([2, 0, 0]), ks=(1, 2))
    assert acc["top1"] == pytest.approx(100 / 3) and acc["top2"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_views_split_over_ranks_give_the_same_result(world):
    """However the views of a video are dealt to ranks, the summed per-video sums score the
    same as one process seeing everything (what merge_across_ranks all-reduces)."""
    rng = np.random.default_rng(world)
    ids = rng.integers(0, 6, size=30)
    labels = ids % 4
    logits = torch.from_numpy(rng.normal(size=(30, 4)))
    probs = logits.softmax(-1).numpy()
    ranks = [VideoScores(4) for _ in range(world)]
    for i in range(30):
        ranks[i % world].add(ids[i : i + 1], probs[i : i + 1], labels[i : i + 1])
    num = int(ids.max()) + 1
    sums = sum(r.dense(num)[0] for r in ranks)
    counts = sum(r.dense(num)[1] for r in ranks)
    lab = torch.stack([r.dense(num)[2] for r in ranks]).max(0).values
    seen = counts > 0
    vids, expect, vlabels = average_views(torch.from_numpy(ids), logits, torch.from_numpy(labels))
    assert torch.equal(seen.nonzero().squeeze(1), vids)
    assert torch.allclose(sums[seen] / counts[seen, None], expect.double())
    assert torch.equal(lab[seen], vlabels)
    single = VideoScores(4)
    single.add(ids, probs, labels)
    merged = single.merge_across_ranks(torch.device("cpu"))
    assert merged["top1"] == pytest.approx(topk_accuracy(expect, vlabels)["top1"])
    assert merged["videos"] == len(vids) and merged["views"] == 30


def view_rows(num_videos: int, views: int, seed: int = 0) -> list[dict]:
    from pipeline.motion import token_scores
    from pipeline.synth import render_video

    rng = np.random.default_rng(seed)
    rows = []
    for vid in range(num_videos):
        video = render_video(vid % 4, rng, size=32, frames=8 * views)
        for view in range(views):
            pixels = video[8 * view : 8 * (view + 1)]
            rows.append({"pixels": pixels, "scores": token_scores(pixels, 2, 16), "label": vid % 4,
                         "video_id": vid, "view": view})
    return rows


def expected_metrics(cfg, model, rows) -> dict:
    """In-process reference: the same selection and model, softmax per view, mean per video."""
    from pipeline.clips import to_model_inputs

    batch = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in ("pixels", "scores", "label", "video_id", "view")}
    x, scores, labels = to_model_inputs(batch, "cpu")
    k = cfg.masking
    sel = select_views(k.strategy, scores, batch["video_id"], batch["view"], ratio=k.ratio, seed=cfg.optim.seed)
    with torch.no_grad():
        logits = model.eval()(x, sel.ids_keep)
    _, probs, vlabels = average_views(batch["video_id"], logits, labels)
    return topk_accuracy(probs, vlabels)


@pytest.mark.integration
def test_ray_data_evaluation_local_and_s3_checkpoint(ray_local, mlflow_server, s3_bucket, tmp_path):
    import boto3
    import ray.data
    from mlflow import MlflowClient

    from pipeline.tracking import start_run

    cfg = config(tmp_path, mlflow_server)
    torch.manual_seed(0)
    model = make_model(cfg)
    with torch.no_grad():  # a head with real weight so that accuracy is not a tie
        model.head.weight.normal_()
    ckpt = tmp_path / "ray" / "trained" / "epoch_0002"  # a training run's checkpoint folder
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 1}, ckpt / STATE_FILE)
    train_run = start_run(cfg, uri=mlflow_server, run_name="trained", kind="train", params={})
    rows = view_rows(6, 3)
    expect = expected_metrics(cfg, model, rows)

    # On its own (`mgtc eval`): a run of its own, nested under the checkpoint's training run,
    # under a name no other run has.
    result = run_evaluation(cfg, str(ckpt), dataset=ray.data.from_items(rows))
    assert result["views"] == 18 and result["videos"] == 6 and result["views_per_video"] == 3
    assert result["top1"] == pytest.approx(expect["top1"]) and result["top5"] == pytest.approx(expect["top5"])
    assert result["kept_ratio"] == 0.5 and result["clips_per_s"] > 0
    assert result["gflops_per_video"] == pytest.approx(3 * result["gflops_per_view"])
    assert "| videos | views | top-1 (%)" in format_table(result)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mgtc_kind"] == "eval"
    assert run.data.metrics["top1"] == pytest.approx(expect["top1"]) and run.data.params["checkpoint"] == str(ckpt)
    assert run.data.tags["mlflow.parentRunId"] == train_run
    assert run.info.run_name.startswith("trained-test-random-") and run.info.run_name != "trained"

    # After training (`mgtc demo`): the test result goes into the training run itself.
    s3 = boto3.client("s3")
    s3.upload_file(str(ckpt / STATE_FILE), s3_bucket, f"ckpt/{STATE_FILE}")
    from_s3 = run_evaluation(cfg, f"s3://{s3_bucket}/ckpt", dataset=ray.data.from_items(rows), train_run_id=train_run)
    assert from_s3["top1"] == pytest.approx(expect["top1"]) and math.isfinite(from_s3["gflops_per_view"])
    trained = client.get_run(train_run)
    metrics = trained.data.metrics
    assert metrics["test_top1"] == pytest.approx(expect["top1"]) and metrics["test_views"] == 18
    assert metrics["test_gflops_per_video"] == pytest.approx(3 * metrics["test_gflops_per_view"])
    assert trained.data.tags["test_views_per_video"] == "3x1" and from_s3["mlflow_run_id"] == train_run
    names = [r.info.run_name for r in client.search_runs([trained.info.experiment_id])]
    assert len(names) == len(set(names)) == 2  # no second run for the test, no shared name


def test_tau_explicit_or_calibrated_from_the_shards(tmp_path):
    import json

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "calibration.json").write_text(json.dumps({
        "mask_ratio": 0.5, "score_mode": "boundary",
        "sampling_rates": {"1": {"tau": 0.042, "tokens": 10, "masked_fraction": 0.5}},
    }))
    cfg = config(tmp_path)
    assert resolve_tau(cfg) is None  # random: no threshold
    assert resolve_tau(replace(cfg, ["masking.strategy=mgtc_threshold", "masking.tau=0.1"])) == 0.1
    calibrated = replace(cfg, ["masking.strategy=mgtc_threshold", "masking.calibrated=true"])
    assert resolve_tau(calibrated) == 0.042
    with pytest.raises(KeyError, match="sampling_rate=2"):
        resolve_tau(replace(calibrated, ["data.sampling_rate=2"]))
    with pytest.raises(ValueError, match="score_mode"):
        resolve_tau(replace(calibrated, ["masking.score_mode=consecutive"]))
