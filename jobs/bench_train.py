"""`mgtc bench train`: end-to-end training and eval throughput, all tokens vs MGTC (issue 4).

One run of this command trains the same synthetic data with the same seeds three times through
the real pipeline (synthetic videos -> precompute shards -> Ray Data clip stream in a CPU
decode actor -> Ray Train worker, CPU), with all tokens, MGTC 25% and MGTC 50%, then evaluates
each final checkpoint on the test views (Ray Data model actor). Train clips/s is the last
epoch's (the first warms up), wall clock including data loading; the share of that epoch the
trainer waited for its next batch says whether data loading eats the saving. The data path is
also timed alone (clips/s of the clip stream with no trainer).

Writes a markdown table into docs/BENCHMARKS.md under `## End-to-end training (issue 4)`,
replacing that section only.

    mgtc bench train                           # ViT-S, 16x112, batch 4, 2 epochs
    mgtc bench train --model tiny --videos-per-class 4 --no-write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench.train import markdown_table, reading, run, section_of, section_text

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/bench_train", help="data, shards, checkpoints, MLflow store")
    parser.add_argument("--model", default="small", choices=("tiny", "small", "base"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--sampling-rate", type=int, default=2)
    parser.add_argument("--size", type=int, default=112, help="frame side = input size (px)")
    parser.add_argument("--source", default="synth", choices=("synth", "340x256", "426x320"),
                        help="synthetic square videos of --size, or K400-like videos of this size (issue 12)")
    parser.add_argument("--prepared", action="store_true",
                        help="train on `mgtc prepare` copies of the K400-like videos (short side = decode "
                             "short side, keyframe every 16, stride = --sampling-rate)")
    parser.add_argument("--mode", default="finetune", choices=("finetune", "pretrain"),
                        help="optim.mode; pretrain (MAE) skips the eval columns")
    parser.add_argument("--short-side", type=int, default=0, help="decode short side (default: --size)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--num-sample", type=int, default=2,
                        help="clips per decoded video (data.num_sample; VideoMAE fine-tunes with 2)")
    parser.add_argument("--videos-per-class", type=int, default=8, help="8 classes; 75%% train, 25%% test")
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three runs, interleaved; medians")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from pipeline.vocab import ray_session

    with ray_session():
        rows, alone, load = run(args)
    section = section_text(markdown_table(rows, 0.8 if args.source == "synth" else 0.9), args, argv, alone, load, reading(rows))
    print(section)
    if not args.no_write:
        write_section(args.output, section)
        print(f"wrote {section_of(args)!r} in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
