"""`mgtc precompute <manifest> --out <uri> [--sampling-rates 2 4] [--config file.yaml]`

Decodes every video of a manifest once (Ray Data actor pool, decord) and writes motion cell
maps to Parquet shards, one row per (video, sampling rate), plus an errors table; see
docs/SHARDS.md. Resumable: rerun the same command to finish a killed job (committed parts
are skipped). Runs locally (starts Ray), on the cluster in RAY_ADDRESS, or submitted:
`ray job submit --working-dir . -- python -m jobs.precompute <manifest> --out s3://...`.

Exit status: 0 when every manifest line ended as a shard row or an error row, 1 when some
parts failed in Ray (rerun to retry them), 2 for bad arguments or settings.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import storage
from pipeline.manifest import ManifestError
from pipeline.precompute import ConfigError, format_summary, load_config, run_precompute

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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc precompute", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="VideoMAE list file or CSV (local path or s3://)")
    parser.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    parser.add_argument("--config", help="YAML: a `precompute:` section, flat keys, or a train config")
    for name, help_ in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if name == "sampling_rates":
            parser.add_argument(flag, dest=name, type=int, nargs="+", help=help_)
        elif name in ("timeout_s",):
            parser.add_argument(flag, dest=name, type=float, help=help_)
        elif name in ("score_mode", "s3_endpoint", "path_column", "label_column"):
            parser.add_argument(flag, dest=name, help=help_)
        else:
            parser.add_argument(flag, dest=name, type=int, help=help_)
    parser.add_argument("--pad-short", dest="pad_short", action="store_true", default=None,
                        help="keep videos shorter than one clip (the trainer repeats the last frame)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())
