"""`mgtc bench data` pieces on a tiny generated video (the benchmark itself runs K400 sizes)."""

from __future__ import annotations

import numpy as np

from pipeline import augment, clips, transforms, video
from pipeline.bench import data
from pipeline.config import Config, DataConfig, MaskingConfig, ModelConfig


def _maker(video_stride: int) -> clips.ClipMaker:
    cfg = Config(data=DataConfig(train_manifest="unused", num_classes=8, num_frames=data.FRAMES,
                                 sampling_rate=data.STRIDE, video_stride=video_stride, input_size=data.INPUT,
                                 short_side=32, num_sample=data.NUM_SAMPLE, rand_augment=data.RA,
                                 augment_on="actor"),
                 model=ModelConfig(patch=data.PATCH, tubelet=data.TUBELET),
                 masking=MaskingConfig(strategy="mgtc_ratio", ratio=0.5, score_mode="boundary"))
    return clips.ClipMaker(cfg, "train")


def test_one_call_is_what_the_clip_maker_does_for_source_and_prepared(tmp_path):
    src = data.write_source(tmp_path / "s.mp4", 48, 64, seed=0, seconds=5, fps=15)
    prep = data.write_prepared(src, tmp_path / "p.mp4", short=32, keyint=4)
    info, pinfo = video.probe(src), video.probe(prep)
    assert (info.num_frames, info.height, info.width) == (75, 48, 64)
    assert (pinfo.num_frames, pinfo.height, pinfo.width) == (19, 32, 42)  # every 4th frame, short side 32
    ra, tra = transforms.rand_augment(data.RA, data.INPUT), augment.TrainerAugment(data.RA, data.INPUT)
    results = {}
    for kind, path, rate, stride in (("source", src, 4, 1), ("prepared 32", prep, 1, 4)):
        row = data.shard_row(path, rate, short=32)
        tm, trainer_s, out = data.one_call(row, rate, "decord", 5, ra, tra)
        assert set(tm.cpu) == set(data.STEPS) and tm.wall["decode"] > 0 and trainer_s > 0
        # the same clips (pixels after RandAugment, shard scores) as ClipMaker makes from the row
        made = _maker(stride).make({**row, "label": 1, "video_id": 5})
        assert len(made) == len(out) == data.NUM_SAMPLE
        for (_, pixels, scores), (ours, our_scores) in zip(made, out):
            assert np.array_equal(pixels, ours) and np.array_equal(scores, our_scores)
        results[("tiny", kind, "decord")] = {"cpu": {k: v * 500 for k, v in tm.cpu.items()},
                                             "wall": {k: v * 500 for k, v in tm.wall.items()},
                                             "trainer_augment": trainer_s * 500}
    text = data.tables(results, shard_read_ms=1.26)
    assert "| tiny | prepared 32 | decord | actor |" in text and "1.00 / " in text and "(1.26 ms)" in text
