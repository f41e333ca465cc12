"""`mgtc bench encoder`: encoder forward+backward wall-clock vs kept tokens (issue 2).

Times one training step of the classifier (motion scores + token selection + forward +
cross-entropy + backward; no optimizer step) for:
- all tokens (no scores, no selection: the plain VideoMAE baseline),
- `mgtc_ratio` at keep ratios 0.75 / 0.5 / 0.25 (fixed length per clip),
- `mgtc_threshold` with a fixed tau on clips whose moving area differs, so every clip keeps a
  different number of tokens; run packed (the model's default) and padded to the batch max
  (key-padding mask) to measure what padding costs.
Every case runs once per round, round-robin, after a warm-up round, and reports the median,
so a change of machine load affects all cases alike. Writes a markdown table into
docs/BENCHMARKS.md under `## Encoder forward+backward (issue 2)`, replacing that section
only.

    mgtc bench encoder                    # ViT-S, 16x224, batch 4
    mgtc bench encoder --model tiny --frames 8 --iters 2 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench.encoder import SECTION, Conditions, cpu_share, markdown_table, run, section_text
from pipeline.flops import encoder_shape
from pipeline.model import VIT_SIZES

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def _keep_ratio(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"keep ratio {text} must be in (0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench encoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(VIT_SIZES), default="small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--keep-ratios", type=_keep_ratio, nargs="+", default=[0.75, 0.5, 0.25])
    parser.add_argument("--tau", type=float, default=0.05,
                        help="mgtc_threshold tau on [0, 1] pixels (mean |diff| per token)")
    parser.add_argument("--iters", type=int, default=3, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-wait", type=float, default=90.0,
                        help="seconds, in all, to wait for other jobs on the machine to pause")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 2:
        parser.error("--iters must be >= 1, --warmup >= 0 and --batch >= 2")
    try:
        encoder_shape(args.model, num_frames=args.frames, img_size=args.input_size)
    except ValueError as err:
        parser.error(f"{err} (set by --frames / --input-size)")
    load_before = os.getloadavg()[0]
    results, waited = run(args)
    conditions = Conditions(load_before, os.getloadavg()[0], waited,
                            cpu_share(results, args.threads))
    table = markdown_table(results, args)
    print(table)
    print(conditions)
    if not args.no_write:
        section = section_text(table, args, argv, conditions)
        write_section(args.output, section)
        print(f"wrote {SECTION!r} to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
