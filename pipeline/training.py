"""Ray Train fine-tuning and MAE pre-training of a VideoMAE ViT with token selection.

The worker side of training: the driver (`pipeline.trainer.run_training`) builds a
`TorchTrainer` and Ray Train runs `train_loop_per_worker` on every worker (DDP; gloo on CPU,
NCCL + optional bf16 autocast on GPU, from the same code).

Per training batch, in this order (docs/TRAINING.md says why):
  1. pixels + token scores from the data path (scores taken before any pixel augmentation;
     RandAugment in the actors, or here on the device with data.augment_on=trainer),
  2. token selection from those scores (`pipeline.selection`),
  3. random erasing (timm; one rectangle per clip on every frame, fresh noise per frame),
  4. mixup / cutmix (timm; a cutmix box is spatial, the same on every frame),
  5. model(x, ids_keep, keep_mask) -> loss.
Erasing and mixup come after selection because both fake motion: fresh noise in an erased
box differs from frame to frame, and a mixed clip carries two clips' motion.

Pre-training (`optim.mode=pretrain`): the strategy first removes redundant tokens
(`masking.strategy` at `masking.ratio`, e.g. mgtc_ratio), then the MAE mask (tube or random
at `masking.pretrain_ratio`) is drawn over what remains (`selection.pretrain_visible`): the encoder sees
the visible tokens, the decoder reconstructs the kept-but-masked ones.

Checkpoint every epoch; every rank reports one and Ray merges the files in one directory
`<storage_path>/<name>/epoch_NNNN/`:
  state.pt         rank 0: model, optimizer, scheduler, scaler, epoch, step, metrics, run id
  rng_rank{r}.pt   rank r: torch / cuda / numpy / python / selection-generator RNG states
Both hold only tensors and plain containers: `torch.load(weights_only=True)` reads them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from pipeline.augment import TrainerAugment
from pipeline.clips import to_model_inputs
from pipeline.config import Config, augment_side, from_dict, redacted
from pipeline.device import configure_matmul, fused_optimizer, maybe_compile, pin_batches
from pipeline.flops import EncoderShape, encoder_shape, mean_gmacs
from pipeline.modeling import STATE_FILE, autocast, flush_denormals, load_weights, make_model
from pipeline.multiview import VideoScores
from pipeline.selection import Selection, ids_to_mask, pretrain_visible, select_tokens, select_views
from pipeline.tracking import RunLogger, lr_batch, mask_overlay, scaled_lr
from pipeline.train_progress import StepPoster
from pipeline.vocab import SCORE_STRATEGIES, token_grid

# Test hook, never set in production: "<epoch>:<marker file>" makes the last rank exit hard
# after the first step of that epoch, once (the marker file records that it happened).
CRASH_ENV = "MGTC_TEST_CRASH_ONCE"
RNG_FILE = "rng_rank{rank}.pt"
# Entropy of the per-step seeds (`seed_step`): optim.seed alone decides a run's draws.
STEP_ENTROPY = 0x6D677473

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- per-worker setup


@dataclass
class Recipe:
    """What a worker's steps need besides the model and optimizer, built once per worker."""

    cfg: Config
    device: torch.device
    tau: float | None
    grid: tuple[int, int, int]  # token grid (T', H', W')
    shape: EncoderShape  # for GFLOPs per view
    generator: torch.Generator  # selection randomness (random / tube / running_cell, MAE mask)
    scaler: torch.amp.GradScaler
    mixup: Mixup | None = None
    erase: RandomErasing | None = None
    augment: TrainerAugment | None = None  # RandAugment here (data.augment_on=trainer)
    criterion: nn.Module | None = None
    loss: Callable = field(default=None, repr=False)  # finetune_loss | pretrain_loss
    class_names: list[str] | None = None  # stored with each checkpoint for `mgtc predict`


@dataclass
class Progress:
    """Where a run stands: epochs completed, optimizer steps taken, last epoch's metrics."""

    epoch: int = 0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_step(recipe: Recipe, rank: int, step: int) -> None:
    """Reseed this worker's RNGs for one optimizer step from (optim.seed, rank, step).

    The step's random draws (RandAugment on the trainer, random erasing, mixup / cutmix,
    dropout, drop path, the selection generator) come from Python's, numpy's and torch's
    global RNGs, which anything else in the worker process may also draw from (Ray's own
    threads run there too): reseeding per step makes each step's draws a function of the
    step alone, so a seeded run repeats them exactly, a resumed one included.
    """
    state = np.random.SeedSequence(STEP_ENTROPY, spawn_key=(recipe.cfg.optim.seed % 2**63, rank, step))
    seed = int(state.generate_state(1, np.uint64)[0] >> 1)  # 63 bits: every RNG takes it
    seed_everything(seed)
    recipe.generator.manual_seed(seed)


def make_recipe(cfg: Config, tau: float | None, device: torch.device, rank: int) -> Recipe:
    """Selection generator, augmentation and loss of a worker (seeded by seed + rank)."""
    d, m = cfg.data, cfg.model
    shape = encoder_shape(
        m.size, num_frames=d.num_frames, img_size=d.input_size, patch_size=m.patch, tubelet_size=m.tubelet
    )
    grid = token_grid(d.num_frames, d.input_size, d.input_size, m.tubelet, m.patch)
    recipe = Recipe(
        cfg=cfg, device=device, tau=tau, grid=grid, shape=shape,
        generator=torch.Generator().manual_seed(cfg.optim.seed + rank),
        # bf16 needs no loss scaling; the (disabled) scaler keeps the step fp16-ready.
        scaler=torch.amp.GradScaler(device.type, enabled=False),
    )
    if d.rand_augment and augment_side(cfg) == "trainer":
        recipe.augment = TrainerAugment(d.rand_augment, d.input_size)
    if cfg.optim.mode == "pretrain":
        recipe.loss = pretrain_loss
        return recipe
    recipe.loss = finetune_loss
    if d.reprob > 0:
        recipe.erase = RandomErasing(d.reprob, mode="pixel", max_count=1, device=str(device))
    if d.mixup > 0 or d.cutmix > 0:
        recipe.mixup = Mixup(
            mixup_alpha=d.mixup, cutmix_alpha=d.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
            label_smoothing=d.smoothing, num_classes=d.num_classes,
        )
        recipe.criterion = SoftTargetCrossEntropy()  # mixup already smoothed the targets
    elif d.smoothing > 0:
        recipe.criterion = LabelSmoothingCrossEntropy(d.smoothing)
    else:
        recipe.criterion = nn.CrossEntropyLoss()
    return recipe


def make_optimizer(
    cfg: Config, model: nn.Module, world_size: int, device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """AdamW via timm: lr scaled by total batch (in videos: `tracking.lr_batch`) / 256, no weight decay on 1-D params and
    `model.no_weight_decay()`, layer-wise lr decay from `model.group_matcher()` (fine-tuning
    only, as VideoMAE; pre-training uses none). On CUDA with `optim.fused`, the fused kernel."""
    o = cfg.optim
    layer_decay = o.layer_decay if o.mode == "finetune" and o.layer_decay < 1 else None
    return create_optimizer_v2(
        model, "adamw", lr=scaled_lr(o.lr, lr_batch(cfg, world_size)), weight_decay=o.weight_decay,
        layer_decay=layer_decay, betas=tuple(o.betas), **fused_optimizer(cfg, device),
    )


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int, world_size: int) -> CosineLRScheduler:
    """VideoMAE's per-step schedule: linear warmup from warmup_lr over warmup_epochs, then
    cosine to min_lr over the remaining epochs (min / warmup lr scaled like lr).
    Call `step_update(step)` before every optimizer step."""
    o = cfg.optim
    scale = lr_batch(cfg, world_size) / 256
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, (o.epochs - o.warmup_epochs) * steps_per_epoch),
        lr_min=o.min_lr * scale,
        warmup_t=o.warmup_epochs * steps_per_epoch,
        warmup_lr_init=o.warmup_lr * scale,
        warmup_prefix=True,
        t_in_epochs=False,
    )


# ------------------------------------------------------------------------- selection + losses


def select_train(recipe: Recipe, scores: torch.Tensor) -> Selection:
    """Kept tokens of a training batch (scores: [B, T', H', W']), on the model's device."""
    k = recipe.cfg.masking
    sel = select_tokens(
        k.strategy, scores=scores if k.strategy in SCORE_STRATEGIES else None, grid=recipe.grid,
        batch=scores.shape[0], ratio=k.ratio, tau=recipe.tau, generator=recipe.generator,
    )
    return to_device(sel, recipe.device)


def to_device(sel: Selection, device: torch.device) -> Selection:
    """Non-blocking: a blocking host-to-device copy waits for the GPU to drain its queue."""
    mask = None if sel.keep_mask is None else sel.keep_mask.to(device, non_blocking=True)
    return Selection(sel.ids_keep.to(device, non_blocking=True), mask)


def finetune_loss(
    model: nn.Module, recipe: Recipe, x: torch.Tensor, sel: Selection, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Erasing + mixup (after selection), forward, loss. x: [B, 3, T, H, W] normalised.

    Returns (loss, fp32 0-d; tokens the encoder ran per clip [B], on the device)."""
    b, c, t, h, w = x.shape
    # [B, 3*T, H, W]: timm treats channels x frames as one axis, so an erasing box and a
    # cutmix box are spatial and the same on every frame.
    frames = x.view(b, c * t, h, w)
    target = labels
    if recipe.erase is not None:
        recipe.erase(frames)
    if recipe.mixup is not None:
        frames, target = recipe.mixup(frames, labels)
    with autocast(recipe.cfg, recipe.device):
        logits = model(frames.view(b, c, t, h, w), sel.ids_keep, sel.keep_mask)
    return recipe.criterion(logits.float(), target), sel.lengths


def pretrain_loss(
    model: nn.Module, recipe: Recipe, x: torch.Tensor, sel: Selection, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE loss on the kept-but-masked tokens; returns (loss, fp32 0-d; visible tokens per
    clip [B], on the device)."""
    k = recipe.cfg.masking
    visible = pretrain_visible(sel.ids_keep, recipe.grid, k.pretrain_ratio, k.pretrain_mask, recipe.generator)
    with autocast(recipe.cfg, recipe.device):
        loss, _, _ = model(x, visible, sel.ids_keep)
    return loss.float(), torch.full((x.shape[0],), visible.shape[1], device=x.device)


# ------------------------------------------------------------------------- epochs


class EpochCounters:
    """Sums over an epoch's batches, kept on the device (no host sync per step) and reduced
    over ranks at the end.

    A clip of n encoded tokens costs a + b*n + c*n^2 multiply-adds, so the sums of n and n^2
    give the mean GFLOPs/view exactly (`flops.mean_gmacs`) without reading counts per step.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.shape = recipe.shape
        self.device = recipe.device
        self.clips = 0
        # sum over clips of: loss, kept tokens, encoded tokens, encoded tokens squared
        self.sums = torch.zeros(4, dtype=torch.float64, device=recipe.device)
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def add(self, loss: torch.Tensor, kept: torch.Tensor, encoded: torch.Tensor) -> None:
        """loss: mean over the batch (0-d); kept / encoded: [B] tokens per clip, selected / run
        by the encoder (on the device)."""
        b = kept.shape[0]
        enc = encoded.double()
        self.clips += b
        self.sums += torch.stack([loss.detach().double() * b, kept.double().sum(), enc.sum(), enc.square().sum()])

    def reduce(self) -> dict[str, float]:
        """Totals over all ranks: loss (mean per clip), kept_ratio, gflops_per_view,
        clips, seconds (this rank's wall time), cpu_seconds (this rank's process CPU time, all
        threads: what the step costs whoever else shares the machine) and clips_per_s (all
        clips / seconds)."""
        seconds = time.perf_counter() - self.start
        cpu_seconds = time.process_time() - self.cpu_start
        clips = torch.tensor([float(self.clips)], dtype=torch.float64).to(self.device)
        totals = torch.cat([clips, self.sums])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        clips, loss, kept, encoded, encoded_sq = totals.tolist()
        n = max(clips, 1.0)
        return {
            "loss": loss / n,
            "kept_ratio": kept / n / self.shape.num_tokens,
            "gflops_per_view": mean_gmacs(clips, encoded, encoded_sq, self.shape),
            "clips": clips,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "clips_per_s": clips / seconds if seconds > 0 else math.nan,
        }


def epoch_batches(shard, cfg: Config, device: torch.device, streamed: bool, steps: int):
    """The batches of each epoch, one iterable per epoch: a new pass over the shard every
    epoch, or (`streamed`: the shard is the whole run's stream, `trainer.RunStream`) the
    next `steps` batches of one pass, whose decode actors and prefetch go on across epochs."""
    def batches():
        return shard.iter_torch_batches(batch_size=cfg.optim.batch_size, drop_last=True, prefetch_batches=2,
                                        pin_memory=pin_batches(cfg, device))
    if not streamed:
        while True:
            yield batches()
    stream = iter(batches())
    while True:
        yield itertools.islice(stream, steps)


def train_epoch(model, batches, optimizer, scheduler, recipe: Recipe, progress: Progress,
                poster: StepPoster | None = None) -> tuple[dict, tuple | None]:
    """One epoch over this rank's `batches` (`epoch_batches`). Returns (metrics over all
    ranks, mask sample), or (None, None) when there was not one batch (a run's stream that
    ran short: its videos failed to decode).
    poster (rank 0): the driver's progress display, told where the epoch stands.

    Metrics: loss, kept_ratio (kept / all tokens), gflops_per_view (encoder multiply-adds of
    the tokens it ran, mean per clip), clips_per_s (all ranks' clips per wall second of this
    epoch, data loading included), epoch_time (s), data_wait_frac (share of rank 0's epoch
    spent waiting for the next batch; on GPU the wait also absorbs unsynchronised kernel
    time, so read it as an upper bound there), train_cpu_s (rank 0's process CPU time in
    the epoch). Sample: (pixels [T, S, S, 3] uint8,
    keep [T', H', W'] bool) of the epoch's first clip, for the mask image.
    """
    cfg = recipe.cfg
    model.train()
    counters = EpochCounters(recipe)
    sample = None
    ctx = ray.train.get_context()
    waited, ready = 0.0, time.perf_counter()
    in_epoch = 0
    for batch in batches:
        waited += time.perf_counter() - ready  # the step had nothing to do: data-bound time
        seed_step(recipe, ctx.get_world_rank(), progress.step)
        scheduler.step_update(progress.step)
        x, scores, labels = to_model_inputs(batch, recipe.device, recipe.augment)
        sel = select_train(recipe, scores)
        loss, encoded = recipe.loss(model, recipe, x, sel, labels)
        optimizer.zero_grad(set_to_none=True)
        recipe.scaler.scale(loss).backward()
        if cfg.optim.clip_grad > 0:
            recipe.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        recipe.scaler.step(optimizer)
        recipe.scaler.update()
        progress.step += 1
        in_epoch += 1
        counters.add(loss, sel.lengths, encoded)
        if poster is not None:  # converts the loss (a device sync) only when it posts
            poster.step(epoch=progress.epoch + 1, step=in_epoch, steps=poster.steps, loss=loss,
                        clips=counters.clips, seconds=time.perf_counter() - counters.start, waited=waited)
        if sample is None:  # once per epoch: a device -> host copy of one clip
            sample = mask_sample(batch["pixels"], sel, recipe)
        crash_once_for_tests(progress.epoch + 1, ctx.get_world_rank(), ctx.get_world_size())
        ready = time.perf_counter()
    if in_epoch == 0:  # the same on every rank: the split is equal
        return None, None
    totals = counters.reduce()
    return {
        "loss": totals["loss"],
        "kept_ratio": totals["kept_ratio"],
        "gflops_per_view": totals["gflops_per_view"],
        "clips_per_s": totals["clips_per_s"],
        "epoch_time": totals["seconds"],
        "data_wait_frac": waited / totals["seconds"],
        "train_cpu_s": totals["cpu_seconds"],
        "train_clips": totals["clips"],
    }, sample


def validates(cfg: Config, epoch: int) -> bool:
    """Whether epoch (1-based) ends with validation: every `optim.val_every`-th and the last."""
    return epoch % cfg.optim.val_every == 0 or epoch == cfg.optim.epochs


@torch.no_grad()
def eval_epoch(model: nn.Module, shard, recipe: Recipe) -> dict[str, float]:
    """Validation on this rank's split of the views (unwrapped model: no DDP sync needed).

    Fine-tuning: val_loss (cross-entropy per view), top1 / top5 over videos (softmax per view,
    mean per video, merged over ranks), val_videos, val_kept_ratio, val_gflops_per_view,
    val_clips_per_s. Pre-training: val_loss (MAE loss, seeded mask) and the same counters.
    """
    if shard is None:
        return {}
    cfg, k = recipe.cfg, recipe.cfg.masking
    pretrain = cfg.optim.mode == "pretrain"
    model.eval()
    videos = VideoScores(cfg.data.num_classes)
    generator = torch.Generator().manual_seed(cfg.optim.seed)  # the same MAE masks every epoch
    counters = EpochCounters(recipe)
    pin = pin_batches(cfg, recipe.device)
    for batch in shard.iter_torch_batches(batch_size=cfg.optim.batch_size, prefetch_batches=2, pin_memory=pin):
        x, scores, labels = to_model_inputs(batch, recipe.device)
        sel = select_views(k.strategy, scores, batch["video_id"], batch["view"], ratio=k.ratio, tau=recipe.tau,
                           seed=cfg.optim.seed)
        sel = to_device(sel, recipe.device)
        if pretrain:
            visible = pretrain_visible(sel.ids_keep, recipe.grid, k.pretrain_ratio, k.pretrain_mask, generator)
            with autocast(cfg, recipe.device):
                loss = model(x, visible, sel.ids_keep)[0].float()
            encoded = torch.full((x.shape[0],), visible.shape[1], device=x.device)
        else:
            with autocast(cfg, recipe.device):
                logits = model(x, sel.ids_keep, sel.keep_mask).float()
            loss = F.cross_entropy(logits, labels)
            videos.add(batch["video_id"].cpu().numpy(), logits.softmax(-1).cpu().numpy(), labels.cpu().numpy())
            encoded = sel.lengths
        counters.add(loss, sel.lengths, encoded)
    totals = counters.reduce()
    metrics = {
        "val_loss": totals["loss"],
        "val_kept_ratio": totals["kept_ratio"],
        "val_gflops_per_view": totals["gflops_per_view"],
        "val_clips_per_s": totals["clips_per_s"],
    }
    if not pretrain:
        merged = videos.merge_across_ranks(recipe.device)
        metrics.update(top1=merged["top1"], top5=merged["top5"], val_videos=merged["videos"])
    return metrics


def mask_sample(pixels: torch.Tensor, sel: Selection, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [T, S, S, 3] uint8, keep [T', H', W'] bool) of the batch's first clip."""
    first = Selection(sel.ids_keep[:1], None if sel.keep_mask is None else sel.keep_mask[:1])
    keep = ids_to_mask(first, recipe.shape.num_tokens)[0].reshape(recipe.grid)
    return pixels[0].cpu().numpy(), keep.cpu().numpy()


def crash_once_for_tests(epoch: int, rank: int, world_size: int) -> None:
    """The fault-tolerance test's hook (see CRASH_ENV); a no-op unless that variable is set."""
    spec = os.environ.get(CRASH_ENV)
    if not spec or rank != world_size - 1:
        return
    want, marker = spec.split(":", 1)
    if int(want) != epoch or os.path.exists(marker):
        return
    Path(marker).touch()
    os._exit(1)  # a hard worker death, as an OOM kill or a lost node would be


# ------------------------------------------------------------------------- checkpoints


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a step draws from, as tensors and plain values (weights_only loadable)."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "selection": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    generator.set_state(state["selection"])


def report_epoch(progress: Progress, model: nn.Module, optimizer, scheduler, recipe: Recipe, rank: int, run_id: str) -> None:
    """Checkpoint this epoch (rank 0: state.pt; every rank: its RNG) and report the metrics.

    `ray.train.report` is a barrier: every rank calls it once per epoch.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            torch.save({
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": recipe.scaler.state_dict(),
                "epoch": progress.epoch,
                "step": progress.step,
                "metrics": progress.metrics,
                "mlflow_run_id": run_id,
                "config": redacted(recipe.cfg),
                "class_names": recipe.class_names,
            }, Path(tmp) / STATE_FILE)
        torch.save(rng_state(recipe.generator), Path(tmp) / RNG_FILE.format(rank=rank))
        ray.train.report(
            {**progress.metrics, "epoch": progress.epoch},
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"epoch_{progress.epoch:04d}",
        )


def completed_epochs(run_dir: str, filesystem: Any, world_size: int) -> int:
    """The epoch of the latest checkpoint under a run's folder that every rank finished
    (`epoch_NNNN/` holding state.pt and each rank's RNG file); 0 when there is none."""
    fs = filesystem or pafs.LocalFileSystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True))
    except OSError:
        return 0
    need = {STATE_FILE, *(RNG_FILE.format(rank=r) for r in range(world_size))}
    for info in sorted((i for i in infos if i.type == pafs.FileType.Directory), key=lambda i: i.base_name, reverse=True):
        name = info.base_name
        if not (name.startswith("epoch_") and name[6:].isdigit()):
            continue
        files = fs.get_file_info(pafs.FileSelector(info.path))
        if need <= {f.base_name for f in files}:
            return int(name[6:])
    return 0


def agreed_checkpoint(checkpoint, run_dir: str, filesystem, world_size: int):
    """The checkpoint a worker of a run's stream resumes from: Ray's, or a newer one on disk
    that every rank finished but Ray never registered (a rank died after its report,
    before the controller collected it). The run's stream (`trainer.RunStream`) starts after
    that newer one (`completed_epochs`), so the worker must start there too."""
    done = completed_epochs(run_dir, filesystem, world_size)
    ours = 0
    if checkpoint is not None:
        name = checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
        ours = int(name[6:]) if name.startswith("epoch_") and name[6:].isdigit() else 0
    if done > ours:
        log.warning("train: resuming from epoch_%04d, a checkpoint every rank wrote but Ray had not registered "
                    "(Ray's latest: %s)", done, f"epoch_{ours:04d}" if checkpoint is not None else "none")
        return ray.train.Checkpoint(path=f"{run_dir.rstrip('/')}/epoch_{done:04d}", filesystem=filesystem)
    return checkpoint


def restore(checkpoint, model: nn.Module, optimizer, scheduler, recipe: Recipe, rank: int) -> Progress:
    """Load the latest checkpoint (after a worker-group restart or a rerun with the same
    name); Progress() when there is none. RNG states are restored per rank when this rank
    saved one (same world size), else the worker keeps its fresh seed + rank streams."""
    if checkpoint is None:
        return Progress()
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        rng_file = Path(directory) / RNG_FILE.format(rank=rank)
        rng = torch.load(rng_file, weights_only=True) if rng_file.exists() else None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    recipe.scaler.load_state_dict(state["scaler"])
    if rng is not None:
        set_rng_state(rng, recipe.generator)
    return Progress(epoch=state["epoch"], step=state["step"], metrics=dict(state["metrics"]))


# ------------------------------------------------------------------------- the worker loop


class EpochTracker:
    """Rank 0's MLflow side of the loop: epoch metrics (each epoch once) and mask images."""

    def __init__(self, mlflow: dict[str, str], cfg: Config, resumed: Progress) -> None:
        os.environ.update(mlflow.get("env") or {})  # MLflow basic auth of the driver (tracking doc)
        self.logger = RunLogger(mlflow["uri"], mlflow["run_id"])
        self.cfg = cfg
        if resumed.epoch:  # a crash between the checkpoint and the MLflow write lost no epoch
            self.logger.log_epoch(resumed.metrics, resumed.epoch)

    def epoch_done(self, progress: Progress, sample: tuple | None) -> None:
        self.logger.log_epoch(progress.metrics, progress.epoch)
        if sample is not None and self.cfg.tracking.log_mask_images:
            image = mask_overlay(sample[0], sample[1], tubelet=self.cfg.model.tubelet, patch=self.cfg.model.patch)
            self.logger.log_image(image, f"masks/epoch_{progress.epoch:03d}.png")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. config: {"cfg": to_dict(Config), "tau", "steps_per_epoch",
    "has_val", "streamed" (train is the run's stream, `epoch_batches`), "mlflow": {"uri", "run_id"}, "progress": the driver's ProgressBoard or None}
    (see `run_training`)."""
    cfg = from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.optim.seed)  # the same initial weights on every rank
    model = make_model(cfg)
    seed_everything(cfg.optim.seed + rank)  # then each rank its own augmentation streams
    recipe = make_recipe(cfg, config["tau"], ray.train.torch.get_device(), rank)
    recipe.class_names = config.get("class_names")
    flush_denormals(recipe.device)
    configure_matmul(cfg, recipe.device)
    # On the device before the optimizer exists: fused AdamW and a restored optimizer state
    # must live where the parameters do.
    model.to(recipe.device)
    maybe_compile(cfg, model, recipe.device)
    optimizer = make_optimizer(cfg, model, world, recipe.device)
    scheduler = make_scheduler(cfg, optimizer, config["steps_per_epoch"], world)
    checkpoint = ray.train.get_checkpoint()
    if config.get("streamed"):
        from pipeline.trainer import storage_location  # the driver's module, imported late

        filesystem = checkpoint.filesystem if checkpoint is not None else storage_location(cfg)[1]
        checkpoint = agreed_checkpoint(checkpoint, config["run_dir"], filesystem, world)
    if checkpoint is None and cfg.model.checkpoint:
        load_weights(model, cfg.model.checkpoint, allow_pickle=cfg.model.allow_pickle)
    progress = restore(checkpoint, model, optimizer, scheduler, recipe, rank)
    ddp = ray.train.torch.prepare_model(model)
    tracker = EpochTracker(config["mlflow"], cfg, progress) if rank == 0 else None
    poster = StepPoster(config.get("progress"), config["steps_per_epoch"]) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config["has_val"] else None
    epochs = epoch_batches(train_shard, cfg, recipe.device, bool(config.get("streamed")), config["steps_per_epoch"])
    for epoch in range(progress.epoch + 1, cfg.optim.epochs + 1):
        train_metrics, sample = train_epoch(ddp, next(epochs), optimizer, scheduler, recipe, progress, poster)
        if train_metrics is None:
            log.warning("train: the clip stream ended before epoch %d (videos failed to decode); "
                        "the run stops at epoch %d", epoch, progress.epoch)
            break
        val_metrics = eval_epoch(model, val_shard, recipe) if validates(cfg, epoch) else {}
        progress = Progress(epoch, progress.step, {**train_metrics, **val_metrics})
        report_epoch(progress, model, optimizer, scheduler, recipe, rank, config["mlflow"]["run_id"])
        if tracker is not None:
            tracker.epoch_done(progress, sample)
            poster.epoch_done(epoch, progress.metrics)


# ------------------------------------------------------------------------- the datasets' split over workers


class TrainValDataConfig(ray.train.DataConfig):
    """`train` is split equally (DDP needs the same number of batches on every rank; up to
    world_size - 1 clips per epoch are dropped); `val` is split unequally so that no view is
    dropped (ranks all-reduce their per-video sums, so any split gives the same top-1)."""

    def __init__(self) -> None:
        super().__init__(datasets_to_split=["train"])

    def _resolve_execution_options(self, dataset_name: str):
        # Rows reach the trainers in the (seeded) order of the source, whichever decode
        # actor finishes first: the batches, and so the losses, of a seeded run repeat.
        # (The splitter then ignores locality hints, which on one node change nothing.)
        options = super()._resolve_execution_options(dataset_name)
        options.preserve_order = True
        return options

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        rest = {name: ds for name, ds in datasets.items() if name != "val"}
        out = super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs)
        if "val" in datasets:
            val = datasets["val"].copy(datasets["val"])
            val.context.execution_options = self._resolve_execution_options("val")
            for i, split in enumerate(val.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)):
                out[i]["val"] = split
        return out
