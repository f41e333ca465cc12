"""Check 6 of `mgtc bench gpu`: forward+backward clips/s and MFU of the encoder on all
tokens, MGTC 25% / 50% and variable-length threshold clips (packed and padded), eager and
compiled, and the issue's speed targets read off the compiled rows."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.bench.gpu import (
    COMPILE_ESTIMATE_S,
    TARGETS,
    Plan,
    Row,
    autocast,
    build,
    low_precision,
    num_tokens,
    one_line,
    peak_tflops,
    threshold_lengths,
    timed_ms,
)

# ------------------------------------------------------------------------------ 6


@dataclass(frozen=True)
class Case:
    label: str
    lengths: list[int] | None  # kept tokens per clip; None = all tokens
    varlen: str = "packed"

    @property
    def variable(self) -> bool:
        return self.lengths is not None and len(set(self.lengths)) > 1


def speed_cases(plan: Plan) -> list[Case]:
    from pipeline.selection import num_kept

    n, b = num_tokens(plan), plan.batch
    varying = threshold_lengths(n, b)
    return [
        Case("all tokens", None),
        Case("MGTC 25%", [num_kept(n, 0.25)] * b),
        Case("MGTC 50%", [num_kept(n, 0.5)] * b),
        Case("threshold, packed", varying),
        Case("threshold, padded", varying, varlen="padded"),
    ]


def case_inputs(case: Case, plan: Plan) -> tuple[torch.Tensor, ...]:
    """x [B, 3, T, S, S], ids_keep [B, K] (random subsets, ascending) or None, keep_mask or
    None, labels [B], on the device."""
    gen = torch.Generator().manual_seed(1)
    n = num_tokens(plan)
    x = torch.randn(plan.batch, 3, plan.frames, plan.size, plan.size, generator=gen)
    labels = torch.randint(0, 400, (plan.batch,), generator=gen)
    ids = mask = None
    if case.lengths is not None:
        k = max(case.lengths)
        order = torch.rand(plan.batch, n, generator=gen).argsort(1)
        rows = [order[b, :length].sort().values for b, length in enumerate(case.lengths)]
        ids = torch.stack([F.pad(r, (0, k - len(r))) for r in rows])
        if case.variable:
            mask = torch.arange(k)[None] < torch.tensor(case.lengths)[:, None]
    move = (lambda t: None if t is None else t.to(plan.device))
    return move(x), move(ids), move(mask), move(labels)


def measure(model: torch.nn.Module, case: Case, plan: Plan, compiled: bool = False) -> float:
    """Median ms of forward + cross-entropy + backward under bf16 autocast (fp32 on CPU);
    a compiled model gets at least one untimed call (it compiles there)."""
    x, ids, mask, labels = case_inputs(case, plan)
    model.varlen = case.varlen

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(plan, enabled=plan.cuda):
            logits = model(x, ids, mask)
        F.cross_entropy(logits.float(), labels).backward()

    return timed_ms(step, plan, warmup=max(plan.warmup, 1) if compiled else plan.warmup)


def check_speed(plan: Plan) -> list[Row]:
    from pipeline.device import compile_blocks
    from pipeline.flops import encoder_macs, encoder_shape

    shape = encoder_shape(plan.model, num_frames=plan.frames, img_size=plan.size)
    peak = plan.peak_tflops or (peak_tflops(torch.cuda.get_device_name(plan.device)) if plan.cuda else None)
    model = build(plan).train()
    cases = speed_cases(plan)
    results: dict[tuple[str, str], float] = {}
    rows = []
    precision = str(low_precision(plan))[6:]
    # Compiled cases in the order the targets need them (the budget may cut the last ones);
    # the CPU smoke test compiles one case: compilation there takes seconds per case.
    by_label = {c.label: c for c in cases}
    compiled = [by_label[k] for k in ("all tokens", "MGTC 50%", "threshold, packed", "MGTC 25%", "threshold, padded")]
    for mode in ("eager", "compiled"):
        for case in cases if mode == "eager" else compiled if plan.cuda else compiled[:1]:
            setting = f"ViT-{plan.model} {plan.frames}x{plan.size}, batch {plan.batch}, {precision}, {mode}"
            lengths = case.lengths or [shape.num_tokens] * plan.batch
            flops = 6 * sum(encoder_macs(n, shape) for n in lengths)  # fwd + bwd = 3x fwd, FLOP = 2 MAC
            label = f"fwd+bwd: {case.label}"
            if mode == "compiled" and plan.elapsed() + COMPILE_ESTIMATE_S > plan.budget_s:
                rows.append(Row(label, setting, status="skipped", note=f"time budget (--budget-s {plan.budget_s:.0f})"))
                continue
            try:
                runner = model
                if mode == "compiled":
                    torch._dynamo.reset()
                    runner = copy.deepcopy(model)
                    compile_blocks(runner, dynamic=case.variable, backend=plan.compile_backend)
                ms = measure(runner, case, plan, compiled=mode == "compiled")
            except Exception as err:  # one case's failure must not end the benchmark
                rows.append(Row(label, setting, status="error", note=one_line(err)))
                continue
            finally:
                if plan.cuda:
                    torch.cuda.empty_cache()
            results[(mode, case.label)] = ms
            tflops = flops / (ms / 1e3) / 1e12
            mfu = f", MFU {tflops / peak:.1%}" if peak else ""
            base = results.get((mode, "all tokens"))
            speedup = f", {base / ms:.2f}x all tokens" if base else ""
            rows.append(Row(label, setting,
                            f"{plan.batch / (ms / 1e3):.1f} clips/s, {ms:.1f} ms{mfu}{speedup}",
                            note=f"{sum(lengths) / len(lengths):.0f} tokens/clip, {tflops:.1f} TFLOP/s model"))
    rows += speed_targets(results, plan, shape, peak)
    return rows


def speed_targets(results: dict, plan: Plan, shape, peak: float | None) -> list[Row]:
    """The issue's targets, read off the compiled rows."""
    from pipeline.flops import encoder_macs

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    rows = []
    all_ms = results.get(("compiled", "all tokens"))
    if all_ms and peak:
        mfu = 6 * encoder_macs(shape.num_tokens, shape) * plan.batch / (all_ms / 1e3) / 1e12 / peak
        rows.append(Row("target: MFU", "all tokens, bf16, compiled", f"{mfu:.1%}",
                        f">= {TARGETS['mfu']:.0%}", verdict(mfu >= TARGETS["mfu"]), f"peak {peak:.0f} TFLOP/s"))
    half_ms = results.get(("compiled", "MGTC 50%"))
    if all_ms and half_ms:
        speedup = all_ms / half_ms
        rows.append(Row("target: MGTC 50% step", "vs all tokens, compiled", f"{speedup:.2f}x",
                        f">= {TARGETS['mgtc50_speedup']}x", verdict(speedup >= TARGETS["mgtc50_speedup"])))
    packed_ms = results.get(("compiled", "threshold, packed"))
    if packed_ms and half_ms:
        ratio = packed_ms / half_ms
        rows.append(Row("target: packed threshold", "vs MGTC 50% (same kept count), compiled", f"{ratio:.2f}x time",
                        f"<= {TARGETS['packed_vs_ratio']:.2f}x", verdict(ratio <= TARGETS["packed_vs_ratio"])))
    return rows
