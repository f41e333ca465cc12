"""One video's shard row at the cost of one row: per-part Arrow IPC row files and their reader.

A training actor needs the shard row of one (video, sampling rate) per decoded video, in
random order. A Parquet part written as one row group (the layout before row files) has to
be decoded whole for that: 26-33 MB, ~135-200 ms CPU per video. So every committed part
also gets a *row file* beside its Parquet file:

    <out>/shards/part-00007.parquet   all columns; one row group per video (both rates)
    <out>/rows/part-00007.arrow       the same rows, an Arrow IPC file, one record batch per
                                      row, zstd-compressed buffers; schema metadata
                                      `mgtc.rows` = JSON {"path": [...], "sampling_rate": [...]}
                                      (batch order), so the footer alone locates a row

Reading one row = open the file (its footer: a few kB), read one batch (the row's bytes):
~1.2 ms CPU at Kinetics size (224 px short side, 300 frames, rates 2 and 4; uncompressed
0.2 ms) against ~8 ms for the same row from a Parquet row group (list<uint16> columns cost
their repetition levels) and ~200 ms from a one-row-group part (docs/BENCHMARKS.md). On S3
the reads are ranged GETs: a row costs its own bytes plus the footer, never the part.

Shard folders written before row files existed keep working: `RowReader` falls back to a
filtered Parquet read (slow; warns once, naming `mgtc reshard <shards>`, which adds the
missing row files with `add_row_files` and touches nothing else).

Parquet stays the documented, interoperable format (pyarrow, pandas, DuckDB, Spark, Ray
Data); row files are a derived index for random access and double the shards' storage.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline import shards, storage

log = logging.getLogger(__name__)

ROWS_DIR = "rows"
ROW_SUFFIX = ".arrow"
INDEX_KEY = b"mgtc.rows"
LIST_COLUMNS = ("frame_scores", "pair_cells", "boundary_cells")
# Parquet/`compression` setting -> Arrow IPC buffer codec (IPC has lz4 and zstd only).
_IPC_CODECS = {"zstd": "zstd", "lz4": "lz4", "none": None}


def row_file(out: str, part: int) -> str:
    """URI of part `part`'s row file in the precompute output `out`."""
    return storage.join(out, ROWS_DIR, f"{shards.part_name(part)}{ROW_SUFFIX}")


def row_file_of(shard_file: str) -> str:
    """The row file beside a Parquet shard file (`<out>/shards/part-k.parquet` ->
    `<out>/rows/part-k.arrow`); a `.arrow` URI is returned as it is."""
    if shard_file.endswith(ROW_SUFFIX):
        return shard_file
    name = storage.basename(shard_file)
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else name
    return storage.join(storage.parent(storage.parent(shard_file)), ROWS_DIR, stem + ROW_SUFFIX)


def row_groups_of_videos(table: pa.Table) -> int:
    """Row-group size that puts each video's rows (one per sampling rate, consecutive as
    the precompute job writes them) in a row group of its own."""
    if table.num_rows == 0:
        return 1
    return max(1, int(table.num_rows // max(len(set(table.column("path").to_pylist())), 1)))


def shard_parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """The Parquet bytes of a shard part: one row group per video, so a filtered read of one
    video (`path` filter; row-group statistics) decodes only that video's rows."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=None if compression == "none" else compression,
                   row_group_size=row_groups_of_videos(table))
    return sink.getvalue().to_pybytes()


def row_file_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """The Arrow IPC row file of a shard table: one record batch per row, the batch order
    indexed in the schema metadata. `compression` lz4 / none map to IPC's lz4 / none,
    anything else to zstd."""
    index = {"path": table.column("path").to_pylist(),
             "sampling_rate": [int(r) for r in table.column("sampling_rate").to_pylist()]}
    meta = dict(table.schema.metadata or {})
    meta[INDEX_KEY] = json.dumps(index).encode()
    table = table.replace_schema_metadata(meta)
    options = ipc.IpcWriteOptions(compression=_IPC_CODECS.get(compression, "zstd"))
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=1):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def write_shard_files(out: str, part: int, table: pa.Table, *, compression: str = "zstd",
                      endpoint: str | None = None) -> int:
    """Write part `part`'s Parquet shard file and its row file (each atomically; the caller
    commits the part with its marker afterwards). Returns the bytes written."""
    parquet = shard_parquet_bytes(table, compression)
    rows = row_file_bytes(table, compression)
    storage.write_bytes_atomic(shards.shard_file(out, part), parquet, endpoint=endpoint)
    storage.write_bytes_atomic(row_file(out, part), rows, endpoint=endpoint)
    return len(parquet) + len(rows)


# --------------------------------------------------------------------------- reading


class _CountingFile:
    """A pyarrow random-access file seen through Python, counting what is read from it
    (on S3 every read is one ranged GET, so `bytes` is what crossed the network)."""

    def __init__(self, f: pa.NativeFile, stats: "ReadStats"):
        self._f, self._stats = f, stats
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(None if n is None or n < 0 else n)
        self._stats.add(reads=1, bytes_read=len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._f.close()


@dataclass
class ReadStats:
    """What a RowReader did: files opened (a footer each), rows read, and for S3 files the
    read calls (ranged GETs) and bytes fetched; `fallback_rows` came from Parquet (no row
    file)."""

    files_opened: int = 0
    rows: int = 0
    reads: int = 0
    bytes_read: int = 0
    fallback_rows: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("files_opened", "rows", "reads", "bytes_read", "fallback_rows")}


_warned: set[str] = set()


def _warn_old_layout(shard_file: str) -> None:
    root = storage.parent(storage.parent(shard_file))
    if root in _warned:
        return
    _warned.add(root)
    log.warning(
        "shards %s have no row files (written before they existed): every shard row is read "
        "from its Parquet part, which decodes the whole part when it is one row group "
        "(~100x slower than a row file). Add them once with: mgtc reshard %s",
        storage.redact(root), storage.redact(root))


class RowReader:
    """Shard rows one at a time, for decode actors that read videos in random order.

    `row(shard_file, path, rate)` -> {column: value}: list columns (`pair_cells`,
    `boundary_cells`, `frame_scores`) as flat numpy arrays, the rest as Python scalars;
    `shards.row_cells` / `row_token_scores` take it as is. `shard_file` is the part's
    Parquet URI (`shards.shard_file`) or its row file. The footers of the last `cache`
    files stay open (a few kB each), so rows of one part read in a row (evaluation order)
    open it once. Thread-safe. `columns` limits the Parquet fallback's read (parts without a
    row file: the last `fallback_parts` whole parts are kept).
    """

    def __init__(self, cache: int = 64, columns: tuple[str, ...] | None = None,
                 endpoint: str | None = None, fallback_parts: int = 4):
        self.cache, self.columns, self.endpoint = cache, columns, endpoint
        self.fallback_parts = fallback_parts
        self._tables: OrderedDict[tuple[str, int], tuple[pa.Table, dict]] = OrderedDict()
        self.stats = ReadStats()
        self._open: OrderedDict[str, tuple[ipc.RecordBatchFileReader, dict]] = OrderedDict()
        self._missing: set[str] = set()
        self._lock = threading.Lock()

    def _reader(self, uri: str) -> tuple[ipc.RecordBatchFileReader, dict] | None:
        with self._lock:
            if uri in self._open:
                self._open.move_to_end(uri)
                return self._open[uri]
            if uri in self._missing:
                return None
        fs, path = storage.filesystem_for(uri, endpoint=self.endpoint)
        try:
            f = fs.open_input_file(path)
        except FileNotFoundError:
            with self._lock:
                self._missing.add(uri)
            return None
        if storage.is_s3(uri):  # count what crosses the network (a PythonFile costs ~0.2 ms)
            f = pa.PythonFile(_CountingFile(f, self.stats), mode="r")
        # One thread: the decode actor has one CPU, and IPC's thread pool cost 2-8x the CPU
        # of decompressing the row's two buffers in this thread (measured).
        reader = ipc.open_file(f, options=ipc.IpcReadOptions(use_threads=False))
        meta = reader.schema.metadata or {}
        if INDEX_KEY not in meta:
            raise ValueError(f"{storage.redact(uri)} is not an MGTC row file (no {INDEX_KEY.decode()} index)")
        index = json.loads(meta[INDEX_KEY])
        where = {(p, int(r)): i for i, (p, r) in enumerate(zip(index["path"], index["sampling_rate"]))}
        self.stats.add(files_opened=1)
        with self._lock:
            self._open[uri] = (reader, where)
            while len(self._open) > self.cache:
                self._open.popitem(last=False)
        return reader, where

    def row(self, shard_file: str, path: str, rate: int) -> dict[str, Any]:
        """The shard row of video `path` at sampling rate `rate` in the part of `shard_file`.
        Raises KeyError when the part has no such row."""
        opened = self._reader(row_file_of(shard_file))
        if opened is None:
            return self._fallback(shard_file, path, rate)
        reader, where = opened
        key = (path, int(rate))
        if key not in where:
            raise KeyError(f"no shard row for {storage.redact(path)} at rate {rate} in "
                           f"{storage.redact(shard_file)}")
        batch = reader.get_batch(where[key])
        self.stats.add(rows=1)
        return batch_row(batch)

    def _fallback(self, shard_file: str, path: str, rate: int) -> dict[str, Any]:
        """The row from the Parquet part (no row file). A part written as one row group is
        decoded whole whatever the filter, so whole parts are read and the last
        `fallback_parts` kept (evaluation reads a part's videos one after another)."""
        _warn_old_layout(shard_file)
        key = (shard_file, int(rate))
        with self._lock:
            cached = self._tables.get(key)
        if cached is None:
            table = storage.read_table(shard_file, columns=list(self.columns) if self.columns else None,
                                       filters=[("sampling_rate", "=", int(rate))], endpoint=self.endpoint)
            cached = (table.combine_chunks(), {p: i for i, p in enumerate(table.column("path").to_pylist())})
            with self._lock:
                self._tables[key] = cached
                while len(self._tables) > self.fallback_parts:
                    self._tables.popitem(last=False)
        table, where = cached
        if path not in where:
            raise KeyError(f"no shard row for {storage.redact(path)} at rate {rate} in "
                           f"{storage.redact(shard_file)}")
        self.stats.add(rows=1, fallback_rows=1)
        return batch_row(table.slice(where[path], 1).to_batches()[0])


def batch_row(batch: pa.RecordBatch) -> dict[str, Any]:
    """Row 0 of a record batch: list columns as flat numpy arrays, the rest as scalars."""
    out: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if name in LIST_COLUMNS:
            offsets = column.offsets
            lo, hi = offsets[0].as_py(), offsets[1].as_py()
            out[name] = column.values.slice(lo, hi - lo).to_numpy(zero_copy_only=False)
        else:
            out[name] = column[0].as_py()
    return out


# --------------------------------------------------------------------------- old folders


def add_row_files(uri: str, *, workers: int = 4, compression: str = "zstd",
                  endpoint: str | None = None, log_fn=print) -> dict[str, int]:
    """Write the row file of every committed part that lacks one (`mgtc reshard`), from
    its Parquet file. Each write is atomic; the Parquet files, markers and everything else
    stay as they are, so readers may run meanwhile and a killed run resumes where it
    stopped. Returns {"parts", "written", "present"}."""
    uri = storage.normalize(uri)
    if not storage.exists(storage.join(uri, shards.META_FILE), endpoint=endpoint):
        raise FileNotFoundError(f"{storage.redact(uri)} is not a precompute output (no {shards.META_FILE})")
    parts = shards.committed_parts(uri)
    present = set(storage.list_dir(storage.join(uri, ROWS_DIR), suffix=ROW_SUFFIX, endpoint=endpoint))
    todo = [p for p in parts if f"{shards.part_name(p)}{ROW_SUFFIX}" not in present]

    def one(part: int) -> int:
        table = storage.read_table(shards.shard_file(uri, part), endpoint=endpoint)
        data = row_file_bytes(table, compression)
        storage.write_bytes_atomic(row_file(uri, part), data, endpoint=endpoint)
        return len(data)

    written = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, size in enumerate(pool.map(one, todo), 1):
            written += 1
            if done == len(todo) or done % 50 == 0:
                log_fn(f"reshard: {done}/{len(todo)} row files written ({size / 1e6:.1f} MB last)")
    return {"parts": len(parts), "written": written, "present": len(parts) - len(todo)}

