"""`mgtc precompute <manifest> --out <uri> [--sampling-rates 2 4] [--config file.yaml]`

Decodes every video of a manifest once (Ray Data actor pool, decord) and writes motion cell
maps to Parquet shards, one row per (video, sampling rate), plus an errors table; see
docs/SHARDS.md. Resumable: rerun the same command to finish a killed job (committed parts
are skipped). Runs locally (starts Ray), on the cluster in RAY_ADDRESS, or submitted:
`ray job submit --working-dir . -- python -m jobs.precompute <manifest> --out s3://...`.

Exit status: 0 when every manifest line ended as a shard row or an error row and at least
one video succeeded, 1 when some parts failed in Ray (rerun to retry them), 2 for bad
arguments, settings or manifests (labels outside --num-classes included), 3 when every
line failed (nothing to train on; the summary says why, by reason).
"""

from __future__ import annotations

import argparse
import sys

from pipeline import raylog, storage
from pipeline.manifest import ManifestError
from pipeline.shards import ERRORS_DIR
from pipeline.precompute import ConfigError, format_summary, load_config, run_precompute
from pipeline.progress import set_verbose

# flag -> PrecomputeConfig field; flags given on the command line override the YAML.
FLAGS = {
    "sampling_rates": "sampling rates s (stride-s frame sequences), e.g. 2 4",
    "short_side": "resize the short side to this many px while decoding (0 = keep)",
    "cell": "cell size in px of the stored motion maps",
    "tubelet": "tubelet size of the model (boundary maps compare frames 2*tubelet-1 apart)",
    "num_frames": "clip length T; shorter videos are rejected unless --pad-short",
    "part_size": "videos per committed part (the unit of resume)",
    "actors": "decode actors (0 = one per CPU of the cluster)",
    "timeout_s": "seconds per video before its decoder is killed",
    "score_mode": "boundary | consecutive (recorded for calibrate / train)",
    "s3_endpoint": "S3-compatible endpoint URL (default: AWS_ENDPOINT_URL)",
    "path_column": "CSV manifest: name of the path column",
    "label_column": "CSV manifest: name of the label column",
    "num_classes": "labels must be in 0..N-1 (default: data.num_classes of a train --config; 0 = unchecked)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc precompute", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="VideoMAE list file or CSV (local path or s3://)")
    parser.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    parser.add_argument("--config", help="YAML: a `precompute:` section, flat keys, or a train config")
    add_settings_flags(parser, FLAGS)
    raylog.add_verbose_flag(parser)
    return parser


def add_settings_flags(parser: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    """One flag per PrecomputeConfig field in `flags` ({field: help}), typed as the field,
    plus --pad-short; a flag left out is None (the config file's value, else the default)."""
    for name, help_ in flags.items():
        flag = "--" + name.replace("_", "-")
        if name == "sampling_rates":
            parser.add_argument(flag, dest=name, type=int, nargs="+", help=help_)
        elif name == "timeout_s":
            parser.add_argument(flag, dest=name, type=float, help=help_)
        elif name in ("score_mode", "s3_endpoint", "path_column", "label_column"):
            parser.add_argument(flag, dest=name, help=help_)
        else:
            parser.add_argument(flag, dest=name, type=int, help=help_)
    parser.add_argument("--pad-short", dest="pad_short", action="store_true", default=None,
                        help="keep videos shorter than one clip (the trainer repeats the last frame)")


def exit_status(summary, prog: str) -> int:
    """0 done, 1 some parts failed in Ray (rerun), 3 every manifest line failed (one line on
    stderr with the commonest reasons and where the errors table is)."""
    if not summary.complete:
        return 1
    if summary.videos and not summary.ok:
        reasons = ", ".join(f"{n} {name}" for name, n in summary.failed_by_reason.most_common(3))
        print(f"{prog}: every one of the {summary.videos} manifest lines failed ({reasons}): "
              f"see the errors table in {storage.redact(summary.out)}/{ERRORS_DIR}/", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    overrides = {name: getattr(args, name) for name in (*FLAGS, "pad_short")}
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"mgtc precompute: {err}", file=sys.stderr)
        return 2
    try:
        summary = run_precompute(args.manifest, args.out, cfg, log=lambda line: print(line, flush=True))
    except (ConfigError, ManifestError, FileNotFoundError) as err:
        print(f"mgtc precompute: {storage.redact(str(err))}", file=sys.stderr)
        return 2
    print(format_summary(summary), flush=True)
    return exit_status(summary, "mgtc precompute")


if __name__ == "__main__":
    sys.exit(main())
