"""`mgtc flops`: encoder multiply-adds per view for a model size, clip shape and keep ratio.

Multiply-adds are what VideoMAE calls "GFLOPs" (ViT-B 16x224: 180.3 G per view); a counter
of real floating-point operations reports twice as much. Does not import Ray.

    mgtc flops --model base --num-frames 32 --keep-ratio 0.5
"""

from __future__ import annotations

import argparse

from pipeline.model import VIT_SIZES


def _keep_ratio(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"--keep-ratio={text} must be in (0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgtc flops",
        description="Encoder multiply-adds per view (VideoMAE's 'GFLOPs' convention).",
    )
    parser.add_argument("--model", choices=list(VIT_SIZES), default="base")
    parser.add_argument("--num-frames", type=_positive, default=16)
    parser.add_argument("--keep-ratio", type=_keep_ratio, default=1.0,
                        help="fraction of tokens kept (1 - masking ratio)")
    parser.add_argument("--input-size", type=_positive, default=224)
    parser.add_argument("--tubelet", type=_positive, default=2)
    parser.add_argument("--patch", type=_positive, default=16)
    parser.add_argument("--views", type=_positive, default=1,
                        help="views per video (clips x crops), for the per-video total")
    parser.add_argument("--check", action="store_true",
                        help="also count with torch's FlopCounterMode (meta tensors, no compute)")
    return parser


def counted_gmacs(args: argparse.Namespace, num_kept: int) -> float:
    """FlopCounterMode count on meta tensors: shapes only, so even ViT-L costs nothing."""
    import torch

    from pipeline.flops import measured_gmacs_per_view
    from pipeline.model import build_model

    with torch.device("meta"):
        model = build_model(args.model, 400, num_frames=args.num_frames, img_size=args.input_size,
                            patch_size=args.patch, tubelet_size=args.tubelet)
        x = torch.empty(1, 3, args.num_frames, args.input_size, args.input_size)
        ids_keep = torch.arange(num_kept)[None]
    return measured_gmacs_per_view(model, x, ids_keep)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipeline.flops import block_macs, encoder_shape, gmacs_per_view, patch_embed_macs
    from pipeline.selection import num_kept

    try:
        shape = encoder_shape(args.model, num_frames=args.num_frames, img_size=args.input_size,
                              patch_size=args.patch, tubelet_size=args.tubelet)
    except ValueError as err:
        parser.error(f"{err} (set by --num-frames / --input-size / --tubelet / --patch)")
    kept = num_kept(shape.num_tokens, 1.0 - args.keep_ratio)
    total = gmacs_per_view([kept], shape)
    print(f"model            ViT-{args.model} (D={shape.dim}, depth={shape.depth})")
    print(f"clip             {args.num_frames}x{args.input_size}x{args.input_size}, "
          f"tubelet {args.tubelet}, patch {args.patch}")
    print(f"tokens kept      {kept} / {shape.num_tokens} (keep ratio {args.keep_ratio:g})")
    print(f"blocks           {block_macs(kept, shape) / 1e9:.1f} G multiply-adds")
    print(f"patch embedding  {patch_embed_macs(shape) / 1e9:.1f} G multiply-adds (all tokens)")
    print(f"encoder total    {total:.1f} G multiply-adds per view "
          "(VideoMAE 'GFLOPs'; = half the real FLOPs)")
    if args.views > 1:
        print(f"per video        {total * args.views:.1f} G multiply-adds ({args.views} views)")
    if args.check:
        counted = counted_gmacs(args, kept)
        print(f"FlopCounterMode  {counted:.1f} G multiply-adds per view (FLOPs / 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
