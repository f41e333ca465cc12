"""Motion-score shards: schema, output layout, and reading them with plain pyarrow.

Layout of a precompute output `<out>` (local folder or s3://bucket/prefix):

    <out>/_precompute.json          settings + manifest fingerprint (a rerun must match them)
    <out>/shards/part-00007.parquet one row per (video, sampling rate) of manifest part 7
    <out>/rows/part-00007.arrow     the same rows, one IPC batch each (`pipeline.shard_rows`)
    <out>/errors/part-00007.parquet one row per failed video of part 7
    <out>/_parts/part-00007.json    commit marker of part 7: written last, atomically
    <out>/_SUCCESS                  summary, written when every part is committed
    <out>/calibration.json          tau per sampling rate (`mgtc calibrate`)

A part is visible only once its marker exists, so readers never see half a part, and a
killed job leaves nothing that looks complete. Cell maps are stored as exact integer sums
(`list<uint16>`, `list<uint32>` for cells larger than 9 px) plus their shape columns:
`row_cells` turns them into the float32 maps of `pipeline.motion.cell_diff_maps`, bit for
bit. The full schema is documented in docs/SHARDS.md. This module does not import torch
(through pipeline.motion) at import time: the precompute decoder processes use it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.vocab import boundary_distance

if TYPE_CHECKING:
    from pipeline.config import Config

SCHEMA_VERSION = 1
SHARDS_DIR = "shards"
ERRORS_DIR = "errors"
PARTS_DIR = "_parts"
META_FILE = "_precompute.json"
SUCCESS_FILE = "_SUCCESS"
CALIBRATION_FILE = "calibration.json"
CALIBRATION_PLOT = "calibration_hist.png"

ERROR_STAGES = ("manifest", "read", "decode", "validate", "encode", "worker")  # encode: mgtc prepare


def cell_sum_dtype(cell: int) -> np.dtype:
    """Smallest unsigned type that holds a cell's sum of |diff| (255 * 3 channels * cell^2)."""
    return np.dtype(np.uint16) if 255 * 3 * cell * cell <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def cell_scale(cell: int) -> np.float32:
    """Factor from an integer cell sum to the mean |diff| on [0, 1] pixels, in float32 as
    `motion.cell_diff_maps` applies it (so the product matches it bit for bit)."""
    return np.float32(1 / (255 * 3 * cell * cell))


def shard_schema(cell: int) -> pa.Schema:
    cells = pa.list_(pa.from_numpy_dtype(cell_sum_dtype(cell)))
    return pa.schema(
        [
            ("video", pa.string()),
            ("path", pa.string()),
            ("label", pa.int64()),
            ("line", pa.int64()),
            ("part", pa.int32()),
            ("sampling_rate", pa.int32()),
            ("num_frames", pa.int64()),
            ("fps", pa.float64()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("short_side", pa.int32()),
            ("resized_height", pa.int32()),
            ("resized_width", pa.int32()),
            ("num_sampled", pa.int32()),
            ("tubelet", pa.int32()),
            ("cell", pa.int32()),
            ("cells_height", pa.int32()),
            ("cells_width", pa.int32()),
            ("cell_scale", pa.float32()),
            ("frame_scores", pa.list_(pa.float32())),
            ("pair_cells", cells),
            ("boundary_cells", cells),
        ],
        metadata={"mgtc.schema_version": str(SCHEMA_VERSION)},
    )


ERROR_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("path", pa.string()),
        ("label", pa.int64()),
        ("line", pa.int64()),
        ("part", pa.int32()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ],
    metadata={"mgtc.schema_version": str(SCHEMA_VERSION)},
)

_LIST_COLUMNS = ("frame_scores", "pair_cells", "boundary_cells")


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """A list column from flat numpy arrays without going through Python lists."""
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def shard_table(records: list[dict[str, Any]], cell: int) -> pa.Table:
    """Table of shard rows; list columns are numpy arrays of any shape (flattened C-order)."""
    schema = shard_schema(cell)
    columns = []
    for f in schema:
        values = [r[f.name] for r in records]
        if f.name in _LIST_COLUMNS:
            columns.append(_list_array([np.asarray(v) for v in values], f.type.value_type))
        else:
            columns.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def error_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in ERROR_SCHEMA} for r in records], schema=ERROR_SCHEMA
    )


def part_name(part: int) -> str:
    return f"part-{part:05d}"


def shard_file(out: str, part: int) -> str:
    return storage.join(out, SHARDS_DIR, f"{part_name(part)}.parquet")


def error_file(out: str, part: int) -> str:
    return storage.join(out, ERRORS_DIR, f"{part_name(part)}.parquet")


def marker_file(out: str, part: int) -> str:
    return storage.join(out, PARTS_DIR, f"{part_name(part)}.json")


def committed_parts(uri: str) -> list[int]:
    """Parts whose commit marker exists, ascending."""
    names = storage.list_dir(storage.join(uri, PARTS_DIR), suffix=".json")
    parts = []
    for name in names:
        stem = name[: -len(".json")]
        if stem.startswith("part-") and stem[5:].isdigit():
            parts.append(int(stem[5:]))
    return sorted(parts)


def read_markers(uri: str, parts: list[int], threads: int = 16) -> dict[int, dict]:
    """Commit markers of `parts` (read concurrently: on S3 each is one GET)."""
    if not parts:
        return {}
    with ThreadPoolExecutor(max_workers=min(threads, len(parts))) as pool:
        found = pool.map(lambda p: storage.read_json(marker_file(uri, p)), parts)
        return dict(zip(parts, found))


def list_shard_files(uri: str) -> list[str]:
    """URIs of the shard files of committed parts (each holds one Parquet table)."""
    uri = storage.normalize(uri)
    return [shard_file(uri, p) for p in committed_parts(uri)]


def list_error_files(uri: str) -> list[str]:
    uri = storage.normalize(uri)
    return [error_file(uri, p) for p in committed_parts(uri)]


def _read_all(files: list[str], schema: pa.Schema, columns: list[str] | None, filters) -> pa.Table:
    tables = [storage.read_table(f, columns=columns, filters=filters) for f in files]
    if not tables:
        fields = [schema.field(c) for c in columns] if columns else list(schema)
        return pa.schema(fields, metadata=schema.metadata).empty_table()
    return pa.concat_tables(tables)


def read_meta(uri: str) -> dict:
    """The output's `_precompute.json` (settings it was written with)."""
    return storage.read_json(storage.join(storage.normalize(uri), META_FILE))


def read_shards(uri: str, *, sampling_rate: int | None = None,
                columns: list[str] | None = None) -> pa.Table:
    """All committed shard rows (optionally one sampling rate and some columns) as one
    pyarrow Table. For data sets that do not fit in memory, give `list_shard_files(uri)` to
    `ray.data.read_parquet` or read the files one at a time."""
    uri = storage.normalize(uri)
    files = list_shard_files(uri)
    cell = int(read_meta(uri)["config"]["cell"]) if files else 8
    filters = [("sampling_rate", "=", int(sampling_rate))] if sampling_rate is not None else None
    return _read_all(files, shard_schema(cell), columns, filters)


def read_errors(uri: str) -> pa.Table:
    """All committed error rows: video, path, label, line, part, stage, error."""
    return _read_all(list_error_files(uri), ERROR_SCHEMA, None, None)


def _as_numpy(value: Any, dtype: np.dtype) -> np.ndarray:
    if isinstance(value, pa.Scalar):  # a ListScalar from table.column(...)[i]
        value = value.values.to_numpy(zero_copy_only=False) if value.is_valid else []
    return np.asarray(value, dtype=dtype)


def row_cells(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(pair_cells [M-1, Hc, Wc], boundary_cells [max(M-d, 0), Hc, Wc]) float32 of a shard
    row, d = 2*tubelet - 1: exactly `motion.cell_diff_maps` of the row's stride-s sequence.

    `row` is any mapping of column -> value: a dict from `Table.to_pylist()`, a Ray Data row
    (numpy arrays), a pandas Series, or {name: table.column(name)[i]} (pyarrow scalars).
    """
    def scalar(name: str) -> int:
        v = row[name]
        return int(v.as_py() if isinstance(v, pa.Scalar) else v)

    cell, m = scalar("cell"), scalar("num_sampled")
    hc, wc, tubelet = scalar("cells_height"), scalar("cells_width"), scalar("tubelet")
    dtype, scale = cell_sum_dtype(cell), cell_scale(cell)
    shapes = {
        "pair_cells": (max(m - 1, 0), hc, wc),
        "boundary_cells": (max(m - boundary_distance(tubelet), 0), hc, wc),
    }
    out = []
    for name, shape in shapes.items():
        sums = _as_numpy(row[name], dtype)
        if sums.size != int(np.prod(shape)):
            raise ValueError(f"{name} has {sums.size} values, expected {shape} for this row")
        out.append(sums.reshape(shape).astype(np.float32) * scale)
    return out[0], out[1]


def row_token_scores(row: Mapping[str, Any], frame_ids: np.ndarray,
                     crop: tuple[float, float, float, float], grid: tuple[int, int], *,
                     mode: str = "boundary", flip: bool = False) -> np.ndarray:
    """Token scores [T', H', W'] of a clip (positions `frame_ids` of the row's stride-s
    sequence, `crop` = (top, left, height, width) in resized-frame pixels) from a shard row."""
    from pipeline import motion  # torch: only where token scores are needed

    pair, boundary = row_cells(row)
    cell = int(row["cell"].as_py() if isinstance(row["cell"], pa.Scalar) else row["cell"])
    tubelet = int(row["tubelet"].as_py() if isinstance(row["tubelet"], pa.Scalar) else row["tubelet"])
    return motion.token_scores_from_cells(pair, boundary, np.asarray(frame_ids), crop, grid,
                                          cell, tubelet, mode=mode, flip=flip)


def read_calibration(uri: str) -> dict:
    """`<shards>/calibration.json` written by `mgtc calibrate`."""
    return storage.read_json(storage.join(storage.normalize(uri), CALIBRATION_FILE))


def calibrated_tau(uri: str, sampling_rate: int, *, score_mode: str | None = None) -> float:
    """tau for `sampling_rate` from the calibration file; checks the score mode matches."""
    cal = read_calibration(uri)
    if score_mode is not None and cal.get("score_mode") != score_mode:
        raise ValueError(
            f"calibration in {storage.redact(uri)} is for score_mode={cal.get('score_mode')!r}, "
            f"not {score_mode!r}; rerun `mgtc calibrate --score-mode {score_mode}`"
        )
    rates = cal.get("sampling_rates", {})
    if str(sampling_rate) not in rates:
        raise KeyError(f"no tau for sampling_rate={sampling_rate} in calibration (has {sorted(rates)})")
    return float(rates[str(sampling_rate)]["tau"])


def resolve_tau(cfg: Config) -> float | None:
    """The threshold of a config's `mgtc_threshold`: `masking.tau`, or the calibrated one from
    `<data.shards>/calibration.json` (`mgtc calibrate`) for its sampling rate and score mode
    when `masking.calibrated`. None for every other strategy."""
    k = cfg.masking
    if k.strategy != "mgtc_threshold":
        return None
    if not k.calibrated:
        return float(k.tau)
    return calibrated_tau(cfg.data.shards, cfg.data.video_rate, score_mode=k.score_mode)


# --------------------------------------------------------------------------- calibration

_CELL_COLUMNS = ("video", "sampling_rate", "num_sampled", "resized_height", "resized_width", "tubelet",
                 "cell", "cells_height", "cells_width", "pair_cells", "boundary_cells")


def iter_rows(table: pa.Table):
    """Rows of a shard table as dicts, list columns as flat numpy views (no Python lists):
    fast input for `row_cells` / `row_token_scores`."""
    table = table.combine_chunks()
    lists = {}
    for name in ("frame_scores", "pair_cells", "boundary_cells"):
        if name in table.column_names:
            arr = table.column(name).chunk(0) if table.num_rows else None
            lists[name] = (np.asarray(arr.offsets), arr.values.to_numpy(zero_copy_only=False)) if arr is not None else None
    scalars = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names if n not in lists}
    for i in range(table.num_rows):
        row = {n: v[i] for n, v in scalars.items()}
        for name, (offsets, values) in lists.items():
            row[name] = values[offsets[i]:offsets[i + 1]]
        yield row


def calibration_population(uri: str, *, num_frames: int, crop: int, patch: int, score_mode: str,
                           clips: int = 1, crops: int = 1, max_videos: int = 0) -> dict[int, np.ndarray]:
    """Token scores the tau of `mgtc_threshold` is calibrated on, per sampling rate.

    For every shard row: the evaluation-style views the trainer evaluates on, computed from
    the cell maps (exact for these views): `clips` temporal clips of `num_frames` positions
    of the stride-s sequence (`video.test_views`; 1 = centred; short videos padded) x
    `crops` square crops of `crop` px (`video.spatial_crops`, aligned to the cells; 1 =
    centre), tokens of `patch` px, slice 0 included as +inf (never dropped, but counted).
    `max_videos` > 0 keeps every k-th video of a rate so that at most that many are read.
    Returns {rate: [N] float32}.
    """
    from pipeline import video

    uri = storage.normalize(uri)
    out: dict[int, list[np.ndarray]] = {}
    files = list_shard_files(uri)
    counts = read_shards(uri, columns=["sampling_rate"]).column("sampling_rate").to_numpy()
    rates, totals = np.unique(counts, return_counts=True)
    step = {int(r): max(1, -(-int(n) // max_videos)) if max_videos else 1 for r, n in zip(rates, totals)}
    seen: dict[int, int] = {}
    for f in files:
        for row in iter_rows(storage.read_table(f, columns=list(_CELL_COLUMNS))):
            s = int(row["sampling_rate"])
            seen[s] = seen.get(s, 0) + 1
            if (seen[s] - 1) % step[s]:
                continue
            h, w = int(row["resized_height"]), int(row["resized_width"])
            if crop > min(h, w):
                raise ValueError(f"crop={crop} does not fit the {h}x{w} frames of {row['video']!r}")
            grid = (crop // patch, crop // patch)
            for ids in video.test_views(int(row["num_sampled"]), num_frames, clips):
                for top, left in video.spatial_crops(h, w, crop, crops, int(row["cell"])):
                    scores = row_token_scores(row, ids, (top, left, crop, crop), grid, mode=score_mode)
                    out.setdefault(s, []).append(scores.ravel())
    return {s: np.concatenate(v).astype(np.float32) for s, v in sorted(out.items())}


def histogram_png(population: dict[int, np.ndarray], taus: dict[int, float], mask_ratio: float) -> bytes:
    """PNG bytes: per sampling rate, the histogram of finite token scores (log x axis) with tau."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(population), 1, figsize=(7, 2.6 * len(population)), squeeze=False)
    floor = 1e-5  # a static token scores exactly 0; show it in the first bin
    bins = np.logspace(np.log10(floor), 0, 80)
    for ax, (s, scores) in zip(axes[:, 0], population.items()):
        finite = scores[np.isfinite(scores)]
        ax.hist(np.clip(finite, floor, 1.0), bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(max(taus[s], floor), color="tab:red", label=f"tau = {taus[s]:.4g}")
        ax.set_xscale("log")
        ax.set_title(f"sampling rate {s}: {finite.size} scored tokens (+{scores.size - finite.size} "
                     f"slice-0 tokens, always kept); tau masks {mask_ratio:.0%}", fontsize=9)
        ax.set_xlabel("token motion score (mean |diff|, [0, 1] pixels)")
        ax.set_ylabel("tokens")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def calibrate(uri: str, mask_ratio: float, *, num_frames: int | None = None, crop: int | None = None,
              patch: int = 16, score_mode: str | None = None, clips: int = 1, crops: int = 1,
              max_videos: int = 0, out: str | None = None) -> dict:
    """tau per sampling rate that masks `mask_ratio` of the calibration population's tokens
    (`calibration_population`); writes `calibration.json` and `calibration_hist.png` to `out`
    (default: the shards folder) atomically. Defaults come from the shards' settings."""
    from pipeline.selection import calibrate_tau

    uri = storage.normalize(uri)
    meta = read_meta(uri)
    settings = meta["config"]
    num_frames = num_frames or int(settings["num_frames"])
    score_mode = score_mode or meta.get("score_mode", "boundary")
    if crop is None:
        short = int(settings["short_side"])
        if short <= 0:
            raise ValueError("shards keep the source size (short_side=0): pass crop explicitly")
        crop = (short // patch) * patch
    population = calibration_population(uri, num_frames=num_frames, crop=crop, patch=patch,
                                        score_mode=score_mode, clips=clips, crops=crops,
                                        max_videos=max_videos)
    if not population:
        raise ValueError(f"no committed shard rows in {storage.redact(uri)}")
    taus = {s: calibrate_tau(scores, mask_ratio) for s, scores in population.items()}
    result = {
        "mask_ratio": mask_ratio,
        "score_mode": score_mode,
        "num_frames": num_frames,
        "crop": crop,
        "patch": patch,
        "clips": clips,
        "crops": crops,
        "population": (
            "per shard row: test_views(num_sampled, num_frames, clips) x spatial_crops(crop, "
            "crops, aligned to cells); token scores from the cell maps; slice 0 (+inf) counted"
        ),
        "tau": {str(s): t for s, t in taus.items()},
        "sampling_rates": {
            str(s): {
                "tau": t,
                "tokens": int(population[s].size),
                "masked_fraction": float(np.mean(population[s] < t)),
            }
            for s, t in taus.items()
        },
    }
    dest = storage.normalize(out) if out else uri
    storage.write_json_atomic(storage.join(dest, CALIBRATION_FILE), result)
    storage.write_bytes_atomic(storage.join(dest, CALIBRATION_PLOT), histogram_png(population, taus, mask_ratio))
    return result
