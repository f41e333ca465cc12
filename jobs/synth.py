"""`mgtc synth`: write the synthetic motion-classification data set (videos + list files).

    mgtc synth --out data/synth --videos-per-class 40 --size 112 --frames 64 --fps 25 --seed 0
    mgtc synth --set hard --out data/hard --size 64 --frames 48 --camera pan zoom shake

A rerun with the same arguments reuses (or resumes) the data set; other arguments are
refused unless --overwrite. See docs/SYNTHETIC.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline import synth, synth_hard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgtc synth",
        description="Write a synthetic motion-classification video data set: mp4 files, "
                    "VideoMAE list files (train.csv, val.csv, test.csv), classes.txt, dataset.json.",
    )
    parser.add_argument("--set", default="motion", choices=("motion", "hard"),
                        help="motion: the original set (the class is the motion of one object); hard: "
                             "camera motion, identity x motion classes, distractors, fast orbits, crf "
                             "(docs/SYNTHETIC.md) (default: motion)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--videos-per-class", type=int, default=40, help="videos per class (default: 40)")
    parser.add_argument("--size", type=int, default=112, help="frame side in pixels, a multiple of 16 (default: 112)")
    parser.add_argument("--frames", type=int, default=64, help="frames per video, >= 2 (default: 64)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate written to the mp4 (default: 25)")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed (default: 0)")
    parser.add_argument("--classes", nargs="+", choices=synth.CLASS_NAMES + synth_hard.CLASS_NAMES, default=None,
                        metavar="NAME", help="classes, in label order (default: all of the set; motion: %s; "
                        "hard: %s)" % (" ".join(synth.CLASS_NAMES), " ".join(synth_hard.CLASS_NAMES)))
    parser.add_argument("--splits", nargs=3, type=float, default=[0.7, 0.15, 0.15],
                        metavar=("TRAIN", "VAL", "TEST"), help="split fractions, summing to 1 (default: 0.7 0.15 0.15)")
    parser.add_argument("--noise-std", type=float, default=None,
                        help="sensor noise std in uint8 levels (default: %s; hard: %s)"
                        % (synth.NOISE_STD, synth_hard.NOISE_STD))
    parser.add_argument("--shake-px", type=float, default=synth.SHAKE_PX,
                        help="camera shake std in pixels, clipped to +-%d (default: %%(default)s)" % synth.SHAKE_MARGIN)
    hard = parser.add_argument_group("hard set only")
    hard.add_argument("--camera", nargs="+", choices=synth_hard.CAMERA_MODES, default=list(synth_hard.DEFAULT_CAMERA),
                      help="camera modes, one drawn per video (default: %(default)s)")
    hard.add_argument("--distractors", type=int, default=synth_hard.DISTRACTORS,
                      help="unlabelled swaying objects per video (default: %(default)s)")
    hard.add_argument("--orbit-period", nargs=2, type=float, default=list(synth_hard.ORBIT_PERIOD),
                      metavar=("LO", "HI"), help="frames per turn of the cw/ccw orbits; 8 = the stride-4 "
                      "Nyquist limit (default: %(default)s)")
    hard.add_argument("--crf", type=int, default=synth_hard.CRF, help="x264 crf (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a data set written with other parameters in --out")
    return parser


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error (exit 2) with a clear message on the first invalid argument; fills the
    set-dependent defaults (classes, noise)."""
    names = synth.CLASS_NAMES if args.set == "motion" else synth_hard.CLASS_NAMES
    args.classes = list(args.classes or names)
    other = [c for c in args.classes if c not in names]
    if other:
        parser.error(f"--classes {' '.join(other)}: not classes of --set {args.set} ({' '.join(names)})")
    if args.noise_std is None:
        args.noise_std = synth.NOISE_STD if args.set == "motion" else synth_hard.NOISE_STD
    if args.size < 16 or args.size % 16:
        parser.error(f"--size must be a positive multiple of 16 (the ViT patch size), got {args.size}")
    if args.size in synth.DECORD_BAD_SIZES:
        parser.error(f"--size {args.size}: decord 0.6 cannot decode frames {args.size} pixels wide; use 32, 64 or more")
    if args.frames < 2:
        parser.error(f"--frames must be >= 2, got {args.frames}")
    if args.videos_per_class < 1:
        parser.error(f"--videos-per-class must be >= 1, got {args.videos_per_class}")
    if args.fps <= 0:
        parser.error(f"--fps must be > 0, got {args.fps}")
    if len(set(args.classes)) != len(args.classes):
        parser.error(f"--classes has repeats: {' '.join(args.classes)}")
    if min(args.splits) < 0 or abs(sum(args.splits) - 1) > 1e-6:
        parser.error(f"--splits must be non-negative and sum to 1, got {args.splits}")
    if args.noise_std < 0 or args.shake_px < 0:
        parser.error("--noise-std and --shake-px must be >= 0")
    if args.distractors < 0:
        parser.error(f"--distractors must be >= 0, got {args.distractors}")
    if not 2 < args.orbit_period[0] <= args.orbit_period[1]:
        parser.error(f"--orbit-period must be LO <= HI with LO > 2, got {args.orbit_period}")
    if not 0 <= args.crf <= 51:
        parser.error(f"--crf must be in 0..51, got {args.crf}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        common = dict(videos_per_class=args.videos_per_class, size=args.size, frames=args.frames,
                      fps=args.fps, seed=args.seed, splits=args.splits, classes=args.classes,
                      noise_std=args.noise_std, overwrite=args.overwrite)
        if args.set == "motion":
            paths = synth.make_dataset(args.out, shake_px=args.shake_px, **common)
        else:
            paths = synth_hard.make_dataset(args.out, crf=args.crf, camera=args.camera,
                                            distractors=args.distractors, orbit_period=args.orbit_period,
                                            **common)
    except synth.DatasetMismatchError as err:
        print(f"mgtc synth: {err}", file=sys.stderr)
        return 1
    print(summary(paths))
    return 0


def summary(paths: dict) -> str:
    """Human-readable summary: videos per split, classes, where the files are."""
    classes = paths["classes"].read_text().split()
    lines = [f"synthetic data set in {paths['meta'].parent}",
             f"  classes ({len(classes)}): " + ", ".join(f"{i}={n}" for i, n in enumerate(classes))]
    for split in synth.LIST_SPLITS:
        rows = synth.read_list_file(paths[split])
        lines.append(f"  {split:<5} {len(rows):5d} videos  {paths[split]}")
    lines += [f"  class names  {paths['classes']}", f"  parameters   {paths['meta']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
