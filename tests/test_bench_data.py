"""`mgtc bench data` pieces on a tiny generated video (the benchmark itself runs K400 sizes)."""

from __future__ import annotations

import numpy as np

from pipeline import augment, transforms, video
from pipeline.bench import data


def test_one_call_times_every_step_for_source_and_prepared(tmp_path):
    src = data.write_source(tmp_path / "s.mp4", 48, 64, seed=0, seconds=2, fps=15)
    prep = data.write_prepared(src, tmp_path / "p.mp4", stride=4, short=32, gop=4)
    info, pinfo = video.probe(src), video.probe(prep)
    assert (info.num_frames, info.height, info.width) == (30, 48, 64)
    assert (pinfo.num_frames, pinfo.height, pinfo.width) == (8, 32, 42)  # every 4th frame, short side 32
    # frame k of the prepared copy is source frame 4k (re-encoded: closest, not equal)
    a = video.open_frames(prep, (32, 42)).frames([3]).astype(int)
    source = video.open_frames(src, (32, 42)).frames(range(8, 17)).astype(int)
    assert int(np.argmin([np.abs(a - f).mean() for f in source])) == 12 - 8
    ra, tra = transforms.rand_augment(data.RA, data.INPUT), augment.TrainerAugment(data.RA, data.INPUT)
    results = {}
    for kind, path in (("source", src), ("prepared", prep)):
        tm, trainer_s = data.one_call(path, "decord", kind == "prepared", np.random.default_rng(0), ra, tra)
        assert set(tm.cpu) == set(data.STEPS) and tm.wall["decode"] > 0 and trainer_s > 0
        results[("tiny", kind, "decord")] = {"cpu": {k: v * 500 for k, v in tm.cpu.items()},
                                             "wall": {k: v * 500 for k, v in tm.wall.items()},
                                             "trainer_augment": trainer_s * 500}
    text = data.tables(results)
    assert "| tiny | prepared | decord | actor |" in text and "1.00 / " in text
