"""`mgtc export --checkpoint CKPT --format hf|pt2|torchscript --out DIR [--keep K] [--labels FILE]`

Export a fine-tuned checkpoint (training directory or official .pth, as `mgtc predict`
reads it) for serving elsewhere:
  hf           Hugging Face VideoMAEForVideoClassification directory (config.json +
               model.safetensors; transformers' from_pretrained loads it), checked by loading
               it back: q/v biases equal ours, logits within 1e-4
  pt2          torch.export program of the dense path (model.pt2), dynamic batch
  torchscript  the same traced with torch.jit (model.ts)
--keep K (pt2 / torchscript): the program takes (x, ids_keep [B, K]) for a fixed count of
kept tokens (MGTC at a fixed ratio); default all tokens, forward(x).
Every export is checked against eager on a fresh input before the command succeeds;
export.json beside it records the input layout, normalisation and class names.
Exit status: 0 written and checked, 2 bad arguments or checkpoint, 3 the check failed.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint directory or .pth file")
    parser.add_argument("--format", required=True, choices=("hf", "pt2", "torchscript"))
    parser.add_argument("--out", required=True, help="output folder (local)")
    parser.add_argument("--keep", type=int, help="pt2 / torchscript: fixed kept tokens per clip (default all)")
    parser.add_argument("--config", help="YAML config (default: the one stored in the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--labels", help="class names for the HF config (default: stored with the checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.config import ConfigError
    from pipeline.export import ExportError, export
    from pipeline.checkpoints import CheckpointError
    from pipeline.predict.labels import LabelsError
    from pipeline.predict.loading import load_for_inference

    if args.keep is not None and args.format == "hf":
        print("mgtc export: --keep is for pt2 / torchscript: the HF model always runs all tokens", file=sys.stderr)
        return 2
    try:
        loaded = load_for_inference(args.checkpoint, config=args.config, overrides=args.overrides,
                                    labels=args.labels, device="cpu")
        meta = export(loaded, args.format, args.out, keep=args.keep, source=loaded.source)
    except (CheckpointError, ConfigError, LabelsError, ValueError, OSError) as err:
        print(f"mgtc export: {err}", file=sys.stderr)
        return 2
    except ExportError as err:
        print(f"mgtc export: check failed: {err}", file=sys.stderr)
        return 3
    print(json.dumps({k: meta[k] for k in ("format", "max_abs_logit_diff", "keep", "tokens")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
