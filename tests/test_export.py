"""`mgtc export`: the Hugging Face directory loads in transformers with our q/v biases and
logits, the guard catches biases that load as zeros, and torch.export / TorchScript
programs of the dense path (all tokens or a fixed keep count) match eager."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.checkpoints import hf_to_official_state_dict
from pipeline.export import ExportError, check_hf, example_input, official_to_hf_state_dict
from pipeline.predict.loading import load_for_inference
from tests.test_predict import NAMES, tiny_checkpoint


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A tiny classifier whose q / v biases are not zero (fresh ones are: the guard would
    not see a bias that loads as zeros)."""
    ckpt, _ = tiny_checkpoint(tmp_path / "run")
    state = torch.load(ckpt / "state.pt", weights_only=True)
    g = torch.Generator().manual_seed(3)
    for key, value in state["model"].items():
        if key.endswith(("q_bias", "v_bias")):
            value.copy_(torch.randn(value.shape, generator=g))
        if key == "head.weight":  # logits of a fine-tuned head's size (~1-5), not of a N(0, 1) head
            value.mul_(0.1)
    torch.save(state, ckpt / "state.pt")
    return ckpt


def test_hf_names_invert_the_existing_conversion(checkpoint):
    ours = load_for_inference(str(checkpoint), device="cpu").model.state_dict()
    back = hf_to_official_state_dict(official_to_hf_state_dict(ours))
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)


def test_hf_export_loads_in_transformers_with_our_biases_and_logits(checkpoint, tmp_path):
    from transformers import VideoMAEForVideoClassification

    from jobs.export import main

    out = tmp_path / "hf"
    assert main(["--checkpoint", str(checkpoint), "--format", "hf", "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = load_for_inference(str(checkpoint), device="cpu")
    hf = VideoMAEForVideoClassification.from_pretrained(out).eval()
    for i, block in enumerate(loaded.model.blocks):
        attn = hf.videomae.encoder.layer[i].attention.attention
        # transformers 5 renamed q_bias / v_bias; a name it does not map loads as zeros
        assert torch.equal(attn.query.bias, block.attn.q_bias) and attn.query.bias.abs().sum() > 0
        assert torch.equal(attn.value.bias, block.attn.v_bias) and attn.value.bias.abs().sum() > 0
    x = example_input(loaded, batch=2, seed=5)
    with torch.no_grad():
        diff = (hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits - loaded.model(x)).abs().max()
    assert diff <= 1e-4
    assert hf.config.id2label == dict(enumerate(NAMES))
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "hf" and meta["class_names"] == NAMES and meta["max_abs_logit_diff"] <= 1e-4


def test_hf_check_fails_when_the_biases_load_as_zeros(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from pipeline.export import export_hf

    loaded = load_for_inference(str(checkpoint), device="cpu")
    out = tmp_path / "hf"
    export_hf(loaded, out)
    tensors = load_file(out / "model.safetensors")
    # the v4 / v5 mix-up: the biases under a name this transformers does not map
    renamed = {k.replace("q_bias", "query_bias_old").replace("v_bias", "value_bias_old"): v for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()
    save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match="q_bias"):
        check_hf(loaded, out)


@pytest.mark.parametrize("fmt, keep", [("pt2", None), ("pt2", 5), ("torchscript", None), ("torchscript", 5)])
def test_programs_of_the_dense_path_match_eager(checkpoint, tmp_path, fmt, keep):
    from pipeline.export import export, example_ids

    loaded = load_for_inference(str(checkpoint), device="cpu")
    meta = export(loaded, fmt, tmp_path / fmt, keep=keep)
    path = tmp_path / fmt / meta["file"]
    program = torch.export.load(path).module() if fmt == "pt2" else torch.jit.load(str(path))
    x = example_input(loaded, batch=4, seed=9)  # another batch size than the traced one
    inputs = (x,) if keep is None else (x, example_ids(loaded, keep, batch=4, seed=9))
    with torch.no_grad():
        assert (program(*inputs) - loaded.model(*inputs)).abs().max() <= 1e-4
    assert meta["keep"] == (keep or loaded.model.num_patches) and meta["max_abs_logit_diff"] <= 1e-4


def test_bad_export_arguments_are_named(checkpoint, tmp_path, capsys):
    from jobs.export import main

    assert main(["--checkpoint", str(checkpoint), "--format", "pt2", "--keep", "99", "--out", str(tmp_path / "x")]) == 2
    assert "--keep 99" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--format", "hf", "--keep", "4", "--out", str(tmp_path / "y")]) == 2
    assert main(["--checkpoint", str(tmp_path / "nope"), "--format", "hf", "--out", str(tmp_path / "z")]) == 2
    assert "no such file" in capsys.readouterr().err
