"""`mgtc manifest convert <kind> ... --out <manifest.csv>`: an official split file -> our manifest.

Writes a `path,label` CSV (labels 0-based) that precompute / train / eval read as it is:
  mgtc manifest convert ucf101 ucfTrainTestlist/trainlist01.txt --videos /data/UCF-101 --out ucf_train1.csv
  mgtc manifest convert ucf101 ucfTrainTestlist/testlist01.txt  --videos /data/UCF-101 --out ucf_test1.csv
  mgtc manifest convert hmdb51 testTrainMulti_7030_splits --split 1 --subset train --videos /data/hmdb51 --out h_train1.csv
  mgtc manifest convert kinetics kinetics400/train.csv --videos /data/k400/train --out k400_train.csv
  mgtc manifest convert ssv2 something-something-v2-train.json --labels something-something-v2-labels.json \
      --videos /data/ssv2 --out ssv2_train.csv
UCF101 labels come from classInd.txt (beside the split file unless --class-ind); HMDB51 and
Kinetics classes are indexed in sorted name order (Kinetics: or --classes FILE, one name per
line, so train and val agree). --classes-out writes the class names, one per line, by index.
Exit status: 0 written, 2 bad arguments or a split file that does not parse (one line naming it).
"""

from __future__ import annotations

import argparse
import sys

from pipeline import splits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc manifest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    convert = sub.add_parser("convert", help="official split file -> path,label CSV (0-based labels)")
    convert.add_argument("kind", choices=splits.KINDS)
    convert.add_argument("source", help="split file (UCF101 list, Kinetics CSV, SSv2 JSON) or HMDB51 split folder")
    convert.add_argument("--videos", required=True, help="folder (or s3:// prefix) holding the videos")
    convert.add_argument("--out", required=True, help="manifest to write (local path or s3://)")
    convert.add_argument("--class-ind", help="UCF101: classInd.txt (default: beside the split file)")
    convert.add_argument("--split", type=int, default=1, help="HMDB51: split number (default 1)")
    convert.add_argument("--subset", choices=("train", "test"), default="train", help="HMDB51: which subset")
    convert.add_argument("--classes", help="Kinetics: class names, one per line, by index")
    convert.add_argument("--layout", choices=("flat", "by_label"), default="flat",
                         help="Kinetics: videos flat in --videos or in one folder per label")
    convert.add_argument("--labels", help="SSv2: something-something-v2-labels.json")
    convert.add_argument("--classes-out", help="also write the class names, one per line, by index")
    return parser


def convert(args: argparse.Namespace) -> tuple[list, list[str]]:
    if args.kind == "ucf101":
        return splits.ucf101(args.source, args.videos, args.class_ind)
    if args.kind == "hmdb51":
        return splits.hmdb51(args.source, args.videos, args.split, args.subset)
    if args.kind == "kinetics":
        return splits.kinetics(args.source, args.videos, args.classes, args.layout)
    if not args.labels:
        raise splits.SplitError("ssv2 needs --labels something-something-v2-labels.json")
    return splits.ssv2(args.source, args.labels, args.videos)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows, classes = convert(args)
    except (splits.SplitError, OSError, ValueError) as err:
        print(f"mgtc manifest: {err}", file=sys.stderr)
        return 2
    splits.write_csv(rows, args.out)
    if args.classes_out:
        from pipeline import storage

        storage.write_bytes_atomic(args.classes_out, "".join(f"{c}\n" for c in classes).encode("utf-8"))
    print(f"wrote {len(rows)} videos of {len(classes)} classes to {args.out} (labels 0-based: "
          f"set data.num_classes={len(classes)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
