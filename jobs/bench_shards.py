"""`mgtc bench shards`: CPU time to read one video's shard row, per layout, at Kinetics size.

Writes a markdown table into docs/BENCHMARKS.md under `## Shard-row reads (issue 12)`.
Parts hold 32 videos x sampling rates 2 and 4 (the precompute defaults), rows made from a
scored K400-like video (10 s, 30 fps, 320x426, H.264 with x264's defaults; generated once in
--work-dir) at short side 224 (the training configs) and 320 (`mgtc prepare`'s default),
each video's maps shifted in time and given +-1 jitter so that no two rows compress alike.
A read = the row of one random (part, video) at rate 4, as the training actor asks for it
(`shard_rows.RowReader`, or the filtered Parquet read of the layout before row files); one
row serves the `num_sample` clips of a decoded video (2 in the K400 recipes). Rounds of all
cases are interleaved; CPU time (process), medians over rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench.shards import SECTION, measure, reading, section_text, size_notes, table

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=4, help="parts per layout")
    parser.add_argument("--part-size", type=int, default=32, help="videos per part")
    parser.add_argument("--reads", type=int, default=48, help="row reads per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short-sides", type=int, nargs="+", default=[224, 320])
    parser.add_argument("--num-sample", type=int, default=2, help="clips per decoded video (per-clip column)")
    parser.add_argument("--work-dir", default="runs/bench_shards")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rows, _ = measure(args)
    body = table(rows, args.num_sample)
    print(body)
    print("\n".join(size_notes(rows)))
    print(reading(rows, args.num_sample))
    if not args.no_write:
        out = Path(args.output)
        write_section(out, section_text(body, rows, argv, args.num_sample))
        print(f"updated {out} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
