"""What runs differently on a CUDA GPU: TF32, torch.compile, fused AdamW, pinned batches.

Each is a config field that defaults to what a GPU wants and is a no-op on CPU, so one config
runs on a laptop and on a GPU cluster (docs/TRAINING.md, "GPU path"):

| field | on CUDA | on CPU |
|---|---|---|
| `scaling.precision: bf16` | bf16 autocast, loss in fp32 (`modeling.autocast`) | fp32 |
| `scaling.tf32: true` | fp32 matmuls may use TF32 (`torch.set_float32_matmul_precision("high")`) | - |
| `scaling.pin_memory: true` | batches land in pinned host memory; copies are `non_blocking` | - |
| `model.compile: true` | `torch.compile` of every transformer block (`compile_blocks`) | - |
| `optim.fused: true` | AdamW's fused CUDA kernel (one launch for all parameters) | torch's default |

Compilation is regional (each block, not the whole model): the blocks of a ViT are identical,
so the compiled code is reused and compile time stays that of one block; the state dict keeps
its keys (no `_orig_mod.` prefix), so checkpoints and DDP are unchanged. Shapes are static
unless the token count varies from step to step (`mgtc_threshold`, packed `[1, S, D]`):
then the compiler is told so up front (`dynamic=True`) instead of recompiling per batch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pipeline.config import Config

log = logging.getLogger(__name__)


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def configure_matmul(cfg: Config, device: torch.device | str) -> None:
    """Allow TF32 for fp32 matmuls on CUDA when `scaling.tf32` (process-wide; bf16 autocast
    regions are unaffected). cuDNN convolutions allow TF32 by PyTorch's default already.

    The legacy setter on purpose: mixing it with the newer `fp32_precision` attributes makes
    torch's own getters (used by inductor) raise."""
    if cfg.scaling.tf32 and is_cuda(device):
        torch.set_float32_matmul_precision("high")


def pin_batches(cfg: Config, device: torch.device | str) -> bool:
    """Whether `iter_torch_batches` should pin host memory: only when batches go to a GPU."""
    return cfg.scaling.pin_memory and is_cuda(device)


def fused_optimizer(cfg: Config, device: torch.device | str) -> dict[str, bool]:
    """Optimizer keyword arguments: `{"fused": True}` on CUDA with `optim.fused`, else none
    (torch's default, the foreach implementation)."""
    return {"fused": True} if cfg.optim.fused and is_cuda(device) else {}


def compile_dynamic(cfg: Config) -> bool:
    """Whether the blocks see a different token count every step: packed `mgtc_threshold`."""
    return cfg.masking.strategy == "mgtc_threshold"


def compile_blocks(model: nn.Module, *, dynamic: bool, backend: str = "inductor") -> int:
    """`torch.compile` every transformer block of `model` in place; returns how many.

    dynamic: True when the token count varies between calls (packed variable-length batches);
    False compiles for the exact shapes seen (a new shape, e.g. a smaller last eval batch,
    compiles once more).
    """
    from pipeline.layers import VideoMAEBlock

    blocks = [m for m in model.modules() if isinstance(m, VideoMAEBlock)]
    for block in blocks:
        block.compile(backend=backend, dynamic=dynamic)
    return len(blocks)


def maybe_compile(cfg: Config, model: nn.Module, device: torch.device | str) -> bool:
    """Compile `model`'s blocks when `model.compile` and the worker runs on CUDA; whether it did."""
    if not (cfg.model.compile and is_cuda(device)):
        return False
    count = compile_blocks(model, dynamic=compile_dynamic(cfg))
    log.info("torch.compile: %d blocks (dynamic=%s)", count, compile_dynamic(cfg))
    return True
