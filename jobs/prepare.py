"""`mgtc prepare <manifest> --out <uri> [--short-side 320] [--keyint 16] [--stride 4]`

Re-encodes every video of a manifest for training (short side, a keyframe every --keyint
frames, optionally only every --stride-th source frame, even sizes, yuv420p H.264) and, in
the same pass (the source is decoded once), writes the motion shards of the re-encoded
videos (docs/SHARDS.md, "Prepared videos"). Output: <out>/videos/, <out>/manifest.csv (the
videos that succeeded, source order, same labels; failed ones are in the errors table),
<out>/_prepare.json, and precompute's shards/, rows/, errors/. The source is never modified.
Train on it with data.train_manifest=<out>/manifest.csv, data.shards=<out> and
data.video_stride=<stride> (data.sampling_rate stays in source frames).

Same rules as `mgtc precompute`: resumable (rerun the same command), atomic commits, local
or s3://, a bad video is an error row with its reason. --sampling-rates are in source
frames and must be multiples of --stride (default: those of 2 4 that are). Exit status as
precompute's: 0 done, 1 some parts failed in Ray (rerun), 2 bad arguments / settings /
manifest, 3 every line failed.
"""

from __future__ import annotations

import argparse
import sys

from jobs.precompute import FLAGS as PRECOMPUTE_FLAGS, add_settings_flags, exit_status
from pipeline import raylog, storage
from pipeline.manifest import ManifestError
from pipeline.precompute import ConfigError, PrecomputeConfig, format_summary, load_config
from pipeline.precompute.prepare import encode_settings, run_prepare
from pipeline.progress import set_verbose

# Precompute's flags, with --short-side renamed: here it is the videos' size.
FLAGS = {k: v for k, v in PRECOMPUTE_FLAGS.items() if k != "short_side"}
FLAGS["sampling_rates"] = "sampling rates in source frames (multiples of --stride), e.g. 4 8"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="VideoMAE list file or CSV (local path or s3://)")
    parser.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    parser.add_argument("--config", help="YAML: a `precompute:` section, flat keys, or a train config "
                                         "(its data.short_side is the shards' short side)")
    parser.add_argument("--short-side", type=int, default=320, help="short side of the prepared videos, px (even; 0 = keep)")
    parser.add_argument("--keyint", type=int, default=16, help="frames between keyframes of the prepared videos")
    parser.add_argument("--stride", type=int, default=1, help="keep every k-th source frame (default: all)")
    parser.add_argument("--crf", type=int, default=23, help="x264 constant rate factor")
    parser.add_argument("--preset", default="medium", help="x264 preset")
    parser.add_argument("--shard-short-side", dest="shard_short_side", type=int,
                        help="short side the motion maps are computed at (default: data.short_side of a "
                             "train --config, else 224); <= --short-side")
    add_settings_flags(parser, FLAGS)
    raylog.add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    overrides = {name: getattr(args, name) for name in (*FLAGS, "pad_short")}
    overrides["short_side"] = args.shard_short_side
    try:
        cfg = load_config(args.config, overrides)
        encode = encode_settings(args.short_side, args.keyint, args.stride, args.crf, args.preset, cfg)
        rates_given = args.sampling_rates is not None or cfg.sampling_rates != PrecomputeConfig().sampling_rates
        summary = run_prepare(args.manifest, args.out, cfg, encode, log=lambda line: print(line, flush=True),
                              rates_given=rates_given)
    except (ConfigError, ManifestError, FileNotFoundError) as err:
        print(f"mgtc prepare: {storage.redact(str(err))}", file=sys.stderr)
        return 2
    print(format_summary(summary, "prepare"), flush=True)
    print(f"  manifest        {storage.redact(summary.out)}/manifest.csv ({summary.ok} videos)", flush=True)
    return exit_status(summary, "mgtc prepare")


if __name__ == "__main__":
    sys.exit(main())
