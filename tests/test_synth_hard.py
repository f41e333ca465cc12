"""The hard synthetic set: every factor a switch, the class = identity x motion, fast orbits
that alias at stride 4, camera motion that moves the background, reproducible files."""

from __future__ import annotations

import json

import decord
import numpy as np
import pytest

from jobs import synth as synth_job
from pipeline import encoding, synth, synth_hard as hard


def scene(cls, seed=0, **kw):
    args = dict(size=64, frames=24, camera=("none",), distractors=0)
    return hard.sample_scene(cls, np.random.default_rng(seed), **{**args, **kw})


def angular_steps(center: np.ndarray, stride: int) -> np.ndarray:
    """Signed angle (degrees, wrapped to (-180, 180]) between successive samples at `stride`
    of an orbit's centre about its mean; > 0 = clockwise on screen (y down)."""
    rel = center[::stride] - center.mean(0)
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    return np.degrees((np.diff(angle) + np.pi) % (2 * np.pi) - np.pi)


def test_classes_are_identity_times_motion():
    assert len(hard.CLASS_NAMES) == len(hard.IDENTITIES) * len(hard.MOTIONS) == 8
    assert hard.class_parts("cross_ccw") == ("cross", "ccw")
    assert set(hard.DESCRIPTIONS) == set(hard.CLASS_NAMES)
    with pytest.raises(ValueError, match="unknown class"):
        hard.class_parts("right")


def test_render_is_deterministic_by_rng_state():
    a = hard.render_video("disk_cw", np.random.default_rng(3), size=32, frames=6)
    b = hard.render_video("disk_cw", np.random.default_rng(3), size=32, frames=6)
    c = hard.render_video("disk_cw", np.random.default_rng(4), size=32, frames=6)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(4))
def test_fast_orbit_sense_is_clear_at_stride_2_and_can_alias_at_stride_4(seed):
    for cls, sign in (("disk_cw", 1), ("cross_ccw", -1)):
        center = scene(cls, seed).things[-1].center
        s2 = angular_steps(center, 2)
        assert (sign * s2 > 60).all() and (sign * s2 < 125).all()  # 67-120 degrees, one sense
    # Over the period range, stride 4 shows the true sense for some periods and the other
    # sense for others: its sign alone cannot tell cw from ccw.
    senses = set()
    for seed in range(12):
        steps = angular_steps(scene("disk_cw", seed).things[-1].center, 4)
        senses.add(int(np.sign(np.median(steps))))
    assert senses == {-1, 1}


def test_static_and_pulse_stay_in_place_and_identity_is_the_shape():
    still = scene("cross_static", 1)
    obj = still.things[-1]
    assert obj.shape == "cross" and np.ptp(obj.center, axis=0).max() == 0 and np.ptp(obj.scale) == 0
    pulse = scene("disk_pulse", 1).things[-1]
    assert pulse.shape == "disk" and np.ptp(pulse.center, axis=0).max() == 0 and pulse.scale.max() > 1.5 * pulse.scale.min()
    area = hard.object_mask(still, 64).sum((1, 2))
    assert (area == area[0]).all() and 0.01 < area[0] / 64**2 < 0.1  # a minority of the frame


def test_object_stays_in_view_under_every_camera():
    for mode in hard.CAMERA_MODES:
        for seed in range(3):
            sc = scene("disk_cw", seed, frames=48, camera=(mode,))
            assert sc.camera.mode == mode
            mask = hard.object_mask(sc, 64)
            assert mask.any((1, 2)).all()
            assert not mask[:, [0, -1], :].any() and not mask[:, :, [0, -1]].any()  # never at the border


def test_static_camera_leaves_the_background_still_and_pan_moves_it():
    def background_change(mode):
        sc = scene("disk_static", 2, camera=(mode,))
        video = hard.compose(sc.background, sc.things, sc.camera, 64, None).astype(np.float32)
        covered = np.zeros((64, 64), bool)
        for i in range(len(sc.things)):
            covered |= hard.object_mask(sc, 64, i).any(0)
        covered = np.pad(covered, 2)[2:-2, 2:-2] | np.roll(covered, 1, 0) | np.roll(covered, 1, 1)
        diff = np.abs(video[6] - video[0]).max(-1)
        return diff[~covered].mean()

    assert background_change("none") == 0
    for mode in ("pan", "zoom", "shake"):
        assert background_change(mode) > 1.0, mode  # uint8 levels, mean over free pixels


def test_switches_distractors_and_camera_draw():
    assert len(scene("disk_cw", 0, distractors=3).things) == 4
    assert all(t.shape in hard.DISTRACTOR_SHAPES for t in scene("disk_cw", 0, distractors=3).things[:-1])
    modes = {scene("disk_cw", s, camera=("pan", "zoom")).camera.mode for s in range(12)}
    assert modes == {"pan", "zoom"}
    with pytest.raises(ValueError, match="camera mode"):
        hard.sample_camera("tilt", np.random.default_rng(0), frames=4, size=32)


def tiny(out, **kw):
    args = dict(videos_per_class=3, size=32, frames=6, fps=25, seed=0)
    return hard.make_dataset(out, **{**args, **kw})


def test_dataset_is_reproducible_and_records_every_switch(tmp_path):
    a = tiny(tmp_path / "a", classes=["disk_cw", "cross_static"])
    b = tiny(tmp_path / "b", classes=["disk_cw", "cross_static"])
    for split in synth.LIST_SPLITS:
        assert a[split].read_bytes() == b[split].read_bytes()
    assert a["meta"].read_bytes() == b["meta"].read_bytes()
    rows_a, rows_b = synth.read_list_file(a["train"]), synth.read_list_file(b["train"])
    assert sorted({r[1] for r in rows_a}) == [0, 1]
    for (pa, _), (pb, _) in zip(rows_a, rows_b):
        va = decord.VideoReader(str(pa)).get_batch(list(range(6))).asnumpy()
        vb = decord.VideoReader(str(pb)).get_batch(list(range(6))).asnumpy()
        assert va.shape == (6, 32, 32, 3) and np.array_equal(va, vb)
    meta = json.loads(a["meta"].read_text())
    params = meta["params"]
    assert params["set"] == "hard" and params["crf"] == hard.CRF and params["camera"] == list(hard.DEFAULT_CAMERA)
    assert params["distractors"] == 1 and params["orbit_period"] == list(hard.ORBIT_PERIOD)
    assert meta["horizontal_flip_safe"] is False
    assert a["classes"].read_text() == "disk_cw\ncross_static\n"
    with pytest.raises(synth.DatasetMismatchError, match="crf"):
        tiny(tmp_path / "a", classes=["disk_cw", "cross_static"], crf=18)


def test_crf_changes_the_encoding(tmp_path):
    video = hard.render_video("disk_pulse", np.random.default_rng(0), size=64, frames=8)
    sizes = {}
    for crf in (18, 35):
        encoding.write_video(tmp_path / f"{crf}.mp4", video, 25, crf=crf)
        sizes[crf] = (tmp_path / f"{crf}.mp4").stat().st_size
    assert sizes[35] < sizes[18]


@pytest.mark.parametrize("kw,match", [(dict(camera=["tilt"]), "camera"), (dict(crf=60), "crf"),
                                      (dict(distractors=-1), "distractors"), (dict(orbit_period=(2, 8)), "orbit_period"),
                                      (dict(classes=["right"]), "unknown class"), (dict(size=40), "multiple of 16")])
def test_make_dataset_validates(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(tmp_path, **kw)
    assert not list(tmp_path.iterdir())


def test_cli_hard_set(tmp_path, capsys):
    argv = ["--set", "hard", "--out", str(tmp_path), "--videos-per-class", "1", "--size", "32",
            "--frames", "4", "--classes", "disk_cw", "cross_cw", "--camera", "pan", "--distractors", "0"]
    assert synth_job.main(argv) == 0
    assert "0=disk_cw, 1=cross_cw" in capsys.readouterr().out
    params = json.loads((tmp_path / "dataset.json").read_text())["params"]
    assert params["camera"] == ["pan"] and params["distractors"] == 0 and params["noise_std"] == hard.NOISE_STD
    with pytest.raises(SystemExit):
        synth_job.main(["--set", "hard", "--out", str(tmp_path / "x"), "--classes", "left"])
    assert "not classes of --set hard" in capsys.readouterr().err
