"""Bad inputs fail before Ray starts, with one line naming them (issue 13: labels, missing
paths, all-failed precompute); the all-failed run is the one test here that needs Ray."""

from __future__ import annotations

import pytest

from jobs import evaluate as eval_job
from jobs import precompute as precompute_job
from jobs import train as train_job


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


def train_args(tmp_path, *sets: str) -> list[str]:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  num_classes: 8\n  num_frames: 4\n  input_size: 32\n  short_side: 32\n"
                      "model:\n  size: tiny\nmasking:\n  strategy: none\n")
    return ["--config", str(config)] + [a for s in sets for a in ("--set", s)]


def test_train_refuses_a_label_outside_num_classes_naming_the_line(tmp_path, capsys):
    started = _ray_running()
    (tmp_path / "train.txt").write_text("# two videos\na.mp4 3\nb.mp4 99\n")
    assert train_job.main(train_args(tmp_path, f"data.train_manifest={tmp_path / 'train.txt'}")) == 2
    err = capsys.readouterr().err
    assert "mgtc train: data.train_manifest: manifest" in err
    assert "line 3 (b.mp4): label 99 is not in 0..7" in err
    assert _ray_running() == started


def test_train_and_eval_name_missing_local_paths(tmp_path, capsys):
    started = _ray_running()
    args = train_args(tmp_path, f"data.train_manifest={tmp_path / 'nope.txt'}",
                      f"data.shards={tmp_path / 'no_shards'}", f"data.test_manifest={tmp_path / 'test.txt'}")
    assert train_job.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"mgtc train: data.shards: {tmp_path / 'no_shards'}: no such folder (run mgtc precompute first)" in err
    assert f"mgtc train: data.train_manifest: {tmp_path / 'nope.txt'}: no such file" in err
    assert eval_job.main(args + ["--checkpoint", str(tmp_path / "c.pt")]) == 2
    assert f"mgtc eval: data.test_manifest: {tmp_path / 'test.txt'}: no such file" in capsys.readouterr().err
    assert _ray_running() == started


def test_precompute_refuses_labels_outside_num_classes_before_ray(tmp_path, capsys):
    started = _ray_running()
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 8\n")
    code = precompute_job.main([str(tmp_path / "list.txt"), "--out", str(tmp_path / "out"), "--num-classes", "8"])
    assert code == 2
    assert "line 2 (b.mp4): label 8 is not in 0..7" in capsys.readouterr().err
    # a training config's data.num_classes is the default
    config = tmp_path / "train.yaml"
    config.write_text("data:\n  num_classes: 8\n")
    assert precompute_job.main([str(tmp_path / "list.txt"), "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    assert _ray_running() == started


@pytest.mark.integration
def test_precompute_exits_3_when_every_line_failed(ray_local, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("missing1.mp4 0\nmissing2.mp4 1\nbad_label.mp4 x\n")
    code = precompute_job.main([str(tmp_path / "list.txt"), "--out", str(tmp_path / "out"),
                                "--short-side", "64", "--num-frames", "8", "--actors", "1"])
    captured = capsys.readouterr()
    assert code == 3, captured
    assert "every one of the 3 manifest lines failed" in captured.err
    assert "videos ok       0" in captured.out
