"""Decoding and VideoMAE frame sampling (no Ray)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline import video
from tests.helpers.videos import make_video


def test_resized_size_keeps_aspect_with_even_long_side():
    assert video.resized_size(320, 426, 224) == (224, 298)
    assert video.resized_size(426, 320, 224) == (298, 224)
    assert video.resized_size(240, 320, 112) == (112, 150)
    assert video.resized_size(64, 80, 0) == (64, 80)


def test_stride_sequence():
    assert video.num_sampled(10, 4) == 3 and video.num_sampled(12, 4) == 3 and video.num_sampled(1, 4) == 1
    assert video.sequence_indices(10, 4).tolist() == [0, 4, 8]
    chunks = video.frames_in_chunks(23, 2, 5)
    assert np.concatenate(chunks).tolist() == list(range(0, 23, 2)) and max(map(len, chunks)) == 5


def test_train_window_is_a_consecutive_window_or_padded():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        ids = video.train_window(20, 8, rng)
        assert len(ids) == 8 and np.all(np.diff(ids) == 1) and 0 <= ids[0] and ids[-1] <= 19
        starts.add(int(ids[0]))
    assert starts == set(range(13))  # every start 0 .. M - T is drawn
    assert video.train_window(5, 8, rng).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_test_views_follow_videomae():
    views = video.test_views(40, 16, 5)
    assert [int(v[0]) for v in views] == [int(k * (40 - 16) / 4) for k in range(5)]
    assert all(np.all(np.diff(v) == 1) and len(v) == 16 for v in views)
    assert video.test_views(40, 16, 1)[0][0] == 12  # one clip: centred
    short = video.test_views(10, 16, 3)
    assert all(v.tolist() == list(range(10)) + [9] * 6 for v in short)


def test_spatial_crops_are_videomae_crops_snapped_to_cells():
    # VideoMAE: left / centre / right at 0, 37, 74 along the long side of 224 x 298.
    assert video.spatial_crops(224, 298, 224, 3, align=8) == [(0, 0), (0, 40), (0, 72)]
    assert video.spatial_crops(224, 298, 224, 3) == [(0, 0), (0, 37), (0, 74)]
    assert video.spatial_crops(298, 224, 224, 3, align=8) == [(0, 0), (40, 0), (72, 0)]
    assert video.spatial_crops(240, 320, 224, 1, align=8) == [(8, 48)]
    for top, left in video.spatial_crops(230, 301, 224, 3, align=8):
        assert top % 8 == 0 and left % 8 == 0 and top + 224 <= 230 and left + 224 <= 301
    with pytest.raises(ValueError, match="does not fit"):
        video.spatial_crops(100, 200, 112, 1)


def test_decode_frames_match_the_full_stride_sequence(tmp_path):
    path = str(make_video(tmp_path / "v.mp4", frames=30, height=48, width=64))
    info = video.probe(path)
    assert (info.num_frames, info.height, info.width) == (30, 48, 64) and info.fps == 25.0
    size = video.resized_size(info.height, info.width, 32)
    assert size == (32, 42)
    full = video.open_reader(path, size).get_batch(list(range(0, 30, 2))).asnumpy()
    picked = video.decode_frames(path, [4, 10, 22], 32)
    assert picked.shape == (3, 32, 42, 3) and picked.dtype == np.uint8
    assert np.array_equal(picked, full[[2, 5, 11]])  # the trainer sees the precompute's pixels


def test_clean_decoder_error():
    raw = ("[19:30:11] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: [19:30:11] "
           "/github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
           "avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0) Thread worker: "
           "Error sending packet.")
    assert video.clean_decoder_error(raw) == "Thread worker: Error sending packet."


def _write_gop_video(path, frames: int, gop: int, height: int = 48, width: int = 64):
    """H.264 with a keyframe every `gop` frames (x264's default is 250: one GOP here)."""
    import av

    from tests.helpers.videos import clip_frames

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": str(gop), "keyint_min": str(gop)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in clip_frames(frames, height, width, 0, "right"):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return str(path)


TORCHCODEC_MISSING = video.torchcodec_reason()
DECODERS = ["decord", pytest.param("torchcodec", marks=pytest.mark.skipif(
    bool(TORCHCODEC_MISSING), reason=TORCHCODEC_MISSING or "-"))]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("gop", [250, 8])
def test_a_window_decodes_to_the_frames_of_a_full_decode(tmp_path, decoder, gop):
    """Decoding only a clip's window (seek to the keyframe before it, decode forward) gives
    the frames a full decode has at the same indices: default-GOP and short-GOP (the
    prepared videos' encoding) files, with and without resizing, per decoder."""
    path = _write_gop_video(tmp_path / f"g{gop}.mp4", 60, gop)
    for size in ((48, 64), (32, 42)):
        full = video.open_frames(path, size, decoder=decoder).frames(range(60))
        assert full.shape == (60, *size, 3) and full.dtype == np.uint8
        for window in ([40, 44, 48, 52], [9, 11, 13], [0, 1, 2, 59], [17] * 3):
            reader = video.open_frames(path, size, decoder=decoder)
            assert len(reader) == 60
            assert np.array_equal(reader.frames(window), full[window]), (size, window)
        reader = video.open_frames(path, size, decoder=decoder)  # one reader, a later then an earlier window
        assert np.array_equal(reader.frames([50, 54]), full[[50, 54]])
        assert np.array_equal(reader.frames([3, 7]), full[[3, 7]])


@pytest.mark.skipif(bool(TORCHCODEC_MISSING), reason=TORCHCODEC_MISSING or "-")
def test_torchcodec_frames_equal_decords(tmp_path):
    """Same frames at the source size; resized (both by FFmpeg's swscale, other filters)
    within a mean of 1.5 grey levels."""
    path = str(make_video(tmp_path / "v.mp4", frames=30, height=48, width=64))
    assert video.probe_with(path, "torchcodec") == video.probe_with(path, "decord")
    for size, tolerance in (((48, 64), 0.0), ((32, 42), 1.5), ((96, 128), 1.5)):
        ours = video.open_frames(path, size, decoder="torchcodec").frames(range(0, 30, 3)).astype(int)
        ref = video.open_frames(path, size, decoder="decord").frames(range(0, 30, 3)).astype(int)
        assert ours.shape == ref.shape and np.abs(ours - ref).mean() <= tolerance, size
    cfg_clip = video.open_frames(path, (32, 42), decoder="torchcodec").frames([5])
    assert cfg_clip.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_window_of_a_prepared_copy_decodes_to_its_full_decode(tmp_path, decoder):
    """The same on `mgtc prepare`'s output (`reencode.reencode`: stride 2, keyframe every 4
    frames, short side 32), at the prepared size and resized further, and the header size
    `read_frames` resizes from (`video.frame_size`) is the decoders' frame size."""
    from pipeline import reencode

    src = _write_gop_video(tmp_path / "src.mp4", 60, 250)
    prep = str(tmp_path / "prep.mp4")
    reencode.reencode(src, prep, reencode.EncodeSettings(short_side=32, keyint=4, stride=2))
    assert video.frame_size(src) == (48, 64) and video.frame_size(prep) == (32, 42)
    info = video.probe_with(prep, decoder)
    assert (info.num_frames, info.height, info.width) == (30, *video.frame_size(prep))
    for size in ((32, 42), (24, 32)):
        full = video.open_frames(prep, size, decoder=decoder).frames(range(30))
        for window in (list(range(13, 29)), list(range(0, 16)), [5, 6, 7, 29]):
            assert np.array_equal(video.open_frames(prep, size, decoder=decoder).frames(window), full[window]), window


@pytest.mark.parametrize("call, torch_loaded", [("load_decord", True), ("use_decord_without_torch", False)])
def test_decord_imports_torch_first_unless_the_process_opts_out(call, torch_loaded):
    """decord after torch (dmlc/decord#293), except in a process that chose to never load torch."""
    code = (f"import sys; from pipeline import video; video.{call}(); video.load_decord(); "
            "print('torch' in sys.modules, 'decord' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(torch_loaded), "True"]
