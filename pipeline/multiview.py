"""VideoMAE's multi-view test rule (`run_class_finetuning.py: merge`): every view of a video
is classified on its own, the softmax of each view is taken, and the probabilities of all
views of one video are averaged; top-k is read off the average.

`average_views` is that rule as a pure function; `VideoScores` accumulates it batch by batch
and merges across ranks (sums and counts all-reduce exactly, whatever rank saw which view).
Used by the trainer's validation and by `pipeline.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


def average_views(
    video_ids: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax per view, then the mean per video.

    video_ids: [M] int, logits: [M, C], labels: [M] (the same label on every view of a video).
    Returns (ids [V] ascending unique, probs [V, C] mean softmax, labels [V]).
    """
    ids, inverse = torch.unique(video_ids, return_inverse=True)
    probs = logits.float().softmax(dim=-1)
    sums = probs.new_zeros(len(ids), probs.shape[1]).index_add_(0, inverse, probs)
    counts = torch.bincount(inverse, minlength=len(ids)).to(probs.dtype)
    video_labels = labels.new_zeros(len(ids)).scatter_(0, inverse, labels)
    return ids, sums / counts[:, None], video_labels


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """probs: [V, C], labels: [V] -> {"top1": %, "top5": %}; k is capped at C."""
    if len(labels) == 0:
        return {f"top{k}": float("nan") for k in ks}
    top = probs.topk(min(max(ks), probs.shape[1]), dim=1).indices  # [V, kmax]
    hits = top == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


@dataclass
class VideoScores:
    """Running per-video sums of view probabilities: {video_id: (sum [C], views, label)}.

    Dictionary-backed so a rank only holds the videos it saw; `merge_across_ranks` turns it
    into dense tensors over the largest id of any rank and all-reduces them.
    """

    num_classes: int
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    views: int = 0

    def add(self, video_ids: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> None:
        """video_ids: [B], probs: [B, C] softmax of each view, labels: [B]."""
        for vid, p, y in zip(video_ids.tolist(), probs, labels.tolist()):
            if vid in self.sums:
                self.sums[vid] += p
                self.counts[vid] += 1
            else:
                self.sums[vid], self.counts[vid], self.labels[vid] = p.astype(np.float64), 1, y
        self.views += len(video_ids)

    def dense(self, num_videos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sums [V, C] float64, counts [V] float64, labels [V] int64, -1 where unseen)."""
        sums = torch.zeros(num_videos, self.num_classes, dtype=torch.float64)
        counts = torch.zeros(num_videos, dtype=torch.float64)
        labels = torch.full((num_videos,), -1, dtype=torch.int64)
        if self.sums:
            ids = torch.tensor(list(self.sums))
            sums[ids] = torch.from_numpy(np.stack(list(self.sums.values())))
            counts[ids] = torch.tensor(list(self.counts.values()), dtype=torch.float64)
            labels[ids] = torch.tensor([self.labels[i] for i in self.sums])
        return sums, counts, labels

    def predictions(self) -> dict[str, list[int]]:
        """Per video seen here, ascending id: {"video_id", "label", "pred"} (argmax of the
        averaged softmax), for paired comparisons across runs (`pipeline.stats`)."""
        ids = sorted(self.sums)
        return {"video_id": ids, "label": [int(self.labels[i]) for i in ids],
                "pred": [int(np.argmax(self.sums[i])) for i in ids]}

    def merge_across_ranks(self, device: torch.device) -> dict[str, float]:
        """All-reduce over the process group (if any) and score: top1, top5, videos, views."""
        distributed = dist.is_available() and dist.is_initialized()
        top_id = torch.tensor([max(self.sums, default=-1), self.views], device=device)
        if distributed:
            dist.all_reduce(top_id[:1], op=dist.ReduceOp.MAX)
            dist.all_reduce(top_id[1:], op=dist.ReduceOp.SUM)
        sums, counts, labels = (t.to(device) for t in self.dense(int(top_id[0]) + 1))
        if distributed:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
            dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        seen = counts > 0
        probs = sums[seen] / counts[seen, None]
        metrics = topk_accuracy(probs, labels[seen])
        return {**metrics, "videos": float(seen.sum()), "views": float(top_id[1])}
