"""`mgtc bench gpu`: the GPU path's checks and speeds in one command (issue 17).

Sized for <= 8 minutes on one H100 / H200 from a bare checkout (`pip install -e .`; nothing
is downloaded: models are randomly initialised, inputs synthetic). Checks, in order:
1. CUDA visible (device, capability, torch / CUDA versions),
2. fp32 vs bf16-autocast logits of ViT-B 16x224 (relative L2 error <= 3%, top-1 agreement),
3. the varlen attention kernel vs the per-clip SDPA loop on packed ViT-B clips: outputs and
   q / k / v gradients (relative L2 <= 1%), and their time per layer,
4. host syncs in one real training step (torch.cuda sync debug mode): 0 for fixed-length
   strategies, <= 1 (the packing lengths) for mgtc_threshold,
5. one Ray Train step on one worker with NCCL (the project's model, selection, loss, fused
   AdamW, an all-reduce),
6. forward+backward clips/s and MFU of ViT-B 16x224 at batch 32: all tokens, MGTC 25%,
   MGTC 50%, threshold (variable lengths around 50% kept) packed and padded; eager, then
   compiled (`torch.compile` of the blocks, as `model.compile`),
7. decoding clips/s: decord on the CPU, torchcodec's CUDA decoder when installed.
Every check reports its own row; one that fails or raises becomes a FAIL / error row and the
rest still run. Prints one table and writes it to docs/BENCHMARKS.md (section
`## GPU path (issue 17)`). Exit status 1 when a check failed or raised, else 0 (missed speed
targets are reported, not failures).

    mgtc bench gpu                      # on a GPU machine (also: make gpu-check)
    mgtc bench gpu --dry-run            # CPU smoke test: tiny model, every code path, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from jobs.bench import write_section
from pipeline.bench.gpu import (
    CHECKS,
    COMPILE_ESTIMATE_S,
    SECTION,
    Plan,
    Row,
    Skip,
    check_cuda,
    check_decode,
    check_precision,
    check_ray,
    check_syncs,
    check_varlen,
    markdown_table,
    one_line,
    section_text,
)
from pipeline.bench.gpu_speed import check_speed

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"

RUNNERS: dict[str, tuple[str, Callable[[Plan], list[Row]]]] = {
    "cuda": ("CUDA visible", check_cuda),
    "precision": ("fp32 vs bf16 logits", check_precision),
    "varlen": ("varlen kernel vs per-clip loop", check_varlen),
    "syncs": ("host syncs per training step", check_syncs),
    "ray": ("Ray Train step", check_ray),
    "speed": ("fwd+bwd throughput", check_speed),
    "decode": ("decoding", check_decode),
}


def run_checks(plan: Plan, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        title, runner = RUNNERS[name]
        start = time.perf_counter()
        try:
            rows += runner(plan)
        except Skip as why:
            rows.append(Row(title, "", status="skipped", note=str(why)))
        except Exception as err:  # one check's failure must not end the benchmark
            traceback.print_exc(file=sys.stderr)
            rows.append(Row(title, "", status="error", note=one_line(err)))
        finally:
            if plan.cuda:
                torch.cuda.empty_cache()
        print(f"[bench gpu] {name}: {time.perf_counter() - start:.1f} s (total {plan.elapsed():.0f} s)",
              file=sys.stderr, flush=True)
    return rows



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke test: tiny model, 4x32 clips, batch 4, 1 step; writes only with --output")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (same as --dry-run)")
    parser.add_argument("--model", default=None, help="ViT size (default base; tiny with --dry-run)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per case (compiling ones included)")
    parser.add_argument("--skip", nargs="+", choices=CHECKS, default=[], help="checks not to run")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help=f"compiled speed cases start only while elapsed + {COMPILE_ESTIMATE_S:.0f} s "
                             "is under this (seconds since start)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown file (default {DEFAULT_OUTPUT.name})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    cpu = args.dry_run or args.device == "cpu"
    if cpu:
        defaults = dict(model="tiny", frames=4, size=32, batch=4, iters=1, warmup=0)
    else:
        defaults = dict(model="base", frames=16, size=224, batch=32, iters=10, warmup=3)
    pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    device = torch.device("cpu") if cpu else torch.device(args.device or "cuda")
    if device.type == "cuda" and device.index is None:  # set_device / events want an index
        device = torch.device("cuda", torch.cuda.current_device())
    return Plan(device=device, compile_backend="aot_eager" if cpu else "inductor",
                budget_s=args.budget_s, peak_tflops=args.peak_tflops, **pick)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cpu = args.dry_run or args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        print("mgtc bench gpu: no CUDA device visible (torch.cuda.is_available() is False); run it on a "
              "GPU machine, or `mgtc bench gpu --dry-run` for the CPU smoke test", file=sys.stderr)
        return 2
    plan = make_plan(args)
    if plan.cuda:
        torch.cuda.set_device(plan.device)
    names = [c for c in CHECKS if c not in args.skip]
    rows = run_checks(plan, names)
    table = markdown_table(rows)
    print(table)
    output = args.output or (None if cpu else DEFAULT_OUTPUT)
    if output is not None and not args.no_write:
        write_section(output, section_text(table, plan, argv))
        print(f"wrote {SECTION!r} to {output}")
    return 1 if any(r.status in ("FAIL", "error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
