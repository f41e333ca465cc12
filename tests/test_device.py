"""The GPU execution path, as far as a CPU can check it: every GPU setting is a no-op on CPU
and the right request on CUDA; compiled blocks train like eager ones; losses stay fp32 under
bf16 autocast; a training step reads the device back to the host at most once (packing)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pipeline.bench.gpu import HostReads
from pipeline.config import replace
from pipeline.device import compile_blocks, compile_dynamic, configure_matmul, fused_optimizer, maybe_compile, pin_batches
from pipeline.layers import VideoMAEBlock
from pipeline.model import build_model, build_pretrain_model
from pipeline.modeling import make_model
from pipeline.motion import token_scores
from pipeline.training import EpochCounters, make_optimizer, make_recipe, select_train
from tests.helpers.configs import tiny_config

TINY = ["data.shards=shards", "data.num_classes=4", "data.num_frames=8", "optim.batch_size=4"]


def tiny_cfg(*overrides: str):
    return tiny_config(*TINY, *overrides)


def test_gpu_settings_default_on_and_do_nothing_on_cpu():
    cfg = tiny_cfg()
    s = cfg.scaling
    assert (s.precision, s.tf32, s.pin_memory, cfg.model.compile, cfg.optim.fused) == ("bf16", True, True, True, True)
    assert fused_optimizer(cfg, "cpu") == {} and fused_optimizer(cfg, "cuda") == {"fused": True}
    assert not pin_batches(cfg, "cpu") and pin_batches(cfg, "cuda")
    off = replace(cfg, ["optim.fused=false", "scaling.pin_memory=false"])
    assert fused_optimizer(off, "cuda") == {} and not pin_batches(off, "cuda")
    before = torch.get_float32_matmul_precision()
    configure_matmul(cfg, "cpu")
    assert torch.get_float32_matmul_precision() == before
    model = make_model(cfg)
    assert not maybe_compile(cfg, model, torch.device("cpu"))
    optimizer = make_optimizer(cfg, model, world_size=1, device="cpu")
    assert not optimizer.defaults.get("fused")
    assert compile_dynamic(replace(cfg, ["masking.strategy=mgtc_threshold", "masking.tau=0.1"]))
    assert not compile_dynamic(cfg)


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters()]


def test_compiled_blocks_train_one_step_like_eager_and_keep_their_keys():
    torch.manual_seed(0)
    eager = build_model("tiny", 4, num_frames=4, img_size=32, head_init_scale=1.0).train()
    compiled = copy.deepcopy(eager)
    # aot_eager: dynamo + AOT autograd exactly as on a GPU; inductor's CPU code generation
    # takes minutes here (`mgtc bench gpu` runs inductor on the GPU).
    assert compile_blocks(compiled, dynamic=False, backend="aot_eager") == 4
    x = torch.randn(2, 3, 4, 32, 32)
    ids = torch.tensor([[0, 2, 3, 5, 6, 7], [1, 2, 3, 4, 6, 7]])
    for model in (eager, compiled):
        model(x, ids).square().sum().backward()
    for a, b in zip(_grads(compiled), _grads(eager)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert compiled.state_dict().keys() == eager.state_dict().keys()


def test_losses_are_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 32, 32)
    model = build_model("tiny", 4, num_frames=4, img_size=32)
    pretrain = build_pretrain_model("tiny", num_frames=4, img_size=32)
    visible = torch.tensor([[0, 3, 5], [1, 2, 6]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss, pred, _ = pretrain(x, visible)
    assert logits.dtype == torch.bfloat16 and pred.dtype == torch.bfloat16  # autocast was on
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("strategy, extra, reads", [
    ("none", [], 0),
    ("mgtc_ratio", ["masking.ratio=0.5"], 0),
    ("random", ["masking.ratio=0.5"], 0),
    ("mgtc_threshold", ["masking.tau=0.02"], 1),  # the packing lengths
])
def test_a_training_step_reads_the_device_at_most_once(strategy, extra, reads):
    from pipeline.clips import to_model_inputs

    cfg = tiny_cfg(f"masking.strategy={strategy}", "data.reprob=0.25", "data.mixup=0.8", "data.cutmix=1.0", *extra)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (4, 8, 32, 32, 3), dtype=np.uint8)
    batch = {"pixels": torch.from_numpy(pixels), "label": torch.arange(4),
             "scores": torch.from_numpy(np.stack([token_scores(p, 2, 16) for p in pixels]))}
    model = make_model(cfg).train()
    recipe = make_recipe(cfg, 0.02 if strategy == "mgtc_threshold" else None, torch.device("cpu"), rank=0)
    counters = EpochCounters(recipe)
    # The step of `train_epoch` minus the optimizer (fused AdamW keeps its step count on the GPU).
    with HostReads() as mode:
        x, scores, labels = to_model_inputs(batch, torch.device("cpu"))
        sel = select_train(recipe, scores)
        loss, encoded = recipe.loss(model, recipe, x, sel, labels)
        loss.backward()
        counters.add(loss, sel.lengths, encoded)
    # HostReads (the benchmark's counter) also counts `.tolist()`, which bypasses the dispatcher.
    assert mode.ops == ["Tensor.tolist"] * reads, mode.ops
    assert counters.reduce()["gflops_per_view"] > 0


def test_blocks_are_the_compiled_unit():
    model = build_pretrain_model("tiny", num_frames=4, img_size=32)
    blocks = [m for m in model.modules() if isinstance(m, VideoMAEBlock)]
    assert compile_blocks(model, dynamic=False, backend="eager") == len(blocks) == 4 + 4  # encoder + decoder
