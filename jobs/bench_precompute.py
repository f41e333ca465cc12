"""`mgtc bench precompute`: decode-only vs decode+score vs the full Ray job, same videos.

Writes a markdown table into docs/BENCHMARKS.md under `## Precompute (issue 3)`, replacing
that section only. All measurements decode the same files with the same settings
(sampling rates 2 and 4 -> decoded once at stride 2, resized at decode time to short side
224, the job's chunked `get_batch`):
- decode only: `video.probe` + `video.open_reader` + chunked `get_batch`, no scores, in P
  worker processes (P = 1, 2); with --sequential also `next()`/`skip_frames()` decoding at
  P = 1 (the alternative to `get_batch`);
- decode + score: `precompute.score_video` (what the job's decoder process runs), P = 1, 2;
- full job: `precompute.run_precompute` on a running Ray (ray.init not counted), 1 and 2
  actors: manifest, actor pool, decoder processes, Parquet + marker commits.
frames/s counts decoded frames (the stride-2 sequence), the same number in every row.
Videos: synthetic (pipeline.synth: textured background, sensor noise, a moving object),
`--unique` distinct files at 320x426 (Kinetics-400 is stored at short side 320) copied to
`--videos` files, cached in --work-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench.precompute import SECTION, measure, section_text, table

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench precompute", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=256,
                        help="video files in the run (enough that the job's ~5 s start-up is amortised)")
    parser.add_argument("--unique", type=int, default=4, help="distinct synthetic videos (copied)")
    parser.add_argument("--frames", type=int, default=200, help="source frames per video (25 fps)")
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=426)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--sampling-rates", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--part-size", type=int, default=None, help="videos per part (default: the job's)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of all cases; medians are reported, ratios paired within a round")
    parser.add_argument("--sequential", action="store_true",
                        help="also time sequential next()/skip_frames() decoding (the alternative to get_batch)")
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine")
    parser.add_argument("--work-dir", default="runs/bench_precompute", help="videos cache + job outputs")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rows, info = measure(args)
    body = table(rows)
    print(body)
    print(f"scoring adds {100 * info['score_share']:.1f}% (wall), {100 * info['score_cpu_share']:.1f}% (CPU) "
          f"to decode time; load {info['load_before']:.1f} -> "
          f"{info['load_after']:.1f}")
    if not args.no_write:
        out = Path(args.output)
        write_section(out, section_text(body, info, args, argv))
        print(f"updated {out} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
