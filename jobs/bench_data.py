"""`mgtc bench data`: CPU-ms and wall-ms per training clip of the data path, broken down by
step, for source vs prepared videos, per decoder and per `data.augment_on`, with today's path
as the "before" column (pipeline/bench/data.py); writes its section of docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench import data
from pipeline.bench.machine import bench_command, utc_now

SECTION = "## Data path per training clip (mgtc bench data)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgtc bench data", description=__doc__)
    p.add_argument("--work", default="runs/bench_data", help="where the generated videos are kept")
    p.add_argument("--videos", type=int, default=1, help="videos per source size")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all cases")
    p.add_argument("--calls", type=int, default=2, help="decoded windows per video and round")
    p.add_argument("--sizes", nargs="+", default=list(data.SIZES), choices=list(data.SIZES))
    p.add_argument("--decoders", nargs="+", default=["decord", "torchcodec"], choices=["decord", "torchcodec"])
    p.add_argument("--prepared", nargs="+", type=int, default=list(data.PREPARED),
                   help="short sides of the prepared copies (mgtc prepare --short-side)")
    p.add_argument("--shard-read-ms", type=float, default=0.63,
                   help="shard-row read per clip added to the actor totals (mgtc bench shards: 1.26 ms per row "
                        "from a row file at Kinetics size, one row per decoded window of num_sample=2 clips)")
    p.add_argument("--output", default="docs/BENCHMARKS.md")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    import decord

    from pipeline import video

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    missing = video.torchcodec_reason()
    if missing and "torchcodec" in args.decoders:
        print(f"bench data: skipping torchcodec: {missing}")
    load = os.getloadavg()[0]
    results = data.run(Path(args.work), videos=args.videos, rounds=args.rounds, sizes=args.sizes,
                       decoders=args.decoders, calls=args.calls, prepared=args.prepared)
    body = data.tables(results, shard_read_ms=args.shard_read_ms)
    print(body)
    if not args.no_write:
        date = utc_now()
        try:
            import torchcodec
            tc = f", torchcodec {torchcodec.__version__}"
        except Exception:  # noqa: BLE001
            tc = ""
        text = "\n".join([
            SECTION, "", data.__doc__.split("\n\n", 1)[1].strip(), "",
            f"- machine: {os.cpu_count()} vCPU (shared with other jobs), Python {platform.python_version()}, "
            f"decord {decord.__version__}{tc}; load average before / after {load:.1f} / {os.getloadavg()[0]:.1f}",
            f"- date: {date}; {args.videos} video(s) per size, {args.rounds} rounds x {args.calls} windows",
            f"- command: `{bench_command('data', argv)}`", "",
            "CPU ms per training clip by step (medians):", "", body])
        write_section(Path(args.output), text)
        print(f"updated {args.output} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
