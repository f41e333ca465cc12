"""`mgtc bench data`: CPU-ms and wall-ms per training clip of the data path, broken down.

One process, torch single-threaded, one call = what `clips.ClipMaker.make` does for one
training video row with a shard row: one decoded window = `num_sample` (2) clips, the K400
recipe (16x4, 224, short side 224, rand-m7-n4-mstd0.5-inc1). The steps are the library's own
functions in ClipMaker's order (tested: the same clips as ClipMaker): open (`video.open_frames`
at the size the shard row gives: no probe), seek + decode (the window's 16 frames at stride
4), crop / resize / flip (`transforms`), token scores (`clips.clip_scores` pooled from the
video's shard cell maps, made once per video with precompute's `score_video`), RandAugment
(actor: timm's PIL ops; trainer: `augment.TrainerAugment` on the CPU, reported apart because
on a GPU trainer it leaves the CPUs), hand-off (pickling the output batch, what Ray's object
store copies). The shard-row read (`shard_rows.RowReader`) is `mgtc bench shards`' number,
added with `--shard-read-ms`. Cases: decoder x source / prepared videos; "before" = decord,
source video, RandAugment in the actor (the path before issue 12, less its shard read).

Prepared videos are `mgtc prepare`'s encoding (`reencode.reencode`, the function the job
runs): every 4th frame (the stride lattice, data.video_stride=4), keyframe every 16 frames,
x264 crf 23, at short side 224 (= data.short_side: decoded without resizing) and 320
(`mgtc prepare`'s default: decoded with a resize to 224). Sources: moving textured content,
10 s at 30 fps, H.264 with x264's defaults (crf 23, keyint 250). Rounds interleave all
cases; medians over rounds and videos.
"""
from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np

SIZES = {"340x256": (256, 340), "426x320": (320, 426), "1280x720": (720, 1280)}
FRAMES, STRIDE, INPUT, SHORT, NUM_SAMPLE = 16, 4, 224, 224, 2
PATCH, TUBELET, CELL = 16, 2, 8
PREPARED = (224, 320)  # short sides of the prepared copies
RA = "rand-m7-n4-mstd0.5-inc1"
STEPS = ("open", "decode", "crop", "scores", "augment", "handoff")


def _texture(rng: np.random.Generator, h: int, w: int, cells: int = 24) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.random((1, 3, cells, cells * w // h + 1), dtype=np.float32))
    fine = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    noise = torch.from_numpy(rng.random((3, h, w), dtype=np.float32)) * 0.15
    return ((fine * 0.85 + noise).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()


def write_source(path: Path, height: int, width: int, seed: int, seconds: float = 10, fps: int = 30) -> str:
    """A K400-like clip: a panning textured background and a moving textured square,
    H.264 with x264's default settings (crf 23, keyint 250), yuv420p."""
    import av

    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    back = _texture(rng, height, width + 2 * n)
    obj = _texture(rng, height // 3, height // 3)
    side = obj.shape[0]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(n):
            frame = back[:, 2 * t : 2 * t + width].copy()
            y = int((height - side) * (0.5 + 0.4 * np.sin(t / 20)))
            x = int((width - side) * (t / n))
            frame[y : y + side, x : x + side] = obj
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return str(path)


def write_prepared(src: str, path: Path, short: int, stride: int = STRIDE, keyint: int = 16) -> str:
    """`mgtc prepare`'s encoding of `src` (`reencode.reencode`, its settings but the short
    side at their defaults): every `stride`-th frame, keyframe every `keyint` frames, short
    side `short` (frame k of the copy = source frame k * stride)."""
    from pipeline import reencode

    reencode.reencode(src, str(path), reencode.EncodeSettings(short_side=short, keyint=keyint, stride=stride))
    return str(path)


def shard_row(path: str, rate: int, short: int = SHORT, cell: int = CELL) -> dict:
    """The video's shard row as `mgtc precompute` / `mgtc prepare` write it (the ClipMaker
    columns): motion cell maps at sampling rate `rate` (in frames of this file)."""
    from pipeline import precompute

    cfg = precompute.PrecomputeConfig(sampling_rates=(rate,), short_side=short, cell=cell, tubelet=TUBELET,
                                      num_frames=FRAMES)
    res = precompute.score_video(path, cfg)
    r = res["rates"][rate]
    h, w = res["resized_height"], res["resized_width"]
    return {"path": path, "num_sampled": r["num_sampled"], "resized_height": h, "resized_width": w,
            "tubelet": TUBELET, "cell": cell, "cells_height": h // cell, "cells_width": w // cell,
            "pair_cells": r["pair"].ravel(), "boundary_cells": r["boundary"].ravel()}


def bench_spec(rate: int, decoder: str = "decord"):
    """The ClipSpec of the K400 recipe's training split reading files at `rate` (no actor
    RandAugment: the bench applies it as its own step)."""
    from pipeline import clips

    return clips.ClipSpec(train=True, num_frames=FRAMES, sampling_rate=rate, input_size=INPUT, short_side=SHORT,
                          patch=PATCH, tubelet=TUBELET, score_mode="boundary", num_sample=NUM_SAMPLE,
                          decoder=decoder)


class Timer:
    """Per-step CPU and wall seconds."""

    def __init__(self):
        self.cpu = dict.fromkeys(STEPS, 0.0)
        self.wall = dict.fromkeys(STEPS, 0.0)

    def __call__(self, step: str, fn, *args, **kwargs):
        c, w = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self.cpu[step] += time.process_time() - c
        self.wall[step] += time.perf_counter() - w
        return out


def one_call(row: dict, rate: int, decoder: str, video_id: int, actor_ra, trainer_ra, seed: int = 0):
    """What `ClipMaker.make` does for one training row with a shard row, step by step
    (the same generators, so the same clips). Returns (Timer with the actor's steps,
    trainer-side RandAugment CPU seconds for the same clips, [(pixels, scores)] after the
    actor's RandAugment)."""
    import torch

    from pipeline import clips, shards, transforms, video

    tm = Timer()
    spec = bench_spec(rate, decoder)
    window_rng, sample_rngs = clips.clip_generators(seed, 0, video_id, NUM_SAMPLE)
    cells, cell = shards.row_cells(row), int(row["cell"])
    size = (int(row["resized_height"]), int(row["resized_width"]))
    reader = tm("open", video.open_frames, row["path"], size, decoder=decoder)
    positions = video.train_window(int(row["num_sampled"]), FRAMES, window_rng)
    frames = tm("decode", reader.frames, positions * rate)
    del reader
    out, trainer_s = [], 0.0
    for rng in sample_rngs:  # clips.train_clip, one step at a time
        def cropped():
            h, w = transforms.covered_size(frames.shape[1], frames.shape[2], cell)
            box = transforms.random_resized_box(h, w, spec.scale, spec.ratio, rng)
            flip = bool(spec.hflip and rng.random() < 0.5)
            return transforms.crop_resize(frames, box, INPUT, flip), box, flip

        pixels, box, flip = tm("crop", cropped)
        scores = tm("scores", clips.clip_scores, spec, pixels, positions, cells, box, cell, flip)
        augmented = tm("augment", transforms.augment_clip, pixels, actor_ra, int(rng.integers(2**63)))
        c = time.process_time()
        trainer_ra(torch.from_numpy(pixels)[None])
        trainer_s += time.process_time() - c
        out.append((augmented, scores))
    tm("handoff", lambda: pickle.dumps({"pixels": np.stack([o[0] for o in out]),
                                        "scores": np.stack([o[1] for o in out])}, protocol=5))
    return tm, trainer_s, out


def make_videos(work: Path, sizes, videos: int, prepared=PREPARED, log=print) -> dict:
    """{(size, kind): [(shard row, rate)]}: the generated sources (rate 4) and their
    prepared copies per short side in `prepared` (rate 1), kind "source" / "prepared <short>"."""
    files: dict = {}
    work.mkdir(parents=True, exist_ok=True)
    for name in sizes:
        h, w = SIZES[name]
        for i in range(videos):
            src = work / f"src_{name}_{i}.mp4"
            if not src.exists():
                log(f"bench data: writing {src.name}")
                write_source(src, h, w, seed=i)
            files.setdefault((name, "source"), []).append((shard_row(str(src), STRIDE), STRIDE))
            for short in prepared:
                prep = work / f"prep{short}_{name}_{i}.mp4"
                if not prep.exists():
                    log(f"bench data: preparing {prep.name}")
                    write_prepared(str(src), prep, short)
                files.setdefault((name, f"prepared {short}"), []).append((shard_row(str(prep), 1), 1))
    return files


def run(work: Path, *, videos: int = 1, rounds: int = 3, sizes=tuple(SIZES), decoders=("decord", "torchcodec"),
        calls: int = 3, prepared=PREPARED, log=print) -> dict:
    """Measure every case; returns {(size, kind, decoder): {"cpu": {step: ms/clip}, "wall":
    {...}, "trainer_augment": ms/clip}} (medians over rounds)."""
    import torch

    from pipeline import augment, transforms, video

    torch.set_num_threads(1)
    decoders = [d for d in decoders if d == "decord" or not video.torchcodec_reason()]
    files = make_videos(work, sizes, videos, prepared, log)
    actor_ra = transforms.rand_augment(RA, INPUT)
    trainer_ra = augment.TrainerAugment(RA, INPUT)
    samples: dict = {}
    kinds = ["source"] + [f"prepared {short}" for short in prepared]
    cases = [(n, k, d) for n in sizes for k in kinds for d in decoders]
    for r in range(rounds):
        log(f"bench data: round {r + 1}/{rounds}")
        for case in cases:
            for v, (row, rate) in enumerate(files[case[:2]]):
                for c in range(calls):
                    # Paired draws: every case gets the same window, crops and RandAugment ops
                    # (their cost varies ~5x between ops), only the video file and decoder differ.
                    video_id = (r * videos + v) * calls + c
                    tm, trainer_s, _ = one_call(row, rate, case[2], video_id, actor_ra, trainer_ra)
                    s = samples.setdefault(case, {"cpu": [], "wall": [], "trainer": []})
                    s["cpu"].append(tm.cpu)
                    s["wall"].append(tm.wall)
                    s["trainer"].append(trainer_s)
    per_clip = 1000.0 / NUM_SAMPLE
    return {case: {"cpu": {k: float(np.median([x[k] for x in s["cpu"]])) * per_clip for k in STEPS},
                   "wall": {k: float(np.median([x[k] for x in s["wall"]])) * per_clip for k in STEPS},
                   "trainer_augment": float(np.median(s["trainer"])) * per_clip}
            for case, s in samples.items()}


def actor_ms(m: dict, augment_on: str, kind: str = "cpu") -> float:
    """Decode-actor ms per clip for `augment_on` (trainer: RandAugment leaves the actor)."""
    return sum(v for k, v in m[kind].items() if augment_on == "actor" or k != "augment")


def tables(results: dict, *, shard_read_ms: float = 0.0) -> str:
    """Markdown: the breakdown per case, the actor totals per augment_on, cores per GPU."""
    lines = ["| source | video | decoder | " + " | ".join(STEPS) + " | trainer RandAugment (CPU) |",
             "|---" * (len(STEPS) + 4) + "|"]
    for (name, kind, dec), m in results.items():
        lines.append(f"| {name} | {kind} | {dec} | " + " | ".join(f"{m['cpu'][k]:.1f}" for k in STEPS)
                     + f" | {m['trainer_augment']:.1f} |")
    lines += ["", f"Decode-actor CPU ms per clip (wall ms in brackets), the steps above plus the shard-row read "
                  f"({shard_read_ms:g} ms); before = decord, source, augment_on=actor:", "",
              "| source | video | decoder | augment_on=actor | augment_on=trainer | vs before (actor / trainer) |",
              "|---|---|---|---|---|---|"]
    for (name, kind, dec), m in results.items():
        before = actor_ms(results[(name, "source", "decord")], "actor") + shard_read_ms
        a, t = actor_ms(m, "actor") + shard_read_ms, actor_ms(m, "trainer") + shard_read_ms
        wa, wt = actor_ms(m, "actor", "wall") + shard_read_ms, actor_ms(m, "trainer", "wall") + shard_read_ms
        lines.append(f"| {name} | {kind} | {dec} | {a:.1f} ({wa:.1f}) | {t:.1f} ({wt:.1f}) | "
                     f"{a / before:.2f} / {t / before:.2f} |")
    lines += ["", "Cores per GPU (ViT-B 16x224; CPU-s per clip x clips/s; actor side only):", "",
              "| source | video | decoder | augment_on | @ 700 clips/s (all tokens) | @ 1300 clips/s (MGTC 50%) |",
              "|---|---|---|---|---|---|"]
    for (name, kind, dec), m in results.items():
        for side in ("actor", "trainer"):
            ms = actor_ms(m, side) + shard_read_ms
            lines.append(f"| {name} | {kind} | {dec} | {side} | {ms * 0.7:.0f} | {ms * 1.3:.0f} |")
    return "\n".join(lines) + "\n"
