"""Packed variable-length sequences: clips of different token counts back to back, no padding.

`mgtc_threshold` keeps a different number of tokens per clip. The encoder runs them *packed*:
the real tokens of all B clips concatenated into one sequence `[1, S, D]` (S = sum of the
lengths) for the norms, linear layers and MLP, with attention restricted to each clip's own
segment (block-diagonal). No padding token is ever computed.

Attention over the segments has two implementations and one function that picks
(`choose_path`):
- "varlen": one call of `torch.nn.attention.varlen.varlen_attn` (FlashAttention-2 / cuDNN
  varlen kernels, forward and backward) for the whole batch. CUDA only, fp16 / bf16 only,
  no attention dropout; on CPU it raises NotImplementedError.
- "loop": one `F.scaled_dot_product_attention` call per clip. Right on CPU (measured there:
  4 clips of 600-1200 tokens, 6 heads of 64, fwd+bwd on one thread, 0.23 s vs 0.95 s for one
  call with a block-diagonal [S, S] mask, whose CPU kernel does not skip masked blocks);
  wrong on a GPU, where B clips x depth layers become that many small kernel launches.

Host syncs: building a `Packing` reads the per-clip lengths to the host once (their maximum is
an argument of the varlen kernel; the loop needs them as split sizes). Everything else stays
on the batch's device: index tensors come from `nonzero_static` / `cumsum` with sizes the host
already knows, so a training step with packing syncs exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

PATHS = ("varlen", "loop")
# FlashAttention's varlen kernels: half precision and head dims that are multiples of 8, <= 256.
VARLEN_DTYPES = (torch.float16, torch.bfloat16)
VARLEN_MAX_HEAD_DIM = 256


def host_lengths(counts: Tensor) -> tuple[int, ...]:
    """counts: [B] tokens per clip (any device) -> the same on the host.

    The one device -> host sync of a packed step: the CPU loop splits by these sizes and the
    varlen kernel takes their maximum as a Python int.
    """
    return tuple(int(n) for n in counts.tolist())


def cumulative_lengths(counts: Tensor) -> Tensor:
    """counts: [B] -> cu_seqlens [B + 1] int32 on the same device: 0, L0, L0 + L1, ...

    The segment offsets the varlen kernel takes (`cu_seq_q` = `cu_seq_k`); no host sync.
    """
    return F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


@dataclass(frozen=True)
class Packing:
    """B clips of `lengths` real tokens concatenated along the sequence axis (S tokens).

    lengths: per-clip token counts on the host; max_len = max(lengths).
    cu_seqlens: [B + 1] int32 segment offsets (device).
    segment_ids: [S] int64, the clip of each packed token (device).
    positions: [S] int64, each packed token's index inside its clip (device).
    source: [S] int64, each packed token's flat index into the [B, K] slots it came from.
    """

    lengths: tuple[int, ...]
    max_len: int
    cu_seqlens: Tensor = field(repr=False)
    segment_ids: Tensor = field(repr=False)
    positions: Tensor = field(repr=False)
    source: Tensor = field(repr=False)

    @classmethod
    def from_mask(cls, keep_mask: Tensor) -> Packing:
        """keep_mask: [B, K] bool, True = real token (any pattern, not only a prefix)."""
        counts = keep_mask.sum(1)
        lengths = host_lengths(counts)  # the one host sync
        total = sum(lengths)
        slots = keep_mask.shape[1]
        # Row-major flat indices of the real slots: clip 0's first, each clip's ascending.
        source = torch.nonzero_static(keep_mask.flatten(), size=total).squeeze(1)
        segment_ids = torch.div(source, slots, rounding_mode="floor")
        cu_seqlens = cumulative_lengths(counts)
        positions = torch.arange(total, device=keep_mask.device) - cu_seqlens[segment_ids]
        return cls(lengths, max(lengths, default=0), cu_seqlens, segment_ids, positions, source)

    @property
    def batch(self) -> int:
        return self.cu_seqlens.shape[0] - 1

    @property
    def total(self) -> int:
        return self.source.shape[0]

    def varlen_arguments(self) -> dict[str, Tensor | int]:
        """What `varlen_attn` takes besides q / k / v (self-attention: q and k segments agree)."""
        return {"cu_seq_q": self.cu_seqlens, "cu_seq_k": self.cu_seqlens,
                "max_q": self.max_len, "max_k": self.max_len}

    def pack(self, tokens: Tensor) -> Tensor:
        """tokens: [B, K, D] -> the real ones back to back, [1, S, D]."""
        return tokens.flatten(0, 1)[self.source][None]

    def pad(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens: [B, K, D] -> (real tokens first, padded to the longest clip [B, max_len, D],
        key-padding mask [B, max_len] bool, True = real)."""
        packed = self.pack(tokens)[0]
        out = packed.new_zeros(self.batch, self.max_len, packed.shape[-1])
        out = out.index_put((self.segment_ids, self.positions), packed)
        mask = torch.zeros(self.batch, self.max_len, dtype=torch.bool, device=tokens.device)
        mask[self.segment_ids, self.positions] = True
        return out, mask

    def segment_mean(self, x: Tensor) -> Tensor:
        """x: [1, S, D] packed -> [B, D] per-clip mean over its real tokens."""
        sums = x.new_zeros(self.batch, x.shape[-1]).index_add_(0, self.segment_ids, x[0])
        counts = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).to(x.dtype)
        return sums / counts[:, None]


@dataclass(frozen=True)
class TokenCounts:
    """Tokens the encoder really computes vs tokens kept, for one batch."""

    kept: int
    processed: int

    @property
    def overhead(self) -> float:
        """processed / kept: 1.0 when no padding token is computed."""
        return self.processed / self.kept


def token_counts(
    keep_mask: Tensor | None, batch: int, seq_len: int, varlen: str = "packed"
) -> TokenCounts:
    """Kept vs processed tokens for a batch of `batch` rows of `seq_len` (K) slots.

    keep_mask: [B, K] bool (True = real) or None (every row full). Packed execution computes
    exactly the real tokens; padded execution computes every slot of the [B, max_len] batch.
    For benchmarks and reports: it reads the lengths to the host.
    """
    if keep_mask is None:
        return TokenCounts(kept=batch * seq_len, processed=batch * seq_len)
    lengths = keep_mask.sum(1)
    kept = int(lengths.sum())
    processed = kept if varlen == "packed" else batch * int(lengths.max())
    return TokenCounts(kept=kept, processed=processed)


def drop_path_packed(branch: Tensor, drop_prob: float, packing: Packing, training: bool) -> Tensor:
    """Stochastic depth on a packed branch [1, S, D]: drops whole clips, like timm per sample."""
    if drop_prob == 0.0 or not training:
        return branch
    keep_prob = 1.0 - drop_prob
    keep = branch.new_empty(packing.batch).bernoulli_(keep_prob) / keep_prob
    return branch * keep[packing.segment_ids][None, :, None]


def choose_path(
    device_type: str, dtype: torch.dtype, head_dim: int, *, dropout_p: float = 0.0, fused: bool = True
) -> str:
    """The one place that picks how packed attention runs: "varlen" or "loop".

    "varlen" needs CUDA, fp16 / bf16 inputs (bf16 autocast gives that), a head dim that is a
    multiple of 8 up to 256, no attention dropout (the kernel has none) and the fused path
    enabled; anything else (CPU, fp32, the manual-softmax parity path) runs the loop.
    """
    if not fused or dropout_p > 0.0 or device_type != "cuda" or dtype not in VARLEN_DTYPES:
        return "loop"
    if head_dim % 8 or head_dim > VARLEN_MAX_HEAD_DIM:
        return "loop"
    return "varlen"


def attention_path(q: Tensor, *, dropout_p: float = 0.0, fused: bool = True) -> str:
    """`choose_path` for q [S, H, hd]."""
    return choose_path(q.device.type, q.dtype, q.shape[-1], dropout_p=dropout_p, fused=fused)


Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """[..., H, L, hd] fused attention without a mask (the loop's default kernel)."""
    return F.scaled_dot_product_attention(q, k, v)


def packed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    packing: Packing,
    *,
    path: str | None = None,
    attend: Attend = sdpa,
) -> Tensor:
    """Block-diagonal attention over packed clips: q, k, v [S, H, hd] -> [S, H, hd].

    path: "varlen" or "loop"; None picks with `attention_path(q)` (callers that have dropout
    or a manual softmax pick themselves). attend: the loop's per-clip kernel on
    [1, H, L, hd] tensors (default: `F.scaled_dot_product_attention`).
    """
    path = path or attention_path(q)
    if path == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, **packing.varlen_arguments())
    if path != "loop":
        raise ValueError(f"path={path!r}; allowed: {', '.join(PATHS)}")
    return _loop_attention(q, k, v, packing.lengths, attend)


# Eager under torch.compile: traced, the Python split sizes would be guarded on and every new
# set of lengths would recompile the block.
@torch.compiler.disable
def _loop_attention(q: Tensor, k: Tensor, v: Tensor, lengths: tuple[int, ...], attend: Attend) -> Tensor:
    """One `attend` call per clip: [S, H, hd] -> per clip [1, H, L, hd] (views, no copy) ->
    back to [S, H, hd]."""
    segments = zip(*(t.split(lengths, dim=0) for t in (q, k, v)))
    outs = [attend(*(t.transpose(0, 1)[None] for t in seg))[0].transpose(0, 1) for seg in segments]
    return torch.cat(outs, dim=0)
