"""`mgtc bench encoder`'s measurement (issue 2): one training step of the classifier (motion
scores + token selection + forward + cross-entropy + backward; no optimizer step) per case,
cases interleaved round by round, on synthetic clips whose moving area is known
(`moving_clips`); the markdown table and section of docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.bench.machine import bench_command, cpu_model, utc_now, wait_for_quiet
from pipeline.flops import encoder_macs, encoder_shape
from pipeline.model import build_model
from pipeline.motion import token_scores_torch
from pipeline.packing import token_counts
from pipeline.selection import select_tokens
from pipeline.vocab import IMAGENET_MEAN, IMAGENET_STD

SECTION = "## Encoder forward+backward (issue 2)"
MOVING = (0.3, 0.8)  # moving share of the width, first to last clip of the threshold batch


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration."""

    label: str
    strategy: str  # "none" = no scores, no selection
    keep_ratio: float | None = None  # mgtc_ratio
    varlen: str = "packed"  # mgtc_threshold execution


@dataclass
class Result:
    case: Case
    kept: list[int]  # real tokens per clip
    processed: int  # tokens computed by the encoder for the batch, padding included
    step_ms: list[float]  # wall clock
    cpu_ms: list[float]  # this process's CPU time, all threads: robust to other tenants
    select_ms: list[float]


def moving_clips(
    batch: int, frames: int, size: int, moving_fractions: list[float], seed: int = 0
) -> torch.Tensor:
    """Synthetic clips in [0, 1], [B, 3, T, S, S]: a static smooth texture with sensor noise
    (sigma 0.01), and in clip b a band of the left `moving_fractions[b]` of the width where a
    second texture pans 4 px per frame. More band = more tokens above a motion threshold."""
    gen = torch.Generator().manual_seed(seed)

    def texture(width: int) -> torch.Tensor:
        coarse = torch.rand(batch, 3, size // 8, width // 8, generator=gen)
        return F.interpolate(coarse, size=(size, width), mode="bilinear", align_corners=False)

    speed = 4
    background = texture(size)[:, :, None].expand(-1, -1, frames, -1, -1).clone()
    panning = texture(size + speed * frames)
    for b, fraction in enumerate(moving_fractions):
        width = round(fraction * size)
        for t in range(frames):
            background[b, :, t, :, :width] = panning[b, :, :, speed * t : speed * t + width]
    noise = 0.01 * torch.randn(background.shape, generator=gen)
    return (background + noise).clamp(0, 1)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [0, 1] -> ImageNet-normalised model input."""
    mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (pixels - mean) / std


def train_step(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    case: Case,
    tau: float,
) -> tuple[float, float, float, list[int], int]:
    """One measured step; returns (wall ms, CPU ms, scores+selection wall ms, kept tokens
    per clip, tokens processed)."""
    model.zero_grad(set_to_none=True)
    model.varlen = case.varlen
    cpu_start = time.process_time()
    start = time.perf_counter()
    ids_keep = keep_mask = None
    if case.strategy != "none":
        patch = model.patch_embed.patch_size
        scores = token_scores_torch(pixels, tubelet=model.patch_embed.tubelet_size, patch=patch)
        ratio = 0.0 if case.keep_ratio is None else 1.0 - case.keep_ratio
        selection = select_tokens(case.strategy, scores=scores, ratio=ratio, tau=tau)
        ids_keep, keep_mask = selection.ids_keep, selection.keep_mask
    selected = time.perf_counter()
    F.cross_entropy(model(x, ids_keep, keep_mask), labels).backward()
    end = time.perf_counter()
    cpu_ms = (time.process_time() - cpu_start) * 1e3

    batch = x.shape[0]
    seq_len = model.num_patches if ids_keep is None else ids_keep.shape[1]
    if keep_mask is None:
        kept = [seq_len] * batch
    else:
        kept = keep_mask.sum(1).tolist()
    processed = token_counts(keep_mask, batch, seq_len, case.varlen).processed
    return (end - start) * 1e3, cpu_ms, (selected - start) * 1e3, kept, processed


@dataclass(frozen=True)
class Conditions:
    """How undisturbed the measurement was."""

    load_before: float
    load_after: float
    waited_s: float
    cpu_share: float


def run(args: argparse.Namespace) -> tuple[list[Result], float]:
    """All cases, interleaved; returns the results and the seconds waited for quiet."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, 400, num_frames=args.frames, img_size=args.input_size).train()
    ratio_pixels = moving_clips(args.batch, args.frames, args.input_size, [0.5] * args.batch)
    fractions = torch.linspace(*MOVING, args.batch).tolist()
    threshold_pixels = moving_clips(args.batch, args.frames, args.input_size, fractions, seed=1)
    labels = torch.randint(0, 400, (args.batch,))
    cases = [Case("all tokens", "none")]
    cases += [Case("mgtc_ratio", "mgtc_ratio", keep) for keep in args.keep_ratios if keep < 1]
    cases += [Case("mgtc_threshold", "mgtc_threshold", varlen="packed"),
              Case("mgtc_threshold, padded", "mgtc_threshold", varlen="padded")]
    inputs = {"mgtc_threshold": threshold_pixels}
    results = {case: Result(case, [], 0, [], [], []) for case in cases}
    waited = 0.0
    for round_ in range(args.warmup + args.iters):
        for case in cases:
            if round_ >= args.warmup:
                waited += wait_for_quiet(max(args.max_wait - waited, 0.0))
            pixels = inputs.get(case.strategy, ratio_pixels)
            step, cpu, select, kept, processed = train_step(
                model, pixels, normalize(pixels), labels, case, args.tau
            )
            result = results[case]
            result.kept, result.processed = kept, processed
            if round_ >= args.warmup:
                result.step_ms.append(step)
                result.cpu_ms.append(cpu)
                result.select_ms.append(select)
            print(f"round {round_} {case.label:<24} keep={case.keep_ratio} "
                  f"{step:8.0f} ms", file=sys.stderr, flush=True)
    return list(results.values()), waited


def cpu_share(results: list[Result], threads: int) -> float:
    """Median over measured steps of CPU time / (wall time x threads): ~1 when the process
    had its cores to itself, lower when other tenants took them."""
    shares = [c / (w * threads) for r in results for c, w in zip(r.cpu_ms, r.step_ms)]
    return statistics.median(shares)


def markdown_table(results: list[Result], args: argparse.Namespace) -> str:
    shape = encoder_shape(args.model, num_frames=args.frames, img_size=args.input_size)
    base = results[0]
    base_ms = statistics.median(base.step_ms)
    base_cpu = statistics.median(base.cpu_ms)
    base_gmacs = encoder_macs(shape.num_tokens, shape) / 1e9
    header = ("| strategy | keep ratio | kept tokens / clip | processed / kept | GFLOPs/view "
              "| ms/iter | select ms | measured speedup | FLOPs-ideal speedup | measured / ideal "
              "| CPU-time speedup |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        gmacs = sum(encoder_macs(n, shape) for n in r.kept) / len(r.kept) / 1e9
        ms = statistics.median(r.step_ms)
        measured, ideal = base_ms / ms, base_gmacs / gmacs
        keep = sum(r.kept) / len(r.kept) / shape.num_tokens
        kept_text = (f"{min(r.kept)}" if min(r.kept) == max(r.kept)
                     else f"{sum(r.kept) / len(r.kept):.0f} ({min(r.kept)}-{max(r.kept)})")
        select_ms = statistics.median(r.select_ms)
        lines.append(
            f"| {r.case.label} | {keep:.2f} | {kept_text} | {r.processed / sum(r.kept):.2f} "
            f"| {gmacs:.1f} | {ms:.0f} | {select_ms:.0f} | {measured:.2f}x | {ideal:.2f}x "
            f"| {measured / ideal:.2f} | {base_cpu / statistics.median(r.cpu_ms):.2f}x |"
        )
    return "\n".join(lines)


def contention_warning(share: float, threshold: float = 0.8) -> list[str]:
    """A warning paragraph when other jobs took the cores during the measured steps."""
    if share >= threshold:
        return []
    return [
        f"**Measured while other jobs used these cores** (CPU share {share:.2f} < "
        f"{threshold}): the wall-clock columns (ms/iter, measured speedup, measured / ideal) "
        "mostly measure those jobs. The CPU-time speedup is the better guide here; re-run "
        "on an idle machine for wall-clock numbers.",
        "",
    ]


def section_text(
    table: str, args: argparse.Namespace, argv: list[str], conditions: Conditions
) -> str:
    command = bench_command("encoder", argv)
    date = utc_now()
    return "\n".join([
        SECTION,
        "",
        f"ViT-{args.model}, {args.frames}x{args.input_size}x{args.input_size}, batch "
        f"{args.batch}, fp32, one training step = motion scores + selection + forward + "
        "cross-entropy + backward (no optimizer step). Median of "
        f"{args.iters} rounds after {args.warmup} warm-up round(s), cases interleaved.",
        "",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, {args.threads} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}",
        f"- load average before / after: {conditions.load_before:.1f} / "
        f"{conditions.load_after:.1f}; waited {conditions.waited_s:.0f} s for other jobs to "
        f"pause (budget {args.max_wait:.0f} s); median CPU share of this process during "
        f"measured steps: {conditions.cpu_share:.2f} (1.0 = all {args.threads} threads ran "
        "all the time)",
        f"- date: {date}",
        f"- command: `{command}`",
        "",
        *contention_warning(conditions.cpu_share),
        table,
        "",
        "GFLOPs/view are encoder multiply-adds per clip (VideoMAE's convention; real FLOPs "
        "are twice that), from the real kept-token count of each clip, averaged over clips; "
        "the tubelet embedding runs on all tokens. FLOPs-ideal speedup = GFLOPs(all) / "
        "GFLOPs(case); measured speedup is from the median wall clock. CPU-time speedup uses "
        "the process's CPU time (all threads) instead: a cross-check that other tenants of "
        "the machine do not distort as much. 'select ms' is the motion-score + selection "
        f"time, included in ms/iter. mgtc_threshold: tau={args.tau} on clips whose panning "
        f"band covers {MOVING[0]:.0%}-{MOVING[1]:.0%} of the width; 'processed / kept' counts "
        "the tokens the encoder computes, padding included (packed: none; padded: every row "
        "padded to the batch's longest).",
        "",
    ])
