"""Encoder compute per view from the kept-token count, VideoMAE's way.

Convention: like VideoMAE (and most video-ViT papers) we count MULTIPLY-ADDS and call them
"GFLOPs": ViT-B/16 at 16x224 (1568 tokens) is 180.3 G per view. A FLOP counter that counts
real floating-point operations (torch's FlopCounterMode) reports twice that.

Per view, for an encoder of width D, depth L, MLP ratio r, with N kept tokens out of N_all:
    L * (N * (4 + 2r) * D^2  +  2 * N^2 * D)  +  N_all * P * D
- N * 4 D^2: the qkv (3 D^2) and output (D^2) projections; N * 2r D^2: the MLP (8 D^2 at r=4),
- 2 N^2 D: q @ k^T and attn @ v,
- N_all * P * D: the Conv3d tubelet embedding (P = 3 * tubelet * patch^2 pixels per token),
  which runs on EVERY tubelet because tokens are dropped after it.
LayerNorm, GELU, softmax, biases, pooling and the head are left out (no matmul, or < 0.01%).

For variable lengths (mgtc_threshold) attention is quadratic, so the per-view cost is the
mean over clips of f(N_b), not f(mean N_b).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from pipeline.model import vit_size
from pipeline.vocab import token_grid


@dataclass(frozen=True)
class EncoderShape:
    """What the per-view cost depends on: width, depth, MLP ratio, tokens per clip, and
    pixels per token."""

    dim: int
    depth: int
    num_tokens: int
    patch_volume: int
    mlp_ratio: float = 4.0


def encoder_shape(
    size: str,
    *,
    num_frames: int = 16,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    in_chans: int = 3,
) -> EncoderShape:
    """EncoderShape of a named model size on a clip; ValueError on bad sizes / shapes."""
    dims = vit_size(size)
    grid = token_grid(num_frames, img_size, img_size, tubelet_size, patch_size)
    return EncoderShape(
        dim=dims.dim,
        depth=dims.depth,
        num_tokens=grid[0] * grid[1] * grid[2],
        patch_volume=in_chans * tubelet_size * patch_size * patch_size,
    )


def block_macs(num_kept: int, shape: EncoderShape) -> int:
    """Multiply-adds of the transformer blocks on `num_kept` tokens (one clip)."""
    d, n = shape.dim, num_kept
    hidden = int(d * shape.mlp_ratio)  # the MLP width, as the model builds it
    per_layer = n * (4 * d * d + 2 * d * hidden) + 2 * n * n * d
    return shape.depth * per_layer


def patch_embed_macs(shape: EncoderShape) -> int:
    """Multiply-adds of the tubelet embedding: all tokens, before any is dropped."""
    return shape.num_tokens * shape.patch_volume * shape.dim


def encoder_macs(num_kept: int, shape: EncoderShape) -> int:
    """Multiply-adds of one clip's encoder forward (blocks + tubelet embedding)."""
    if not 1 <= num_kept <= shape.num_tokens:
        raise ValueError(f"num_kept={num_kept} must be in [1, {shape.num_tokens}]")
    return block_macs(num_kept, shape) + patch_embed_macs(shape)


def gmacs_per_view(kept_counts: Sequence[int] | Tensor, shape: EncoderShape) -> float:
    """Mean over clips of the encoder multiply-adds, in G ("GFLOPs" in VideoMAE's sense).

    kept_counts: [B] real kept tokens per clip (e.g. `Selection.lengths`).
    """
    counts = kept_counts.tolist() if isinstance(kept_counts, Tensor) else list(kept_counts)
    if not counts:
        raise ValueError("kept_counts is empty")
    return sum(encoder_macs(int(n), shape) for n in counts) / len(counts) / 1e9


def mean_gmacs(clips: float, sum_n: float, sum_n2: float, shape: EncoderShape) -> float:
    """`gmacs_per_view` from sums over clips of the encoded token count n and of n^2.

    encoder_macs(n) is a quadratic in n, so those two sums are all its mean needs: a training
    loop accumulates them on the device instead of reading every clip's count to the host.
    0.0 for no clips.
    """
    if clips <= 0:
        return 0.0
    d, hidden = shape.dim, int(shape.dim * shape.mlp_ratio)
    linear = shape.depth * (4 * d * d + 2 * d * hidden)  # per token
    quadratic = shape.depth * 2 * d  # per token pair
    return ((linear * sum_n + quadratic * sum_n2) / clips + patch_embed_macs(shape)) / 1e9


def _sdpa_flops(query_shape, key_shape, value_shape, *_, **__) -> int:
    """FLOPs of one SDPA call from its q / k / v shapes (torch's own GPU formula)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def measured_gmacs_per_view(
    model: nn.Module,
    x: Tensor,
    ids_keep: Tensor | None = None,
    keep_mask: Tensor | None = None,
) -> float:
    """Cross-check: multiply-adds of `model.forward_features` counted by torch, per clip, in G.

    FlopCounterMode counts FLOPs = 2 x multiply-adds of matmuls, convolutions and attention.
    Its table has no entry for the CPU flash-attention kernel that `F.scaled_dot_product_
    attention` dispatches to on CPU, so that op is mapped to the same formula as the GPU one.
    """
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        model.forward_features(x, ids_keep, keep_mask)
    return counter.get_total_flops() / 2 / x.shape[0] / 1e9
