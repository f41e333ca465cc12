"""`mgtc eval --config jobs/configs/<name>.yaml --checkpoint <uri> [--set section.key=value ...]`

Multi-view evaluation (data.test_clips x data.test_crops views per video, softmax averaged
per video) of a checkpoint with the configured token strategy: top-1 / top-5, kept tokens,
GFLOPs per view and per video, clips/s; tracked as one MLflow run.
--checkpoint: a training checkpoint directory (`<storage>/<name>/epoch_NNNN`) or a .pt/.pth
file (official VideoMAE), local or s3://.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import raylog
from pipeline.config import ConfigError, load_config
from pipeline.progress import set_verbose


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see jobs/configs/)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or file, local or s3://")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="which split's views (default: test)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one field, e.g. --set masking.strategy=random (repeatable)")
    raylog.add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"mgtc eval: {err}", file=sys.stderr)
        return 2
    if cfg.optim.mode != "finetune":
        print("mgtc eval: optim.mode: evaluation needs a fine-tuned classifier (finetune)", file=sys.stderr)
        return 2
    from jobs.train import checked_checkpoint

    from pipeline.preflight import input_problems

    problems = input_problems(cfg, (args.split,))
    for line in problems:
        print(f"mgtc eval: {line}", file=sys.stderr)
    if problems:
        return 2
    if not checked_checkpoint(cfg, args.checkpoint, "mgtc eval"):
        return 2
    from pipeline.evaluate import format_table, run_evaluation
    from pipeline.vocab import ray_session

    with ray_session():
        try:
            result = run_evaluation(cfg, args.checkpoint, split=args.split)
        except Exception as err:  # an actor's error: one line with its reason and the log folder
            return raylog.report_failure("mgtc eval", err)
    print(format_table(result))
    print(f"MLflow run {result['mlflow_run_id']} ({result['tracking_uri']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
