"""Checkpoints of the VideoMAE models: reading a file safely, matching its keys to a model,
loading it, and converting Hugging Face weights to the official layout.

`read_checkpoint` uses `torch.load(weights_only=True)` (an official checkpoint's argparse
`args` allowed by name; anything else needs `allow_pickle`); `plan_load` maps a state dict
onto a model (prefixes handled, a head of another class count dropped) and says what is
missing, unexpected or dropped (`LoadReport`); `load_videomae_checkpoint` does both;
`hf_to_official_state_dict` turns transformers' VideoMAE keys into the official ones.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.model import VideoMAEPretrain

log = logging.getLogger(__name__)



class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not a checkpoint, or not this model's
    weights. The message is one line naming the file and what is wrong."""


@dataclass(frozen=True)
class LoadReport:
    """What `load_videomae_checkpoint` did: keys the model lacked values for, keys of the
    checkpoint the model has no place for, and keys dropped before loading (and why)."""

    source: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    dropped: tuple[str, ...]

    def summary(self) -> str:
        """One line per non-empty key group, e.g. `missing (left at their initial values): head.weight, ...`."""
        named = (("missing (left at their initial values)", self.missing),
                 ("unexpected (ignored)", self.unexpected),
                 ("dropped (shape differs: another class count)", self.dropped))
        return "\n".join(f"checkpoint {self.source}: {name}: {_short_list(keys)}" for name, keys in named if keys)


def _short_list(keys: tuple[str, ...] | list[str], limit: int = 8) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def read_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> Mapping[str, object]:
    """torch.load a checkpoint file on CPU with the weights-only unpickler.

    Official VideoMAE checkpoints store their `args` as an argparse.Namespace, a plain
    attribute bag, so it is allow-listed. Raises CheckpointError (one line naming the file)
    for a missing, empty, truncated or non-checkpoint file, and for a pickle that needs
    classes beyond tensors: that one loads only with `allow_pickle=True`
    (`--set model.allow_pickle=true`), which runs code from the file and must only be used
    for files from a trusted source. A corrupt file is never told to enable it.
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {name}: no such file")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {name}: is a directory, not a checkpoint file")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {name}: file is empty (0 bytes)")
    with open(p, "rb") as f:
        magic = f.read(4)
    try:
        if allow_pickle:
            checkpoint = torch.load(p, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        if found and not allow_pickle:
            raise CheckpointError(
                f"checkpoint {name} holds Python objects beyond tensors ({found[1]}); loading it runs "
                "code from the file. Only for a file from a trusted source: --set model.allow_pickle=true"
            ) from None
        raise CheckpointError(f"checkpoint {name}: not a PyTorch checkpoint (unreadable pickle data)") from None
    except Exception as err:  # torch raises RuntimeError / EOFError / KeyError / ... for corrupt files
        if magic == b"PK\x03\x04":
            raise CheckpointError(
                f"checkpoint {name}: truncated or corrupt ({size} bytes; the zip archive is incomplete)"
            ) from None
        kind = type(err).__name__
        raise CheckpointError(f"checkpoint {name}: not a PyTorch checkpoint ({kind} while reading it)") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {name}: holds a {type(checkpoint).__name__}, not a dict of weights")
    return checkpoint


def extract_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """`checkpoint['model']`, else `checkpoint['module']` (DeepSpeed), else the dict itself."""
    for key in ("model", "module"):
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    return dict(checkpoint)


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def to_model_keys(state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename checkpoint keys to `model`'s layout.

    Always strips DDP's `module.`. For the classifier also strips `backbone.` / `encoder.`
    (official `run_class_finetuning.py`), so a pre-train checkpoint's `encoder.blocks...`
    become `blocks...`; its `encoder.norm.*` becomes `norm.*`, which the mean-pooling
    classifier has no place for (official: fc_norm stays freshly initialised).
    The pre-train model keeps `encoder.` (its own layout).
    """
    state = {_strip(k, ("module.",)): v for k, v in state.items()}
    if isinstance(model, VideoMAEPretrain):
        return state
    return {_strip(k, ("backbone.", "encoder.")): v for k, v in state.items()}


def _encoder_prefixes(model: nn.Module) -> tuple[str, str]:
    """(patch embedding, blocks) key prefixes of `model`'s encoder."""
    root = "encoder." if isinstance(model, VideoMAEPretrain) else ""
    return f"{root}patch_embed.", f"{root}blocks."


def plan_load(model: nn.Module, state: Mapping[str, Tensor], source: str, *, strict: bool = False) -> tuple[dict[str, Tensor], LoadReport]:
    """Check `state` (already in `model`'s key layout) against `model`; returns what to load.

    Works on a meta-device model too (only key names and shapes are compared). `head.*` is
    dropped when its shape differs (another class count). Raises CheckpointError, before
    anything is loaded, when the checkpoint does not provide the whole encoder (the patch
    embedding and every block: a resnet or another model's weights would otherwise "load"
    and leave a randomly initialised network), when a tensor's shape differs (another model
    size / frames / patch), or, with `strict`, when any key is missing or unexpected.
    """
    own = model.state_dict()
    state = dict(state)
    dropped = []
    head = ("head.weight", "head.bias")
    if any(k in state and k in own and tuple(state[k].shape) != tuple(own[k].shape) for k in head):
        dropped = [k for k in head if k in state]
        for k in dropped:
            del state[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    embed, blocks = _encoder_prefixes(model)
    lacking = [k for k in missing if k.startswith((embed, blocks))]
    if lacking:
        depth = len({k.split(".")[len(blocks.split(".")) - 1] for k in own if k.startswith(blocks)})
        parts = []
        if any(k.startswith(embed) for k in lacking):
            parts.append("the patch embedding")
        gone = sorted({int(k[len(blocks):].split(".")[0]) for k in lacking if k.startswith(blocks)})
        if gone:
            parts.append(f"{len(gone)} of {depth} encoder blocks ({_short_list([str(b) for b in gone])})")
        raise CheckpointError(
            f"checkpoint {source} does not provide the encoder: {' and '.join(parts)} missing "
            f"({len(lacking)} tensors, e.g. {lacking[0]}); it holds {len(state)} tensors "
            f"(e.g. {_short_list(list(state)[:3])}), not VideoMAE weights for this model"
        )
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"checkpoint {source}: {len(mismatched)} tensors have another shape than this model's, "
            f"e.g. {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} (another model.size, "
            "data.num_frames, data.input_size or model.patch?)"
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"checkpoint {source}: strict load: missing {_short_list(missing) or '-'}; "
            f"unexpected {_short_list(unexpected) or '-'}"
        )
    return state, LoadReport(source, tuple(missing), tuple(unexpected), tuple(dropped))


def load_videomae_checkpoint(
    model: nn.Module,
    path_or_state: str | Path | Mapping[str, object],
    *,
    allow_pickle: bool = False,
    strict: bool = False,
) -> LoadReport:
    """Load an official VideoMAE (or our own) checkpoint into `model`; returns a LoadReport.

    Accepts a file path or an already loaded dict, with the weights under `model`, `module`
    or at the top level. Checked by `plan_load` before anything is copied: a checkpoint that
    lacks part of the encoder or has other shapes is refused (CheckpointError). Otherwise
    non-strict by default, as official: pre-train decoder keys and `norm.*` show up as
    unexpected, fc_norm / head of a pre-train checkpoint as missing; `head.*` is dropped on
    a class-count change; the summary is logged at WARNING (`LoadReport.summary`).
    A pre-train checkpoint loads into `VideoMAEPretrain` with nothing missing or unexpected.
    """
    source = "<state dict>" if isinstance(path_or_state, Mapping) else str(path_or_state)
    if isinstance(path_or_state, Mapping):
        checkpoint = path_or_state
    else:
        checkpoint = read_checkpoint(path_or_state, allow_pickle=allow_pickle)
    state, report = plan_load(model, to_model_keys(extract_state_dict(checkpoint), model), source, strict=strict)
    model.load_state_dict(state, strict=False)
    log.info("loaded %s: %d tensors", source, len(state))
    if report.summary():
        log.warning("%s", report.summary())
    return report


_HF_LAYER_RENAMES = (
    ("attention.attention.q_bias", "attn.q_bias"),
    ("attention.attention.v_bias", "attn.v_bias"),
    ("attention.attention.query.bias", "attn.q_bias"),  # transformers >= 5 names
    ("attention.attention.value.bias", "attn.v_bias"),
    ("attention.output.dense.", "attn.proj."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_HF_QKV = re.compile(r"^(.*)\.attention\.attention\.(query|key|value)\.weight$")


def hf_to_official_state_dict(hf_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face `VideoMAEForVideoClassification` / `VideoMAEForPreTraining` weights ->
    official VideoMAE keys (the inverse of transformers' `convert_videomae_to_pytorch.py`).

    query / key / value weights [D, D] are stacked into `qkv.weight` [3D, D] (rows q | k | v).
    A pre-training dict (it has `decoder.*`) gets `encoder.`-prefixed encoder keys.
    Note HF's fc_norm LayerNorm uses eps 1e-5 where official uses 1e-6; eps is not a weight,
    so the converted model computes with official 1e-6 (a ~1e-5 relative difference).
    """
    pretrain = any(k.startswith("decoder.") for k in hf_state)
    enc = "encoder." if pretrain else ""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in hf_state.items():
        layer = re.match(r"^(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.*)$", key)
        if layer:
            stem = f"{enc}blocks" if layer[1].startswith("videomae") else "decoder.blocks"
            prefix, rest = f"{stem}.{layer[2]}", layer[3]
            match = _HF_QKV.match(key)
            if match:
                qkv.setdefault(prefix, {})[match[2]] = value
                continue
            for old, new in _HF_LAYER_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            out[f"{prefix}.{rest}"] = value
        elif key.startswith("videomae.embeddings.patch_embeddings.projection."):
            out[f"{enc}patch_embed.proj.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("videomae.layernorm."):
            out[f"{enc}norm.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith("classifier."):
            out["head." + key.split(".", 1)[1]] = value
        else:  # fc_norm.*, encoder_to_decoder.weight, mask_token, decoder.norm / decoder.head
            out[key] = value
    for prefix, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"HF state dict has an incomplete query/key/value set at {prefix}")
        out[f"{prefix}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out
