"""Training: recipe pieces in-process, then real TorchTrainer runs (2 gloo workers, CPU) on tiny
synthetic clips with a tiny ViT: checkpoints every epoch, MLflow run, resume by rerun, a worker
killed mid-run, MAE pre-training, s3:// storage (the variable-length run is
tests/test_secrets.py's training run).

Clips are 8 frames of 32x32 (tubelet 2, patch 16: a 4 x 2 x 2 grid of 16 tokens) rendered by
`pipeline.synth`; the class is the object's motion.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, replace
from pipeline.modeling import make_model
from pipeline.motion import token_scores
from pipeline.selection import select_tokens
from pipeline.synth import render_video
from pipeline.training import (
    CRASH_ENV,
    RNG_FILE,
    STATE_FILE,
    finetune_loss,
    make_optimizer,
    make_recipe,
    make_scheduler,
    pretrain_loss,
    rng_state,
    select_train,
    set_rng_state,
)
from pipeline.trainer import run_training
from tests.helpers.configs import yaml_config

REPO = Path(__file__).resolve().parent.parent

FRAMES, SIZE, PATCH, TUBELET, CLASSES = 8, 32, 16, 2, 4
GRID = (FRAMES // TUBELET, SIZE // PATCH, SIZE // PATCH)
N = GRID[0] * GRID[1] * GRID[2]

BASE = """
data: {{dataset: synthetic, shards: {tmp}/shards, num_classes: 4, num_frames: 8, sampling_rate: 1,
        input_size: 32, short_side: 32, val_clips: 2, val_crops: 1, reprob: 0.25, mixup: 0.8,
        cutmix: 1.0, smoothing: 0.1}}
model: {{size: tiny, drop_path: 0.1}}
masking: {{strategy: mgtc_ratio, ratio: 0.5}}
optim: {{epochs: 2, batch_size: 4, lr: 1.0e-3, warmup_epochs: 1}}
scaling: {{num_workers: 2, cpus_per_worker: 0.5, storage_path: {tmp}/ray, name: run, max_failures: 0}}
tracking: {{tracking_uri: "{uri}", experiment: test-training}}
"""


def tiny_config(tmp_path: Path, uri: str = "", *overrides: str):
    return yaml_config(tmp_path, BASE.format(tmp=tmp_path, uri=uri), *overrides)


def synthetic_with_shards(tmp_path: Path, *, videos_per_class: int, splits: tuple[float, float, float]) -> dict:
    """A 4-class synthetic set of 32 px, 24-frame videos and its train split's shards
    (`tmp_path / "shards"`, stride 1, 8 frames); returns the set's list-file paths."""
    from pipeline.precompute import PrecomputeConfig, run_precompute
    from pipeline.synth import make_dataset

    paths = make_dataset(tmp_path / "synthetic", videos_per_class=videos_per_class, size=32, frames=24, fps=25,
                         classes=["static", "right", "left", "down"], splits=splits)
    run_precompute(str(paths["train"]), str(tmp_path / "shards"),
                   PrecomputeConfig(sampling_rates=(1,), short_side=32, cell=8, num_frames=8, actors=1),
                   log=lambda line: None)
    return paths


def clip_rows(num_videos: int, *, views: int = 1, seed: int = 0) -> list[dict]:
    """Rows of the data path's contract: pixels [T, S, S, 3] uint8, scores [T', S/p, S/p],
    label, video_id, view (views: consecutive 8-frame windows of one rendered video)."""
    rng = np.random.default_rng(seed)
    rows = []
    for vid in range(num_videos):
        label = vid % CLASSES
        video = render_video(label, rng, size=SIZE, frames=FRAMES * views)
        for view in range(views):
            pixels = video[view * FRAMES : (view + 1) * FRAMES]
            rows.append({"pixels": pixels, "scores": token_scores(pixels, TUBELET, PATCH),
                         "label": label, "video_id": vid, "view": view})
    return rows


def torch_batch(rows: list[dict]):
    """(x [B, 3, T, S, S] normalised, scores [B, T', H', W'], labels [B]) as the trainer sees them."""
    from pipeline.clips import to_model_inputs

    batch = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in ("pixels", "scores", "label")}
    return to_model_inputs(batch, torch.device("cpu"))


def datasets(train_videos: int = 16, val_videos: int = 4):
    import ray.data

    return {"train": ray.data.from_items(clip_rows(train_videos)),
            "val": ray.data.from_items(clip_rows(val_videos, views=2, seed=1))}


# ------------------------------------------------------------------------------ in-process


def test_optimizer_layer_decay_no_weight_decay_and_per_step_schedule(tmp_path):
    cfg = tiny_config(tmp_path, "", "optim.layer_decay=0.5", "optim.lr=2.56e-3", "optim.warmup_lr=0",
                      "optim.min_lr=0", "optim.epochs=3", "optim.warmup_epochs=1")
    model = make_model(cfg)
    opt = make_optimizer(cfg, model, world_size=2)  # total batch 8: lr = 2.56e-3 * 8 / 256 = 8e-5
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = len(model.blocks)
    assert group_of[id(named["head.weight"])]["lr_scale"] == 1.0
    assert group_of[id(named["blocks.0.mlp.fc1.weight"])]["lr_scale"] == pytest.approx(0.5 ** depth)
    assert group_of[id(named["patch_embed.proj.weight"])]["lr_scale"] == pytest.approx(0.5 ** (depth + 1))
    for name in ("blocks.0.attn.q_bias", "blocks.0.norm1.weight", "fc_norm.bias", "head.bias"):
        assert group_of[id(named[name])]["weight_decay"] == 0.0, name
    assert group_of[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05
    sched = make_scheduler(cfg, opt, steps_per_epoch=10, world_size=2)
    head = group_of[id(named["head.weight"])]
    lrs = []
    for step in range(30):
        sched.step_update(step)
        lrs.append(head["lr"])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(8e-5 * 5 / 10)  # linear warmup over 10 steps
    assert lrs[10] == pytest.approx(8e-5)  # peak, then cosine down over the other 20 steps
    assert lrs[20] == pytest.approx(4e-5) and lrs[29] < 1e-6
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_selection_comes_from_the_clip_scores_before_erasing_and_mixup(tmp_path):
    cfg = tiny_config(tmp_path, "", "data.reprob=0.99")
    recipe = make_recipe(cfg, None, torch.device("cpu"), rank=0)
    x, scores, labels = torch_batch(clip_rows(4))
    sel = select_train(recipe, scores)
    assert torch.equal(sel.ids_keep, select_tokens("mgtc_ratio", scores=scores, ratio=0.5).ids_keep)
    before = x.clone()
    model = make_model(cfg)
    loss, encoded = finetune_loss(model, recipe, x, sel, labels)
    assert torch.isfinite(loss) and encoded.tolist() == [N // 2] * 4
    # Erasing and mixup changed the pixels in place, after selection; the box is the same on
    # every frame of a clip (timm sees channels x frames as one axis).
    changed = (x != before).reshape(4, 3, FRAMES, SIZE, SIZE)
    assert changed.any()
    assert torch.equal(changed.any(dim=(1, 2)), changed.any(dim=1).all(dim=1)) or changed.all()


def test_a_training_step_with_randaugment_on_the_trainer(tmp_path):
    """data.augment_on=trainer: the recipe augments the uint8 batch on the device before
    normalisation; selection uses the data path's scores; one optimizer step runs."""
    from pipeline.clips import to_model_inputs

    ra = "data.rand_augment=rand-m7-n4-mstd0.5-inc1"
    assert make_recipe(tiny_config(tmp_path, "", ra), None, torch.device("cpu"), rank=0).augment is None  # auto on CPU
    cfg = tiny_config(tmp_path, "", ra, "data.augment_on=trainer")
    recipe = make_recipe(cfg, None, torch.device("cpu"), rank=0)
    assert recipe.augment is not None
    rows = clip_rows(4)
    batch = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in ("pixels", "scores", "label")}
    x, scores, labels = to_model_inputs(batch, recipe.device, recipe.augment)
    assert x.shape == (4, 3, FRAMES, SIZE, SIZE) and not torch.equal(x, torch_batch(rows)[0])
    model = make_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss, encoded = finetune_loss(model, recipe, x, select_train(recipe, scores), labels)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and encoded.tolist() == [N // 2] * 4
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_mgtc_threshold_batches_have_variable_lengths(tmp_path):
    rows = clip_rows(4)
    finite = np.concatenate([r["scores"][1:].ravel() for r in rows])
    tau = float(np.median(finite))
    cfg = tiny_config(tmp_path, "", "masking.strategy=mgtc_threshold", f"masking.tau={tau}")
    recipe = make_recipe(cfg, tau, torch.device("cpu"), rank=0)
    x, scores, labels = torch_batch(rows)
    sel = select_train(recipe, scores)
    assert sel.keep_mask is not None and len(set(sel.lengths.tolist())) > 1
    loss, encoded = finetune_loss(make_model(cfg), recipe, x, sel, labels)
    assert torch.isfinite(loss) and encoded.tolist() == sel.lengths.tolist()


def test_pretrain_loss_decreases_on_a_tiny_set(tmp_path):
    cfg = tiny_config(tmp_path, "", "optim.mode=pretrain", "masking.ratio=0.25", "masking.pretrain_ratio=0.5",
                      "model.drop_path=0")
    torch.manual_seed(0)
    model = make_model(cfg)
    recipe = make_recipe(cfg, None, torch.device("cpu"), rank=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, scores, labels = torch_batch(clip_rows(2))
    sel = select_train(recipe, scores)  # MGTC keeps 12 of 16; the MAE mask hides 6 of those
    losses = []
    for _ in range(40):  # a fresh MAE mask every step, as in training
        loss, encoded = pretrain_loss(model, recipe, x, sel, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert encoded.tolist() == [6] * 2
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)
    import random

    random.seed(4)
    torch.save(rng_state(gen), tmp_path / "rng.pt")
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(expect[0], again[0]) and np.array_equal(expect[1], again[1])
    assert expect[2] == again[2] and torch.equal(expect[3], again[3])


# ------------------------------------------------------------------------------ Ray Train


def mlflow_client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def epoch_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def load_state(checkpoint: str) -> dict:
    return torch.load(Path(checkpoint) / STATE_FILE, weights_only=True)


@pytest.mark.integration
def test_two_workers_checkpoint_every_epoch_track_survive_a_killed_worker_and_resume(
        ray_local, mlflow_server, tmp_path, monkeypatch):
    """One run pays for both: rank 1 dies hard after the first step of epoch 2, the worker
    group restarts from the epoch-1 checkpoint, and the finished run is then rerun and
    extended by one epoch."""
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"2:{marker}")
    cfg = tiny_config(tmp_path, mlflow_server, "scaling.max_failures=1")
    summary = run_training(cfg, datasets=datasets())
    assert marker.exists()  # rank 1 really died, after the first step of epoch 2
    assert summary["epoch"] == 2 and 0 <= summary["top1"] <= 100 and summary["kept_ratio"] == 0.5
    ckpt = Path(summary["checkpoint"])
    assert ckpt.name == "epoch_0002"
    assert {p.name for p in ckpt.iterdir()} >= {STATE_FILE, RNG_FILE.format(rank=0), RNG_FILE.format(rank=1)}
    assert load_state(ckpt)["epoch"] == 2
    assert (ckpt.parent / "epoch_0001" / STATE_FILE).exists()  # one checkpoint per epoch

    client = mlflow_client(mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["dataset"] == "synthetic" and p["num_frames"] == "8" and p["sampling_rate"] == "1"
    assert p["effective_fps"] == "30.0" and p["strategy"] == "mgtc_ratio" and p["mask_ratio"] == "0.5"
    assert p["model"] == "tiny" and p["world_size"] == "2" and p["total_batch"] == "8"
    assert p["epochs"] == "2" and p["seed"] == "0" and len(p["git_commit"]) >= 7
    assert float(p["lr"]) == pytest.approx(1e-3 * 8 / 256) and p["masking.ratio"] == "0.5"
    # One run, each epoch once, the restart included.
    for key in ("loss", "val_loss", "top1", "top5", "kept_ratio", "gflops_per_view", "clips_per_s", "epoch_time"):
        assert epoch_steps(client, run.info.run_id, key) == [1, 2], key
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "final_metrics.json", "masks"} <= arts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "masks")] == ["masks/epoch_001.png", "masks/epoch_002.png"]

    # A rerun with the same name resumes: nothing left to do, no extra epoch, the same run.
    again = run_training(cfg, datasets=datasets())
    assert again["mlflow_run_id"] == run.info.run_id
    assert again["reused"] and not summary["reused"]
    assert again["epoch"] == 2 and again["top1"] == summary["top1"]  # the finished run's numbers
    assert epoch_steps(client, run.info.run_id, "loss") == [1, 2]
    assert load_state(again["checkpoint"])["epoch"] == 2
    # ... and with more epochs it continues where it stopped.
    more = run_training(replace(cfg, ["optim.epochs=3"]), datasets=datasets())
    assert more["epoch"] == 3 and epoch_steps(client, run.info.run_id, "loss") == [1, 2, 3]
    assert not more["reused"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.integration
def test_an_error_in_a_worker_reaches_the_user_as_one_line(ray_local, mlflow_server, tmp_path, capsys):
    """Labels past data.num_classes only fail inside the trainer (the loss): the driver gets
    Ray Train's wrapped error, and the user one line with the reason and the log folder."""
    import ray.data

    from pipeline import raylog

    rows = [{**r, "label": 9} for r in clip_rows(4)]
    cfg = tiny_config(tmp_path, mlflow_server, "scaling.num_workers=1", "optim.epochs=1", "optim.warmup_epochs=0",
                      "scaling.name=broken",
                      "data.mixup=0", "data.cutmix=0", "data.smoothing=0")
    with pytest.raises(Exception) as caught:
        run_training(cfg, datasets={"train": ray.data.from_items(rows)})
    line = raylog.failure_line("mgtc train", caught.value)
    assert line.startswith("mgtc train: failed: IndexError: Target 9 is out of bounds."), line
    assert f"Ray logs: {raylog.session_logs()}" in line and raylog.session_logs().endswith("/logs")
    assert "\n" not in line


@pytest.mark.integration
def test_pretrain_and_s3_storage(ray_local, mlflow_server, s3_bucket, tmp_path):
    """(A variable-length mgtc_threshold run trains in tests/test_secrets.py, whose training
    run it is.)"""
    import boto3

    base = tiny_config(tmp_path, mlflow_server, "scaling.num_workers=1", "scaling.cpus_per_worker=1",
                       "optim.epochs=1", "optim.warmup_epochs=0")
    pre = replace(base, ["optim.mode=pretrain", "masking.pretrain_ratio=0.5", "scaling.name=pretrain",
                         f"scaling.storage_path=s3://{s3_bucket}/ray"])
    # This session's Ray started before the S3 variables were set: the storage filesystem the
    # driver builds carries them to the train controller and workers.
    summary = run_training(pre, datasets=datasets(8, 2))
    assert summary["checkpoint"].startswith(f"s3://{s3_bucket}/ray/pretrain/epoch_0001")
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["val_loss"]) and "top1" not in summary
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"ray/pretrain/epoch_0001/{STATE_FILE}" in keys


# ------------------------------------------------------------------------------ the job


def test_config_errors_exit_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    import ray

    from jobs import evaluate as eval_job
    from jobs import train as train_job

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a bad config")

    monkeypatch.setattr(ray, "init", no_ray)
    path = tmp_path / "tiny.yaml"
    path.write_text(BASE.format(tmp=tmp_path, uri=""))
    assert train_job.main(["--config", str(path), "--set", "masking.ratio=1.5", "--set", "model.size=huge"]) == 2
    err = capsys.readouterr().err
    assert "masking.ratio=1.5" in err and "model.size='huge': allowed: tiny, small, base, large" in err
    assert eval_job.main(["--config", str(path), "--checkpoint", "x", "--set", "optim.mode=pretrain"]) == 2
    assert "evaluation needs a fine-tuned classifier" in capsys.readouterr().err
    assert train_job.main(["--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.integration
def test_end_to_end_on_the_real_data_path(ray_local, mlflow_server, tmp_path, capsys):
    """synthetic videos -> precompute shards -> clip_dataset (decode actors) -> TorchTrainer ->
    multi-view evaluation of the final checkpoint."""
    from pipeline.evaluate import run_evaluation
    paths = synthetic_with_shards(tmp_path, videos_per_class=4, splits=(0.5, 0.25, 0.25))
    cfg = tiny_config(tmp_path, mlflow_server, f"data.train_manifest={paths['train']}",
                      f"data.val_manifest={paths['val']}", f"data.test_manifest={paths['test']}",
                      "data.val_clips=1", "data.test_clips=2", "data.test_crops=1", "data.mixup=0", "data.cutmix=0",
                      "scaling.num_workers=1", "optim.epochs=3", "optim.warmup_epochs=0", "scaling.name=e2e",
                      "data.num_sample=2", "optim.val_every=2",
                      "data.rand_augment=rand-m7-n4-mstd0.5-inc1", "data.augment_on=trainer")
    summary = run_training(cfg)  # streams clip_dataset: decode actor beside the 0.5-CPU trainer
    # 2 of 4 videos per class train, each decoded once per epoch into num_sample=2 clips
    assert summary["epoch"] == 3 and summary["train_clips"] == 16
    assert summary["val_videos"] == 4 and summary["kept_ratio"] == 0.5
    client = mlflow_client(mlflow_server)
    assert epoch_steps(client, summary["mlflow_run_id"], "loss") == [1, 2, 3]
    assert epoch_steps(client, summary["mlflow_run_id"], "top1") == [2, 3]  # val_every=2, and the last
    result = run_evaluation(cfg, summary["checkpoint"])
    assert (result["videos"], result["views"]) == (4, 8) and 0 <= result["top1"] <= 100
    # Off a terminal the progress display is one line per epoch, then a summary; no control
    # characters (CI logs, `| tee`, Ray Jobs logs).
    out = capsys.readouterr().out
    epochs = [line for line in out.splitlines() if line.startswith("train e2e: epoch ")]
    assert [line.split(":")[1].strip() for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], out
    assert "val top-1" in epochs[1] and "clips/s" in epochs[0] and "data wait" in epochs[0]
    assert "test e2e: 8/8 views" in out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)


@pytest.mark.integration
def test_the_same_seed_twice_gives_the_same_losses(ray_local, mlflow_server, tmp_path, monkeypatch):
    """Two 2-epoch runs of the real data path (decode actors, 2 gloo workers) with one seed:
    the same per-epoch losses, exactly (issue 13, item 12), although the second run's last
    rank dies after the first step of epoch 2 and its worker group restarts from the
    epoch-1 checkpoint. The draws are per row and per step, the rows reach the trainers in
    the source's order, the run's clip stream (one execution for both epochs,
    `trainer.RunStream`) restarts at the checkpoint's epoch, and on one machine the same
    float operations run in the same order: no tolerance is needed. Another seed differs."""
    from pipeline.trainer import RunStream, build_datasets

    paths = synthetic_with_shards(tmp_path, videos_per_class=2, splits=(1.0, 0.0, 0.0))
    # Every random part of a training step is on: trainer-side RandAugment, random erasing,
    # mixup / cutmix, drop path, two samples per decoded window, crops and flips.
    base = tiny_config(tmp_path, mlflow_server, f"data.train_manifest={paths['train']}",
                       "data.num_sample=2", "data.decode_actors=2", "optim.epochs=2", "optim.warmup_epochs=0",
                       "scaling.cpus_per_worker=0.25", "optim.batch_size=2", "optim.seed=11",
                       "data.rand_augment=rand-m7-n4-mstd0.5-inc1", "data.augment_on=trainer",
                       "scaling.max_failures=1")
    datasets, streamed = build_datasets(base, "seed-a")
    assert streamed and isinstance(datasets["train"], RunStream)  # the path under test
    client = mlflow_client(mlflow_server)

    def losses(*overrides: str) -> list[float]:
        summary = run_training(replace(base, list(overrides)))
        assert summary["train_clips"] == 16 and not summary["reused"] and summary["epoch"] == 2
        return [m.value for m in sorted(client.get_metric_history(summary["mlflow_run_id"], "loss"),
                                        key=lambda m: m.step)]

    first = losses("scaling.name=seed-a")
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"2:{marker}")
    second = losses("scaling.name=seed-b")
    assert marker.exists()  # the second run's rank 1 really died in epoch 2
    monkeypatch.delenv(CRASH_ENV)
    assert len(first) == 2 and all(math.isfinite(v) for v in first) and first[0] != first[1]
    assert first == second, (first, second)
    assert losses("scaling.name=seed-c", "optim.seed=12") != first


def test_a_runs_stream_starts_after_its_last_checkpoint_that_every_rank_finished(tmp_path):
    """`completed_epochs`: what a restarted worker group's stream (`RunStream`) starts from.
    A checkpoint folder missing a rank's file is one Ray has not committed."""
    from pipeline.trainer import completed_epochs
    from pipeline.training import RNG_FILE, STATE_FILE

    run = tmp_path / "run"
    assert completed_epochs(str(run), None, 2) == 0  # no folder yet: a new run
    run.mkdir()
    assert completed_epochs(str(run), None, 2) == 0
    for epoch, files in ((1, [STATE_FILE, RNG_FILE.format(rank=0), RNG_FILE.format(rank=1)]),
                         (2, [STATE_FILE, RNG_FILE.format(rank=0), RNG_FILE.format(rank=1)]),
                         (3, [STATE_FILE, RNG_FILE.format(rank=0)])):  # rank 1 died before its report
        folder = run / f"epoch_{epoch:04d}"
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"x")
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (run / "epoch_notanumber").mkdir()
    assert completed_epochs(str(run), None, 2) == 2
    assert completed_epochs(str(run), None, 1) == 3
    # A worker resumes where the stream starts: from epoch 2, which Ray never registered.
    import ray.train

    from pipeline.training import agreed_checkpoint

    registered = ray.train.Checkpoint(path=str(run / "epoch_0001"))
    assert agreed_checkpoint(registered, str(run), None, 2).path == str(run / "epoch_0002")
    assert agreed_checkpoint(None, str(run), None, 2).path == str(run / "epoch_0002")
    latest = ray.train.Checkpoint(path=str(run / "epoch_0002"))
    assert agreed_checkpoint(latest, str(run), None, 2) is latest
    assert agreed_checkpoint(None, str(tmp_path / "new"), None, 2) is None


def test_head_init_scale_is_configurable(tmp_path):
    """VideoMAE shrinks the fresh head by 0.001 (fine-tuning a pre-trained encoder); training
    from scratch wants a full-size head: the encoder's gradient scales with the head."""
    from pipeline.modeling import make_model

    torch.manual_seed(0)
    small = make_model(tiny_config(tmp_path)).head.weight.abs().mean().item()
    torch.manual_seed(0)
    full = make_model(tiny_config(tmp_path, "", "model.head_init_scale=1.0")).head.weight.abs().mean().item()
    assert full / small == pytest.approx(1000, rel=1e-3)
    with pytest.raises(ConfigError, match="model.head_init_scale=0"):
        tiny_config(tmp_path, "", "model.head_init_scale=0")


def test_validation_every_n_epochs_and_after_the_last(tmp_path):
    from pipeline.training import validates

    cfg = tiny_config(tmp_path, "", "optim.epochs=7", "optim.val_every=3")
    assert [e for e in range(1, 8) if validates(cfg, e)] == [3, 6, 7]
    assert all(validates(replace(cfg, ["optim.val_every=1"]), e) for e in range(1, 8))
    with pytest.raises(ConfigError, match="optim.val_every=0"):
        replace(cfg, ["optim.val_every=0"])


def test_job_summary_names_what_a_user_needs():
    from jobs.train import format_summary

    text = format_summary({"run_name": "r", "epoch": 3, "top1": 81.456, "top5": 95.0, "kept_ratio": 0.75,
                           "gflops_per_view": 304.5, "clips_per_s": 12.3, "checkpoint": "s3://b/r/epoch_0003",
                           "mlflow_run_id": "abc", "tracking_uri": "http://mlflow:5000"})
    for needle in ("81.5 / 95.0", "75.0", "304", "12.30", "s3://b/r/epoch_0003", "abc (http://mlflow:5000)"):
        assert needle in text
    assert "- / -" in format_summary({"run_name": "pretrain"})  # no accuracy in pre-training


def test_cpu_training_flushes_denormals():
    """Trained weights make denormal intermediates, which x86 CPUs compute far slower; the
    trainer and the eval actors flush them to zero on CPU (docs/RESULTS.md, wall-clock).
    Checked in a fresh interpreter: the floating-point mode is per-thread process state that
    other tests (and the libraries they load) may have set already."""
    code = (
        "import torch\n"
        "from pipeline.modeling import flush_denormals\n"
        "tiny = torch.tensor([1e-39], dtype=torch.float32)\n"  # below float32's smallest normal
        "torch.set_flush_denormal(False)\n"
        "assert (tiny * 1.0).item() != 0.0, 'denormals already flushed'\n"
        "flush_denormals(torch.device('cpu'))\n"
        "assert (tiny * 1.0).item() == 0.0, 'not flushed'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
