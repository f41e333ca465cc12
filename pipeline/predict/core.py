"""Classifying videos: test views -> model -> per-video top-k, for one process (no Ray).

A video is classified as `mgtc eval` scores it (VideoMAE's test protocol): its clips x crops
test views (`pipeline.clips.ClipMaker`, the evaluation's own view sampling, scores computed
on the decoded clip), token selection per view with the inference strategy
(`pipeline.selection.select_views`: deterministic), softmax per view, mean over the views.

`Predictor` is the model half (a batch of views -> probabilities, kept tokens, pooled
features); the batch job's model actors wrap the same class. `predict_videos` is the
no-Ray path for a handful of videos: one model, videos decoded one after the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from pipeline import storage
from pipeline.clips import ClipMaker, to_model_inputs
from pipeline.flops import EncoderShape, encoder_shape, gmacs_per_view
from pipeline.modeling import autocast
from pipeline.predict.loading import InferenceModel
from pipeline.selection import select_views


def model_shape(cfg) -> EncoderShape:
    """The encoder shape of a config's clips (for GFLOPs per view)."""
    return encoder_shape(cfg.model.size, num_frames=cfg.data.num_frames, img_size=cfg.data.input_size,
                         patch_size=cfg.model.patch, tubelet_size=cfg.model.tubelet)


class Predictor:
    """A batch of views -> softmax per view, kept-token counts, pooled features.

    Views: pixels uint8 [B, T, S, S, 3], scores float32 [B, T', S/p, S/p], video_id [B],
    view [B] (the columns of `ClipMaker`). Returns probs [B, C] float32, kept [B] int64 and,
    with `features`, feature [B, D] float32 (fc_norm of the mean of the kept tokens: the
    vector the head reads).
    """

    def __init__(self, loaded: InferenceModel, *, features: bool = False) -> None:
        self.loaded = loaded
        self.features = features
        self.cfg = loaded.cfg
        self.tau = loaded.cfg.masking.tau
        self.shape = model_shape(loaded.cfg)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        device, model = self.loaded.device, self.loaded.model
        x, scores, _ = to_model_inputs({**batch, "label": np.zeros(len(batch["pixels"]), np.int64)}, device)
        k = self.cfg.masking
        sel = select_views(k.strategy, scores, torch.as_tensor(batch["video_id"]), torch.as_tensor(batch["view"]),
                           ratio=k.ratio, tau=self.tau, seed=self.cfg.optim.seed)
        keep_mask = None if sel.keep_mask is None else sel.keep_mask.to(device)
        with autocast(self.cfg, device):
            feats = model.forward_features(x, sel.ids_keep.to(device), keep_mask)
            logits = model.forward_head(feats)
        out = {"probs": logits.float().softmax(-1).cpu().numpy(), "kept": sel.lengths.cpu().numpy().astype(np.int64)}
        if self.features:
            out["feature"] = feats.float().cpu().numpy()
        return out


@dataclass
class VideoResult:
    """The prediction of one video (or why there is none: `error`)."""

    video: str
    top_ids: list[int] = field(default_factory=list)
    top_names: list[str] = field(default_factory=list)
    top_probs: list[float] = field(default_factory=list)
    views: int = 0
    kept_ratio: float = float("nan")
    gflops_per_view: float = float("nan")
    seconds: float = 0.0
    error: str = ""
    feature: list[float] | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("video", "top_ids", "top_names", "top_probs", "views", "kept_ratio",
                                            "gflops_per_view", "seconds", "error")}
        if self.feature is not None:
            d["feature"] = self.feature
        return d


def top_k(probs: np.ndarray, k: int, names: list[str] | None) -> tuple[list[int], list[str], list[float]]:
    """probs [C] -> (ids, names, probabilities) of the k most likely classes, best first.
    Without class names a class is named by its index."""
    k = min(k, len(probs))
    ids = np.argsort(-probs, kind="stable")[:k]
    labels = [names[i] if names else str(int(i)) for i in ids]
    return [int(i) for i in ids], labels, [float(probs[i]) for i in ids]


def summarize(video: str, probs: np.ndarray, kept: np.ndarray, shape: EncoderShape, *, k: int,
              names: list[str] | None, feature: np.ndarray | None = None, seconds: float = 0.0) -> VideoResult:
    """The result of one video from its views: probs [V, C] softmax per view, kept [V],
    feature [V, D] or None. Mean over views, then top-k (VideoMAE's test rule)."""
    mean = probs.mean(0)
    ids, labels, p = top_k(mean, k, names)
    return VideoResult(
        video=video, top_ids=ids, top_names=labels, top_probs=p, views=len(kept),
        kept_ratio=float(kept.mean()) / shape.num_tokens, gflops_per_view=gmacs_per_view(kept.tolist(), shape),
        seconds=seconds, feature=None if feature is None else feature.mean(0).astype(np.float32).tolist(),
    )


def view_maker(loaded: InferenceModel) -> ClipMaker:
    """The evaluation's test-view maker for the model's config (clips x crops per video)."""
    threads = torch.get_num_threads()
    maker = ClipMaker(loaded.cfg, "test")
    torch.set_num_threads(threads)  # ClipMaker pins one thread for its actor; here it shares the process
    return maker


def decode_error(err: Exception) -> str:
    """One line: the exception type and its (redacted, shortened) message."""
    text = " ".join(str(err).split())
    return storage.redact(f"{type(err).__name__}: {text}")[:300]


def predict_videos(
    videos: Iterable[str], loaded: InferenceModel, *, k: int = 5, features: bool = False, batch_size: int = 8,
) -> Iterable[VideoResult]:
    """Classify videos one after the other (no Ray); yields one VideoResult per video, in
    order. A video that cannot be decoded yields a result with `error` set."""
    maker = view_maker(loaded)
    predictor = Predictor(loaded, features=features)
    for i, video in enumerate(videos):
        t0 = time.perf_counter()
        try:
            views = maker.make({"path": video, "label": 0, "video_id": i})
        except Exception as err:  # noqa: BLE001 - decoders fail with many exception types
            yield VideoResult(video=video, error=decode_error(err), seconds=time.perf_counter() - t0)
            continue
        pixels = np.stack([p for _, p, _ in views])
        scores = np.stack([s for _, _, s in views]).astype(np.float32, copy=False)
        view_ids = np.asarray([v for v, _, _ in views], dtype=np.int64)
        parts = []
        for s in range(0, len(views), batch_size):
            sl = slice(s, s + batch_size)
            parts.append(predictor({"pixels": pixels[sl], "scores": scores[sl],
                                    "video_id": np.full(len(view_ids[sl]), i), "view": view_ids[sl]}))
        out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        yield summarize(video, out["probs"], out["kept"], predictor.shape, k=k, names=loaded.class_names,
                        feature=out.get("feature"), seconds=time.perf_counter() - t0)
