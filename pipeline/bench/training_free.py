"""`mgtc bench training-free`'s measurement: the test split's views decoded once (the
evaluation's views, `pipeline.predict.core`), then classified under every strategy and
masking ratio (none; mgtc_ratio, mgtc_threshold with tau calibrated on the val split's view
scores, random, running_cell at 0.25 / 0.5 / 0.75 dropped); softmax per view, mean per video,
top-1 / top-5 (VideoMAE's test rule); the table and the plot (one panel per model)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

RATIOS = (0.25, 0.5, 0.75)
STRATEGIES = ("mgtc_ratio", "mgtc_threshold", "random", "running_cell")


def decode(loaded, manifest: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pixels [M, T, S, S, 3], scores [M, T', h, w], video_id [M], view [M]) and labels [V]."""
    from pipeline.manifest import read_manifest
    from pipeline.predict.core import view_maker

    maker = view_maker(loaded)
    rows = [r for r in read_manifest(manifest) if not r.error]
    pixels, scores, vids, views = [], [], [], []
    for i, r in enumerate(rows):
        for view, p, s in maker.make({"path": r.path, "label": r.label, "video_id": i}):
            pixels.append(p)
            scores.append(s)
            vids.append(i)
            views.append(view)
    return (np.stack(pixels), np.stack(scores).astype(np.float32), np.asarray(vids), np.asarray(views),
            np.asarray([r.label for r in rows]))


def classify(loaded, masking, data, batch: int = 16) -> dict[str, float]:
    """top1 / top5 (%) and kept ratio of the test views under `masking`."""
    from pipeline.predict.core import Predictor
    from pipeline.predict.loading import with_masking

    pixels, scores, vids, views, labels = data
    predictor = Predictor(dataclasses.replace(loaded, cfg=with_masking(loaded.cfg, masking)))
    probs, kept = [], []
    for s in range(0, len(vids), batch):
        sl = slice(s, s + batch)
        out = predictor({"pixels": pixels[sl], "scores": scores[sl], "video_id": vids[sl], "view": views[sl]})
        probs.append(out["probs"])
        kept.append(out["kept"])
    probs, kept = np.concatenate(probs), np.concatenate(kept)
    mean = np.zeros((len(labels), probs.shape[1]))
    np.add.at(mean, vids, probs)
    top = np.argsort(-mean, axis=1)
    return {"top1": 100.0 * float((top[:, 0] == labels).mean()),
            "top5": 100.0 * float((top[:, :5] == labels[:, None]).any(1).mean()),
            "kept": float(kept.mean()) / predictor.shape.num_tokens}


def study(name: str, uri: str, test: str, val: str) -> list[dict]:
    from pipeline.predict.loading import Masking, load_for_inference
    from pipeline.selection import calibrate_tau

    loaded = load_for_inference(uri, device="cpu")
    data = decode(loaded, test)
    val_scores = decode(loaded, val)[1]
    rows = [{"model": name, "strategy": "none", "ratio": 0.0, **classify(loaded, Masking("none"), data)}]
    for ratio in RATIOS:
        for strategy in STRATEGIES:
            try:
                tau = calibrate_tau(val_scores, ratio) if strategy == "mgtc_threshold" else None
            except ValueError:  # more than the droppable share (slice 0 is always kept)
                continue
            masking = Masking(strategy, 0.0 if tau is not None else ratio, tau)
            rows.append({"model": name, "strategy": strategy, "ratio": ratio, "tau": tau,
                         **classify(loaded, masking, data)})
    return rows


def table(rows: list[dict]) -> str:
    head = ("model", "strategy", "masking ratio", "tau (val-calibrated)", "kept tokens (%)", "top-1 (%)", "top-5 (%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tau = f"{r['tau']:.4f}" if r.get("tau") is not None else ""
        lines.append(f"| {r['model']} | {r['strategy']} | {r['ratio']:.2f} | {tau} | {100 * r['kept']:.1f} | "
                     f"{r['top1']:.1f} | {r['top5']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        full = next(r for r in mine if r["strategy"] == "none")
        for strategy in STRATEGIES:
            pts = sorted([(r["kept"], r["top1"]) for r in mine if r["strategy"] == strategy] + [(full["kept"], full["top1"])])
            ax.plot([100 * k for k, _ in pts], [t for _, t in pts], marker="o", label=strategy)
        ax.set_xlabel("kept tokens (%)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"trained with {model}; strategy at inference only")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
