"""`mgtc bench data`: CPU-ms and wall-ms per training clip of the data path, broken down.

One process, torch single-threaded, one call = one decoded window = `num_sample` (2) clips
as the K400 recipe (16x4, 224, short side 224, rand-m7-n4-mstd0.5-inc1). Per case and video:
open (probe + reader), seek + decode (the window's 16 frames at stride 4), crop / resize /
flip, token scores (computed on the clip: the shard-row read is issue 12 item 1's and not
measured here), RandAugment (actor: timm's PIL ops; trainer: `augment.TrainerAugment` on
the CPU, reported apart because on a GPU trainer it leaves the CPUs), hand-off (pickling
the output batch, what Ray's object store copies). Cases: decoder x source / prepared
videos; "before" = today's path (decord, source video, RandAugment in the actor).

Prepared videos are made here with `mgtc prepare`'s encoding but its own size (`write_prepared`,
older than the job): every 4th frame (the stride lattice), short side 224, GOP 16, x264 crf 23.
Sources: moving textured content, 10 s at 30 fps, H.264 with x264's defaults (crf 23,
keyint 250). Rounds interleave all cases; medians over rounds and videos.
"""
from __future__ import annotations

import pickle
import random
import time
from pathlib import Path

import numpy as np

SIZES = {"340x256": (256, 340), "426x320": (320, 426), "1280x720": (720, 1280)}
FRAMES, STRIDE, INPUT, SHORT, NUM_SAMPLE = 16, 4, 224, 224, 2
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


def write_prepared(src: str, path: Path, stride: int = STRIDE, short: int = SHORT, gop: int = 16) -> str:
    """`mgtc prepare`'s encoding of `src`: every `stride`-th frame, short side `short`, GOP
    `gop`, x264 crf 23 (frame k of the copy = source frame k * stride)."""
    import av

    from pipeline import video

    info = video.probe(src)
    h, w = video.resized_size(info.height, info.width, short)
    reader = video.open_frames(src, (h, w))
    frames = reader.frames(video.sequence_indices(len(reader), stride))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=max(1, round(info.fps / stride)),
                                options={"g": str(gop), "keyint_min": str(gop), "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return str(path)


class Timer:
    """Per-step CPU and wall seconds."""

    def __init__(self):
        self.cpu = dict.fromkeys(STEPS, 0.0)
        self.wall = dict.fromkeys(STEPS, 0.0)

    def __call__(self, step: str, fn, *args):
        c, w = time.process_time(), time.perf_counter()
        out = fn(*args)
        self.cpu[step] += time.process_time() - c
        self.wall[step] += time.perf_counter() - w
        return out


def one_call(path: str, decoder: str, prepared: bool, rng: np.random.Generator, actor_ra, trainer_ra):
    """One decoded window -> NUM_SAMPLE clips. Returns (Timer with the actor's steps,
    trainer-side RandAugment CPU seconds for the same clips)."""
    import torch

    from pipeline import motion, transforms, video

    tm = Timer()
    stride = 1 if prepared else STRIDE
    short = 0 if prepared else SHORT  # a prepared copy is at the short side already

    def opened():
        info = video.probe_with(path, decoder)
        size = video.resized_size(info.height, info.width, short)
        return video.open_frames(path, size, decoder=decoder)

    reader = tm("open", opened)
    window = video.train_window(video.num_sampled(len(reader), stride), FRAMES, rng)
    frames = tm("decode", reader.frames, window * stride)
    out, trainer_s = [], 0.0
    for _ in range(NUM_SAMPLE):
        h, w = frames.shape[1:3]
        box = transforms.random_resized_box(h, w, (0.08, 1.0), (0.75, 1.3333), rng)
        pixels = tm("crop", transforms.crop_resize, frames, box, INPUT, bool(rng.random() < 0.5))
        scores = tm("scores", motion.token_scores, pixels, 2, 16, "boundary")
        augmented = tm("augment", transforms.augment_clip, pixels, actor_ra, int(rng.integers(2**63)))
        c = time.process_time()
        trainer_ra(torch.from_numpy(pixels)[None])
        trainer_s += time.process_time() - c
        out.append((augmented, scores))
    tm("handoff", lambda: pickle.dumps({"pixels": np.stack([o[0] for o in out]),
                                        "scores": np.stack([o[1] for o in out])}, protocol=5))
    return tm, trainer_s


def run(work: Path, *, videos: int = 1, rounds: int = 3, sizes=tuple(SIZES), decoders=("decord", "torchcodec"),
        calls: int = 3, log=print) -> dict:
    """Measure every case; returns {(size, kind, decoder): {"cpu": {step: ms/clip}, "wall":
    {...}, "trainer_augment": ms/clip}} (medians over rounds)."""
    import torch

    from pipeline import augment, transforms, video

    torch.set_num_threads(1)
    decoders = [d for d in decoders if d == "decord" or not video.torchcodec_reason()]
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in sizes:
        h, w = SIZES[name]
        for i in range(videos):
            src = work / f"src_{name}_{i}.mp4"
            if not src.exists():
                log(f"bench data: writing {src.name}")
                write_source(src, h, w, seed=i)
            prep = work / f"prep_{name}_{i}.mp4"
            if not prep.exists():
                write_prepared(str(src), prep)
            files.setdefault((name, "source"), []).append(str(src))
            files.setdefault((name, "prepared"), []).append(str(prep))
    actor_ra = transforms.rand_augment(RA, INPUT)
    trainer_ra = augment.TrainerAugment(RA, INPUT)
    samples: dict = {}
    rng = np.random.default_rng(0)
    random.seed(0)
    np.random.seed(0)
    cases = [(n, k, d) for n in sizes for k in ("source", "prepared") for d in decoders]
    for r in range(rounds):
        log(f"bench data: round {r + 1}/{rounds}")
        for case in cases:
            for path in files[case[:2]]:
                for _ in range(calls):
                    tm, trainer_s = one_call(path, case[2], case[1] == "prepared", rng, actor_ra, trainer_ra)
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
    lines += ["", "Decode-actor CPU ms per clip (wall ms in brackets); before = decord, source, "
                  "augment_on=actor:", "",
              "| source | video | decoder | augment_on=actor | augment_on=trainer | vs before (actor / trainer) |",
              "|---|---|---|---|---|---|"]
    for (name, kind, dec), m in results.items():
        before = actor_ms(results[(name, "source", "decord")], "actor")
        a, t = actor_ms(m, "actor"), actor_ms(m, "trainer")
        lines.append(f"| {name} | {kind} | {dec} | {a:.1f} ({actor_ms(m, 'actor', 'wall'):.1f}) | "
                     f"{t:.1f} ({actor_ms(m, 'trainer', 'wall'):.1f}) | {a / before:.2f} / {t / before:.2f} |")
    lines += ["", "Cores per GPU (ViT-B 16x224; CPU-s per clip x clips/s; actor side only):", "",
              "| source | video | decoder | augment_on | @ 700 clips/s (all tokens) | @ 1300 clips/s (MGTC 50%) |",
              "|---|---|---|---|---|---|"]
    for (name, kind, dec), m in results.items():
        for side in ("actor", "trainer"):
            ms = actor_ms(m, side) + shard_read_ms
            lines.append(f"| {name} | {kind} | {dec} | {side} | {ms * 0.7:.0f} | {ms * 1.3:.0f} |")
    return "\n".join(lines) + "\n"
