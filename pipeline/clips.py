"""Training and evaluation clip stream: video rows -> decoded, augmented clips + token scores.

Ray Data runs the decoding in CPU actors; the GPU trainers never decode:

    split manifest (+ shards' path / part columns)   -> one light row per video      (driver)
      path, label, video_id, shard_file              -> in a seeded order per epoch (train;
                                                        all epochs of a run, each row tagged
                                                        with its epoch, in one execution)
      -> map_batches(ClipMaker, ActorPoolStrategy(min_size=1, max_size=data.decode_actors))
         (reads the video's shard row, decodes only the needed frames, crops, scores)
      -> one row per clip: pixels uint8 [T, S, S, 3], scores float32 [T', S/p, S/p],
         label, video_id, view

Sampling follows VideoMAE on the stride-s frame sequence g_m = source frame m*s (docs/TRAINING.md,
"Data path"):
- train: T consecutive positions starting at a random position (temporal jitter is quantised
  to s source frames), random resized crop of the short_side-resized frame resized to S x S,
  horizontal flip, optional RandAugment with the same ops on every frame of the clip.
- val / test: clips x crops views; temporal starts as VideoMAE's test mode, S x S crops along
  the long side with offsets snapped to the shard cell grid, so that shard scores are exact.
Token scores follow the clip's own window, crop and flip, and are taken BEFORE RandAugment
(and before the trainer's random erasing / mixup): from the shard cell maps when the video
has a shard row, else with `motion.token_scores` on the decoded, cropped clip.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import torch

from pipeline import prepared, shard_rows, shards, storage, video
from pipeline.vocab import SHARD_SCORE_MODES
from pipeline.config import Config, augment_side
from pipeline.manifest import check_labels, read_manifest
from pipeline.motion import token_scores, token_scores_from_cells
from pipeline.transforms import Box, random_resized_box, crop_resize, rand_augment, augment_clip, covered_size
from pipeline.vocab import IMAGENET_MEAN, IMAGENET_STD, LogSafeEnv, forwarded_env

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OUTPUT_COLUMNS = ("pixels", "scores", "label", "video_id", "view")
# Source rows per actor call. Train: one clip per row (T*S*S*3 bytes, 2.4 MB at 16x224).
# Eval: one video expands into clips*crops views (36 MB at 5x3), so one video per call.
TRAIN_BATCH = 4
EVAL_BATCH = 1
# Val/test source rows per block: 8 videos go through one Ray Data task per operator instead
# of 8 (a task's own cost, scheduling and object-store round trips, was most of an eval's
# time for small clips); the actor still makes one video's views per call. A native crash
# that exhausts the retries drops one block, i.e. up to this many videos (counted: the
# eval's views fall short of the expected).
EVAL_ROWS_PER_BLOCK = 8
# A native crash (segfault, OOM kill) in decord is retried forever by Ray's defaults; one
# restart and one retry, then the block is dropped (max_errored_blocks) instead of the epoch.
ACTOR_RETRIES = 1
MAX_ERRORED_BLOCKS = 16



@dataclass(frozen=True)
class ClipSpec:
    """What one actor needs to make clips; derived from the Config once per split."""

    train: bool
    num_frames: int  # T
    sampling_rate: int  # s, in frames of the video files (data.video_rate)
    input_size: int  # S
    short_side: int
    patch: int
    tubelet: int
    score_mode: str
    clips: int = 1
    crops: int = 1
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: bool = True
    rand_augment: str = ""
    num_sample: int = 1  # train: clips per decoded window (repeated augmentation)
    decoder: str = "decord"  # data.decoder

    @property
    def grid(self) -> tuple[int, int]:
        """Spatial token grid (S/p, S/p) of a clip."""
        return self.input_size // self.patch, self.input_size // self.patch

    @property
    def views(self) -> int:
        """Rows per video: `num_sample` for train, clips x crops for val/test."""
        return self.num_sample if self.train else self.clips * self.crops


def clip_spec(cfg: Config, split: str) -> ClipSpec:
    """The ClipSpec of a split: train augments; val/test use data.{val,test}_{clips,crops}.
    RandAugment is the actors' only where `augment_side(cfg)` is "actor"."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: allowed: {', '.join(SPLITS)}")
    d = cfg.data
    views = {"train": (1, 1), "val": (d.val_clips, d.val_crops), "test": (d.test_clips, d.test_crops)}
    clips, crops = views[split]
    return ClipSpec(
        train=split == "train", num_frames=d.num_frames, sampling_rate=d.video_rate,
        input_size=d.input_size, short_side=d.short_side, patch=cfg.model.patch,
        tubelet=cfg.model.tubelet, score_mode=cfg.masking.score_mode, clips=clips, crops=crops,
        scale=tuple(d.scale), ratio=tuple(d.ratio), hflip=d.hflip,
        rand_augment=d.rand_augment if augment_side(cfg) == "actor" else "", num_sample=d.num_sample,
        decoder=d.decoder,
    )


# --------------------------------------------------------------------------- clip making


def train_clip(
    spec: ClipSpec, frames: np.ndarray, positions: np.ndarray, cells: tuple | None, cell: int,
    rng: np.random.Generator, augment: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training clip and its token scores.

    frames: [T, H, W, 3] uint8, the decoded window (source frames positions * s, resized).
    positions: [T] positions in the stride-s sequence. cells: (pair_cells, boundary_cells)
    from the shard row, or None (scores computed on the cropped clip).
    Returns pixels [T, S, S, 3] uint8, scores [T', S/p, S/p] float32 (slice 0 = +inf).
    """
    h, w = covered_size(frames.shape[1], frames.shape[2], cell)
    box = random_resized_box(h, w, spec.scale, spec.ratio, rng)
    flip = bool(spec.hflip and rng.random() < 0.5)
    pixels = crop_resize(frames, box, spec.input_size, flip)
    scores = clip_scores(spec, pixels, positions, cells, box, cell, flip)
    if augment is not None:
        pixels = augment_clip(pixels, augment, int(rng.integers(2**63)))
    return pixels, scores


def clip_scores(
    spec: ClipSpec, pixels: np.ndarray, positions: np.ndarray, cells: tuple | None,
    box: Box, cell: int, flip: bool,
) -> np.ndarray:
    """Token scores of a clip: pooled from shard cells over its window/box/flip, or computed
    on its (cropped, flipped, not yet RandAugmented) pixels. Returns [T', S/p, S/p] float32."""
    if cells is None:
        return token_scores(pixels, spec.tubelet, spec.patch, spec.score_mode)
    pair_cells, boundary_cells = cells
    return token_scores_from_cells(
        pair_cells, boundary_cells, positions, box, spec.grid, cell,
        tubelet=spec.tubelet, mode=spec.score_mode, flip=flip,
    )


def eval_views(
    spec: ClipSpec, frames: np.ndarray, positions: np.ndarray, views: list[np.ndarray],
    cells: tuple | None, cell: int,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The clips x crops views of one video, deterministic.

    frames: [U, H, W, 3] uint8, the decoded union of all views' frames, at `positions` [U]
    (ascending, unique) of the stride-s sequence. views: per temporal clip, its [T] positions.
    Returns [(view, pixels [T, S, S, 3], scores [T', S/p, S/p])], view = clip * crops + crop.
    """
    size = spec.input_size
    height, width = frames.shape[1:3]
    offsets = video.spatial_crops(height, width, size, spec.crops, cell)
    out = []
    for c, clip_positions in enumerate(views):
        clip = frames[np.searchsorted(positions, clip_positions)]
        for k, (top, left) in enumerate(offsets):
            box = (int(top), int(left), size, size)
            pixels = crop_resize(clip, box, size)
            scores = clip_scores(spec, pixels, clip_positions, cells, box, cell, False)
            out.append((c * spec.crops + k, pixels, scores))
    return out


def read_frames(
    uri: str, sampling_rate: int, short_side: int, choose: Callable[[int], np.ndarray],
    size: tuple[int, int] | None = None, decoder: str = "decord",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode only the frames a clip needs, resized to `short_side` while decoding.

    `choose(M)` gets the length M of the video's stride-s sequence and returns the positions
    [K] int64 to read (source frames positions * s). The video is fetched once (s3://) and
    decoded by a reader that resizes as the precompute job's does, so the pixels are those the
    shard cell maps were computed on. `size` = (height, width) after the resize when known
    (a shard row has it): skips reading the stream header (`video.frame_size`, ~2 ms; a
    decoder probe decoded a frame for it: 9.5 ms on a prepared copy).
    decoder: data.decoder ("decord" | "torchcodec", `video.open_frames`).
    Returns (frames [K, H, W, 3] uint8, positions [K]).
    """
    with storage.download_to_temp(uri) as local:
        if size is None:
            size = video.resized_size(*video.frame_size(local), short_side)
        reader = video.open_frames(local, size, decoder=decoder)
        positions = np.asarray(choose(video.num_sampled(len(reader), sampling_rate)), dtype=np.int64)
        frames = reader.frames(positions * sampling_rate)
        del reader  # a reader holds the whole demuxer; free it before the next video
    return frames, positions


def _empty_output(spec: ClipSpec) -> dict[str, np.ndarray]:
    t, s = spec.num_frames, spec.input_size
    gh, gw = spec.grid
    return {
        "pixels": np.zeros((0, t, s, s, 3), dtype=np.uint8),
        "scores": np.zeros((0, t // spec.tubelet, gh, gw), dtype=np.float32),
        "label": np.zeros(0, dtype=np.int64),
        "video_id": np.zeros(0, dtype=np.int64),
        "view": np.zeros(0, dtype=np.int64),
    }


# Entropy of the training clips' generators: fixed, so that `optim.seed` alone decides the
# clip sampling and augmentation of a run.
SEED_ENTROPY = 0x6D677463


def clip_generators(
    seed: int, epoch: int, video_id: int, num_sample: int, entropy: int = SEED_ENTROPY,
) -> tuple[np.random.Generator, list[np.random.Generator]]:
    """The generators of one training video in one epoch: (window, [one per sample]).

    A function of the row (video_id), the epoch and the seed alone: `SeedSequence(entropy,
    spawn_key=(seed, epoch, video_id))` draws the temporal window, its `num_sample` children
    (spawn keys (seed, epoch, video_id, k)) each sample's crop, flip and RandAugment ops.
    Which actor decodes the video, and in which order videos reach it, change nothing.
    """
    seq = np.random.SeedSequence(entropy, spawn_key=(int(seed) % 2**63, int(epoch), int(video_id)))
    return np.random.default_rng(seq), [np.random.default_rng(child) for child in seq.spawn(num_sample)]


def epoch_order(seed: int, epoch: int, num_videos: int, entropy: int = SEED_ENTROPY) -> np.ndarray:
    """The order of a split's videos in training epoch `epoch` (0-based): a permutation that
    is a function of the seed and the epoch alone (its own SeedSequence, apart from the
    clips' `clip_generators`)."""
    seq = np.random.SeedSequence(entropy + 1, spawn_key=(int(seed) % 2**63, int(epoch)))
    return np.random.default_rng(seq).permutation(num_videos)


def _execution_index() -> int:
    """How many times the current Ray Data dataset has executed before (its epoch: Ray Train
    executes the train dataset once per epoch, each time with new actors), from the
    DataContext the actor was created with; 0 outside Ray Data."""
    try:
        import ray.data

        return int(getattr(ray.data.DataContext.get_current(), "_execution_idx", 0) or 0)
    except Exception:  # noqa: BLE001 - no Ray Data here: plain numpy use of ClipMaker
        return 0


class ClipMaker:
    """Ray Data callable class (one per actor): a batch of video rows -> a batch of clips.

    Input columns: `path` (local path or s3:// URI), `label`, `video_id`, and where scores
    come from shards either `shard_file` (the part file holding the video's shard row; the
    actor reads that row alone, `shard_rows.RowReader`) or the shard row's own columns (`cell` > 0,
    `num_sampled`, `resized_height`, `resized_width`, `tubelet`, `cells_height`,
    `cells_width`, `pair_cells`, `boundary_cells`). A row with neither gets its scores
    computed on the decoded clip. Output columns: OUTPUT_COLUMNS (docs/INTERFACES.md); train gives
    `num_sample` rows per video (one decoded window, independent crops/flips: VideoMAE's
    repeated augmentation), val/test `clips * crops` rows per video. A video that fails is dropped
    with a warning and counted in `self.failed`: one bad file never sinks an epoch.

    Randomness (train only): per video row, `clip_generators(seed, epoch, video_id)`:
    `seed` is `optim.seed`, `epoch` the row's `epoch` column (0-based; a whole run's stream,
    `clip_dataset(..., epochs=)`) or else the dataset's execution index (a dataset Ray Train
    re-executes every epoch, with fresh actors), and the entropy a constant, so a seeded run draws
    the same windows, crops, flips and RandAugment ops every time, whichever actor gets a
    video and in whichever order, and every epoch draws new ones (docs/TRAINING.md,
    Reproducibility).
    """

    def __init__(self, cfg: Config, split: str, *, seed: int = 0, entropy: int | None = None,
                 env: dict[str, str] | None = None):
        # S3 settings of the driver, for actors of a cluster started without them.
        os.environ.update(env or {})
        self.spec = clip_spec(cfg, split)
        self.seed = int(seed)
        self.epoch = _execution_index()
        self.entropy = SEED_ENTROPY if entropy is None else int(entropy)
        self._augment = (
            rand_augment(self.spec.rand_augment, self.spec.input_size)
            if self.spec.train and self.spec.rand_augment else None
        )
        self.failed = 0
        self._rows = shard_rows.RowReader(columns=SHARD_COLUMNS)
        # One CPU per actor (num_cpus=1): torch's intra-op pool would only oversubscribe it.
        torch.set_num_threads(1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {name: [] for name in OUTPUT_COLUMNS}
        for row in _rows(batch):
            try:
                views = self.make(row)
            except Exception as err:  # noqa: BLE001 - decoder errors come as many types
                self.failed += 1
                log.warning("clips: dropped %s (%d dropped by this actor): %s: %s",
                            storage.redact(str(row.get("path"))), self.failed, type(err).__name__,
                            storage.redact(str(err))[:300])
                continue
            for view, pixels, scores in views:
                out["pixels"].append(pixels)
                out["scores"].append(scores)
                out["label"].append(int(row["label"]))
                out["video_id"].append(int(row["video_id"]))
                out["view"].append(view)
        if not out["pixels"]:
            return _empty_output(self.spec)
        return {
            "pixels": np.stack(out["pixels"]),
            "scores": np.stack(out["scores"]).astype(np.float32, copy=False),
            "label": np.asarray(out["label"], dtype=np.int64),
            "video_id": np.asarray(out["video_id"], dtype=np.int64),
            "view": np.asarray(out["view"], dtype=np.int64),
        }

    def make(self, row: dict[str, Any]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Clips of one video row: [(view, pixels [T, S, S, 3] uint8, scores [T', S/p, S/p])]."""
        spec = self.spec
        if int(row.get("cell", 0) or 0) <= 0 and str(row.get("shard_file", "") or ""):
            found = self._rows.row(str(row["shard_file"]), str(row["path"]), spec.sampling_rate)
            row = {**row, **{c: found[c] for c in SHARD_COLUMNS if c not in ("path", "sampling_rate")}}
        cells, cell = row_cells_or_none(row, spec)

        def checked(m: int) -> int:
            # The shard's maps describe the stride-s sequence it decoded; a file that changed
            # since would silently get another video's scores.
            if cells is not None and m != int(row["num_sampled"]):
                raise ValueError(f"video has {m} sampled frames, its shard row {int(row['num_sampled'])}")
            return m

        size = None if cells is None else (int(row["resized_height"]), int(row["resized_width"]))
        if spec.train:
            epoch = self.epoch if row.get("epoch") is None else int(row["epoch"])
            window, samples = clip_generators(self.seed, epoch, int(row["video_id"]), spec.num_sample,
                                              self.entropy)
            frames, positions = read_frames(
                row["path"], spec.sampling_rate, spec.short_side,
                lambda m: video.train_window(checked(m), spec.num_frames, window), size, spec.decoder,
            )
            return [(0, *train_clip(spec, frames, positions, cells, cell, rng, self._augment))
                    for rng in samples]
        views: list[np.ndarray] = []

        def union(m: int) -> np.ndarray:
            views.extend(video.test_views(checked(m), spec.num_frames, spec.clips))
            return np.unique(np.concatenate(views))

        frames, positions = read_frames(row["path"], spec.sampling_rate, spec.short_side, union, size,
                                        spec.decoder)
        return eval_views(spec, frames, positions, views, cells, cell)


def _rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Column batch -> list of per-row dicts (values are numpy scalars / arrays)."""
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def row_cells_or_none(row: dict[str, Any], spec: ClipSpec) -> tuple[tuple | None, int]:
    """((pair_cells, boundary_cells), cell) of a row with shard data, else (None, 1)."""
    if int(row.get("cell", 0) or 0) <= 0 or spec.score_mode not in SHARD_SCORE_MODES:
        return None, 1  # no shard maps (or none for this mode): scored on the clip's pixels
    if spec.score_mode == "boundary" and int(row["tubelet"]) != spec.tubelet:
        raise ValueError(f"shard boundary maps are for tubelet={int(row['tubelet'])}, "
                         f"model.tubelet={spec.tubelet}")
    return shards.row_cells(row), int(row["cell"])


def to_model_inputs(
    batch: dict[str, torch.Tensor], device: torch.device | str, augment: Callable | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trainer side: a batch from `iter_torch_batches` -> model inputs on `device`.

    batch: pixels uint8 [B, T, S, S, 3], scores [B, T', S/p, S/p], label [B]. `augment`
    (data.augment_on=trainer: `augment.TrainerAugment`) maps the uint8 pixels on the device
    before normalisation; the scores were taken before it, as on the actor path.
    Returns x float32 [B, 3, T, S, S] ImageNet-normalised (normalised on the device: uint8
    crosses the host-device link, 4x less than float32), scores float32 [B, T', S/p, S/p],
    labels int64 [B].
    """
    pixels = _tensor(batch["pixels"]).to(device, non_blocking=True)
    if augment is not None:
        pixels = augment(pixels)
    x = pixels.permute(0, 4, 1, 2, 3).contiguous().float()  # [B, 3, T, S, S]
    # Built on the host and copied non_blocking: torch.tensor(..., device="cuda") is a
    # blocking copy, which waits for the GPU to finish the previous step.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1).to(x.device, non_blocking=True) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1).to(x.device, non_blocking=True) * 255
    x = x.sub_(mean).div_(std)
    scores = _tensor(batch["scores"]).to(device, non_blocking=True).float()
    labels = _tensor(batch["label"]).to(device, non_blocking=True).long()
    return x, scores, labels


def _tensor(values) -> torch.Tensor:
    """A tensor of a batch column. Ray Data hands numpy batches out of its object store
    read-only, and torch cannot share a read-only array (it warns that writing would be
    undefined): such an array is copied first, a few MB per batch against a forward pass."""
    if isinstance(values, np.ndarray) and not values.flags.writeable:
        values = values.copy()
    return torch.as_tensor(values)


# --------------------------------------------------------------------------- the split's videos

# Shard columns the clip makers read (the rest of a shard row stays on disk).
SHARD_COLUMNS = (
    "path", "sampling_rate", "num_sampled", "resized_height", "resized_width", "tubelet",
    "cell", "cells_height", "cells_width", "pair_cells", "boundary_cells",
)
MEMBER_SCHEMA = pa.schema([("path", pa.string()), ("label", pa.int64()), ("video_id", pa.int64())])

@dataclass(frozen=True)
class SplitVideos:
    """The videos of a split, resolved in the driver from the manifest and the shards'
    `path` / `part` columns (no cell map is read here).

    scored: (path, label, video_id, part) of videos whose scores come from shard cell maps.
    computed: (path, label, video_id) of videos whose scores are computed on the decoded
      clip (no shards, or eval videos the shards lack: eval views are exact either way).
    skipped: reason -> count of manifest videos that make no clips.
    """

    scored: pa.Table
    computed: pa.Table
    skipped: dict[str, int]

    @property
    def num_videos(self) -> int:
        return self.scored.num_rows + self.computed.num_rows


def _members(rows: list[tuple[str, int, int]]) -> pa.Table:
    paths, labels, ids = zip(*rows) if rows else ((), (), ())
    return pa.table([pa.array(paths, pa.string()), pa.array(labels, pa.int64()),
                     pa.array(ids, pa.int64())], schema=MEMBER_SCHEMA)


def shard_problems(cfg: Config, meta: dict) -> list[str]:
    """Why the shards with metadata `meta` cannot score this config's clips, one line each
    ([] = they can); for the shards of `mgtc prepare`, also why the config cannot read its
    videos (`prepared.problems`: stride, short side)."""
    c, d = meta.get("config", {}), cfg.data
    problems = prepared.problems(d, meta.get(prepared.SETTINGS_KEY), "the data")
    if not problems and d.video_rate not in c.get("sampling_rates", []):
        rate = (f"data.sampling_rate={d.sampling_rate}" if d.video_stride == 1 else
                f"data.sampling_rate={d.sampling_rate} / data.video_stride={d.video_stride} = {d.video_rate}")
        problems.append(f"{rate}: shards hold rates {c.get('sampling_rates')} (in frames of the video files)")
    if c.get("short_side") != d.short_side:
        problems.append(f"data.short_side={d.short_side}: shards were computed at short side {c.get('short_side')}")
    if cfg.masking.score_mode == "boundary" and c.get("tubelet") != cfg.model.tubelet:
        problems.append(f"model.tubelet={cfg.model.tubelet}: shard boundary maps are for tubelet {c.get('tubelet')}")
    return problems


def check_shards(cfg: Config, meta: dict) -> None:
    """Raise ValueError when the shards cannot score this config's clips (`shard_problems`)."""
    problems = shard_problems(cfg, meta)
    if problems:
        raise ValueError(f"shards {storage.redact(cfg.data.shards)} do not fit the config: " + "; ".join(problems))
    c = meta.get("config", {})
    if cfg.model.patch % int(c.get("cell", 1)):
        log.warning("clips: shard cell %s px does not divide model.patch=%d: eval scores are "
                    "area-weighted, not exact", c.get("cell"), cfg.model.patch)


def split_videos(cfg: Config, split: str) -> SplitVideos:
    """Which videos make clips for `split`, and where their scores come from.

    video_id is the row index in the split's manifest (`read_manifest` order, 0-based).
    Without a manifest (train only) the shards' own rows are the split, video_id = their
    manifest `line`. Train videos the shards lack are skipped (the precompute job rejected
    them: see its errors table); val/test videos the shards lack get computed scores.
    """
    d = cfg.data
    manifest = {"train": d.train_manifest, "val": d.val_manifest, "test": d.test_manifest}[split]
    skipped: dict[str, int] = {}
    part_of: dict[str, int] = {}
    table = None
    if d.shards:
        check_shards(cfg, shards.read_meta(d.shards))
        table = shards.read_shards(d.shards, sampling_rate=d.video_rate,
                                   columns=["path", "label", "line", "part"])
        part_of = dict(zip(table.column("path").to_pylist(), table.column("part").to_pylist()))
    if manifest:
        found = prepared.problems(d, prepared.read_settings(storage.parent(storage.normalize(manifest))), manifest)
        if found:
            raise ValueError(f"data.{split}_manifest: " + "; ".join(found))
        rows = read_manifest(manifest)
        check_labels(rows, d.num_classes, manifest)
        ok = [(r.path, int(r.label), i) for i, r in enumerate(rows) if not r.error and r.label is not None]
        if len(ok) < len(rows):
            skipped["manifest error"] = len(rows) - len(ok)
    elif table is not None and split == "train":
        ok = list(zip(table.column("path").to_pylist(), table.column("label").to_pylist(),
                      table.column("line").to_pylist()))
    else:
        raise ValueError(f"split {split!r} needs data.{split}_manifest")
    bad = [] if manifest else [(line, label) for _, label, line in ok if not 0 <= label < d.num_classes]
    if bad:
        raise ValueError(f"shards {storage.redact(d.shards)}: {len(bad)} labels outside data.num_classes="
                         f"{d.num_classes} (0-based), e.g. "
                         + ", ".join(f"manifest line {line}: label {label}" for line, label in bad[:5]))
    scored = [r for r in ok if r[0] in part_of]
    rest = [r for r in ok if r[0] not in part_of]
    if d.shards and split == "train" and rest:
        skipped["not in shards"] = len(rest)
        rest = []
    members = _members(scored)
    parts = pa.array([part_of[r[0]] for r in scored], pa.int32())
    videos = SplitVideos(members.append_column("part", parts), _members(rest), skipped)
    if skipped:
        log.warning("clips: %s split: %d videos, skipped %s", split, videos.num_videos, skipped)
    return videos


def num_clips(cfg: Config, split: str) -> int:
    """Rows `clip_dataset(cfg, split)` yields per epoch when every video decodes (counted
    from the manifest and shards, without decoding): videos x views."""
    return split_videos(cfg, split).num_videos * clip_spec(cfg, split).views


def source_rows(cfg: Config, videos: SplitVideos) -> list[dict[str, Any]]:
    """One light row per video: path, label, video_id and the shard part file that holds
    its cell maps ("" = scores computed on the clip). Scored videos first, in part order."""
    d = cfg.data
    out = []
    if videos.scored.num_rows:
        root = storage.normalize(d.shards)
        cols = (videos.scored.column(c).to_pylist() for c in ("path", "label", "video_id", "part"))
        out += [{"path": p, "label": lab, "video_id": v, "shard_file": shards.shard_file(root, part)}
                for p, lab, v, part in zip(*cols)]
    cols = (videos.computed.column(c).to_pylist() for c in ("path", "label", "video_id"))
    out += [{"path": p, "label": lab, "video_id": v, "shard_file": ""} for p, lab, v in zip(*cols)]
    return out


def clip_dataset(cfg: Config, split: str, *, seed: int = 0, epochs: range | None = None) -> "ray.data.Dataset":  # noqa: F821
    """The clip stream of a split (lazy).

    train: `data.num_sample` rows per training video per epoch, in a new order (reproducible from `seed`
    and the epoch) with new random windows, crops and flips each epoch; val/test: clips x
    crops rows per video, deterministic. Columns: OUTPUT_COLUMNS (docs/INTERFACES.md).
    epochs (train): the 0-based epochs of a whole run in ONE execution, epoch after epoch
    (each in `epoch_order`), so that one pool of decode actors serves the run; without it,
    each execution of the dataset is the next epoch (Ray Train re-executes it, with new
    actors, every epoch).
    Decoding runs in up to `data.decode_actors` CPU actors; a video that fails is dropped
    with a warning (before Ray Train's split, so ranks still get equal shares).
    """
    rows = source_rows(cfg, split_videos(cfg, split))
    if not rows:
        raise ValueError(f"no videos to make clips from in split {split!r} (see the warnings above)")
    return clip_stream(cfg, split, rows, seed=seed, epochs=epochs, env=forwarded_env())


def clip_stream(cfg: Config, split: str, rows: list[dict[str, Any]], *, seed: int = 0,
                epochs: range | None = None, env: dict[str, str] | None = None) -> "ray.data.Dataset":  # noqa: F821
    """`clip_dataset` from its `source_rows` (made in the driver) and the driver's
    `forwarded_env()`: the part that may run elsewhere (Ray Train's controller builds a
    run's stream there, `trainer.RunStream`)."""
    import warnings

    import ray.data

    spec = clip_spec(cfg, split)
    batch = TRAIN_BATCH if spec.train else EVAL_BATCH
    # Light rows made here, not read: the plan has no task outside the decode actors.
    # (Separate read / shuffle tasks need a worker process each; on a node whose worker
    # slots the actors and trainers hold, Ray starts them only after a ~60 s timeout, every
    # epoch.) The actors read the cell maps themselves (`shard_rows.RowReader`).
    if spec.train and epochs is not None:
        # The run's rows, epoch after epoch, already in order: blocks of one decode batch.
        rows = [{**rows[i], "epoch": e} for e in epochs for i in epoch_order(seed, e, len(rows))]
        if not rows:
            raise ValueError(f"no videos or no epochs to make clips for (epochs {epochs})")
        ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // batch))
    elif spec.train:
        # One row per block: the shuffle below moves no data.
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        # A full shuffle, new every execution (= epoch), the same for the same seed and epoch.
        ds = ds.randomize_block_order(seed=ray.data.RandomSeedConfig(seed=int(seed), reseed_after_execution=True))
    else:
        ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // EVAL_ROWS_PER_BLOCK))
    with warnings.catch_warnings():
        # max_restarts / max_task_retries exist only as ray_remote_args (deprecated spelling
        # in Ray 2.60, no named replacement yet).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
        ds = ds.map_batches(
            ClipMaker,
            fn_constructor_kwargs={"cfg": cfg, "split": split, "seed": seed, "env": env if env is not None else LogSafeEnv()},
            batch_size=batch,
            batch_format="numpy",
            # Autoscaling from one actor: a fixed pool holding every CPU Ray Data may use
            # would leave none for anything else in the plan.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.data.decode_actors),
            num_cpus=1,
            max_restarts=ACTOR_RETRIES,
            max_task_retries=ACTOR_RETRIES,
        )
    # A block whose actor crashed twice is dropped, not the run (this dataset's own context).
    ds.context.max_errored_blocks = MAX_ERRORED_BLOCKS
    return ds
