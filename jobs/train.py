"""`mgtc train --config jobs/configs/<name>.yaml [--set section.key=value ...]`

Fine-tunes (or MAE pre-trains, `optim.mode=pretrain`) a VideoMAE ViT with the configured
token strategy on Ray Train. The config is validated before Ray starts (exit 2 naming every
bad field). Runs locally (a loopback-only Ray), on the cluster in RAY_ADDRESS, or as a submitted job:
`ray job submit --working-dir . -- python -m jobs.train --config ...`.
A rerun with the same `scaling.name` resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline import raylog
from pipeline.config import ConfigError, load_config
from pipeline.progress import set_verbose


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see jobs/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one field, e.g. --set masking.ratio=0.5 (repeatable)")
    raylog.add_verbose_flag(parser)
    return parser


def checked_checkpoint(cfg, uri: str, prog: str) -> bool:
    """Read and validate checkpoint `uri` for `cfg` in the driver, before Ray starts: False
    (after one line on stderr naming the file) when it is unusable; the keys a non-strict
    load leaves missing or ignores are printed as WARNING lines."""
    from pipeline.checkpoints import CheckpointError
    from pipeline.modeling import check_weights

    try:
        report = check_weights(cfg, uri)
    except CheckpointError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return False
    for line in report.summary().splitlines():
        print(f"{prog}: WARNING: {line}", file=sys.stderr)
    return True


def format_summary(summary: dict[str, Any]) -> str:
    """A short human summary of `run_training`'s result."""
    def pct(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.1f}"

    lines = [
        ("run", summary.get("run_name")),
        ("epochs", summary.get("epoch", "-")),
        ("top-1 / top-5 (%)", f"{pct('top1')} / {pct('top5')}"),
        ("kept tokens (%)", "-" if summary.get("kept_ratio") is None else f"{100 * summary['kept_ratio']:.1f}"),
        ("GFLOPs/view", "-" if summary.get("gflops_per_view") is None else f"{summary['gflops_per_view']:.3g}"),
        ("train clips/s", "-" if summary.get("clips_per_s") is None else f"{summary['clips_per_s']:.2f}"),
        ("checkpoint", summary.get("checkpoint")),
        ("MLflow run", f"{summary.get('mlflow_run_id')} ({summary.get('tracking_uri')})"),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"mgtc train: {err}", file=sys.stderr)
        return 2
    from pipeline.preflight import input_problems

    problems = input_problems(cfg, ("train", "val"))
    for line in problems:
        print(f"mgtc train: {line}", file=sys.stderr)
    if problems:
        return 2
    if cfg.model.checkpoint and not checked_checkpoint(cfg, cfg.model.checkpoint, "mgtc train"):
        return 2
    from pipeline.trainer import run_training
    from pipeline.vocab import ray_session

    with ray_session():  # Ray's own lines stay in its session logs unless --verbose
        try:
            summary = run_training(cfg)
        except Exception as err:  # a worker's error: one line with its reason and the log folder
            return raylog.report_failure("mgtc train", err)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
