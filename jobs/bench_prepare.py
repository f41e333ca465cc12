"""`mgtc bench prepare [--videos 6] [--actors 1 2] [--strides 4 1]`: `mgtc prepare`'s
throughput in videos/s per core on K400-like videos (10 s, 30 fps, 426x320, H.264 with x264's
defaults: `pipeline.bench.data.write_source`, generated once under --work-dir).

Each case is one whole `run_prepare` into a fresh folder on one running local Ray (short side
320, keyint 16, crf 23, preset medium, shards at short side 224, part size 2). Reported per
case: end-to-end wall (Ray Data, actors, decoder processes, commits, manifest) as videos/s and
videos/s per actor; the actors' own time per video (summed part times / videos: throughput
without start-up, what a 240k-video run sees per core); the decoder process's CPU seconds
per video (decode + encode + score; the least load-sensitive number). Writes the section
`## Prepare throughput (mgtc bench prepare)` of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from jobs.bench import write_section
from pipeline.bench.machine import bench_command, cpu_model, utc_now

SECTION = "## Prepare throughput (mgtc bench prepare)"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=6, help="distinct source videos")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 1], help="--stride of each case")
    parser.add_argument("--work-dir", default="runs/bench_prepare", help="sources are generated here once")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def sources(work: Path, n: int) -> list[str]:
    from pipeline.bench.data import write_source

    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = work / f"k400like-426x320-{i}.mp4"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp.mp4")
            write_source(tmp, 320, 426, seed=i)
            tmp.replace(path)
        paths.append(str(path))
    return paths


def run_case(paths: list[str], work: Path, stride: int, actors: int) -> dict:
    from pipeline import shards
    from pipeline.precompute import PrecomputeConfig
    from pipeline.precompute.prepare import encode_settings, run_prepare

    folder = Path(tempfile.mkdtemp(prefix="case-", dir=work))
    manifest = folder / "list.txt"
    manifest.write_text("".join(f"{p} 0\n" for p in paths))
    cfg = PrecomputeConfig(sampling_rates=(4,), short_side=224, part_size=2, actors=actors,
                           progress_interval_s=1e9).validate()
    t0 = time.perf_counter()
    summary = run_prepare(str(manifest), str(folder / "out"), cfg, encode_settings(320, 16, stride, cfg=cfg),
                          log=lambda _: None)
    wall = time.perf_counter() - t0
    out = str(folder / "out")
    markers = shards.read_markers(out, shards.committed_parts(out)).values()
    if summary.failed:
        raise RuntimeError(f"benchmark job failed on {summary.failed} videos: {dict(summary.failed_by_reason)}")
    sizes = [os.path.getsize(os.path.join(out, "videos", n)) for n in os.listdir(os.path.join(out, "videos"))]
    shutil.rmtree(folder, ignore_errors=True)
    n = len(paths)
    return {"stride": stride, "actors": actors, "wall": wall, "busy": sum(m["seconds"] for m in markers) / n,
            "cpu": sum(m.get("cpu_s", 0.0) for m in markers) / n, "encode": sum(m.get("encode_s", 0.0) for m in markers) / n,
            "decode": sum(m["decode_s"] for m in markers) / n, "score": sum(m["score_s"] for m in markers) / n,
            "kb": sum(sizes) / len(sizes) / 1e3}


def table(rows: list[dict], n: int) -> str:
    lines = ["| stride | actors | wall s | videos/s end to end | per actor | actor s / video | videos/s per busy core "
             "| decoder CPU s / video | videos/s per core (CPU) | decode / encode / score wall s per video | prepared file |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = n / r["wall"]
        lines.append(f"| {r['stride']} | {r['actors']} | {r['wall']:.1f} | {rate:.2f} | {rate / r['actors']:.2f} "
                     f"| {r['busy']:.2f} | {1 / r['busy']:.2f} | {r['cpu']:.2f} | {1 / r['cpu']:.2f} "
                     f"| {r['decode']:.2f} / {r['encode']:.2f} / {r['score']:.2f} | {r['kb']:.0f} kB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pipeline.vocab import ray_session

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    work = Path(args.work_dir).resolve()
    paths = sources(work, args.videos)
    kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1e3
    load_before = os.getloadavg()[0]
    with ray_session(num_cpus=os.cpu_count(), include_dashboard=False):
        rows = [run_case(paths, work, s, a) for s in args.strides for a in args.actors]
    load_after = os.getloadavg()[0]
    body = table(rows, len(paths))
    print(body)
    if args.no_write:
        return 0
    date = utc_now()
    section = "\n".join([
        SECTION, "",
        f"{len(paths)} K400-like videos (`pipeline.bench.data.write_source`: 10 s, 30 fps, 426x320, panning "
        f"texture + moving object, H.264 with x264's defaults, {kb:.0f} kB each) through `run_prepare`: "
        "short side 320 (= the source's), "
        "keyint 16, crf 23, preset medium, shards at short side 224 (source rate 4), parts of 2 videos, "
        "one case after the other on one local Ray.",
        "",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, shared with other jobs",
        f"- load average (1 min) before / after: {load_before:.1f} / {load_after:.1f}",
        f"- date: {date}",
        f"- command: `{bench_command('prepare', argv)}`",
        "",
        body, "",
        "\"actor s / video\" is the actors' summed part time over the videos; its inverse is the throughput of "
        "one core in a long run (start-up amortized). \"Decoder CPU s / video\" is the CPU time of the decoder "
        "process (one thread each for decord and x264): the least load-sensitive number, and the one to size a "
        "cluster with (cores = videos x CPU s / wall budget). The wall-time columns include the other jobs "
        "sharing the cores (load average above the core count), so they understate an idle core.",
        "",
    ])
    write_section(Path(args.output), section)
    print(f"updated {args.output} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
