"""Row files: one video's shard row read without its neighbours (local and S3), the old
one-row-group layout still read (with a warning), `mgtc reshard` adding row files."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import reshard
from pipeline import clips, precompute, shard_rows, shards, storage
from pipeline.config import Config, DataConfig, MaskingConfig, ModelConfig
from tests.helpers.videos import write_moving_square_video

CELL = 8


def _record(i: int, rate: int, m: int = 30, hc: int = 28, wc: int = 37, part: int = 0) -> dict:
    """A shard row of video i at `rate` with Kinetics-like map sizes (random sums)."""
    rng = np.random.default_rng(1000 * i + rate)
    dtype = shards.cell_sum_dtype(CELL)
    return {
        "video": f"v{i}.mp4", "path": f"/d/v{i}.mp4", "label": i, "line": i + 1, "part": part,
        "sampling_rate": rate, "num_frames": m * rate, "fps": 30.0, "height": 320, "width": 426,
        "short_side": 224, "resized_height": 224, "resized_width": 298, "num_sampled": m,
        "tubelet": 2, "cell": CELL, "cells_height": hc, "cells_width": wc,
        "cell_scale": float(shards.cell_scale(CELL)),
        "frame_scores": rng.random(m - 1).astype(np.float32),
        "pair_cells": rng.integers(0, 3000, (m - 1, hc, wc)).astype(dtype),
        "boundary_cells": rng.integers(0, 3000, (m - 3, hc, wc)).astype(dtype),
    }


def _part(out: str, part: int, videos: range, *, rows: bool = True, **kw) -> list[dict]:
    """Commit part `part` (files, then marker); rows=False writes the old layout (one row
    group, no row file), as precompute did before row files."""
    recs = [_record(i, r, part=part, **kw) for i in videos for r in (2, 4)]
    table = shards.shard_table(recs, CELL)
    if rows:
        shard_rows.write_shard_files(out, part, table)
    else:
        storage.write_table_atomic(shards.shard_file(out, part), table)
    storage.write_json_atomic(shards.marker_file(out, part), {"part": part})
    storage.write_json_atomic(storage.join(out, shards.META_FILE), {"config": {"cell": CELL}})
    return recs


def _same_row(got: dict, rec: dict) -> None:
    for name in ("num_sampled", "resized_height", "resized_width", "cells_height", "cells_width", "cell"):
        assert got[name] == rec[name]
    pair, boundary = shards.row_cells(got)
    assert np.array_equal(pair, rec["pair_cells"].astype(np.float32) * shards.cell_scale(CELL))
    assert np.array_equal(boundary, rec["boundary_cells"].astype(np.float32) * shards.cell_scale(CELL))
    assert np.array_equal(got["frame_scores"], rec["frame_scores"])


def test_row_file_gives_every_row_and_parquet_has_a_row_group_per_video(tmp_path):
    out = str(tmp_path)
    recs = _part(out, 0, range(5), m=6, hc=2, wc=3)
    assert pq.ParquetFile(shards.shard_file(out, 0)).metadata.num_row_groups == 5
    reader = shard_rows.RowReader()
    for rec in reversed(recs):  # any order
        _same_row(reader.row(shards.shard_file(out, 0), rec["path"], rec["sampling_rate"]), rec)
    assert reader.stats.files_opened == 1 and reader.stats.rows == 10 and reader.stats.fallback_rows == 0
    with pytest.raises(KeyError, match="no shard row for /d/nope.mp4 at rate 2"):
        reader.row(shards.shard_file(out, 0), "/d/nope.mp4", 2)
    with pytest.raises(KeyError, match="at rate 3"):
        reader.row(shards.shard_file(out, 0), recs[0]["path"], 3)
    # The Parquet file is unchanged in content: plain readers see the same rows.
    assert shards.read_shards(out).column("path").to_pylist() == [r["path"] for r in recs]


def test_empty_part_has_an_empty_row_file(tmp_path):
    out = str(tmp_path)
    shard_rows.write_shard_files(out, 3, shards.shard_table([], CELL))
    with pytest.raises(KeyError):
        shard_rows.RowReader().row(shards.shard_file(out, 3), "/d/v0.mp4", 2)


def test_old_layout_is_read_with_one_warning_and_reshard_adds_row_files(tmp_path, caplog, capsys):
    out = str(tmp_path)
    recs = _part(out, 0, range(3), rows=False, m=6, hc=2, wc=3)
    recs += _part(out, 1, range(3, 5), rows=False, m=6, hc=2, wc=3)
    parquet_bytes = [open(shards.shard_file(out, p), "rb").read() for p in (0, 1)]
    shard_rows._warned.discard(out)
    reader = shard_rows.RowReader()
    with caplog.at_level(logging.WARNING, logger="pipeline.shard_rows"):
        for rec in recs:
            _same_row(reader.row(shards.shard_file(out, rec["part"]), rec["path"], rec["sampling_rate"]), rec)
    warnings = [r.getMessage() for r in caplog.records if "row files" in r.getMessage()]
    assert len(warnings) == 1 and f"mgtc reshard {out}" in warnings[0]
    assert reader.stats.fallback_rows == len(recs)

    assert shard_rows.add_row_files(out, log_fn=lambda _: None) == {"parts": 2, "written": 2, "present": 0}
    assert reshard.main([out]) == 0  # the command the warning names: nothing left to do
    assert "0 row files written, 2 already present" in capsys.readouterr().out
    # Nothing that existed was modified.
    assert [open(shards.shard_file(out, p), "rb").read() for p in (0, 1)] == parquet_bytes
    fresh = shard_rows.RowReader()
    for rec in recs:
        _same_row(fresh.row(shards.shard_file(out, rec["part"]), rec["path"], rec["sampling_rate"]), rec)
    assert fresh.stats.fallback_rows == 0 and fresh.stats.files_opened == 2


def test_reshard_refuses_a_folder_that_is_not_a_precompute_output(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a precompute output"):
        shard_rows.add_row_files(str(tmp_path))
    assert reshard.main([str(tmp_path)]) == 2
    assert "is not a precompute output (no _precompute.json)" in capsys.readouterr().err


@pytest.mark.integration
def test_s3_row_read_fetches_the_row_not_the_part(s3_bucket):
    """On S3 a row costs ranged GETs of its own bytes and the footer (counted on the real
    HTTP reads to moto's server), not the part."""
    out = f"s3://{s3_bucket}/shards"
    recs = _part(out, 0, range(8))  # ~8 x 0.6 MB of maps: a part of several MB
    size = storage.file_size(shard_rows.row_file(out, 0))
    reader = shard_rows.RowReader()
    rec = recs[5]
    _same_row(reader.row(shards.shard_file(out, 0), rec["path"], rec["sampling_rate"]), rec)
    one_row = reader.stats.bytes_read
    raw_row = rec["pair_cells"].nbytes + rec["boundary_cells"].nbytes
    print(f"row file {size} B, one row read {one_row} B in {reader.stats.reads} reads, raw row {raw_row} B")
    assert size > 6 * raw_row and one_row < 1.5 * raw_row, (size, one_row, raw_row)
    _same_row(reader.row(shards.shard_file(out, 0), recs[0]["path"], 2), recs[0])
    assert reader.stats.files_opened == 1  # the footer was read once
    assert reader.stats.bytes_read - one_row < 1.5 * raw_row

    # The old layout on S3 still reads (whole part, once), and reshard fixes it in place.
    old = f"s3://{s3_bucket}/old"
    old_recs = _part(old, 0, range(2), rows=False, m=6, hc=2, wc=3)
    _same_row(shard_rows.RowReader().row(shards.shard_file(old, 0), old_recs[3]["path"], 4), old_recs[3])
    assert shard_rows.add_row_files(old, log_fn=lambda _: None)["written"] == 1
    again = shard_rows.RowReader()
    _same_row(again.row(shards.shard_file(old, 0), old_recs[3]["path"], 4), old_recs[3])
    assert again.stats.fallback_rows == 0


def test_clip_maker_reads_rows_by_shard_file_as_it_would_inline(tmp_path):
    """The training source's light rows (path, label, video_id, shard_file) give the same
    clips as rows carrying the cell maps themselves, from a row file and from the old layout."""
    video_path = str(write_moving_square_video(tmp_path / "sq.mp4", frames=32, size=64, step=2))
    pcfg = precompute.PrecomputeConfig(sampling_rates=(2,), short_side=64, cell=CELL, tubelet=2, num_frames=4)
    res = precompute.score_video(video_path, pcfg)
    r = res["rates"][2]
    rec = {"video": "sq.mp4", "path": video_path, "label": 1, "line": 1, "part": 0, "sampling_rate": 2,
           "num_frames": res["num_frames"], "fps": res["fps"], "height": res["height"], "width": res["width"],
           "short_side": 64, "resized_height": res["resized_height"], "resized_width": res["resized_width"],
           "num_sampled": r["num_sampled"], "tubelet": 2, "cell": CELL,
           "cells_height": res["resized_height"] // CELL, "cells_width": res["resized_width"] // CELL,
           "cell_scale": float(shards.cell_scale(CELL)), "frame_scores": r["frame_scores"],
           "pair_cells": r["pair"], "boundary_cells": r["boundary"]}
    table = shards.shard_table([rec], CELL)
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    shard_rows.write_shard_files(new, 0, table)
    storage.write_table_atomic(shards.shard_file(old, 0), table)
    cfg = Config(data=DataConfig(train_manifest="unused", num_classes=4, num_frames=8, sampling_rate=2,
                                 input_size=48, short_side=64, test_clips=2, test_crops=3),
                 model=ModelConfig(patch=16, tubelet=2), masking=MaskingConfig(strategy="mgtc_ratio", ratio=0.5))
    inline = {k: rec[k] for k in clips.SHARD_COLUMNS} | {"pair_cells": r["pair"].ravel(),
                                                         "boundary_cells": r["boundary"].ravel()}

    def batch(row: dict) -> dict:
        out = {}
        for k, v in (row | {"label": 1, "video_id": 3}).items():
            if isinstance(v, np.ndarray):
                col = np.empty(1, dtype=object)
                col[0] = v
                out[k] = col
            else:
                out[k] = np.asarray([v])
        return out

    expect = clips.ClipMaker(cfg, "test")(batch(inline))
    for root, fallback in ((new, 0), (old, 1)):
        maker = clips.ClipMaker(cfg, "test")
        got = maker(batch({"path": video_path, "shard_file": shards.shard_file(root, 0)}))
        assert maker.failed == 0 and maker._rows.stats.fallback_rows == fallback
        for key in clips.OUTPUT_COLUMNS:
            assert np.array_equal(got[key], expect[key]), (root, key)
