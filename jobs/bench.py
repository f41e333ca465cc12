"""`mgtc bench [encoder|precompute|train|shards|predict|data|prepare|gpu ...]`: run the benchmarks that write docs/BENCHMARKS.md.

Each benchmark is its own module (`jobs/bench_<name>.py`) with `main(argv)`; arguments after
the benchmark name are passed through. With no name, the CPU benchmarks run in turn;
`training-free` (needs a checkpoint) and `gpu` (needs CUDA, or `--dry-run`; `make gpu-check`)
run only when named.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

BENCHMARKS = ("encoder", "precompute", "train", "shards", "predict", "data", "prepare")
# Run only by name: training-free needs a trained checkpoint (writes docs/RESULTS.md, not
# BENCHMARKS.md); gpu needs a CUDA device (or --dry-run).
BY_NAME = ("training-free", "gpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench", description=__doc__)
    parser.add_argument("name", nargs="?", choices=BENCHMARKS + BY_NAME, help="benchmark to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    names = [args.name] if args.name else list(BENCHMARKS)
    for name in names:
        module = importlib.import_module(f"jobs.bench_{name.replace('-', '_')}")
        code = int(module.main(rest if args.name else []) or 0)
        if code:
            return code
    return 0


def replace_section(document: str, section: str) -> str:
    """Replace the block of `section`'s first line (a '## ' heading) up to the next '## '
    heading in `document`, or append it. Each benchmark owns one section of BENCHMARKS.md."""
    heading = section.splitlines()[0].rstrip()
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        prefix = document if document.endswith("\n") or not document else document + "\n"
        return (prefix or "# Benchmarks\n") + "\n" + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def write_section(path: Path, section: str) -> None:
    """Rewrite only `section` of the local file `path`, atomically."""
    document = path.read_text() if path.exists() else ""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(replace_section(document, section))
    tmp.replace(path)
