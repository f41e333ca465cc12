"""Learnability probe of a synthetic set: can a tiny ViT learn every class with all tokens?

    python -m jobs.learnability --data runs/hard_probe --frames 16 --stride 2 --steps 400

In process, no Ray, no shards (docs/SYNTHETIC.md, learnability): every train/val video of
the set is decoded once (decord) into memory; a 4-block ViT-tiny from scratch (full-size
head) trains on random temporal windows of `--frames` frames at `--stride`, AdamW with a
one-cycle schedule, label smoothing 0.1; validation is the centre window of every val
video. Prints val top-1 every `--eval-every` steps and per-class accuracy at the end.
"""

from __future__ import annotations

import argparse
import sys
import time

import decord
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.vocab import IMAGENET_MEAN, IMAGENET_STD
from pipeline.model import build_model
from pipeline.synth import read_list_file


def load_split(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(videos [V, F, H, W, 3] uint8, labels [V]) of one list file."""
    rows = read_list_file(path)
    videos = [decord.VideoReader(str(p)).get_batch(list(range(len(decord.VideoReader(str(p)))))).asnumpy()
              for p, _ in rows]
    frames = min(len(v) for v in videos)
    return np.stack([v[:frames] for v in videos]), np.array([label for _, label in rows])


def to_input(clips: np.ndarray) -> torch.Tensor:
    """[B, T, H, W, 3] uint8 -> [B, 3, T, H, W] float32, ImageNet-normalised."""
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.learnability", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of a synthetic set (train.csv, val.csv, classes.txt)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(args.seed)
    classes = open(f"{args.data}/classes.txt").read().split()
    train, train_y = load_split(f"{args.data}/train.csv")
    val, val_y = load_split(f"{args.data}/val.csv")
    span = (args.frames - 1) * args.stride + 1
    if span > train.shape[1]:
        print(f"--frames {args.frames} at --stride {args.stride} spans {span} frames; videos have {train.shape[1]}",
              file=sys.stderr)
        return 2
    model = build_model("tiny", len(classes), num_frames=args.frames, img_size=train.shape[2], head_init_scale=1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    start = (val.shape[1] - span) // 2
    val_x = to_input(val[:, start:start + span:args.stride])

    def evaluate() -> np.ndarray:
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(val_x[i:i + 32]).argmax(1) for i in range(0, len(val_x), 32)]).numpy()
        model.train()
        return pred

    t0 = time.process_time()
    print(f"{len(train)} train / {len(val)} val videos, {len(classes)} classes, {args.frames}x{args.stride}")
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(train), args.batch)
        offs = rng.integers(0, train.shape[1] - span + 1, args.batch)
        clips = np.stack([train[i, o:o + span:args.stride] for i, o in zip(idx, offs)])
        loss = F.cross_entropy(model(to_input(clips)), torch.from_numpy(train_y[idx]), label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = 100 * (evaluate() == val_y).mean()
            print(f"step {step}: loss {loss.item():.3f}, val top-1 {acc:.1f}% ({time.process_time() - t0:.0f} s CPU)")
    pred = evaluate()
    print("per class val top-1: " + ", ".join(
        f"{name} {100 * (pred[val_y == c] == c).mean():.0f}%" for c, name in enumerate(classes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
