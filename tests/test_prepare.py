"""`mgtc prepare`: re-encoded videos + manifest + shards of the prepared videos in one job;
the rules that keep a config from reading prepared data it cannot serve."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline import prepared, shards, storage, video
from pipeline.manifest import read_manifest
from pipeline.precompute import ConfigError, PrecomputeConfig
from pipeline.precompute.prepare import PrepareWorker, encode_settings, shard_config, video_name
from tests.helpers.videos import make_video

# Tiny sources: 64x80, 40 frames at 25 fps. Prepared: short side 32 (32x40), keyframe every
# 4 frames, every 2nd source frame (20 frames); clips of 8 frames at source rates 2 and 4,
# i.e. 1 and 2 in prepared frames.
ARGS = ["--short-side", "32", "--keyint", "4", "--stride", "2", "--shard-short-side", "32",
        "--num-frames", "8", "--sampling-rates", "2", "4", "--part-size", "2", "--actors", "2"]
LABELS = [3, 0, 5, 1]  # the third line is the corrupt file


def _data(data: config_mod.DataConfig | None = None, **kw) -> config_mod.DataConfig:
    import dataclasses

    return dataclasses.replace(data or config_mod.DataConfig(), **kw)


# --------------------------------------------------------------------------- rules, no Ray


def test_rates_are_given_in_source_frames_and_divided_by_the_stride():
    assert shard_config(PrecomputeConfig(sampling_rates=(4, 8)), 4).sampling_rates == (1, 2)
    # the defaults 2 4 keep what the stride allows; given rates must all fit
    assert shard_config(PrecomputeConfig(), 4, rates_given=False).sampling_rates == (1,)
    with pytest.raises(ConfigError, match=r"sampling_rates=\[2, 4\].*2 not a multiple of --stride 4"):
        shard_config(PrecomputeConfig(), 4)
    with pytest.raises(ConfigError, match="not a multiple of --stride 3"):
        shard_config(PrecomputeConfig(), 3, rates_given=False)
    with pytest.raises(ConfigError, match="(?s)short_side=31.*keyint=0.*preset=.fastest."):
        encode_settings(short_side=31, keyint=0, preset="fastest")
    assert video_name({"line": 12, "video": "a b/vidéo 1.avi"}) == "0000012-vid_o_1.mp4"


def test_a_config_that_prepared_data_cannot_serve_is_named_with_both_values():
    settings = {"stride": 4, "short_side": 320}
    d = config_mod.DataConfig(sampling_rate=4, short_side=224, video_stride=4)
    assert prepared.problems(d, settings, "OUT") == []
    (msg,) = prepared.problems(_data(d, video_stride=1), settings, "OUT")
    assert "data.video_stride=1" in msg and "--stride 4" in msg and "set data.video_stride=4" in msg
    msgs = prepared.problems(_data(d, sampling_rate=2, video_stride=1), settings, "OUT")
    assert any("data.sampling_rate=2" in m and "--stride 4" in m for m in msgs)
    (msg,) = prepared.problems(_data(d, short_side=384), settings, "OUT")
    assert "data.short_side=384" in msg and "--short-side 320" in msg
    (msg,) = prepared.problems(_data(d, video_stride=2, sampling_rate=4), None, "OUT")
    assert "data.video_stride=2" in msg and "source videos" in msg
    # the config itself: video_stride must divide the sampling rate (both in source frames)
    assert _data(d, sampling_rate=16).video_rate == 4
    bad = config_mod.Config(data=_data(d, num_classes=8, sampling_rate=6))
    with pytest.raises(config_mod.ConfigError, match="data.video_stride=4: must be >= 1 and divide data.sampling_rate=6"):
        config_mod.validate(bad)


def test_prepare_worker_on_a_numpy_batch_without_ray(tmp_path):
    src = make_video(tmp_path / "src" / "a.mp4", frames=40, seed=1)
    rows = [{"line": 1, "video": "a.mp4", "path": str(src), "label": 2, "error": ""},
            {"line": 2, "video": "nope.mp4", "path": str(tmp_path / "nope.mp4"), "label": 1, "error": ""}]
    cfg = shard_config(PrecomputeConfig(sampling_rates=(2,), short_side=32, num_frames=8, timeout_s=60), 2)
    encode = encode_settings(short_side=32, keyint=4, stride=2)
    out = tmp_path / "out"
    import dataclasses

    worker = PrepareWorker(dataclasses.asdict(cfg), str(out), encode=dataclasses.asdict(encode))
    try:
        result = worker({"part": np.array([0]), "rows": np.array([json.dumps(rows)], dtype=object)})
    finally:
        worker.decoder.close()
    marker = json.loads(result["summary"][0])
    assert (marker["ok"], marker["failed"]) == (1, 1)
    assert marker["prepared"] == [[1, "videos/0000001-a.mp4", 2, "a.mp4"]]
    info = video.probe(str(out / "videos" / "0000001-a.mp4"))
    assert (info.num_frames, info.height, info.width) == (20, 32, 40)
    assert [n for n in os.listdir(out / "videos")] == ["0000001-a.mp4"]  # no temporary file left
    row = storage.read_table(shards.shard_file(str(out), 0)).to_pylist()[0]
    assert row["path"] == str(out / "videos" / "0000001-a.mp4") and row["num_frames"] == 20
    assert row["sampling_rate"] == 1 and row["fps"] == pytest.approx(12.5)


@pytest.mark.integration
def test_prepare_worker_writes_to_s3(tmp_path, s3_bucket):
    import dataclasses

    src = make_video(tmp_path / "a.mp4", frames=40, seed=2)
    rows = [{"line": 5, "video": "a.mp4", "path": str(src), "label": 1, "error": ""}]
    cfg = shard_config(PrecomputeConfig(sampling_rates=(2,), short_side=32, num_frames=8, timeout_s=60), 2)
    out = f"s3://{s3_bucket}/prepared"
    worker = PrepareWorker(dataclasses.asdict(cfg), out, encode=dataclasses.asdict(encode_settings(32, 4, 2)))
    try:
        marker = json.loads(worker({"part": np.array([0]), "rows": np.array([json.dumps(rows)], dtype=object)})["summary"][0])
    finally:
        worker.decoder.close()
    assert marker["ok"] == 1
    uri = f"{out}/videos/0000005-a.mp4"
    local = tmp_path / "back.mp4"
    storage.download(uri, str(local))
    assert video.probe(str(local)).num_frames == 20
    assert storage.read_table(shards.shard_file(out, 0)).column("path").to_pylist() == [uri]


# --------------------------------------------------------------------------- the job, with Ray


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    for i in (0, 1, 3):
        make_video(folder / f"v{i}.mp4", frames=40, seed=i)
    (folder / "v2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # corrupt
    lines = [f"v{i}.mp4 {label}" for i, label in enumerate(LABELS)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def done(ray_local, source, tmp_path_factory):
    from jobs import prepare as job

    before = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}
    out = tmp_path_factory.mktemp("prepared") / "k400p"
    assert job.main([str(source / "train.txt"), "--out", str(out), *ARGS]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == before  # source untouched
    return out


@pytest.mark.integration
def test_prepared_videos_manifest_and_error_rows(done, source):
    rows = read_manifest(str(done / prepared.MANIFEST_FILE))
    # only the videos that succeeded, in source order, with their labels
    assert [r.label for r in rows] == [3, 0, 1]
    assert [Path(r.path).name for r in rows] == ["0000001-v0.mp4", "0000002-v1.mp4", "0000004-v3.mp4"]
    with open(done / prepared.MANIFEST_FILE, newline="") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["v0.mp4", "v1.mp4", "v3.mp4"]
    for r in rows:
        info = video.probe(r.path)
        assert (info.num_frames, info.height, info.width) == (20, 32, 40)
        assert info.fps == pytest.approx(12.5)
        with av.open(r.path) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
            keys = [i for i, p in enumerate(p for p in c.demux(stream) if p.size) if p.is_keyframe]
        assert keys == list(range(0, 20, 4))
    (err,) = shards.read_errors(str(done)).to_pylist()
    assert (err["line"], err["stage"], err["label"]) == (3, "decode", 5)
    assert err["error"].startswith(("corrupt video", "not a video")), err
    meta = storage.read_json(str(done / prepared.META_FILE))
    assert meta["prepare"]["stride"] == 2 and meta["prepare"]["keyint"] == 4 and meta["prepare"]["short_side"] == 32
    assert meta["videos"] == {"listed": 3, "failed": 1, "source_lines": 4} and meta["complete"]
    assert meta["shard_sampling_rates"] == [1, 2] and meta["source_sampling_rates"] == [2, 4]


@pytest.mark.integration
def test_shards_equal_precompute_on_the_prepared_videos(done, tmp_path):
    from jobs import precompute

    again = tmp_path / "again"
    assert precompute.main([str(done / prepared.MANIFEST_FILE), "--out", str(again), "--short-side", "32",
                            "--num-frames", "8", "--sampling-rates", "1", "2", "--actors", "1"]) == 0
    keys = ["path", "sampling_rate"]
    ours = shards.read_shards(str(done)).sort_by([(k, "ascending") for k in keys])
    theirs = shards.read_shards(str(again)).sort_by([(k, "ascending") for k in keys])
    # line / part are the source manifest's and the part layout; everything else is exact
    drop = ["line", "part"]
    assert ours.drop_columns(drop).equals(theirs.drop_columns(drop))
    assert ours.column("line").to_pylist() == [1, 1, 2, 2, 4, 4]


@pytest.mark.integration
def test_rerun_skips_committed_parts(done, source, capsys):
    from jobs import prepare as job

    videos = {p.name: p.stat().st_mtime_ns for p in (done / "videos").iterdir()}
    manifest = (done / prepared.MANIFEST_FILE).read_text()
    assert job.main([str(source / "train.txt"), "--out", str(done), *ARGS]) == 0
    assert "all 2 parts" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (done / "videos").iterdir()} == videos
    assert (done / prepared.MANIFEST_FILE).read_text() == manifest
    # another encoding into the same output is refused, naming the difference
    assert job.main([str(source / "train.txt"), "--out", str(done), *ARGS, "--keyint", "8"]) == 2
    assert "keyint" in capsys.readouterr().err


@pytest.mark.integration
def test_train_refuses_a_stride_the_prepared_data_cannot_serve(done, source, tmp_path, capsys):
    from jobs import train as train_job

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  num_classes: 8\n  num_frames: 8\n  sampling_rate: 2\n  input_size: 32\n"
                   f"  short_side: 32\n  train_manifest: {done / prepared.MANIFEST_FILE}\n  shards: {done}\n"
                   "model:\n  size: tiny\nmasking:\n  strategy: none\n")
    assert train_job.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "data.video_stride=1" in err and "--stride 2" in err, err
    assert train_job.main(["--config", str(cfg), "--set", "data.video_stride=2", "--set", "data.sampling_rate=3"]) == 2
    assert "data.video_stride=2: must be >= 1 and divide data.sampling_rate=3" in capsys.readouterr().err
    # the right config passes every check (16x4 stays 8x2 in source frames; 1 in prepared ones)
    from pipeline.clips import split_videos
    from pipeline.preflight import input_problems

    good = config_mod.load_config(str(cfg), ["data.video_stride=2"])
    assert input_problems(good, ("train",)) == []
    assert split_videos(good, "train").num_videos == 3
    # ... but not for a manifest of source videos (no _prepare.json beside it)
    on_source = config_mod.load_config(str(cfg), ["data.video_stride=2", f"data.test_manifest={source / 'train.txt'}"])
    (msg,) = input_problems(on_source, ("test",))
    assert msg.startswith("data.test_manifest: data.video_stride=2") and "source videos" in msg, msg
    with pytest.raises(ValueError, match="data.video_stride=2, but .* holds source videos"):
        split_videos(on_source, "test")


@pytest.mark.integration
def test_same_config_reads_the_same_source_frames_from_prepared_videos(done, source):
    """sampling_rate 4 on the source == sampling_rate 4 with video_stride 2 on the prepared
    copy (rate 2 in its frames): the same source frames, up to the re-encoding (PSNR)."""
    from pipeline import clips

    def views(path: str, stride: int) -> dict:
        cfg = config_mod.Config(
            data=config_mod.DataConfig(val_manifest="unused", num_classes=8, num_frames=8, sampling_rate=4,
                                       video_stride=stride, input_size=32, short_side=32),
            model=config_mod.ModelConfig(size="tiny", patch=8, tubelet=2))
        maker = clips.ClipMaker(cfg, "val")
        row = {"path": np.array([path]), "label": np.array([3]), "video_id": np.array([0]),
               "shard_file": np.array([""])}
        return maker(row)

    src, prep = views(str(source / "v0.mp4"), 1), views(str(done / "videos" / "0000001-v0.mp4"), 2)
    assert src["pixels"].shape == prep["pixels"].shape == (1, 8, 32, 32, 3)
    mse = np.mean((src["pixels"].astype(np.float64) - prep["pixels"]) ** 2)
    psnr = 10 * np.log10(255 ** 2 / mse)
    print(f"source vs prepared clip: PSNR {psnr:.1f} dB")
    assert psnr > 30
    assert np.abs(src["scores"][:, 1:] - prep["scores"][:, 1:]).mean() < 0.02
