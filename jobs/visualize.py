"""`mgtc visualize <video> --strategy ... --out x.png`: what each strategy keeps, for one video.

Decodes the video's centred evaluation clip (`pipeline.video.decode_frames`, centre crop),
scores its tokens (`pipeline.motion.token_scores`), selects with every strategy
(`pipeline.selection.select_tokens`) and writes two PNGs: the mask picture (one row per
strategy, one column per frame, dropped tokens greyed out) and the motion heat map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.vocab import SCORE_MODES, STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgtc visualize", description=__doc__.splitlines()[0])
    p.add_argument("video", help="video file (local path or s3://)")
    p.add_argument("--strategy", nargs="+", default=["none", "mgtc_ratio", "random", "running_cell"],
                   choices=STRATEGIES, help="one row per strategy, in this order")
    p.add_argument("--ratio", type=float, default=0.5, help="masking ratio (fraction of tokens dropped)")
    p.add_argument("--tau", type=float, default=None, help="threshold for mgtc_threshold")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--size", type=int, default=112, help="crop (network input) size")
    p.add_argument("--short-side", type=int, default=0, help="resize short side first (default: --size)")
    p.add_argument("--tubelet", type=int, default=2)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--score-mode", default="boundary", choices=SCORE_MODES)
    p.add_argument("--seed", type=int, default=0, help="seed of the random strategies")
    p.add_argument("--every", type=int, default=1, help="show every n-th frame")
    p.add_argument("--out", required=True, help="mask picture (PNG)")
    p.add_argument("--heatmap", default=None,
                   help="motion heat map (PNG); default: <out>_motion.png; 'none' to skip")
    return p


def _rows(args: argparse.Namespace) -> list[tuple[str, str, float, float | None]]:
    rows = []
    for strategy in dict.fromkeys(args.strategy):
        if strategy == "none":
            label = "none (all tokens)"
        elif strategy == "mgtc_threshold":
            label = f"mgtc_threshold tau={args.tau:g}"
        else:
            label = f"{strategy} {args.ratio:g}"
        rows.append((label, strategy, args.ratio, args.tau))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "mgtc_threshold" in args.strategy and args.tau is None:
        print("mgtc visualize: --strategy mgtc_threshold needs --tau", file=sys.stderr)
        return 2
    from pipeline.viz import heatmap_figure, keep_masks, load_clip, mask_figure, save_png

    try:
        frames, scores = load_clip(args.video, args.num_frames, args.sampling_rate, args.size,
                                   args.short_side, args.tubelet, args.patch, args.score_mode)
        keeps = keep_masks(scores, _rows(args), seed=args.seed)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"mgtc visualize: {args.video}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    title = f"{Path(args.video).name}: {args.num_frames}x{args.sampling_rate}, {args.size}px"
    out = save_png(mask_figure(frames, keeps, args.tubelet, args.patch, every=args.every, title=title),
                   args.out)
    print(f"wrote {out}")
    heatmap = args.heatmap or str(out.with_name(f"{out.stem}_motion.png"))
    if heatmap.lower() != "none":
        written = save_png(heatmap_figure(frames, scores, args.tubelet, args.patch,
                                          title=f"motion: {title}"), heatmap)
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
