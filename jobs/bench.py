"""`mgtc bench [encoder|precompute|train ...]`: run the benchmarks that write docs/BENCHMARKS.md.

Each benchmark is its own module (`jobs/bench_<name>.py`) with `main(argv)`; arguments after
the benchmark name are passed through. With no name, all of them run in turn.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ("encoder", "precompute", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench", description=__doc__)
    parser.add_argument("name", nargs="?", choices=BENCHMARKS, help="benchmark to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    names = [args.name] if args.name else list(BENCHMARKS)
    for name in names:
        module = importlib.import_module(f"jobs.bench_{name}")
        code = int(module.main(rest if args.name else []) or 0)
        if code:
            return code
    return 0
