"""`mgtc bench predict`: batch-inference clips/s at 1.0 / 0.75 / 0.5 of the tokens kept.

On Kinetics-400-size videos (10 s, 30 fps, 426x320 H.264, x264 defaults: the synthetic
renderer's moving objects) and a ViT (small by default, random weights: speed does not
depend on them), 16 frames x stride 4 at 224 px, one view per video. For each kept ratio,
side by side in one run, in rounds:
- model only: the model actor's work (token selection + encoder + head) on views decoded
  beforehand, one thread (what one model actor gets), clips/s of CPU time;
- decode only: the decode actor's work (`ClipMaker`: decode, crop, motion scores), clips/s
  of CPU time (the same at every ratio: measured once);
- end to end: `mgtc predict --manifest` (Ray Data: 1 decode actor -> 1 model actor, Parquet
  parts), clips/s of wall time after Ray is up (actor start-up included).
Ratios are paired within a round (this VM's speed drifts minute to minute). MGTC here is
`mgtc_ratio` at masking ratio 1 - kept. Writes its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import raylog
from pipeline.bench.predict import measure, section_text, table, where_time_goes
from pipeline.progress import set_verbose

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12, help="videos per end-to-end run (default 12)")
    parser.add_argument("--model-views", type=int, default=6, help="views timed per model-only case")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="small", help="model size (default small)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=426)
    parser.add_argument("--work", default="", help="folder for videos and outputs (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/BENCHMARKS.md")
    raylog.add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    rows, info = measure(args)
    info["rows"] = rows
    text = table(rows)
    print(text)
    print(where_time_goes(rows))
    if not args.no_write:
        from jobs.bench import write_section

        write_section(DEFAULT_OUTPUT, section_text(text, info, args, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
