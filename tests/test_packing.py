"""Packed variable-length attention: the arguments the CUDA varlen kernel would get, the path
each input takes, the loop against per-clip attention, the varlen code path on meta tensors
(shapes and backward through torch's fake kernel), and compilation without a recompile per
batch. The kernel itself runs only on a GPU (`mgtc bench gpu` compares it with the loop)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.packing import (
    Packing,
    attention_path,
    choose_path,
    cumulative_lengths,
    packed_attention,
)

LENGTHS = (6, 3, 8)


def prefix_mask(lengths, slots: int | None = None) -> torch.Tensor:
    """[B, K] bool: row b has its first lengths[b] slots real."""
    slots = slots or max(lengths)
    return torch.arange(slots)[None] < torch.tensor(lengths)[:, None]


def to_meta(packing: Packing) -> Packing:
    return Packing(packing.lengths, packing.max_len, packing.cu_seqlens.to("meta"),
                   packing.segment_ids.to("meta"), packing.positions.to("meta"), packing.source.to("meta"))


def test_varlen_arguments_are_the_segment_offsets_and_the_longest_clip():
    packing = Packing.from_mask(prefix_mask(LENGTHS, slots=10))
    args = packing.varlen_arguments()
    assert args["cu_seq_q"].dtype == torch.int32
    assert args["cu_seq_q"].tolist() == [0, 6, 9, 17] and args["cu_seq_k"] is args["cu_seq_q"]
    assert args["max_q"] == args["max_k"] == 8
    assert packing.lengths == LENGTHS and packing.total == 17 and packing.batch == 3
    assert cumulative_lengths(torch.tensor([2, 0, 5])).tolist() == [0, 2, 2, 7]


def test_packing_of_any_mask_keeps_clip_order_and_positions():
    mask = torch.tensor([[False, True, True, False], [True, False, False, True]])
    packing = Packing.from_mask(mask)
    assert packing.source.tolist() == [1, 2, 4, 7]  # flat index b * K + k, clip by clip
    assert packing.segment_ids.tolist() == [0, 0, 1, 1]
    assert packing.positions.tolist() == [0, 1, 0, 1]
    tokens = torch.arange(8.0).view(2, 4, 1)
    assert packing.pack(tokens).flatten().tolist() == [1.0, 2.0, 4.0, 7.0]
    padded, pad_mask = packing.pad(tokens)
    assert padded[..., 0].tolist() == [[1.0, 2.0], [4.0, 7.0]] and pad_mask.all()


@pytest.mark.parametrize("device, dtype, head_dim, dropout, fused, path", [
    ("cuda", torch.bfloat16, 64, 0.0, True, "varlen"),  # ViT-B under bf16 autocast
    ("cuda", torch.float16, 64, 0.0, True, "varlen"),
    ("cuda", torch.float32, 64, 0.0, True, "loop"),  # the kernel has no fp32
    ("cuda", torch.bfloat16, 64, 0.1, True, "loop"),  # nor dropout
    ("cuda", torch.bfloat16, 64, 0.0, False, "loop"),  # manual softmax (parity path)
    ("cuda", torch.bfloat16, 12, 0.0, True, "loop"),  # head dim not a multiple of 8
    ("cuda", torch.bfloat16, 512, 0.0, True, "loop"),
    ("cpu", torch.float32, 64, 0.0, True, "loop"),
    ("cpu", torch.bfloat16, 64, 0.0, True, "loop"),
    ("meta", torch.bfloat16, 64, 0.0, True, "loop"),
])
def test_one_function_picks_the_path(device, dtype, head_dim, dropout, fused, path):
    assert choose_path(device, dtype, head_dim, dropout_p=dropout, fused=fused) == path


def test_cpu_tensors_take_the_loop_because_the_kernel_is_cuda_only():
    q = torch.randn(17, 2, 8, dtype=torch.bfloat16)
    assert attention_path(q) == "loop"
    packing = Packing.from_mask(prefix_mask(LENGTHS))
    with pytest.raises(NotImplementedError):
        packed_attention(q, q, q, packing, path="varlen")


def test_loop_equals_each_clip_attended_alone():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(17, 2, 8, generator=gen) for _ in range(3))
    packing = Packing.from_mask(prefix_mask(LENGTHS))
    out = packed_attention(q, k, v, packing)
    assert out.shape == (17, 2, 8)
    start = 0
    for n in LENGTHS:
        alone = F.scaled_dot_product_attention(*(t[start:start + n].transpose(0, 1) for t in (q, k, v)))
        torch.testing.assert_close(out[start:start + n], alone.transpose(0, 1))
        start += n


def test_varlen_path_shapes_and_backward_on_meta_tensors():
    # torch registers a fake (meta) kernel and a backward for varlen_attn: the whole CUDA code
    # path minus the arithmetic runs here.
    packing = to_meta(Packing.from_mask(prefix_mask(LENGTHS)))
    q = torch.randn(17, 2, 8, dtype=torch.bfloat16, device="meta", requires_grad=True)
    out = packed_attention(q, q, q, packing, path="varlen")
    assert out.shape == (17, 2, 8) and out.dtype == torch.bfloat16
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_compiled_varlen_path_does_not_recompile_per_batch():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()

    def attend(x, packing):
        return packed_attention(x, x, x, packing, path="varlen").sum()

    compiled = torch.compile(attend, backend=counter, dynamic=True)
    for lengths in [(3, 5, 2), (4, 4, 4), (6, 1, 2), (2, 2, 7)]:
        packing = to_meta(Packing.from_mask(prefix_mask(lengths, slots=9)))
        compiled(torch.randn(sum(lengths), 2, 8, dtype=torch.bfloat16, device="meta"), packing)
    assert counter.frame_count == 1
