"""`mgtc bench predict`'s measurement: model only, decode only and end to end (`mgtc predict
--manifest`) clips/s per kept ratio on K400-size synthetic videos, rounds paired; the table,
where the time goes, and the section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # Ray workers import the project from here
KEPT = (1.0, 0.75, 0.5)


def make_checkpoint(folder: Path, size: str) -> Path:
    """A random-weight training checkpoint of the benchmark's model (400 classes)."""
    import torch

    from pipeline.config import load_config, to_dict
    from pipeline.modeling import STATE_FILE, make_model

    cfg = load_config(None, [f"model.size={size}", "data.train_manifest=x", "data.num_classes=400",
                             "data.num_frames=16", "data.sampling_rate=4", "data.input_size=224",
                             "data.short_side=256", "data.test_clips=1", "data.test_crops=1",
                             "masking.strategy=none", "optim.batch_size=1"])
    d = folder / "ckpt" / "epoch_0000"
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({"model": make_model(cfg).state_dict(), "optimizer": {}, "config": to_dict(cfg)}, d / STATE_FILE)
    return d


def cpu_s() -> float:
    return time.process_time()


def decode_only(loaded, paths: list[str]) -> tuple[float, list]:
    """(clips/s of CPU time, the views) of the decode actor's work on `paths`."""
    import torch

    from pipeline.predict.core import view_maker

    torch.set_num_threads(1)
    maker = view_maker(loaded)
    torch.set_num_threads(1)
    t0 = cpu_s()
    views = [v for i, p in enumerate(paths) for v in maker.make({"path": p, "label": 0, "video_id": i})]
    return len(views) / (cpu_s() - t0), views


def model_only(loaded, views: list, kept: float) -> float:
    """clips/s of CPU time of the model actor's work at `kept`, one view per call."""
    import dataclasses

    import numpy as np

    from pipeline.predict.core import Predictor
    from pipeline.predict.loading import inference_masking, with_masking

    masking = inference_masking("none" if kept == 1.0 else "mgtc_ratio", 1.0 - kept, None)
    loaded = dataclasses.replace(loaded, cfg=with_masking(loaded.cfg, masking))
    predictor = Predictor(loaded)

    def one(i: int, view) -> None:
        _, pixels, scores = view
        predictor({"pixels": pixels[None], "scores": scores[None].astype(np.float32),
                   "video_id": np.array([i]), "view": np.array([0])})

    one(0, views[0])  # warm-up (allocator, kernels)
    t0 = cpu_s()
    for i, view in enumerate(views):
        one(i, view)
    return len(views) / (cpu_s() - t0)


def end_to_end(ckpt: Path, listing: Path, out: Path, kept: float) -> tuple[float, float, float]:
    """(clips/s (wall, after Ray is up), clips/s after the first result, seconds to the first
    result) of `mgtc predict --manifest` at `kept`."""
    from pipeline.predict.batch import BatchSettings, run_batch
    from pipeline.predict.loading import inference_masking

    masking = inference_masking("none" if kept == 1.0 else "mgtc_ratio", round(1.0 - kept, 4), None)
    settings = BatchSettings(checkpoint=str(ckpt), masking=masking, top_k=5, batch_size=1, part_size=4,
                             decode_actors=1, model_actors=1, track=False)
    summary = run_batch(str(listing), str(out), settings, log=lambda _: None)
    return summary["clips_per_s"], summary["steady_clips_per_s"], summary["first_result_s"]


def local_ray():
    """The benchmark's local Ray (2 CPUs, no dashboard), quiet like the other commands:
    Ray's own lines stay in its session logs unless --verbose (`pipeline.raylog`)."""
    from pipeline.vocab import ray_session

    return ray_session(num_cpus=2, include_dashboard=False,
                       runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})


def measure(args) -> tuple[list[tuple], dict]:
    import torch

    from pipeline.bench.videos import rendered_copies
    from pipeline.predict.loading import load_for_inference

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_predict_"))
    paths = rendered_copies(work / "videos", args.videos, unique=3, frames=int(args.seconds * args.fps),
                            height=args.height, width=args.width, fps=args.fps)
    listing = work / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    ckpt = make_checkpoint(work, args.model)
    torch.set_num_threads(1)
    loaded = load_for_inference(str(ckpt), device="cpu")
    load_before = os.getloadavg()
    decode_rate, views = decode_only(loaded, paths[: args.model_views])
    rates: dict[float, dict[str, list[float]]] = {k: {"model": [], "e2e": [], "steady": [], "first": []}
                                                  for k in KEPT}
    with local_ray():
        for r in range(args.rounds):
            for kept in KEPT:
                rates[kept]["model"].append(model_only(loaded, views, kept))
                out = work / f"out_r{r}_{kept}"
                shutil.rmtree(out, ignore_errors=True)
                e2e, steady, first = end_to_end(ckpt, listing, out, kept)
                rates[kept]["e2e"].append(e2e)
                rates[kept]["steady"].append(steady)
                rates[kept]["first"].append(first)
                print(f"round {r + 1} kept {kept:.2f}: model {rates[kept]['model'][-1]:.3f} clips/s CPU, "
                      f"end to end {e2e:.3f} clips/s wall ({steady:.3f} after the first result at {first:.1f} s)",
                      flush=True)
    base = {k: statistics.median(v) for k, v in rates[1.0].items()}
    rows = []
    for kept in KEPT:
        m, e = statistics.median(rates[kept]["model"]), statistics.median(rates[kept]["e2e"])
        pairs_m = [a / b for a, b in zip(rates[kept]["model"], rates[1.0]["model"])]
        pairs_e = [a / b for a, b in zip(rates[kept]["e2e"], rates[1.0]["e2e"])]
        st = statistics.median(rates[kept]["steady"])
        pairs_s = [a / b for a, b in zip(rates[kept]["steady"], rates[1.0]["steady"])]
        rows.append((kept, m, statistics.median(pairs_m), decode_rate, e, statistics.median(pairs_e),
                     st, statistics.median(pairs_s), statistics.median(rates[kept]["first"]), min(m, decode_rate)))
    info = {"videos": len(paths), "model": args.model, "base": base, "decode": decode_rate,
            "load": (load_before, os.getloadavg())}
    return rows, info


def table(rows: list[tuple]) -> str:
    head = ("kept tokens", "model-only clips/s (CPU)", "model speedup", "decode-only clips/s (CPU)",
            "end-to-end clips/s (wall)", "end-to-end speedup", "after first result clips/s", "its speedup",
            "first result (s)", "bound: min(model, decode)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kept, m, sm, d, e, se, st, sst, first, bound in rows:
        lines.append(f"| {kept:.2f} | {m:.3f} | {sm:.2f}x | {d:.2f} | {e:.3f} | {se:.2f}x | {st:.3f} | {sst:.2f}x "
                     f"| {first:.1f} | {bound:.3f} |")
    return "\n".join(lines)


def where_time_goes(rows: list[tuple]) -> str:
    """Per clip: the decode actor's and the model actor's CPU ms, and the end-to-end wall ms
    against the slower actor's (the pipeline's bound with both actors busy in parallel)."""
    lines = []
    for kept, m, _, d, e, _, st, _, first, bound in rows:
        lines.append(f"- {kept:.2f} kept: decode {1000 / d:.0f} ms, model {1000 / m:.0f} ms CPU per clip "
                     f"({'decode' if d < m else 'model'}-bound: {1000 / bound:.0f} ms); end to end "
                     f"{1000 / e:.0f} ms wall per clip, of which the first result takes {first:.1f} s (actor "
                     f"start-up, model load, first decode), then {1000 / st:.0f} ms per clip")
    return "\n".join(lines)


def section_text(body: str, info: dict, args, argv: list[str]) -> str:
    from pipeline.bench.machine import cpu_model

    return (
        "## Batch inference (`mgtc bench predict`)\n\n"
        f"ViT-{info['model'][0].upper()} ({info['model']}), 16 frames x stride 4 at 224 px, one view per video, "
        f"random weights; {info['videos']} videos of {args.seconds:g} s at {args.fps} fps, "
        f"{args.width}x{args.height} H.264 (x264 defaults), `mgtc_ratio` at masking ratio 1 - kept. "
        f"{args.rounds} round(s), ratios paired within a round. Machine: {cpu_model()}, "
        f"{os.cpu_count()} vCPU shared with other jobs (load average {info['load'][0][0]:.1f} at the start, "
        f"{info['load'][1][0]:.1f} at the end); {time.strftime('%Y-%m-%d')}. "
        f"Command: `mgtc bench predict {' '.join(argv)}`.\n\n"
        f"{body}\n\n"
        "Model-only and decode-only are the two actors' work measured in this process (CPU time, one "
        "thread each, as each actor gets one CPU); end to end is the Ray Data job (1 decode actor -> "
        "1 model actor, Parquet parts), wall clips/s after Ray is up; \"after first result\" leaves out the "
        "pipeline's start (actor start-up, model load, the first decode), which a long list amortises.\n\n"
        f"Where the time goes:\n{where_time_goes(info['rows'])}\n"
    )
