"""`reencode.reencode` (the pure part of `mgtc prepare`): sizes, stride lattice, keyframe
interval, pixels close to the source at the same indices, bad inputs as EncodeError."""

from __future__ import annotations

import av
import numpy as np
import pytest

from pipeline import reencode, video
from tests.helpers.videos import make_video


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_prepared_sizes_are_even_and_never_upscaled():
    assert reencode.prepared_size(320, 426, 224) == (224, 298)
    assert reencode.prepared_size(255, 341, 0) == (254, 340)  # source size, rounded down to even
    assert reencode.prepared_size(240, 320, 480) == (240, 320)  # smaller source: kept
    assert all(v % 2 == 0 for v in reencode.prepared_size(333, 501, 223))


@pytest.mark.parametrize("stride", [1, 2])
def test_reencoded_frames_match_the_source_lattice(tmp_path, stride):
    src = make_video(tmp_path / "src.mp4", frames=40, height=64, width=80)
    dst = str(tmp_path / f"prep{stride}.mp4")
    info = reencode.reencode(str(src), dst, reencode.EncodeSettings(short_side=48, keyint=8, stride=stride))
    assert (info["prepared_height"], info["prepared_width"]) == (48, 60)
    assert info["prepared_frames"] == len(range(0, 40, stride)) and info["num_frames"] == 40
    assert info["prepared_fps"] == pytest.approx(25 / stride)
    with av.open(dst) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
        keys = [i for i, p in enumerate(p for p in c.demux(stream) if p.size) if p.is_keyframe]
    assert keys == list(range(0, info["prepared_frames"], 8))
    # Prepared frame j is source frame j*stride at the prepared size (decord, same resize).
    prepared = video.open_reader(dst, (48, 60)).get_batch(list(range(info["prepared_frames"]))).asnumpy()
    source = video.open_reader(str(src), (48, 60)).get_batch(list(range(0, 40, stride))).asnumpy()
    psnr = [_psnr(p, s) for p, s in zip(prepared, source)]
    print(f"stride {stride}: PSNR prepared vs source min {min(psnr):.1f} dB, mean {np.mean(psnr):.1f} dB")
    assert min(psnr) > 30


def test_bad_sources_raise_encode_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    settings = reencode.EncodeSettings(short_side=48)
    for path, stage, reason in ((empty, "read", "empty file"), (text, "decode", "decode error"),
                                (tmp_path / "missing.mp4", "read", "not found")):
        with pytest.raises(reencode.EncodeError) as err:
            reencode.reencode(str(path), str(tmp_path / "out.mp4"), settings)
        assert err.value.stage == stage and err.value.reason.startswith(reason)
