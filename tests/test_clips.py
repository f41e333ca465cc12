"""The clip stream: VideoMAE sampling and augmentation, token scores that follow the clip's
window / crop / flip, exact shard scores on eval views, and one run through Ray Data.

Videos are tiny synthetic mp4s (64x64 and 64x80, 32 frames); shard rows come from the
precompute job's own `score_video` (no Ray), the integration test runs `run_precompute`.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from pipeline import clips, encoding, precompute, selection, synth, video, vocab
from pipeline.config import (
    Config,
    ConfigError,
    DataConfig,
    MaskingConfig,
    ModelConfig,
    replace,
)
from tests.helpers import videos as test_videos

CELL = 8
TUBELET = 2
PATCH = 16


def make_cfg(**data) -> Config:
    values = dict(train_manifest="unused", num_classes=8, num_frames=8, sampling_rate=2,
                  input_size=48, short_side=64, test_clips=2, test_crops=3)
    values.update(data)
    return Config(data=DataConfig(**values), model=ModelConfig(patch=PATCH, tubelet=TUBELET),
                  masking=MaskingConfig(strategy="mgtc_ratio", ratio=0.5))


def shard_row(path: str, rate: int, short_side: int, *, label: int = 3, video_id: int = 7) -> dict:
    """A shard row of one video as the precompute job makes it (cell sums, metadata)."""
    pcfg = precompute.PrecomputeConfig(sampling_rates=(rate,), short_side=short_side, cell=CELL,
                                       tubelet=TUBELET, num_frames=4)
    res = precompute.score_video(str(path), pcfg)
    r = res["rates"][rate]
    return {
        "path": str(path), "label": np.int64(label), "video_id": np.int64(video_id),
        "num_sampled": np.int32(r["num_sampled"]), "resized_height": np.int32(res["resized_height"]),
        "resized_width": np.int32(res["resized_width"]), "tubelet": np.int32(TUBELET),
        "cell": np.int32(CELL), "cells_height": np.int32(res["resized_height"] // CELL),
        "cells_width": np.int32(res["resized_width"] // CELL),
        "pair_cells": r["pair"].ravel(), "boundary_cells": r["boundary"].ravel(),
    }


def plain_row(row: dict) -> dict:
    """The same video without shard data: scores get computed on the decoded clip."""
    return {k: row[k] for k in ("path", "label", "video_id")}


def no_cells(row: dict) -> dict:
    """The row as the source dataset gives a video without shard data next to shard rows:
    the same columns, cell = 0, empty maps."""
    out = {k: (np.zeros(0, v.dtype) if isinstance(v, np.ndarray) and v.ndim else type(v)(0))
           for k, v in row.items()}
    return out | plain_row(row)


def as_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows -> a numpy column batch as Ray Data gives it (list columns as object arrays)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], np.ndarray) and values[0].ndim:
            col = np.empty(len(values), dtype=object)
            col[:] = values
            out[key] = col
        else:
            out[key] = np.asarray(values)
    return out


def kept_sets(scores: np.ndarray, ratio: float = 0.5) -> list[set[int]]:
    """Kept token ids per clip under mgtc_ratio. scores: [B, T', H', W']."""
    sel = selection.select_tokens("mgtc_ratio", scores=torch.from_numpy(np.ascontiguousarray(scores)), ratio=ratio)
    return [set(row.tolist()) for row in sel.ids_keep]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    """A 64x64 moving square (step 2 px/frame) and four 64x80 synthetic motion videos."""
    root = tmp_path_factory.mktemp("clips_videos")
    out = {"square": str(test_videos.write_moving_square_video(root / "square.mp4", frames=32, size=64, step=2))}
    for i, cls in enumerate(("right", "down", "orbit", "pulse")):
        frames = synth.render_video(cls, np.random.default_rng(i), size=80, frames=32)[:, 8:72]
        encoding.write_video(root / f"{cls}.mp4", frames, fps=25)
        out[cls] = str(root / f"{cls}.mp4")
    return out


# --------------------------------------------------------------------------- pure helpers


def test_random_resized_box_follows_torchvision():
    import torchvision.transforms as T

    rng = np.random.default_rng(0)
    ours = np.array([clips.random_resized_box(48, 64, (0.08, 1.0), (0.75, 1.3333), rng) for _ in range(3000)])
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 48).all() and (left + w <= 64).all()
    assert (h > 0).all() and (w > 0).all()
    torch.manual_seed(0)
    theirs = np.array([T.RandomResizedCrop.get_params(torch.zeros(3, 48, 64), [0.08, 1.0], [0.75, 1.3333])
                       for _ in range(3000)])
    area = lambda b: (b[:, 2] * b[:, 3]).mean() / (48 * 64)  # noqa: E731
    assert abs(area(ours) - area(theirs)) < 0.03
    # No aspect in range fits 10 tries: torchvision's central fallback, clamped to the ratio.
    assert clips.random_resized_box(10, 100, (1.0, 1.0), (1.0, 1.0), rng) == (0, 45, 10, 10)


def test_crop_resize_copies_exact_crops_resizes_and_mirrors():
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    same = clips.crop_resize(frames, (8, 16, 32, 32), 32)
    assert np.array_equal(same, frames[:, 8:40, 16:48])
    flipped = clips.crop_resize(frames, (8, 16, 32, 32), 32, flip=True)
    assert np.array_equal(flipped, frames[:, 8:40, 16:48][:, :, ::-1])
    resized = clips.crop_resize(frames, (0, 0, 48, 60), 32)
    assert resized.shape == (4, 32, 32, 3) and resized.dtype == np.uint8 and resized.flags.c_contiguous
    flat = np.full((2, 48, 64, 3), 77, dtype=np.uint8)
    assert (clips.crop_resize(flat, (3, 5, 40, 50), 32) == 77).all()


def test_rand_augment_applies_the_same_ops_to_every_frame():
    frame = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    clip = np.repeat(frame[None], 6, axis=0)
    ra = clips.rand_augment("rand-m7-n4-mstd0.5-inc1", 32)
    outputs = [clips.augment_clip(clip, ra, seed) for seed in range(8)]
    for out in outputs:
        assert all(np.array_equal(out[0], f) for f in out)  # identical frames stay identical
    assert sum(not np.array_equal(out[0], frame) for out in outputs) >= 6  # and were augmented
    assert len({out[0].tobytes() for out in outputs}) >= 6  # a new draw per clip

    draws = []

    def recorder(img):
        draws.append((np.random.random(), random.random()))
        return img

    clips.augment_clip(clip, recorder, 5)
    assert len(set(draws)) == 1  # both RNGs restarted from the same state for every frame


def test_imagenet_constants_are_timms():
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert vocab.IMAGENET_MEAN == IMAGENET_DEFAULT_MEAN  # written out: timm costs actors seconds to import
    assert vocab.IMAGENET_STD == IMAGENET_DEFAULT_STD


def test_to_model_inputs_normalises_on_device():
    pixels = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    scores = torch.rand(2, 2, 2, 2)
    batch = {"pixels": pixels, "scores": scores, "label": torch.tensor([1, 5])}
    x, s, y = clips.to_model_inputs(batch, "cpu")
    assert x.shape == (2, 3, 4, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    mean = torch.tensor(vocab.IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(vocab.IMAGENET_STD).view(1, 3, 1, 1, 1)
    expect = (pixels.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
    assert torch.allclose(x, expect, atol=1e-5)
    assert s.dtype == torch.float32 and torch.equal(s, scores)
    assert y.dtype == torch.int64 and y.tolist() == [1, 5]


# --------------------------------------------------------------------------- ClipMaker, no Ray


def test_clip_maker_train_batch(videos):
    cfg = make_cfg(num_frames=8, rand_augment="rand-m7-n4-mstd0.5-inc1")
    row = shard_row(videos["right"], 2, 64, label=4, video_id=11)
    maker = clips.ClipMaker(cfg, "train", entropy=123)
    out = maker(as_batch([row, no_cells(row)]))
    assert maker.failed == 0
    assert out["pixels"].shape == (2, 8, 48, 48, 3) and out["pixels"].dtype == np.uint8
    assert out["scores"].shape == (2, 4, 3, 3) and out["scores"].dtype == np.float32
    assert out["label"].tolist() == [4, 4] and out["label"].dtype == np.int64
    assert out["video_id"].tolist() == [11, 11] and out["view"].tolist() == [0, 0]
    assert np.isinf(out["scores"][:, 0]).all() and np.isfinite(out["scores"][:, 1:]).all()
    assert (out["scores"][:, 1:] >= 0).all()

    # Scores are taken before RandAugment: the same draws without it give the same scores.
    plain = clips.ClipMaker(make_cfg(num_frames=8), "train", entropy=123)(as_batch([row]))
    assert np.array_equal(plain["scores"][0], out["scores"][0])
    assert not np.array_equal(plain["pixels"][0], out["pixels"][0])


def test_repeated_augmentation_one_window_several_crops(videos):
    """data.num_sample (VideoMAE's repeated augmentation): one decoded window per video,
    num_sample clips with independent crops, each scored for its own crop."""
    cfg = make_cfg(num_frames=8, sampling_rate=2, num_sample=3, scale=(0.3, 0.6))
    row = shard_row(videos["right"], 2, 64, label=4, video_id=11)
    maker = clips.ClipMaker(cfg, "train", entropy=77)
    out = maker(as_batch([row, no_cells(row)]))
    assert out["pixels"].shape == (6, 8, 48, 48, 3)
    assert out["video_id"].tolist() == [11] * 6 and out["view"].tolist() == [0] * 6
    for first in (0, 3):  # per video: three different crops, each with its own scores
        clips3 = out["pixels"][first:first + 3]
        assert not np.array_equal(clips3[0], clips3[1]) and not np.array_equal(clips3[1], clips3[2])
        assert not np.array_equal(out["scores"][first], out["scores"][first + 1])
    assert clips.clip_spec(cfg, "train").views == 3 and clips.clip_spec(cfg, "test").views == 6
    with pytest.raises(ConfigError, match="data.num_sample"):
        replace(cfg, ["data.num_sample=0"])


def test_clip_maker_drops_a_bad_video_and_keeps_the_rest(videos, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    good = shard_row(videos["down"], 2, 64)
    maker = clips.ClipMaker(make_cfg(), "test")
    out = maker(as_batch([plain_row(good) | {"path": str(bad)}, plain_row(good)]))
    assert maker.failed == 1
    assert len(out["view"]) == 6 and set(out["view"].tolist()) == set(range(6))
    empty = maker(as_batch([plain_row(good) | {"path": str(bad)}]))
    assert {k: v.shape[0] for k, v in empty.items()} == dict.fromkeys(clips.OUTPUT_COLUMNS, 0)
    assert empty["pixels"].shape[1:] == (8, 48, 48, 3) and empty["scores"].shape[1:] == (4, 3, 3)


@pytest.mark.parametrize("name", ["square", "orbit"])
def test_eval_views_are_deterministic_and_shard_scores_exact(videos, name):
    cfg = make_cfg(num_frames=8, sampling_rate=2, test_clips=2, test_crops=3)
    row = shard_row(videos[name], 2, 64)
    maker = clips.ClipMaker(cfg, "test")
    from_shards = maker(as_batch([row]))
    again = clips.ClipMaker(cfg, "test", entropy=99)(as_batch([row]))
    computed = maker(as_batch([plain_row(row)]))
    assert from_shards["view"].tolist() == list(range(6))
    for key in clips.OUTPUT_COLUMNS:
        assert np.array_equal(from_shards[key], again[key])  # deterministic
    assert np.array_equal(from_shards["pixels"], computed["pixels"])
    # Same pixels: the shard path decodes exactly the frames the precompute job scored.
    h, w = int(row["resized_height"]), int(row["resized_width"])
    frames, _ = clips.read_frames(row["path"], 2, 64, lambda m: np.arange(m))
    top, left = video.spatial_crops(h, w, 48, 3, CELL)[1]  # view 1 = clip 0, centre crop
    first = video.test_views(int(row["num_sampled"]), 8, 2)[0]
    assert np.array_equal(from_shards["pixels"][1], frames[first, top:top + 48, left:left + 48])
    np.testing.assert_allclose(from_shards["scores"], computed["scores"], rtol=1e-5, atol=1e-6)
    assert kept_sets(from_shards["scores"]) == kept_sets(computed["scores"])


def test_train_window_is_consecutive_stride_positions(videos):
    """Decoded training frames are the source frames start*s, (start+1)*s, ... resized."""
    cfg = make_cfg(num_frames=8, sampling_rate=2, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False,
                   input_size=64, short_side=64)
    row = plain_row(shard_row(videos["square"], 2, 64))
    every, _ = clips.read_frames(row["path"], 1, 64, lambda m: np.arange(m))
    starts = set()
    maker = clips.ClipMaker(cfg, "train", entropy=5)
    for i in range(12):  # per-row draws: another video id, another window
        pixels = maker(as_batch([row | {"video_id": np.int64(i)}]))["pixels"][0]
        matches = [s for s in range(0, 32 - 14) if np.array_equal(pixels, every[s:s + 16:2])]
        assert matches and all(s % 2 == 0 for s in matches)
        starts.add(matches[0])
    assert len(starts) >= 3  # the window moves


def test_train_crop_score_agreement(videos):
    """Shard scores pooled over a random resized crop vs scores computed on the crop's
    resized pixels: the fraction of kept tokens (mgtc_ratio 0.5) both choose."""
    cfg = make_cfg(num_frames=8, sampling_rate=2, input_size=48, short_side=64)
    agree, exact = [], 0
    for name in ("right", "down", "orbit", "pulse", "square"):
        row = shard_row(videos[name], 2, 64)
        a = clips.ClipMaker(cfg, "train", entropy=2024)
        b = clips.ClipMaker(cfg, "train", entropy=2024)
        for i in range(16):
            row = row | {"video_id": np.int64(i)}
            shard_out, computed_out = a(as_batch([row])), b(as_batch([plain_row(row)]))
            assert np.array_equal(shard_out["pixels"], computed_out["pixels"])  # same draws
            ks, kc = kept_sets(shard_out["scores"])[0], kept_sets(computed_out["scores"])[0]
            agree.append(len(ks & kc) / len(ks))
            exact += ks == kc
    mean = float(np.mean(agree))
    print(f"\ntrain-crop kept-token agreement (mgtc_ratio 0.5, {len(agree)} clips): "
          f"mean {mean:.3f}, min {min(agree):.3f}, identical sets {exact}/{len(agree)}")
    assert mean >= 0.9 and min(agree) >= 0.6


def test_flip_moves_scores_with_the_pixels(videos):
    """A square moving over a static background: in every clip, flipped or not, the token
    that shard scores rank first is the token where most pixels change in the clip's own
    (cropped, flipped) pixels, and tokens far from the square are dropped."""
    cfg = make_cfg(num_frames=4, sampling_rate=2, input_size=32, short_side=64,
                   scale=(0.25, 0.25), ratio=(1.0, 1.0))  # 32 x 32 crops: no resampling
    row = shard_row(videos["square"], 2, 64)
    maker = clips.ClipMaker(cfg, "train", entropy=7)
    sides, checked = set(), 0
    for i in range(48):
        out = maker(as_batch([row | {"video_id": np.int64(i)}]))
        pixels, scores = out["pixels"][0].astype(int), out["scores"][0]  # [4, 32, 32, 3], [2, 2, 2]
        # Slice 1's boundary score compares clip frames 3 and 0 (the square moved 12 px).
        changed = (np.abs(pixels[3] - pixels[0]).max(axis=-1) > 40).reshape(2, 16, 2, 16).sum(axis=(1, 3))
        order = np.sort(changed.ravel())
        if order[-1] < 2 * max(order[-2], 1):
            continue  # no clear winner: square outside the crop or split between tokens
        top = np.unravel_index(np.argmax(scores[1]), (2, 2))
        assert top == np.unravel_index(np.argmax(changed), (2, 2)), (scores[1], changed)
        # Cells straddling a crop edge leak a little motion into neighbours, never much.
        assert (scores[1][changed == 0] < 0.25 * scores[1].max()).all(), (scores[1], changed)
        sides.add(int(top[1]))
        checked += 1
    assert checked >= 10 and sides == {0, 1}  # the square's token showed up on both sides


# --------------------------------------------------------------------------- through Ray


@pytest.mark.integration
def test_clip_dataset_through_ray(ray_local, tmp_path):
    paths = synth.make_dataset(tmp_path / "data", videos_per_class=2, size=64, frames=24, fps=25,
                               seed=0, classes=["static", "right", "down", "orbit"], splits=(0.5, 0.0, 0.5))
    shards_dir = str(tmp_path / "shards")
    pcfg = precompute.PrecomputeConfig(sampling_rates=(2,), short_side=64, cell=CELL, tubelet=TUBELET,
                                       num_frames=4, actors=1, part_size=2)
    assert precompute.run_precompute(str(paths["train"]), shards_dir, pcfg, log=lambda _: None).complete
    cfg = make_cfg(train_manifest=str(paths["train"]), test_manifest=str(paths["test"]),
                   shards=shards_dir, num_frames=4, sampling_rate=2, input_size=32, short_side=64,
                   scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, decode_actors=2,
                   test_clips=2, test_crops=3)
    import ray.data

    before = ray.data.DataContext.get_current().max_errored_blocks
    train = clips.clip_dataset(cfg, "train", seed=1)
    assert ray.data.DataContext.get_current().max_errored_blocks == before  # ours only
    n_train = clips.num_clips(cfg, "train")
    assert n_train == 4
    epochs = []
    for _ in range(2):
        rows = train.take_all()
        assert len(rows) == n_train
        assert sorted(r["video_id"] for r in rows) == list(range(n_train))
        assert all(r["pixels"].shape == (4, 32, 32, 3) and r["scores"].shape == (2, 2, 2) for r in rows)
        epochs.append({r["video_id"]: r["pixels"] for r in rows})
    # Only the temporal window is random here (full-frame crop, no flip): epochs differ.
    moved = sum(not np.array_equal(epochs[0][v], epochs[1][v]) for v in epochs[0])
    assert moved >= 2, moved
    # A new dataset with the same seed (a second run in this process) starts at epoch 0 again.
    again = {r["video_id"]: r["pixels"] for r in clips.clip_dataset(cfg, "train", seed=1).take_all()}
    assert all(np.array_equal(epochs[0][v], again[v]) for v in epochs[0])
    # A whole run in one execution (`epochs=`, one decode actor pool): epoch after epoch,
    # each in its own seeded order, with the same clips as the per-execution epochs.
    run = clips.clip_dataset(cfg, "train", seed=1, epochs=range(2))
    run.context.execution_options.preserve_order = True
    rows = run.take_all()
    assert len(rows) == 2 * n_train
    for e in range(2):
        part = rows[e * n_train:(e + 1) * n_train]
        assert all(np.array_equal(epochs[e][r["video_id"]], r["pixels"]) for r in part), e
    source = clips.source_rows(cfg, clips.split_videos(cfg, "train"))
    expected = [[source[i]["video_id"] for i in clips.epoch_order(1, e, n_train)] for e in range(2)]
    assert [r["video_id"] for r in rows] == expected[0] + expected[1] and expected[0] != expected[1]
    resumed = clips.clip_dataset(cfg, "train", seed=1, epochs=range(1, 2)).take_all()
    assert {r["video_id"]: r["pixels"].tobytes() for r in resumed} == {v: p.tobytes() for v, p in epochs[1].items()}

    # Eval on a manifest of the 4 shard videos plus 4 the shards lack (scores computed on
    # the views: the same numbers), behind a 1-CPU actor like the evaluator's: on 2 CPUs the
    # source must not need a CPU slot that the two actors hold.
    both = tmp_path / "data" / "both.csv"
    both.write_text(paths["train"].read_text() + paths["test"].read_text())
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_manifest=str(both)))

    class Consumer:
        def __call__(self, batch):
            return batch

    test = clips.clip_dataset(cfg, "test").map_batches(
        Consumer, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=4)
    rows = sorted(test.take_all(), key=lambda r: (r["video_id"], r["view"]))
    videos = clips.split_videos(cfg, "test")
    assert (videos.scored.num_rows, videos.computed.num_rows) == (4, 4)
    assert len(rows) == clips.num_clips(cfg, "test") == 8 * 6
    assert [r["view"] for r in rows] == list(range(6)) * 8
    assert [r["video_id"] for r in rows] == [v for v in range(8) for _ in range(6)]
    assert all(np.isinf(r["scores"][0]).all() and np.isfinite(r["scores"][1:]).all() for r in rows)


def test_seed_alone_decides_the_training_clips(videos):
    """optim.seed drives the decode actors' draws (no OS entropy): two actors made with the
    same seed give the same clips; another seed gives others (issue 13, item 12)."""
    cfg = make_cfg(num_frames=8, sampling_rate=2, input_size=48, short_side=64,
                   rand_augment="rand-m7-n4-mstd0.5-inc1")
    row = plain_row(shard_row(videos["orbit"], 2, 64))
    first, second = clips.ClipMaker(cfg, "train", seed=3), clips.ClipMaker(cfg, "train", seed=3)
    other = clips.ClipMaker(cfg, "train", seed=4)
    for i in range(3):
        batch = as_batch([row | {"video_id": np.int64(i)}])
        a, b, c = (m(batch)["pixels"] for m in (first, second, other))
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_training_draws_follow_the_row_not_the_actor_or_arrival_order(videos):
    """A training clip is a function of (seed, epoch, video id, sample) alone: the same
    videos split over two actors, in another order, after other videos, give the same clips;
    another epoch gives new ones. (With the draws per actor, which actor got which video and
    in which order changed the clips: Ray Data's actor pool assigns blocks by timing.)"""
    cfg = make_cfg(num_frames=8, sampling_rate=2, input_size=48, short_side=64, num_sample=2,
                   rand_augment="rand-m7-n4-mstd0.5-inc1")
    rows = [plain_row(shard_row(videos[name], 2, 64, video_id=i)) for i, name in enumerate(("right", "orbit", "down"))]

    def by_video(*outs) -> dict[tuple[int, int], np.ndarray]:
        got: dict[int, list] = {}
        for out in outs:
            for vid, pixels, scores in zip(out["video_id"].tolist(), out["pixels"], out["scores"]):
                got.setdefault(vid, []).append((pixels, scores))
        return {(vid, k): clip for vid, clip_list in got.items() for k, clip in enumerate(clip_list)}

    one = by_video(clips.ClipMaker(cfg, "train", seed=5)(as_batch(rows)))
    a, b = clips.ClipMaker(cfg, "train", seed=5), clips.ClipMaker(cfg, "train", seed=5)
    b(as_batch([rows[1]]))  # b has drawn for another video before
    split = by_video(b(as_batch([rows[2], rows[0]])), a(as_batch([rows[1]])))
    assert one.keys() == split.keys() and len(one) == 6
    for key in one:
        assert np.array_equal(one[key][0], split[key][0]) and np.array_equal(one[key][1], split[key][1]), key
    assert not np.array_equal(one[(0, 0)][0], one[(0, 1)][0])  # the two samples differ
    later = clips.ClipMaker(cfg, "train", seed=5)
    later.epoch = 1  # the next execution of the dataset
    again = by_video(later(as_batch(rows)))
    assert all(not np.array_equal(one[key][0], again[key][0]) for key in one)

    window, samples = clips.clip_generators(5, 0, 2, 2)
    same_window, same_samples = clips.clip_generators(5, 0, 2, 2)
    assert window.integers(2**62) == same_window.integers(2**62)
    assert [g.integers(2**62) for g in samples] == [g.integers(2**62) for g in same_samples]
    draws = {clips.clip_generators(*key, 1)[0].integers(2**62)
             for key in ((5, 0, 2), (6, 0, 2), (5, 1, 2), (5, 0, 3), (-5, 0, 2))}
    assert len(draws) == 5


@pytest.mark.skipif(bool(video.torchcodec_reason()), reason=video.torchcodec_reason() or "-")
def test_clip_maker_with_torchcodec_gives_decords_clips(videos):
    """data.decoder=torchcodec: the same window, crop and flip draws give clips within the
    resize tolerance of decord's (video.py), and the same kinds of rows."""
    row = shard_row(videos["right"], 2, 64)
    ours = clips.ClipMaker(make_cfg(decoder="torchcodec"), "train", entropy=9)(as_batch([row]))
    ref = clips.ClipMaker(make_cfg(), "train", entropy=9)(as_batch([row]))
    assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in ref.items()}
    assert np.abs(ours["pixels"].astype(int) - ref["pixels"].astype(int)).mean() <= 1.5
