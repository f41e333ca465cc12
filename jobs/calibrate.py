"""`mgtc calibrate <shards> --mask-ratio 0.25`

Prints, per sampling rate, the tau of `mgtc_threshold` that masks that fraction of the
tokens over the data set, and writes it to `<shards>/calibration.json` (read by `train` /
`eval` with `masking.calibrated=true`) with a histogram of token scores,
`<shards>/calibration_hist.png`. The token population is every video's evaluation-style
views computed from the shard cell maps (centred clip of --num-frames, centre crop of
--crop px by default); see docs/SHARDS.md.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import shards, storage
from pipeline.vocab import SCORE_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="precompute output folder or s3://bucket/prefix")
    parser.add_argument("--mask-ratio", type=float, required=True, help="fraction of tokens to mask, in [0, 1)")
    parser.add_argument("--num-frames", type=int, help="clip length T (default: the shards' num_frames)")
    parser.add_argument("--crop", type=int, help="crop side in px (default: short side, multiple of --patch)")
    parser.add_argument("--patch", type=int, default=16, help="token patch size in px")
    parser.add_argument("--score-mode", choices=SCORE_MODES,
                        help="default: the mode recorded by precompute")
    parser.add_argument("--clips", type=int, default=1, help="temporal views per video")
    parser.add_argument("--crops", type=int, default=1, help="spatial views per clip")
    parser.add_argument("--max-videos", type=int, default=0, help="read at most this many videos per rate (0 = all)")
    parser.add_argument("--out", help="where to write calibration.json and the plot (default: <shards>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.mask_ratio < 1:
        print(f"mgtc calibrate: --mask-ratio={args.mask_ratio} must be in [0, 1)", file=sys.stderr)
        return 2
    try:
        result = shards.calibrate(args.shards, args.mask_ratio, num_frames=args.num_frames, crop=args.crop,
                                  patch=args.patch, score_mode=args.score_mode, clips=args.clips,
                                  crops=args.crops, max_videos=args.max_videos, out=args.out)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"mgtc calibrate: {storage.redact(str(err))}", file=sys.stderr)
        return 2
    dest = storage.redact(args.out or args.shards)
    print(f"[calibrate] mask ratio {result['mask_ratio']}, score mode {result['score_mode']}, "
          f"{result['num_frames']} frames, crop {result['crop']}, patch {result['patch']}")
    for rate, entry in result["sampling_rates"].items():
        print(f"  sampling rate {rate}: tau = {entry['tau']:.6g}  "
              f"(masks {entry['masked_fraction']:.3f} of {entry['tokens']} tokens)")
    print(f"  written: {storage.join(dest, shards.CALIBRATION_FILE)}, {storage.join(dest, shards.CALIBRATION_PLOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
