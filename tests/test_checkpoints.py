"""Wrong checkpoints are refused, in the driver, with one line naming the file (issue 13,
items 1 and 7). Tiny models only; nothing here starts Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from jobs import evaluate as eval_job
from jobs import train as train_job
from pipeline.checkpoints import CheckpointError, load_videomae_checkpoint
from pipeline.model import build_model, build_pretrain_model
from pipeline.modeling import check_weights, make_model
from tests.helpers.configs import tiny_config

FRAMES, SIZE = 4, 32
TINY = ["data.num_classes=5", "data.num_frames=4", "data.train_manifest=unused.txt", "masking.strategy=none"]


def tiny_cfg(*extra: str):
    return tiny_config(*TINY, *extra)


class NotAllowListed:
    """A class the weights-only unpickler refuses."""


def bad_files(folder: Path) -> dict[str, Path]:
    """Every broken checkpoint of the issue, by the words its error must contain."""
    good = folder / "good.pth"
    torch.save({"model": build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE).state_dict()}, good)
    files = {"no such file": folder / "missing.pth"}
    (folder / "empty.pth").write_bytes(b"")
    files["empty"] = folder / "empty.pth"
    data = good.read_bytes()
    (folder / "half.pth").write_bytes(data[: len(data) // 2])
    files["truncated"] = folder / "half.pth"
    (folder / "notes.pth").write_text("these are my notes, not weights\n")
    files["not a PyTorch checkpoint"] = folder / "notes.pth"
    (folder / "noise.pth").write_bytes(os.urandom(4096))
    files["not a PyTorch checkpoint "] = folder / "noise.pth"
    torch.save([1, 2, 3], folder / "list.pth")
    files["not a dict of weights"] = folder / "list.pth"
    return files


def test_broken_checkpoint_files_are_one_line_naming_the_file(tmp_path):
    model = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    for words, path in bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_videomae_checkpoint(model, path)
        message = str(info.value)
        assert words.strip() in message and str(path) in message, message
        assert "\n" not in message, message
        # A corrupt file is never met with advice to enable code execution.
        assert "pickle" not in message.replace("unreadable pickle data", ""), message


def test_checkpoint_needing_pickle_names_the_real_setting(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE).state_dict(),
                "extra": NotAllowListed()}, path)
    model = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    with pytest.raises(CheckpointError, match=r"odd\.pth.*NotAllowListed.*--set model\.allow_pickle=true"):
        load_videomae_checkpoint(model, path)
    assert load_videomae_checkpoint(model, path, allow_pickle=True).missing == ()


def test_a_resnet_state_dict_is_refused_naming_what_is_missing(tmp_path):
    timm = pytest.importorskip("timm")
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    model = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"resnet18\.pth does not provide the encoder: "
                                              r"the patch embedding and 4 of 4 encoder blocks"):
        load_videomae_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_a_checkpoint_missing_one_block_is_refused(tmp_path):
    state = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("blocks.2.")}
    with pytest.raises(CheckpointError, match=r"1 of 4 encoder blocks \(2\)"):
        load_videomae_checkpoint(build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE), state)


def test_another_model_size_is_refused_by_shape():
    state = build_model("small", 5, num_frames=FRAMES, img_size=SIZE).state_dict()
    with pytest.raises(CheckpointError, match=r"another shape.*model\.size"):
        load_videomae_checkpoint(build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE), state)


def test_pretrain_checkpoint_into_classifier_is_the_expected_non_strict_case(tmp_path):
    path = tmp_path / "pretrain.pth"
    torch.save({"model": build_pretrain_model("tiny", num_frames=FRAMES, img_size=SIZE).state_dict()}, path)
    report = check_weights(tiny_cfg(), str(path))
    assert set(report.missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert "decoder.head.weight" in report.unexpected
    summary = report.summary()
    assert "missing (left at their initial values): " in summary and "head.weight" in summary


def test_jobs_refuse_a_bad_checkpoint_before_ray_starts(tmp_path, capsys, monkeypatch):
    import ray

    from pipeline import vocab

    def no_ray(*args, **kwargs):  # the jobs connect through vocab.ray_session (or ray.init)
        raise AssertionError("Ray must not be reached for a bad checkpoint")

    monkeypatch.setattr(vocab, "ray_session", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    (tmp_path / "train.txt").write_text("a.mp4 1\n")
    sets = TINY + [f"data.train_manifest={tmp_path / 'train.txt'}"]
    args = ["--config", str(config)] + [a for s in sets for a in ("--set", s)]
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert eval_job.main(args + ["--checkpoint", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"mgtc eval: checkpoint {empty}: file is empty (0 bytes)"
    assert train_job.main(args + ["--set", f"model.checkpoint={tmp_path / 'nope.pth'}"]) == 2
    assert capsys.readouterr().err.strip() == f"mgtc train: checkpoint {tmp_path / 'nope.pth'}: no such file or directory"


def test_job_prints_the_non_strict_summary_as_warning(tmp_path, capsys):
    path = tmp_path / "pretrain.pth"
    torch.save({"model": build_pretrain_model("tiny", num_frames=FRAMES, img_size=SIZE).state_dict()}, path)
    assert train_job.checked_checkpoint(tiny_cfg(), str(path), "mgtc train")
    err = capsys.readouterr().err
    assert f"mgtc train: WARNING: checkpoint {path}: missing (left at their initial values): " in err


def test_training_checkpoint_directory_is_checked_strictly(tmp_path):
    cfg = tiny_cfg()
    ckpt = tmp_path / "epoch_0001"
    ckpt.mkdir()
    with pytest.raises(CheckpointError, match=r"state\.pt: no such file"):
        check_weights(cfg, str(ckpt))
    model = make_model(cfg)
    torch.save({"model": model.state_dict()}, ckpt / "state.pt")
    assert check_weights(cfg, str(ckpt)).missing == ()
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k != "head.bias"}}, ckpt / "state.pt")
    with pytest.raises(CheckpointError, match=r"strict load: missing head\.bias"):
        check_weights(cfg, str(ckpt))
