"""`mgtc reshard <shards>`: add row files to a shard folder written before they existed.

Training actors read one video's shard row at a time from `<shards>/rows/part-N.arrow`
(docs/SHARDS.md, "Row files"). Folders written by an older `mgtc precompute` have only the
Parquet parts; they still work, but every row read then decodes its whole part (~100x
slower, with a warning naming this command). This writes the missing row files from the
Parquet parts: each atomically, nothing existing is modified, safe while others read the
folder, and a rerun skips the parts already done. Local folders or s3://.
"""

from __future__ import annotations

import argparse
import sys

from pipeline import shard_rows, storage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc reshard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", help="precompute (or prepare) output folder or s3://bucket/prefix")
    parser.add_argument("--workers", type=int, default=4, help="parts converted concurrently (threads)")
    parser.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd",
                        help="row file buffers (zstd: as big as the Parquet part; none: ~1.4x, 2x cheaper reads)")
    parser.add_argument("--s3-endpoint", default=None, help="S3-compatible endpoint (default AWS_ENDPOINT_URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        done = shard_rows.add_row_files(args.shards, workers=args.workers, compression=args.compression,
                                        endpoint=args.s3_endpoint)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"mgtc reshard: {storage.redact(str(err))}", file=sys.stderr)
        return 2
    print(f"[reshard] {storage.redact(args.shards)}: {done['parts']} committed parts, "
          f"{done['written']} row files written, {done['present']} already present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
