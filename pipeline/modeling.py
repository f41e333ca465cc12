"""The network of a config, its weights and its numerics, for training, evaluation and
inference alike.

`make_model(cfg)` builds the VideoMAE classifier (finetune) or the MAE model (pretrain);
`load_weights` reads a checkpoint URI into it (one of our training checkpoint folders,
`<dir>/state.pt`, or an official VideoMAE / our own `.pt`); `check_weights` validates a
checkpoint against a config in the driver, before Ray starts. `autocast` and
`flush_denormals` are the numerics every forward pass runs under.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import nn

from pipeline import storage
from pipeline.checkpoints import (
    CheckpointError,
    LoadReport,
    extract_state_dict,
    load_videomae_checkpoint,
    plan_load,
    read_checkpoint,
    to_model_keys,
)
from pipeline.config import Config
from pipeline.model import build_model, build_pretrain_model

STATE_FILE = "state.pt"  # our training checkpoints: <checkpoint dir>/state.pt


def flush_denormals(device: torch.device) -> None:
    """On CPU, treat denormal floats as zero. Trained weights produce denormal intermediates
    (attention softmax, gradients) that x86 CPUs compute 10-100x slower: measured, a trained
    ViT-tiny step cost 1.26x that of the same step with flushing (fresh weights: 1.01x), so
    the runs that learn best ran slowest. The values involved are below 1.2e-38."""
    if torch.device(device).type == "cpu":
        torch.set_flush_denormal(True)


def make_model(cfg: Config) -> nn.Module:
    """The network of `cfg`: VideoMAE classifier (finetune) or MAE model (pretrain)."""
    m, d = cfg.model, cfg.data
    common = dict(
        num_frames=d.num_frames, img_size=d.input_size, patch_size=m.patch, tubelet_size=m.tubelet,
        drop_path_rate=m.drop_path, fused_attn=m.fused_attn,
    )
    if cfg.optim.mode == "pretrain":
        return build_pretrain_model(m.size, **common)
    return build_model(m.size, d.num_classes, fc_drop_rate=m.fc_drop, head_init_scale=m.head_init_scale, **common)


def load_weights(model: nn.Module, uri: str, *, allow_pickle: bool = False) -> str:
    """Load weights from a checkpoint URI (local or s3://) into `model`; returns what was read.

    A directory is one of our training checkpoints (`state.pt`, loaded strictly with the
    weights-only unpickler); a file is an official VideoMAE / our own `.pt`, loaded through
    `load_videomae_checkpoint` (non-strict, prefixes handled, head dropped on a class-count
    change, refused when it lacks the encoder). Raises CheckpointError naming the file.
    """
    fs, path = storage.filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        state_uri = storage.join(uri, STATE_FILE)
        with _local_copy(state_uri) as local:
            state = read_checkpoint(local)
        weights, _ = plan_load(model, _training_weights(state, state_uri), storage.redact(state_uri), strict=True)
        model.load_state_dict(weights)
        return state_uri
    with _local_copy(uri) as local:
        try:
            load_videomae_checkpoint(model, local, allow_pickle=allow_pickle)
        except CheckpointError as err:
            raise CheckpointError(str(err).replace(str(local), storage.redact(uri))) from None
    return uri


@contextlib.contextmanager
def _local_copy(uri: str):
    """`storage.download_to_temp`, with a missing file as a CheckpointError naming the URI."""
    try:
        with storage.download_to_temp(uri) as local:
            yield local
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {storage.redact(uri)}: no such file") from None


def _training_weights(state: Any, uri: str) -> dict:
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {storage.redact(uri)}: not a training checkpoint (no 'model' weights)")
    return state["model"]


def check_weights(cfg: Config, uri: str) -> LoadReport:
    """Read and validate the checkpoint `uri` for `cfg`'s model in the driver, before Ray
    starts, so a wrong file fails in seconds with one line instead of inside every actor.

    The model is built on the meta device (names and shapes only, no memory). Returns the
    LoadReport (missing / unexpected / dropped keys) for the caller to print; raises
    CheckpointError (missing, empty, truncated, not a checkpoint, needs allow_pickle, lacks
    the encoder, other shapes).
    """
    with torch.device("meta"):
        model = make_model(cfg)
    checkpoint, shown, training = read_checkpoint_uri(uri, allow_pickle=cfg.model.allow_pickle)
    if training:
        _, report = plan_load(model, _training_weights(checkpoint, shown), shown, strict=True)
    else:
        _, report = plan_load(model, to_model_keys(extract_state_dict(checkpoint), model), shown)
    return report


def read_checkpoint_uri(uri: str, *, allow_pickle: bool = False) -> tuple[Mapping[str, Any], str, bool]:
    """(the checkpoint dict at `uri`, the redacted name of the file read, whether it is one of
    our training checkpoints). A directory is one (its `state.pt` is read, weights-only: it
    holds only tensors); a file is read with `allow_pickle` as `read_checkpoint` does.
    Raises CheckpointError naming the file (missing, empty, truncated, not a checkpoint)."""
    shown = storage.redact(uri)
    fs, path = storage.filesystem_for(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise CheckpointError(f"checkpoint {shown}: no such file or directory")
    training = info.type == pafs.FileType.Directory
    if training:
        uri = storage.join(uri, STATE_FILE)
        shown = storage.redact(uri)
        if not storage.exists(uri):
            raise CheckpointError(f"checkpoint {shown}: no such file (not a training checkpoint directory)")
    with _local_copy(uri) as local:
        try:
            return read_checkpoint(local, allow_pickle=allow_pickle and not training), shown, training
        except CheckpointError as err:
            raise CheckpointError(str(err).replace(str(local), shown)) from None


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on GPU when `scaling.precision == "bf16"`, else a no-op context."""
    enabled = cfg.scaling.precision == "bf16" and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
