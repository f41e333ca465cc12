"""Export a fine-tuned checkpoint for serving outside this project (`mgtc export`).

Formats, each written to `--out DIR` with an `export.json` beside it (input layout,
normalisation, class names, token count, the source checkpoint):
- `hf`: a Hugging Face `VideoMAEForVideoClassification` directory (`config.json` +
  `model.safetensors`, written by transformers' own `save_pretrained`). The weights are
  `official_to_hf_state_dict` of ours, the inverse of `pipeline.checkpoints.hf_to_official_state_dict`
  (`qkv.weight` [3D, D] split into query / key / value, `q_bias` / `v_bias` onto query /
  value). Checked after writing by loading the directory with transformers: its q / v
  biases must equal ours (transformers 5 renamed them, and a file under the other name
  loads them silently as zeros) and its logits must match ours within 1e-4 x max(1, largest
  |logit|) (HF's fc_norm uses eps 1e-5 where VideoMAE uses 1e-6: ~1e-6 of a logit apart).
- `pt2`: a `torch.export` program (`model.pt2`) of the dense path: `forward(x)` with all
  tokens, or with `keep=K` `forward(x, ids_keep)` for a fixed count of kept tokens per clip
  (ids_keep [B, K] sorted, from any strategy of `pipeline.selection`). Batch is dynamic.
- `torchscript`: the same module traced with `torch.jit.trace` (`model.ts`), fixed batch
  shape free, for runtimes without torch.export.
x is [B, 3, T, S, S] float32, ImageNet-normalised (docs/INFERENCE.md); HF's
`pixel_values` is [B, T, 3, S, S]. Exported programs are checked against eager on the
same input (max |logit difference| <= 1e-4) before the command succeeds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from pipeline.checkpoints import hf_to_official_state_dict
from pipeline.layers import LN_EPS
from pipeline.predict.loading import InferenceModel
from pipeline.vocab import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("hf", "pt2", "torchscript")
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An export that does not reproduce the model (it is not left looking usable)."""


# ------------------------------------------------------------------------- Hugging Face


def official_to_hf_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our (official VideoMAE) classifier keys -> `VideoMAEForVideoClassification` keys
    (transformers >= 5 layout: attention biases as `query.bias` / `value.bias`; the key
    projection has no bias). The inverse of `hf_to_official_state_dict` for classifiers."""
    renames = (
        ("attn.proj.", "attention.output.dense."), ("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."),
        ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense."),
    )
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        block = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if block:
            prefix, rest = f"videomae.encoder.layer.{block[1]}", block[2]
            if rest == "attn.qkv.weight":
                q, k, v = value.chunk(3)
                for name, w in (("query", q), ("key", k), ("value", v)):
                    out[f"{prefix}.attention.attention.{name}.weight"] = w.clone()
                continue
            if rest in ("attn.q_bias", "attn.v_bias"):
                name = "query" if rest == "attn.q_bias" else "value"
                out[f"{prefix}.attention.attention.{name}.bias"] = value.clone()
                continue
            for old, new in renames:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            else:
                raise ValueError(f"no Hugging Face name for {key}")
            out[f"{prefix}.{rest}"] = value.clone()
        elif key.startswith("patch_embed.proj."):
            out[f"videomae.embeddings.patch_embeddings.projection.{key.rsplit('.', 1)[1]}"] = value.clone()
        elif key.startswith("head."):
            out["classifier." + key.split(".", 1)[1]] = value.clone()
        elif key.startswith("fc_norm."):
            out[key] = value.clone()
        else:
            raise ValueError(f"no Hugging Face name for {key} (a classifier state dict was expected)")
    return out


def hf_config(loaded: InferenceModel):
    """The `VideoMAEConfig` of the model (mean pooling, q/v bias, VideoMAE's LN eps)."""
    from transformers import VideoMAEConfig

    cfg, model = loaded.cfg, loaded.model
    names = loaded.class_names or [str(i) for i in range(loaded.num_classes)]
    return VideoMAEConfig(
        image_size=cfg.data.input_size, patch_size=cfg.model.patch, num_channels=3,
        num_frames=cfg.data.num_frames, tubelet_size=cfg.model.tubelet, hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks), num_attention_heads=model.blocks[0].attn.num_heads,
        intermediate_size=model.blocks[0].mlp.fc1.out_features, hidden_act="gelu", layer_norm_eps=LN_EPS,
        qv_bias=True, use_mean_pooling=True, num_labels=loaded.num_classes,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )


def export_hf(loaded: InferenceModel, out: Path) -> dict:
    """Write the HF directory and check it (see module doc); returns the check's numbers."""
    from transformers import VideoMAEForVideoClassification

    ours = {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}
    hf_state = official_to_hf_state_dict(ours)
    if hf_to_official_state_dict(hf_state).keys() != ours.keys():
        raise ExportError("the HF key mapping does not invert to our keys")
    hf = VideoMAEForVideoClassification(hf_config(loaded))
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    if missing or unexpected:
        raise ExportError(f"HF model keys differ: missing {missing[:4]}, unexpected {unexpected[:4]}")
    hf.save_pretrained(out, safe_serialization=True)
    return check_hf(loaded, out)


def check_hf(loaded: InferenceModel, out: Path) -> dict:
    """Load `out` with transformers and compare to `loaded`: q / v biases equal (and not
    the zeros a renamed key silently loads as), logits within TOLERANCE."""
    from transformers import VideoMAEForVideoClassification

    hf = VideoMAEForVideoClassification.from_pretrained(out).eval()
    attn = hf.videomae.encoder.layer[0].attention.attention
    ours = loaded.model.blocks[0].attn
    for name, theirs, mine in (("q", attn.query.bias, ours.q_bias), ("v", attn.value.bias, ours.v_bias)):
        if theirs is None or not torch.equal(theirs.detach().cpu(), mine.detach().cpu()):
            raise ExportError(f"transformers loaded {out}'s {name}_bias with other values than ours "
                              f"(zeros: {theirs is not None and not bool(theirs.abs().sum())}); the export is wrong")
    x = example_input(loaded, batch=2)
    with torch.no_grad():
        want = loaded.model.cpu()(x)
        got = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    diff = float((want - got).abs().max())
    # HF's fc_norm eps (1e-5 vs 1e-6) moves logits by ~1e-6 of their size: the bound scales
    # with logits larger than 1 (a fine-tuned head's are ~1-10).
    bound = TOLERANCE * max(1.0, float(want.abs().max()))
    if diff > bound:
        raise ExportError(f"transformers' logits differ from ours by {diff:.2e} (> {bound:.1e})")
    return {"max_abs_logit_diff": diff}


# ------------------------------------------------------------------------- torch.export / TorchScript


class DenseClassifier(nn.Module):
    """The dense path of a classifier: forward(x) with all tokens, or forward(x, ids_keep)
    with a fixed number of kept tokens per clip. x: [B, 3, T, S, S]; ids_keep: [B, K]
    sorted ascending; returns logits [B, C]."""

    def __init__(self, model: nn.Module, keep: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.keep = keep

    def forward(self, x: Tensor, ids_keep: Tensor | None = None) -> Tensor:
        return self.model(x, ids_keep)


def example_input(loaded: InferenceModel, batch: int = 2, seed: int = 0) -> Tensor:
    """A deterministic normalised clip batch [B, 3, T, S, S] of the model's size."""
    d = loaded.cfg.data
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, d.num_frames, d.input_size, d.input_size, generator=g)


def example_ids(loaded: InferenceModel, keep: int, batch: int = 2, seed: int = 0) -> Tensor:
    """ids_keep [B, keep]: a sorted random subset per clip (any strategy gives this shape)."""
    n = loaded.model.num_patches
    if not 1 <= keep <= n:
        raise ValueError(f"--keep {keep}: must be 1..{n} (tokens per clip)")
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:keep].sort().values for _ in range(batch)])


def _inputs(loaded: InferenceModel, keep: int | None, batch: int = 2, seed: int = 0) -> tuple:
    x = example_input(loaded, batch, seed)
    return (x,) if keep is None else (x, example_ids(loaded, keep, batch, seed))


def _check_program(run, loaded: InferenceModel, keep: int | None) -> float:
    """max |logit difference| of `run` vs eager on a fresh input of another batch size."""
    inputs = _inputs(loaded, keep, batch=3, seed=1)
    with torch.no_grad():
        diff = float((run(*inputs) - loaded.model(*inputs)).abs().max())
    if diff > TOLERANCE:
        raise ExportError(f"exported program differs from eager by {diff:.2e} (> {TOLERANCE})")
    return diff


def export_pt2(loaded: InferenceModel, out: Path, keep: int | None = None) -> dict:
    """torch.export the dense path (dynamic batch) to out/model.pt2; checked after a reload."""
    module = DenseClassifier(loaded.model.cpu().eval(), keep).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = ({0: batch},) if keep is None else ({0: batch}, {0: batch})
    with torch.no_grad():
        program = torch.export.export(module, _inputs(loaded, keep), dynamic_shapes=shapes)
    path = out / "model.pt2"
    torch.export.save(program, path)
    reloaded = torch.export.load(path).module()
    return {"file": path.name, "max_abs_logit_diff": _check_program(reloaded, loaded, keep)}


def export_torchscript(loaded: InferenceModel, out: Path, keep: int | None = None) -> dict:
    """torch.jit.trace the dense path to out/model.ts; checked after a reload."""
    module = DenseClassifier(loaded.model.cpu().eval(), keep).eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, _inputs(loaded, keep), check_trace=False)
    path = out / "model.ts"
    torch.jit.save(traced, str(path))
    reloaded = torch.jit.load(str(path))
    return {"file": path.name, "max_abs_logit_diff": _check_program(reloaded, loaded, keep)}


def export(loaded: InferenceModel, fmt: str, out: str | Path, *, keep: int | None = None, source: str = "") -> dict:
    """Export `loaded` as `fmt` into folder `out`; returns what `export.json` records."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: allowed: {', '.join(FORMATS)}")
    if fmt == "hf" and keep is not None:
        raise ValueError("--keep is for pt2 / torchscript: the HF model always runs all tokens")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.cpu().eval()
    if keep is not None:
        example_ids(loaded, keep)  # range check before any work
    check = {"hf": lambda: export_hf(loaded, out), "pt2": lambda: export_pt2(loaded, out, keep),
             "torchscript": lambda: export_torchscript(loaded, out, keep)}[fmt]()
    d, m = loaded.cfg.data, loaded.model
    meta = {
        "format": fmt, "source": source, **check,
        "input": {"layout": "[B, T, 3, S, S] pixel_values" if fmt == "hf" else "[B, 3, T, S, S]",
                  "num_frames": d.num_frames, "size": d.input_size, "sampling_rate": d.sampling_rate,
                  "short_side": d.short_side, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "pixels": "RGB in [0, 1], then (x - mean) / std"},
        "tokens": m.num_patches, "keep": keep if keep is not None else m.num_patches,
        "ids_keep": None if keep is None else "[B, keep] int64, sorted ascending (pipeline.selection)",
        "model": loaded.cfg.model.size, "num_classes": loaded.num_classes, "class_names": loaded.class_names,
    }
    (out / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
