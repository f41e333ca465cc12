"""`mgtc predict VIDEO [VIDEO ...] --checkpoint CKPT` or `mgtc predict --manifest LIST --out URI --checkpoint CKPT`

Classify videos with a fine-tuned checkpoint, with any token strategy applied at inference
(training-free MGTC: --strategy mgtc_ratio --ratio 0.5, or --tau T for mgtc_threshold).
Each video is scored as `mgtc eval` does: clips x crops test views, softmax averaged.

  mgtc predict clip.mp4 --checkpoint runs/ray/synthetic_tiny/epoch_0008 --strategy mgtc_ratio --ratio 0.5
  mgtc predict a.mp4 b.mp4 --checkpoint videomae_vitb_k400_ft.pth --labels k400_classes.txt --json
  mgtc predict --manifest test.csv --out runs/predict/test --checkpoint CKPT --features

VIDEO...: no Ray; the checkpoint is loaded once, videos decoded one after the other, on
the GPU when there is one. --manifest: Ray Data batch inference (decode actors -> model
actors), Parquet parts under --out (local or s3://), resumable, tracked in MLflow.
--checkpoint: a training checkpoint directory (its config and class names are stored in
it) or an official VideoMAE .pth (sizes read from the weights; give --config for clips
other than 16 frames x stride 4 at 224 px).
Exit status: 0 all predicted, 1 some video failed (an error line / error row each),
2 bad arguments, checkpoint, labels or config (before any video is read).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from pipeline.selection import STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (local or s3://)")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint directory or .pth file")
    parser.add_argument("--config", help="YAML config (default: the one stored in the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config field, e.g. --set data.test_clips=1 (repeatable)")
    parser.add_argument("--strategy", choices=STRATEGIES, metavar="S",
                        help=f"token strategy at inference ({', '.join(STRATEGIES)}; default: the checkpoint's)")
    parser.add_argument("--ratio", type=float, help="masking ratio: fraction of tokens dropped, in [0, 1)")
    parser.add_argument("--tau", type=float, help="mgtc_threshold: drop tokens whose motion score is under tau")
    parser.add_argument("--labels", help="class names: classInd.txt, JSON / CSV map, or one name per line")
    parser.add_argument("--top-k", type=int, default=5, help="classes per video (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per video instead of text")
    parser.add_argument("--features", action="store_true", help="also output the pooled feature vector")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=8, help="views per model call (default 8)")
    batch = parser.add_argument_group("batch inference (Ray Data)")
    batch.add_argument("--manifest", help="list of videos (VideoMAE list file or CSV; labels optional)")
    batch.add_argument("--out", help="output folder for the Parquet parts (local or s3://)")
    batch.add_argument("--part-size", type=int, default=64, help="videos per committed part (default 64)")
    batch.add_argument("--decode-actors", type=int, default=0, help="decode actors (default: CPUs - model actors)")
    batch.add_argument("--model-actors", type=int, default=1, help="model actors (default 1; one GPU each on a cluster)")
    batch.add_argument("--no-track", action="store_true", help="do not log an MLflow run")
    return parser


def format_text(result) -> str:
    """Human-readable lines of one VideoResult."""
    if result.error:
        return f"{result.video}: ERROR {result.error}"
    lines = [f"{result.video}: {result.views} views, kept {100 * result.kept_ratio:.1f}% tokens, "
             f"{result.gflops_per_view:.3g} GFLOPs/view, {result.seconds:.2f} s"]
    width = max(len(n) for n in result.top_names)
    lines += [f"  {i + 1}. {name:<{width}}  {p:.4f}" for i, (name, p) in enumerate(zip(result.top_names, result.top_probs))]
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments (checked before anything is loaded), or None."""
    if args.manifest and args.videos:
        return "give VIDEO arguments or --manifest, not both"
    if not args.manifest and not args.videos:
        return "nothing to predict: give VIDEO files or --manifest LIST --out URI"
    if args.manifest and not args.out:
        return "--manifest needs --out URI (where the Parquet parts go)"
    if args.top_k < 1:
        return f"--top-k {args.top_k}: must be >= 1"
    if args.batch_size < 1 or args.part_size < 1 or args.model_actors < 1 or args.decode_actors < 0:
        return "--batch-size, --part-size, --model-actors must be >= 1 (--decode-actors >= 0)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    from pipeline.predict.loading import inference_masking

    try:
        masking = inference_masking(args.strategy, args.ratio, args.tau)
    except ValueError as err:
        problem = problem or str(err)
    if problem:
        print(f"mgtc predict: {problem}", file=sys.stderr)
        return 2
    if args.manifest:
        from pipeline.predict.batch import main_batch

        return main_batch(args, masking)
    from pipeline.config import ConfigError
    from pipeline.checkpoints import CheckpointError
    from pipeline.predict.core import predict_videos
    from pipeline.predict.labels import LabelsError
    from pipeline.predict.loading import load_for_inference

    try:
        loaded = load_for_inference(args.checkpoint, config=args.config, overrides=args.overrides,
                                    masking=masking, labels=args.labels, device=args.device)
    except (CheckpointError, ConfigError, LabelsError, ValueError, OSError) as err:
        print(f"mgtc predict: {err}", file=sys.stderr)
        return 2
    failed = 0
    for result in predict_videos(args.videos, loaded, k=args.top_k, features=args.features,
                                 batch_size=args.batch_size):
        failed += not result.ok
        if args.json:
            print(json.dumps(_finite(result.as_dict())), flush=True)
        else:
            print(format_text(result), flush=True)
    return 1 if failed else 0


def _finite(d: dict) -> dict:
    """JSON has no NaN: a value that is not finite (a failed video's GFLOPs) becomes null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
