"""Synthetic motion data set: determinism, labels carried by motion only, decodable mp4s,
list-file invariants, reuse / refusal on rerun. Tiny sizes: the whole file runs in seconds."""

from __future__ import annotations

import json
import re

import decord
import numpy as np
import pytest

from jobs import synth as synth_job
from pipeline import encoding, synth
from tests.helpers import videos as test_videos

PATCH, TUBELET = 16, 2


def decode(path) -> np.ndarray:
    """All frames of a video with decord: [F, H, W, 3] uint8."""
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def noiseless(cls, seed, *, size=64, frames=24):
    """(frames [F, S, S, 3] uint8, background [S, S, 3] float) without noise or shake."""
    rng = np.random.default_rng(seed)
    app = synth.sample_appearance(rng, size)
    track = synth.sample_track(cls, rng, frames=frames, size=size, radius=app.radius)
    video = synth.compose_frames(app, track, np.zeros((frames, 2), int), None, size)
    m = synth.SHAKE_MARGIN
    return video, app.background[m:m + size, m:m + size]


def object_stats(video, background):
    """Per frame: object area (pixels) and centroid (x, y), NaN where the object is absent."""
    mask = np.abs(video.astype(np.float32) - background).max(-1) > 30  # [F, S, S]
    area = mask.sum((1, 2))
    ys, xs = np.mgrid[0:video.shape[1], 0:video.shape[2]]
    with np.errstate(invalid="ignore"):
        cx = (mask * xs).sum((1, 2)) / area
        cy = (mask * ys).sum((1, 2)) / area
    return area, np.stack([cx, cy], 1)


def token_scores(video):
    """MGTC default scores [T'-1, H', W'] (slice 0 omitted): mean |last frame of tubelet t -
    first frame of tubelet t-1| over the patch's pixels and channels, in [0, 1]."""
    x = video.astype(np.float32) / 255
    t = len(x) // TUBELET
    diff = np.abs(x[TUBELET - 1::TUBELET][1:t] - x[0::TUBELET][:t - 1])
    g = x.shape[1] // PATCH
    return diff.reshape(t - 1, g, PATCH, g, PATCH, 3).mean((2, 4, 5))


# ------------------------------------------------------------------------- rendering


def test_render_is_deterministic_by_rng_state():
    a = synth.render_video("orbit", np.random.default_rng(7), size=32, frames=6)
    b = synth.render_video("orbit", np.random.default_rng(7), size=32, frames=6)
    c = synth.render_video("orbit", np.random.default_rng(8), size=32, frames=6)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_class_by_name_or_index():
    assert synth.class_index("right") == synth.CLASS_NAMES.index("right") == synth.class_index(1)
    assert len(synth.CLASSES) == len(set(synth.CLASS_NAMES)) >= 6
    assert all(c.description for c in synth.CLASSES)
    with pytest.raises(ValueError, match="unknown synthetic class"):
        synth.class_index("spin")
    with pytest.raises(ValueError, match="out of range"):
        synth.class_index(len(synth.CLASSES))


def test_appearance_is_drawn_before_and_independent_of_the_class():
    """Same rng state, two classes: identical background wherever neither object is."""
    size = 64
    a, bg = noiseless("left", 3, size=size)
    b, _ = noiseless("pulse", 3, size=size)
    mask_a = np.abs(a.astype(np.float32) - bg).max(-1) > 0.5  # beyond rounding
    mask_b = np.abs(b.astype(np.float32) - bg).max(-1) > 0.5
    free = ~(mask_a | mask_b)
    assert free.mean() > 0.5
    assert np.array_equal(a[free], b[free])


def test_same_class_different_seeds_differ_in_appearance():
    (_, bg_a), (_, bg_b) = noiseless("right", 1), noiseless("right", 2)
    assert np.abs(bg_a - bg_b).mean() > 5  # different background colour / texture
    apps = [synth.sample_appearance(np.random.default_rng(s), 64) for s in range(24)]
    assert len({app.shape for app in apps}) > 1
    colors = np.stack([app.color for app in apps])
    assert colors.std(0).min() > 10  # object colours vary across videos


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_object_is_brighter_than_background_and_a_minority_of_the_frame(seed):
    size = 112
    app = synth.sample_appearance(np.random.default_rng(seed), size)
    assert synth.luminance(app.color) - synth.luminance(app.background.reshape(-1, 3).mean(0)) >= 89.9
    assert synth.SIZE_RANGE[0] * size <= 2 * app.radius <= synth.SIZE_RANGE[1] * size


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cls", synth.CLASS_NAMES)
def test_motion_statistic_matches_the_class(cls, seed):
    """The object's pixels (no noise, no shake) move exactly as the class says."""
    video, bg = noiseless(cls, seed)
    area, center = object_stats(video, bg)
    visible = area > 0
    step = np.diff(center, axis=0)  # [F-1, 2], NaN around invisible frames
    if cls in ("right", "left", "down", "up"):
        axis = 0 if cls in ("right", "left") else 1
        sign = 1 if cls in ("right", "down") else -1
        assert visible.all()
        # Median per-frame displacement: robust to the jump when the object wraps around.
        assert sign * np.median(step[:, axis]) > 0.5
        assert abs(np.median(step[:, 1 - axis])) < 0.1
    elif cls == "static":
        assert visible.all()
        assert np.ptp(center, axis=0).max() < 0.01 and np.ptp(area) == 0
    elif cls == "pulse":
        assert visible.all()
        assert np.ptp(center, axis=0).max() < 1.5
        assert area.max() > 1.8 * area.min()
    elif cls == "blink":
        assert visible.any() and not visible.all()
        # Several on/off switches in 24 frames: the period is 6..12 frames.
        assert np.count_nonzero(np.diff(visible.astype(int))) >= 2
        assert np.ptp(center[visible], axis=0).max() < 0.01
    elif cls == "orbit":
        assert visible.all()
        radius = np.linalg.norm(center - center.mean(0), axis=1)
        speed = np.linalg.norm(step, axis=1)
        assert speed.min() > 1.0  # always moving
        # Both signs of dx and dy over 24 frames: the direction turns (>= 180 degrees).
        assert (step > 0.1).any(0).all() and (step < -0.1).any(0).all()
        assert radius.std() < 0.35 * radius.mean()
    else:
        pytest.fail(f"no motion check for class {cls}")


def test_track_alone_defines_the_class():
    """Tracks of one class with different rngs share the class statistic; appearance is
    not an argument of sample_track."""
    for seed in range(5):
        track = synth.sample_track("up", np.random.default_rng(seed), frames=8, size=64, radius=5.0)
        assert (np.diff(track.center[:, 1]) < 0).all() and (np.diff(track.center[:, 0]) == 0).all()


def test_moving_object_tokens_score_far_above_static_ones():
    """With noise and shake, background tokens score above zero (thresholds matter) but
    every token the moving object crosses scores well above the background."""
    size, frames = 64, 16
    for cls in ("right", "down", "orbit"):
        rng = np.random.default_rng(11)
        app = synth.sample_appearance(rng, size)
        track = synth.sample_track(cls, rng, frames=frames, size=size, radius=app.radius)
        shake = synth.sample_shake(rng, frames, synth.SHAKE_PX)
        noise = rng.normal(0, synth.NOISE_STD, (frames, size, size, 3)).astype(np.float32)
        video = synth.compose_frames(app, track, shake, noise, size)
        scores = token_scores(video)  # [T'-1, 4, 4]
        alpha = synth.object_alpha(app, track, size)  # [F, S, S]
        g = size // PATCH
        cover = alpha.reshape(frames, g, PATCH, g, PATCH).max((2, 4)).reshape(-1, TUBELET, g, g).max(1)
        touched = (cover[1:] > 0) | (cover[:-1] > 0)  # object in slice t or t-1
        background = scores[~touched]
        assert background.min() > 0.002  # noise + shake: static tokens are not zero
        assert np.quantile(background, 0.99) < 0.03
        assert np.quantile(scores[touched], 0.9) > 3 * np.quantile(background, 0.99)


def test_shake_is_small_and_global():
    shake = synth.sample_shake(np.random.default_rng(0), 500, synth.SHAKE_PX)
    assert shake.shape == (500, 2)
    assert np.abs(shake).max() <= synth.SHAKE_MARGIN
    assert (shake != 0).any(1).mean() > 0.3
    assert np.array_equal(synth.sample_shake(np.random.default_rng(0), 5, 0.0), np.zeros((5, 2)))


# ------------------------------------------------------------------------- mp4


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("frames,size,fps", [(2, 32, 25), (12, 64, 30)])
def test_written_mp4_decodes_with_decord(tmp_path, codec, frames, size, fps):
    video = synth.render_video("down", np.random.default_rng(0), size=size, frames=frames)
    path = tmp_path / "v.mp4"
    encoding.write_video(path, video, fps, codec=codec)
    reader = decord.VideoReader(str(path))
    assert len(reader) == frames
    assert reader.get_avg_fps() == pytest.approx(fps)
    decoded = decode(path)
    assert decoded.shape == video.shape
    assert np.abs(decoded.astype(np.float32) - video).mean() < 6  # lossy yuv420p, still close
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_default_codec_is_libx264_when_available():
    assert encoding.video_codec() in ("libx264", "mpeg4")


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    video = synth.render_video("left", np.random.default_rng(0), size=32, frames=8)
    calls = []

    def failing(frame, format):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(frame, format=format)

    original = encoding.av.VideoFrame.from_ndarray
    monkeypatch.setattr(encoding.av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(KeyboardInterrupt):
        encoding.write_video(tmp_path / "v.mp4", video, 25)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(4, 33, 32, 3), (4, 32, 32), (0, 32, 32, 3)])
def test_write_video_rejects_bad_arrays(tmp_path, shape):
    with pytest.raises(ValueError):
        encoding.write_video(tmp_path / "v.mp4", np.zeros(shape, np.uint8), 25)


# ------------------------------------------------------------------------- moving square


def test_moving_square_frames_differ_from_background_exactly_in_the_boxes():
    frames = test_videos.moving_square_frames()
    boxes = test_videos.moving_square_boxes()
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    background = test_videos.moving_square_frames(left=64)[0]  # the square starts off-frame
    for f, (y0, y1, x0, x1) in enumerate(boxes):
        inside = np.zeros((64, 64), bool)
        inside[y0:y1, x0:x1] = True
        assert (frames[f][inside] == 255).all()
        assert np.array_equal(frames[f][~inside], background[~inside])
    assert boxes[1, 2] - boxes[0, 2] == 4 and (boxes[:, :2] == [24, 40]).all()


def test_moving_square_video_tokens(tmp_path):
    """Decoded: tokens the square crosses score high, all others stay near zero."""
    path = test_videos.write_moving_square_video(tmp_path / "sq.mp4")
    decoded = decode(path)
    assert decoded.shape == (16, 64, 64, 3)
    assert np.abs(decoded.astype(np.float32) - test_videos.moving_square_frames()).mean() < 3
    scores = token_scores(decoded)
    boxes = test_videos.moving_square_boxes()
    touched = np.zeros_like(scores, bool)
    for t in range(1, len(scores) + 1):
        for f in range(TUBELET * (t - 1), TUBELET * (t + 1)):
            y0, y1, x0, x1 = boxes[f]
            if x1 > x0:
                touched[t - 1, y0 // PATCH:(y1 - 1) // PATCH + 1, x0 // PATCH:(x1 - 1) // PATCH + 1] = True
    assert scores[~touched].max() < 0.01
    assert scores[touched].min() > 0.05


# ------------------------------------------------------------------------- data set


def tiny(out, **kw):
    args = dict(videos_per_class=5, size=32, frames=4, fps=25, seed=0)
    return synth.make_dataset(out, **{**args, **kw})


@pytest.mark.parametrize("n,expected", [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1]),
                                        (5, [3, 1, 1]), (10, [7, 2, 1]), (40, [28, 6, 6])])
def test_split_counts(n, expected):
    assert synth.split_counts(n, (0.7, 0.15, 0.15)) == expected
    assert sum(synth.split_counts(n, (0.5, 0.5, 0.0))) == n


def test_list_files_format_and_split_invariants(tmp_path):
    paths = tiny(tmp_path / "d")
    root = tmp_path / "d"
    names = paths["classes"].read_text().split("\n")[:-1]
    assert names == list(synth.CLASS_NAMES)
    seen = {}
    per_class = {}
    for split in synth.LIST_SPLITS:
        text = paths[split].read_text()
        assert text.endswith("\n") or text == ""
        for line in text.splitlines():
            assert re.fullmatch(r"videos/[a-z]+/[a-z]+_\d{4}\.mp4 \d+", line), line
            rel, label = line.split(" ")
            assert not rel.startswith("/")  # relative to the list file's folder
            assert (paths[split].parent / rel).is_file()
            assert rel.split("/")[1] == names[int(label)]
            assert rel not in seen, f"{rel} in {seen.get(rel)} and {split}"
            seen[rel] = split
            per_class.setdefault(split, {}).setdefault(int(label), 0)
            per_class[split][int(label)] += 1
    all_videos = {p.relative_to(root).as_posix() for p in root.rglob("*.mp4")}
    assert set(seen) == all_videos and len(all_videos) == 5 * len(names)
    for split, counts in per_class.items():  # balanced: same count for every class
        assert sorted(counts) == list(range(len(names))) and len(set(counts.values())) == 1
    meta = json.loads(paths["meta"].read_text())
    assert meta["complete"] and meta["params"]["seed"] == 0 and meta["counts"]["train"] == 3 * len(names)
    assert [c["name"] for c in meta["classes"]] == names
    assert meta["horizontal_flip_safe"] is False  # left/right swap under a flip
    assert not list(root.rglob("*.part"))


def test_dataset_video_decodes_to_frames_and_fps(tmp_path):
    paths = tiny(tmp_path, videos_per_class=1, frames=6, fps=30, classes=["blink", "up"])
    video_path, label = synth.read_list_file(paths["train"])[0]
    reader = decord.VideoReader(str(video_path))
    assert len(reader) == 6 and reader.get_avg_fps() == pytest.approx(30)
    assert reader[0].shape == (32, 32, 3)
    assert paths["classes"].read_text() == "blink\nup\n" and label == 0
    assert json.loads(paths["meta"].read_text())["horizontal_flip_safe"] is True


def test_same_seed_same_dataset_other_seed_differs(tmp_path):
    a, b = tiny(tmp_path / "a"), tiny(tmp_path / "b")
    c = tiny(tmp_path / "c", seed=1)
    for split in synth.LIST_SPLITS:
        assert a[split].read_bytes() == b[split].read_bytes()
    assert a["classes"].read_bytes() == b["classes"].read_bytes()
    rows_a = synth.read_list_file(a["train"])
    rows_b = synth.read_list_file(b["train"])
    rows_c = synth.read_list_file(c["train"])
    for (pa, _), (pb, _) in zip(rows_a[::7], rows_b[::7]):
        assert np.array_equal(decode(pa), decode(pb))
    same_name = [(pa, pc) for (pa, _), (pc, _) in zip(rows_a, rows_c) if pa.name == pc.name]
    assert any(not np.array_equal(decode(pa), decode(pc)) for pa, pc in same_name[:3])
    assert a["train"].read_bytes() != c["train"].read_bytes()  # splits reshuffled by seed


def test_rerun_reuses_and_resumes(tmp_path):
    paths = tiny(tmp_path)
    videos = sorted(tmp_path.rglob("*.mp4"))
    stamps = {p: p.stat().st_mtime_ns for p in videos}
    lists = {k: p.read_bytes() for k, p in paths.items()}
    assert tiny(tmp_path) == paths
    assert {p: p.stat().st_mtime_ns for p in videos} == stamps  # nothing rewritten
    # An interrupted run: one video missing. The rerun writes only that one, identically.
    lost = videos[3]
    before = decode(lost)
    lost.unlink()
    tiny(tmp_path)
    assert np.array_equal(decode(lost), before)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in videos if p != lost)
    assert {k: p.read_bytes() for k, p in paths.items()} == lists


def test_differing_params_refused_unless_overwrite(tmp_path):
    tiny(tmp_path)
    with pytest.raises(synth.DatasetMismatchError, match=r"frames \(4 there, 6 asked\).*--overwrite"):
        tiny(tmp_path, frames=6)
    tiny(tmp_path, frames=6, videos_per_class=1, overwrite=True)
    assert len(list(tmp_path.rglob("*.mp4"))) == len(synth.CLASS_NAMES)
    assert len(decode(next(tmp_path.rglob("*.mp4")))) == 6


def test_foreign_files_without_metadata_are_refused(tmp_path):
    (tmp_path / "train.csv").write_text("x.mp4 0\n")
    with pytest.raises(synth.DatasetMismatchError, match="no readable dataset.json"):
        tiny(tmp_path)


@pytest.mark.parametrize("kw,match", [
    (dict(size=40), "multiple of 16"), (dict(size=48), "decord"), (dict(frames=1), "frames"),
    (dict(videos_per_class=0), "videos_per_class"), (dict(splits=(0.5, 0.2, 0.2)), "splits"),
    (dict(classes=["up", "up"]), "repeats"), (dict(classes=["spin"]), "unknown"),
])
def test_make_dataset_validates(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(tmp_path, **kw)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------- CLI


def test_cli_writes_and_summarises(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--videos-per-class", "3", "--size", "32", "--frames", "4",
            "--classes", "left", "right", "static"]
    assert synth_job.main(argv) == 0
    out = capsys.readouterr().out
    assert "0=left, 1=right, 2=static" in out
    assert re.search(r"train\s+3 videos", out) and re.search(r"test\s+3 videos", out)
    assert str(tmp_path / "train.csv") in out
    assert synth_job.main(argv) == 0  # reuse
    assert synth_job.main(argv[:-1]) == 1  # other classes: refused
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("bad,match", [
    (["--size", "100"], "multiple of 16"), (["--size", "48"], "decord"), (["--frames", "1"], ">= 2"),
    (["--videos-per-class", "0"], ">= 1"), (["--splits", "0.9", "0.2", "0"], "sum to 1"),
    (["--classes", "spin"], "invalid choice"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, bad, match):
    with pytest.raises(SystemExit) as exc:
        synth_job.main(["--out", str(tmp_path)] + bad)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_encoding_is_reproducible(tmp_path):
    """Same frames, same decoded pixels, every time (x264's mbtree broke this: see
    encoding.write_video)."""
    video = synth.render_video("orbit", np.random.default_rng(1), size=64, frames=24)
    decoded = []
    for i in range(4):
        encoding.write_video(tmp_path / f"{i}.mp4", video, 25)
        decoded.append(decode(tmp_path / f"{i}.mp4"))
    assert all(np.array_equal(decoded[0], d) for d in decoded[1:])
