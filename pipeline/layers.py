"""The layers of the VideoMAE ViT, as the official code lays them out so that its checkpoints
load unchanged: the Conv3d tubelet embedding, attention with q and v biases only (k bias fixed
at zero) over dense or packed tokens, pre-norm timm blocks with per-clip drop path, the block
stack (with optional activation checkpointing) and the official weight init.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pipeline.packing import Packing, attention_path, drop_path_packed, packed_attention
from pipeline.vocab import token_grid

LN_EPS = 1e-6  # official VideoMAE; HF uses 1e-12 in blocks and 1e-5 in fc_norm



class TubeletEmbed(nn.Module):
    """Conv3d over (tubelet, patch, patch) cubes: x [B, C, T, H, W] -> tokens [B, N, D]."""

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        token_grid(x.shape[2], x.shape[3], x.shape[4], self.tubelet_size, self.patch_size)
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEAttention(nn.Module):
    """Multi-head self-attention with the official VideoMAE parameters.

    Keys: `qkv.weight` [3D, D] (rows q | k | v, each head-major; no `qkv.bias`), `q_bias`,
    `v_bias` [D] (k bias fixed at zero), `proj.*`. `fused_attn` picks
    `F.scaled_dot_product_attention`; the manual softmax path is kept for parity tests.

    Signature follows timm's attention layers so timm's `Block(attn_layer=...)` builds it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        scale_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        **_: object,  # timm passes device/dtype/depth hooks that this layer does not use
    ) -> None:
        super().__init__()
        if qk_norm or scale_norm:
            raise ValueError("VideoMAE attention has no qk_norm / scale_norm")
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv_bias(self) -> Tensor | None:
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """q, k, v: [..., H, L, hd]; attn_mask: bool, broadcastable to [..., H, L, L],
        True = attend."""
        dropout = self.attn_drop.p if self.training else 0.0
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if attn_mask is not None:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        attn = self.attn_drop(attn.softmax(dim=-1))
        return attn @ v

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        packing: Packing | None = None,
    ) -> Tensor:
        """x: [B, N, D] -> [B, N, D].

        attn_mask: bool [B, 1, 1, N] key-padding mask (True = real key) for padded batches.
        packing: x is [1, S, D] holding `packing.lengths` clips back to back; each clip
        attends only to itself: one varlen kernel call on CUDA in bf16, else one SDPA call
        per clip (`pipeline.packing.attention_path` picks and says why).
        """
        if is_causal:
            raise ValueError("VideoMAE attention is bidirectional")
        B, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, self._qkv_bias())
        if packing is not None:
            out = self._attend_packed(qkv[0].view(N, 3, self.num_heads, self.head_dim), packing)
            return self.proj_drop(self.proj(out.reshape(B, N, C)))
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # q, k, v: [B, H, N, hd]
        out = self._attend(q, k, v, attn_mask)
        x = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    def _attend_packed(self, qkv: Tensor, packing: Packing) -> Tensor:
        """qkv: [S, 3, H, hd] of packed clips -> attention within each clip, [S, H, hd]."""
        dropout = self.attn_drop.p if self.training else 0.0
        q, k, v = qkv.unbind(1)  # [S, H, hd] views
        path = attention_path(q, dropout_p=dropout, fused=self.fused_attn)
        if path == "varlen":  # one copy: the kernels want each of q, k, v contiguous
            q, k, v = qkv.transpose(0, 1).contiguous().unbind(0)
        return packed_attention(
            q, k, v, packing, path=path, attend=lambda qs, ks, vs: self._attend(qs, ks, vs, None)
        )


class VideoMAEBlock(Block):
    """timm pre-norm `Block` that also runs packed sequences.

    Packed input x: [1, S, D]; attention is block-diagonal and stochastic depth drops whole
    clips (timm's DropPath would drop the whole packed batch at once, as it sees one sample).
    """

    def __init__(self, *args: object, drop_path: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, drop_path=drop_path, **kwargs)
        self.drop_prob = drop_path

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, packing: Packing | None = None
    ) -> Tensor:
        if packing is None:
            x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask=attn_mask))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        drop = partial(
            drop_path_packed, drop_prob=self.drop_prob, packing=packing, training=self.training
        )
        x = x + drop(self.attn(self.norm1(x), packing=packing))
        return x + drop(self.mlp(self.norm2(x)))


def make_blocks(
    dim: int, depth: int, heads: int, mlp_ratio: float, drop_path_rate: float
) -> nn.ModuleList:
    """`depth` VideoMAE blocks, stochastic depth rising linearly to `drop_path_rate`."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace
    return nn.ModuleList(
        VideoMAEBlock(
            dim,
            heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path=rate,
            norm_layer=partial(nn.LayerNorm, eps=LN_EPS),
            mlp_layer=Mlp,
            attn_layer=VideoMAEAttention,
        )
        for rate in rates
    )


def run_blocks(
    blocks: nn.ModuleList,
    x: Tensor,
    *,
    attn_mask: Tensor | None = None,
    packing: Packing | None = None,
    grad_checkpointing: bool = False,
) -> Tensor:
    for blk in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(blk, x, attn_mask, packing, use_reentrant=False)
        else:
            x = blk(x, attn_mask=attn_mask, packing=packing)
    return x


def init_official(module: nn.Module, linear_init: Literal["trunc_normal", "xavier"]) -> None:
    """Official `_init_weights`: Linear trunc_normal(.02) (fine-tune) or Xavier-uniform
    (pre-train), bias 0; LayerNorm 1 / 0. The Conv3d keeps PyTorch's default, as official."""
    if isinstance(module, nn.Linear):
        if linear_init == "xavier":
            nn.init.xavier_uniform_(module.weight)
        else:
            trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
