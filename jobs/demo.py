"""`mgtc demo`: the whole pipeline on one machine, on embedded defaults.

synthetic videos -> precompute motion shards (Ray Data) -> calibrate -> train a tiny ViT
with MGTC and with all tokens (Ray Train) -> multi-view test -> result table, all tracked in
the local MLflow store (`mgtc ui` to browse). Local Ray, local files, no cloud account.
A second run reuses the data, the shards and the finished training runs (same run names
resume from their last checkpoint) and prints the same table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

from pipeline import raylog
from pipeline.config import ConfigError, load_config
from pipeline.progress import set_verbose

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "jobs" / "configs" / "synthetic_tiny.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="demo folder (data, shards, checkpoints)")
    parser.add_argument("--videos-per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=64, help="frame side of the synthetic videos (px)")
    parser.add_argument("--frames", type=int, default=48, help="frames per synthetic video")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--mask-ratio", type=float, default=0.5, help="MGTC masking ratio")
    parser.add_argument("--no-baseline", action="store_true", help="skip the all-tokens run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra training config override (repeatable)")
    raylog.add_verbose_flag(parser)
    return parser


def demo_configs(args: argparse.Namespace, data: Path, shards: Path, ray_dir: Path):
    """The validated training configs of the demo: MGTC first, then the baseline."""
    common = [
        f"data.train_manifest={data / 'train.csv'}",
        f"data.val_manifest={data / 'val.csv'}",
        f"data.test_manifest={data / 'test.csv'}",
        f"data.shards={shards}",
        f"data.input_size={args.size}",
        f"data.short_side={args.size}",
        f"optim.epochs={args.epochs}",
        f"scaling.storage_path={ray_dir}",
        "tracking.experiment=mgtc-demo",
    ]
    runs = [("mgtc_ratio", args.mask_ratio, "demo-mgtc")]
    if not args.no_baseline:
        runs.append(("none", 0.0, "demo-all-tokens"))
    configs = [
        load_config(BASE_CONFIG, [*common, f"masking.strategy={strategy}", f"masking.ratio={ratio}",
                                  f"scaling.name={name}", f"tracking.run_name={name}",
                                  *args.overrides])  # the user's --set wins
        for strategy, ratio, name in runs
    ]
    description = (f"mgtc demo: {args.videos_per_class * 8} synthetic motion videos of 8 classes "
                   f"(docs/SYNTHETIC.md), {args.size} px. A 4-block ViT trained from scratch with MGTC "
                   f"dropping the {args.mask_ratio:.0%} least-moving tokens (demo-mgtc) against all tokens "
                   "(demo-all-tokens): compare test_top1 and test_gflops_per_view.")
    return [cfg if cfg.tracking.description else
            dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, description=description))
            for cfg in configs]


def write_all_manifest(data: Path) -> Path:
    """One manifest of every split, so the shards score train and test views alike."""
    lines = []
    for split in ("train", "val", "test"):
        lines += (data / f"{split}.csv").read_text().splitlines()
    path = data / "all.csv"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def result_table(rows: list[dict]) -> str:
    header = "| run | strategy | top-1 (%) | top-5 (%) | kept tokens (%) | GFLOPs/view | train clips/s | test clips/s | train wall (s) |"
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['strategy']} | {r['top1']:.1f} | {r['top5']:.1f} | "
            f"{100 * r['kept_ratio']:.1f} | {r['gflops_per_view']:.3f} | {r['train_clips_per_s']:.1f} | "
            f"{r['test_clips_per_s']:.1f} | {'reused' if r['reused'] else format(r['train_wall_s'], '.0f')} |"
        )
    return "\n".join(lines)


class Phases:
    """Wall seconds of each demo phase, for the closing line (where the time goes)."""

    def __init__(self) -> None:
        self.seconds: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds.append((name, time.perf_counter() - start))

    def __str__(self) -> str:
        return ", ".join(f"{name} {s:.0f} s" for name, s in self.seconds)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    out = Path(args.out).resolve()
    data, shards_dir, ray_dir = out / "data", out / "shards", out / "ray"
    try:
        configs = demo_configs(args, data, shards_dir, ray_dir)
    except ConfigError as err:
        print(f"mgtc demo: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()

    from pipeline import shards, synth

    phases = Phases()
    print(f"[demo 1/5] synthetic videos -> {data}")
    with phases("synth"):
        synth.make_dataset(data, videos_per_class=args.videos_per_class, size=args.size,
                           frames=args.frames, fps=25, seed=0)
        manifest = write_all_manifest(data)

    from pipeline.evaluate import run_evaluation
    from pipeline.precompute import PrecomputeConfig, format_summary, run_precompute
    from pipeline.trainer import run_training
    from pipeline.vocab import ray_session

    session = contextlib.ExitStack()  # the Ray of the demo, shut down at the end if it started it
    with phases("ray start"):
        session.enter_context(ray_session())
    try:
        cfg0 = configs[0]
        print(f"[demo 2/5] precompute motion shards -> {shards_dir}")
        pre = PrecomputeConfig(sampling_rates=(cfg0.data.sampling_rate,), short_side=args.size,
                               num_frames=cfg0.data.num_frames, tubelet=cfg0.model.tubelet)
        with phases("precompute"):
            print(format_summary(run_precompute(str(manifest), str(shards_dir), pre)))
        print("[demo 3/5] calibrate tau for the same masking ratio (for mgtc_threshold runs)")
        cal = shards.calibrate(str(shards_dir), args.mask_ratio)
        taus = ", ".join(f"{float(t):.4f} at stride {s}" for s, t in cal["tau"].items())
        print(f"  tau = {taus} drops {cal['mask_ratio']:.0%} of the tokens")
        rows = []
        for cfg in configs:
            print(f"[demo 4/5] train {cfg.scaling.name}: {cfg.masking.strategy} "
                  f"ratio {cfg.masking.ratio}, {cfg.optim.epochs} epochs")
            with phases(f"train {cfg.scaling.name}"):
                trained = run_training(cfg)
            print(f"[demo 5/5] test {cfg.scaling.name}: "
                  f"{cfg.data.test_clips} clips x {cfg.data.test_crops} crops per video")
            with phases(f"test {cfg.scaling.name}"):
                tested = run_evaluation(cfg, trained["checkpoint"], train_run_id=trained["mlflow_run_id"])
            rows.append({
                "name": cfg.scaling.name, "strategy": cfg.masking.strategy,
                "top1": tested["top1"], "top5": tested["top5"], "kept_ratio": tested["kept_ratio"],
                "gflops_per_view": tested["gflops_per_view"],
                "train_clips_per_s": trained.get("clips_per_s", float("nan")),
                "test_clips_per_s": tested["clips_per_s"], "train_wall_s": trained["wall_time_s"],
                "reused": trained.get("reused", False),
            })
    except Exception as err:  # a worker's error: one line with its reason and the log folder
        return raylog.report_failure("mgtc demo", err)
    finally:
        session.close()

    print()
    print(result_table(rows))
    print(f"\nchance is {100 / cfg0.data.num_classes:.1f}% top-1; total wall time "
          f"{time.perf_counter() - t0:.0f} s ({phases}); MLflow store: {trained['tracking_uri']}")
    runs_dir = os.path.relpath(out) if out.is_relative_to(Path.cwd()) else out
    print(f"Browse the runs: mgtc ui --runs-dir {runs_dir}   (then open the printed URL; experiment 'mgtc-demo')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
