"""`mgtc bench training-free --checkpoint CKPT`: top-1 vs kept tokens with strategies applied
only at inference, on a model trained with another one (all tokens, or MGTC).

The test split's views are decoded once (the evaluation's views, `pipeline.predict.core`),
then classified under every strategy and masking ratio: none; mgtc_ratio, mgtc_threshold
(tau calibrated on the val split's view scores for the same data-set-wide ratio: the
quantile rule of `mgtc calibrate`), random and running_cell at 0.25 / 0.5 / 0.75 dropped.
Softmax per view, mean per video, top-1 / top-5 (VideoMAE's test rule). Writes the table
to docs/RESULTS.md (section "Training-free token compression") and the plot to
docs/img/training_free.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.bench.training_free import plot, study, table

REPO = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc bench training-free", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, action="append",
                        help="fine-tuned checkpoint (repeat for several models: name=URI names a column)")
    parser.add_argument("--test", required=True, help="test manifest (labels)")
    parser.add_argument("--val", required=True, help="val manifest: tau is calibrated on its views")
    parser.add_argument("--no-write", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rows = []
    t0 = time.monotonic()
    for item in args.checkpoint:
        name, _, uri = item.rpartition("=") if "=" in item else ("model", "", item)
        rows += study(name, uri, args.test, args.val)
    text = table(rows)
    print(text)
    print(f"({time.monotonic() - t0:.0f} s)")
    if not args.no_write:
        plot(rows, REPO / "docs" / "img" / "training_free.png")
        write_results(text, argv)
    return 0


def write_results(text: str, argv: list[str]) -> None:
    from jobs.bench import write_section

    section = (
        "## Training-free token compression\n\n"
        "A strategy applied only at inference, to a model trained with another one (`mgtc predict "
        "--strategy S --ratio R`). Test split of the demo's data (72 videos x 2 clips), views decoded "
        "once; tau of mgtc_threshold calibrated on the val split's view scores for the same masking "
        f"ratio. One seed. {time.strftime('%Y-%m-%d')}; command: `mgtc bench training-free {' '.join(argv)}`.\n\n"
        f"{text}\n\n![top-1 vs kept tokens](img/training_free.png)\n"
    )
    write_section(REPO / "docs" / "RESULTS.md", section)


if __name__ == "__main__":
    sys.exit(main())
