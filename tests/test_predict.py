"""Inference (`mgtc predict`): label files, argument checks before loading, the single-video
path against the evaluation's own views, official checkpoints, class names stored by
training, and the Ray Data batch job (error rows, resume, MLflow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.clips import ClipMaker
from pipeline.config import load_config, to_dict
from pipeline.modeling import STATE_FILE, make_model
from pipeline.selection import select_views
from pipeline.flops import gmacs_per_view
from pipeline.predict.core import model_shape
from pipeline.predict.labels import LabelsError, parse_class_names
from pipeline.predict.loading import inference_masking, load_for_inference
from tests.helpers.configs import tiny_config
from tests.helpers.videos import make_video

NAMES = ["left", "right", "still"]
TINY = ["data.train_manifest=x", "data.num_classes=3", "data.num_frames=4", "data.sampling_rate=2",
        "data.test_clips=2", "data.test_crops=1", "masking.strategy=none", "model.head_init_scale=1.0"]


def tiny_checkpoint(folder: Path, *, names=NAMES, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A training checkpoint directory of a tiny classifier with a non-trivial head."""
    cfg = tiny_config(*TINY)
    torch.manual_seed(seed)
    model = make_model(cfg)
    with torch.no_grad():
        model.head.weight.normal_()
    d = folder / "epoch_0001"
    d.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": {}, "config": to_dict(cfg), "class_names": names},
               d / STATE_FILE)
    return d, model.eval()


@pytest.fixture
def videos(tmp_path):
    good = [make_video(tmp_path / f"v{i}.mp4", frames=24, height=32, width=40, seed=i) for i in range(3)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    return good, bad


# ------------------------------------------------------------------------- label files


@pytest.mark.parametrize("text, expected", [
    ("1 ApplyEyeMakeup\n2 Archery\n3 Biking\n", ["ApplyEyeMakeup", "Archery", "Biking"]),  # classInd.txt
    ("left\nright\n# comment\nstill\n", NAMES),
    ('["left", "right", "still"]', NAMES),
    ('{"right": "1", "left": "0", "still": "2"}', NAMES),  # SSv2 labels file
    ('{"0": "left", "2": "still", "1": "right"}', NAMES),
    ("id,name\n0,left\n1,right\n2,still\n", NAMES),
    ("left,0\nstill,2\nright,1\n", NAMES),
])
def test_label_files_give_names_in_class_order(text, expected):
    assert parse_class_names(text, "x") == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("1 a\n3 b\n", "without gaps"), ('{"a": [1]}', "JSON must be"), ("[1, 2", "not valid JSON"),
])
def test_bad_label_files_are_named(text, message):
    with pytest.raises(LabelsError, match=message):
        parse_class_names(text, "labels.txt")


# ------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args, message", [
    (("bogus", 0.5, None), "unknown"),
    (("mgtc_ratio", 1.0, None), r"\[0, 1\)"),
    (("random", -0.1, None), r"\[0, 1\)"),
    (("running_cell", 0.1, None), "running_cell"),
    (("mgtc_threshold", None, None), "needs --tau"),
    (("mgtc_ratio", 0.5, 0.1), "--tau is for mgtc_threshold"),
    ((None, None, float("nan")), "finite"),
])
def test_bad_strategy_or_ratio_is_named(args, message):
    with pytest.raises(ValueError, match=message):
        inference_masking(*args)


def test_tau_alone_means_threshold_and_nothing_keeps_the_checkpoints():
    assert inference_masking(None, None, 0.02).strategy == "mgtc_threshold"
    assert inference_masking(None, None, None) is None
    assert inference_masking("none", None, None).ratio == 0.0


def test_bad_arguments_fail_before_the_checkpoint_is_read(tmp_path, capsys):
    from jobs.predict import main

    missing = str(tmp_path / "no_such_checkpoint")
    assert main(["v.mp4", "--checkpoint", missing, "--ratio", "1.5"]) == 2
    assert "--ratio 1.5" in capsys.readouterr().err
    assert main(["v.mp4", "--checkpoint", missing, "--strategy", "mgtc_threshold"]) == 2
    assert "needs --tau" in capsys.readouterr().err


# ------------------------------------------------------------------------- single videos


def expected_probs(model, cfg, video: str, video_id: int) -> np.ndarray:
    """The evaluation's rule by hand: ClipMaker test views -> select_views -> mean softmax."""
    views = ClipMaker(cfg, "test").make({"path": video, "label": 0, "video_id": video_id})
    pixels = torch.from_numpy(np.stack([p for _, p, _ in views])).permute(0, 4, 1, 2, 3).float()
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1, 1) * 255
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1, 1) * 255
    x = (pixels - mean) / std
    scores = torch.from_numpy(np.stack([s for _, _, s in views]))
    sel = select_views(cfg.masking.strategy, scores, torch.full((len(views),), video_id),
                      torch.tensor([v for v, _, _ in views]), ratio=cfg.masking.ratio, seed=cfg.optim.seed)
    with torch.no_grad():
        return model(x, sel.ids_keep, sel.keep_mask).softmax(-1).mean(0).numpy()


def test_single_videos_match_the_evaluation_and_a_bad_one_is_one_line(tmp_path, videos, capsys):
    from jobs.predict import main

    ckpt, model = tiny_checkpoint(tmp_path)
    (good, *_), bad = videos
    rc = main([str(good), str(bad), "--checkpoint", str(ckpt), "--strategy", "mgtc_ratio", "--ratio", "0.5",
               "--json", "--top-k", "2", "--device", "cpu"])
    assert rc == 1  # one video failed
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["video"] for r in lines] == [str(good), str(bad)]
    ok, failed = lines
    loaded = load_for_inference(str(ckpt), masking=inference_masking("mgtc_ratio", 0.5, None), device="cpu")
    expect = expected_probs(model, loaded.cfg, str(good), 0)
    order = np.argsort(-expect)[:2]
    assert ok["top_ids"] == order.tolist() and ok["top_names"] == [NAMES[i] for i in order]
    assert ok["top_probs"] == pytest.approx(expect[order].tolist(), abs=1e-5)
    assert ok["views"] == 2 and ok["kept_ratio"] == 0.5 and ok["error"] == ""
    shape = model_shape(loaded.cfg)
    assert ok["gflops_per_view"] == pytest.approx(gmacs_per_view([shape.num_tokens // 2] * 2, shape))
    assert failed["error"] and failed["top_ids"] == [] and failed["kept_ratio"] is None
    assert "\n" not in failed["error"]


def test_text_output_and_gflops_fall_with_the_kept_ratio(tmp_path, videos, capsys):
    from jobs.predict import main

    ckpt, _ = tiny_checkpoint(tmp_path)
    (good, *_), _ = videos
    assert main([str(good), "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    full = capsys.readouterr().out
    assert main([str(good), "--checkpoint", str(ckpt), "--device", "cpu", "--strategy", "random", "--ratio", "0.5"]) == 0
    half = capsys.readouterr().out
    assert "kept 100.0% tokens" in full and "kept 50.0% tokens" in half
    gflops = [float(t.split(" GFLOPs")[0].rsplit(" ", 1)[1]) for t in (full, half)]
    assert gflops[1] < 0.75 * gflops[0]
    assert "1. " in full and any(name in full for name in NAMES)


def test_labels_that_do_not_fit_the_head_fail_before_any_video_is_read(tmp_path, capsys):
    from jobs.predict import main

    ckpt, _ = tiny_checkpoint(tmp_path)
    labels = tmp_path / "classInd.txt"
    labels.write_text("1 a\n2 b\n")
    # the video does not exist: reading it would be an error line and exit status 1
    assert main([str(tmp_path / "missing.mp4"), "--checkpoint", str(ckpt), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "2 classes" in err and "head has 3" in err


def test_official_checkpoint_config_from_its_weights(tmp_path, videos):
    """An official-style .pth (weights under 'model', no config): size, tubelet, patch and
    class count come from the shapes, clip settings from --set; names from --labels."""
    _, model = tiny_checkpoint(tmp_path)
    pth = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, pth)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(NAMES))
    loaded = load_for_inference(str(pth), labels=str(labels), device="cpu", overrides=[
        "data.num_frames=4", "data.input_size=32", "data.short_side=32", "data.sampling_rate=2",
        "data.test_clips=2", "data.test_crops=1"])
    assert loaded.cfg.model.size == "tiny" and loaded.num_classes == 3 and loaded.class_names == NAMES
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    from pipeline.predict.core import predict_videos

    (good, *_), _ = videos
    [result] = predict_videos([str(good)], loaded, k=3)
    expect = expected_probs(model, loaded.cfg, str(good), 0)
    assert result.top_probs == pytest.approx(np.sort(expect)[::-1].tolist(), abs=1e-5)


def test_pretraining_checkpoint_is_refused(tmp_path):
    from pipeline.checkpoints import CheckpointError

    _, model = tiny_checkpoint(tmp_path)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.save({"model": state}, tmp_path / "pretrain.pth")
    with pytest.raises(CheckpointError, match="head.weight"):
        load_for_inference(str(tmp_path / "pretrain.pth"), device="cpu")


def test_training_stores_the_class_names_beside_its_manifest(tmp_path):
    from pipeline.trainer import training_class_names

    (tmp_path / "train.csv").write_text("v0.mp4 0\n")
    cfg = load_config(None, [f"data.train_manifest={tmp_path}/train.csv", "data.num_classes=3", "masking.strategy=none"])
    assert training_class_names(cfg) is None
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    assert training_class_names(cfg) == NAMES
    cfg4 = load_config(None, [f"data.train_manifest={tmp_path}/train.csv", "data.num_classes=4", "masking.strategy=none"])
    assert training_class_names(cfg4) is None  # 3 names for 4 classes: not stored


# ------------------------------------------------------------------------- batch (Ray Data)


@pytest.mark.integration
def test_batch_inference_error_rows_resume_and_mlflow(ray_local, mlflow_server, tmp_path, videos, monkeypatch):
    from mlflow import MlflowClient

    from pipeline import shards
    from pipeline.predict.batch import BatchSettings, prediction_file, read_predictions, run_tracked

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    ckpt, model = tiny_checkpoint(tmp_path)
    good, bad = videos
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good[0]} 0\n{bad} 1\n{good[1]} 1\n{good[2]} 2\n")
    out = tmp_path / "out"
    settings = BatchSettings(checkpoint=str(ckpt), masking=inference_masking("mgtc_ratio", 0.5, None),
                             top_k=3, features=True, part_size=2, batch_size=3)
    summary = run_tracked(str(listing), str(out), settings, progress_s=0.0)
    assert summary["videos"] == 4 and summary["failed"] == 1 and summary["parts_left"] == 0
    assert summary["clips"] == 6 and summary["kept_ratio"] == 0.5 and summary["clips_per_s"] > 0
    assert 0 < summary["first_result_s"] <= summary["seconds"] and summary["steady_clips_per_s"] > 0
    table = read_predictions(str(out))
    rows = {r["line"]: r for r in table.to_pylist()}
    assert sorted(rows) == [1, 2, 3, 4]  # every line exactly once
    assert not rows[2]["ok"] and rows[2]["error"] and rows[2]["top_ids"] == []
    loaded = load_for_inference(str(ckpt), masking=settings.masking, device="cpu")
    for line, vid in ((1, 0), (3, 2), (4, 3)):  # video_id = index in the list
        expect = expected_probs(model, loaded.cfg, rows[line]["path"], vid)
        assert rows[line]["top_probs"] == pytest.approx(np.sort(expect)[::-1].tolist(), abs=1e-5)
        assert rows[line]["top_names"] == [NAMES[i] for i in rows[line]["top_ids"]]
        assert len(rows[line]["feature"]) == model.embed_dim
    hits = sum(rows[ln]["top_ids"][0] == rows[ln]["label"] for ln in (1, 3, 4))
    assert summary["top1"] == pytest.approx(100 * hits / 3)

    run = MlflowClient(mlflow_server).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mgtc_kind"] == "predict"
    assert run.data.params["strategy"] == "mgtc_ratio" and run.data.params["mask_ratio"] == "0.5"
    assert run.data.params["checkpoint"] == str(ckpt)
    assert run.data.metrics["top1"] == pytest.approx(summary["top1"]) and run.data.metrics["clips_per_s"] > 0

    # Resume: part 1 lost its marker (killed before the commit); part 0 is kept as it is.
    kept_file = prediction_file(str(out), 0)
    before = Path(kept_file).stat().st_mtime_ns
    Path(shards.marker_file(str(out), 1)).unlink()
    again = run_tracked(str(listing), str(out), BatchSettings(**{**settings.__dict__, "track": False}))
    assert again["parts_skipped"] == 1 and again["videos"] == 2 and again["clips"] == 4
    assert Path(kept_file).stat().st_mtime_ns == before
    assert pq.read_table(prediction_file(str(out), 1)).num_rows == 2
    assert len(read_predictions(str(out))) == 4

    other = BatchSettings(**{**settings.__dict__, "masking": inference_masking("random", 0.5, None), "track": False})
    with pytest.raises(ValueError, match="another run"):
        run_tracked(str(listing), str(out), other)
    assert math.isfinite(again["gflops_per_view"])


def test_predict_is_submittable():
    from pipeline import submit as sub

    repo = Path(__file__).resolve().parents[1]
    args = ["--manifest", "s3://b/test.csv", "--out", "s3://b/pred", "--checkpoint", "s3://b/ckpt/epoch_0010"]
    assert sub.entrypoint("predict", args).startswith("python -m jobs.predict --manifest")
    ok, message = sub.check_job_args(repo, "predict", args)
    assert ok, message
    ok, message = sub.check_job_args(repo, "predict", args + ["--strategy", "bogus"])
    assert not ok and "bogus" in message
