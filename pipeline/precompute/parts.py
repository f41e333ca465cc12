"""Parts: `PartWorker` (the Ray Data UDF that scores and commits whole manifest parts),
the shard / error records it writes and the commit of a part (files first, marker last)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pipeline import shard_rows, shards, storage
from pipeline.manifest import ManifestRow
from pipeline.precompute import faults
from pipeline.precompute.config import PrecomputeConfig
from pipeline.precompute.decoder import DecoderProcess
from pipeline.vocab import LogSafeEnv

def reason_category(reason: str) -> str:
    """'decoder crashed: signal 11 (SIGSEGV)' -> 'decoder crashed' (summary grouping)."""
    return reason.split(":", 1)[0].strip() or "unknown"


def _apply_endpoint(cfg: PrecomputeConfig) -> None:
    """`s3_endpoint` becomes AWS_ENDPOINT_URL_S3 of this process (and of the decoder processes
    and readers it starts), so every S3 client of the job uses the same store."""
    if cfg.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = cfg.s3_endpoint


def _row_dict(row: ManifestRow) -> dict[str, Any]:
    return dataclasses.asdict(row)


def _error_record(row: dict, part: int, stage: str, error: str) -> dict[str, Any]:
    return {"video": row["video"], "path": row["path"], "label": row["label"], "line": row["line"],
            "part": part, "stage": stage, "error": storage.redact(error)}


def _shard_records(row: dict, part: int, result: dict, cfg: PrecomputeConfig) -> list[dict[str, Any]]:
    hc = result["resized_height"] // cfg.cell
    wc = result["resized_width"] // cfg.cell
    records = []
    for s in cfg.sampling_rates:
        r = result["rates"][s]
        records.append({
            "video": row["video"], "path": row["path"], "label": row["label"], "line": row["line"],
            "part": part, "sampling_rate": s, "num_frames": result["num_frames"], "fps": result["fps"],
            "height": result["height"], "width": result["width"], "short_side": cfg.short_side,
            "resized_height": result["resized_height"], "resized_width": result["resized_width"],
            "num_sampled": r["num_sampled"], "tubelet": cfg.tubelet, "cell": cfg.cell,
            "cells_height": hc, "cells_width": wc, "cell_scale": float(shards.cell_scale(cfg.cell)),
            "frame_scores": r["frame_scores"], "pair_cells": r["pair"], "boundary_cells": r["boundary"],
        })
    return records


def _fetch(path: str, folder: str, endpoint: str | None) -> tuple[str, str | None]:
    """(local path, error) of one video: s3:// objects are downloaded into `folder`."""
    if not storage.is_s3(path):
        return path, None
    fd, local = tempfile.mkstemp(prefix="video-", suffix=os.path.splitext(path)[1][:16], dir=folder)
    os.close(fd)
    try:
        storage.download(path, local, endpoint=endpoint)
    except FileNotFoundError:
        os.remove(local)
        return "", f"not found: {storage.redact(path)}"
    except (OSError, ValueError) as err:  # ValueError: pyarrow's ArrowInvalid for a URI it rejects
        os.remove(local)
        return "", f"download failed: {storage.redact(str(err))[:300]}"
    return local, None


class PartWorker:
    """Ray Data UDF (one instance per actor): scores and commits whole manifest parts.

    Batch in: {"part": [P] int, "rows": [P] JSON list of manifest rows}. Batch out:
    {"part": [P] int, "summary": [P] JSON str}, one per committed part. Usable without Ray:
    `PartWorker(config, out)(batch)` on a numpy batch.
    """

    def __init__(self, config: dict, out: str, env: LogSafeEnv | None = None):
        if env is not None:
            faults.clear()  # the driver's fault hooks only, never a stale one
            os.environ.update(env)
        self.config = dict(config)
        self.cfg = PrecomputeConfig(**self.config)
        _apply_endpoint(self.cfg)
        self.out = out
        self.endpoint = self.cfg.s3_endpoint or None
        self.decoder = DecoderProcess(self.cfg.timeout_s, self.cfg.crash_retries)
        self.decoder.start()  # boots while Ray schedules the first part
        self.scratch = tempfile.mkdtemp(prefix="mgtc-videos-")
        # Downloads of the next videos overlap the decode of the current one.
        self.pool = ThreadPoolExecutor(max_workers=2)
        # pyarrow imports pandas on its first array (~0.5 s): pay that while the first
        # videos decode, not on the first commit.
        self.pool.submit(shards.error_table, [])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [int(p) for p in batch["part"]]
        summaries = [json.dumps(self.process_part(p, json.loads(str(r)))) for p, r in zip(parts, batch["rows"])]
        return {"part": np.asarray(parts, dtype=np.int64), "summary": np.asarray(summaries, dtype=object)}

    def process_part(self, part: int, rows: list[dict]) -> dict[str, Any]:
        """Score every row of one part and commit it; returns the part's summary (marker)."""
        t0 = time.perf_counter()
        faults.worker_exit(r["path"] for r in rows)
        ok_records: list[dict] = []
        errors: list[dict] = []
        stats = Counter()
        todo = [r for r in rows if not r["error"]]
        errors += [_error_record(r, part, "manifest", r["error"]) for r in rows if r["error"]]
        futures = {}
        done: list[dict] = []  # the rows the shard rows describe, of the videos that succeeded

        def prefetch(i: int) -> None:
            if i < len(todo) and i not in futures:
                futures[i] = self.pool.submit(_fetch, todo[i]["path"], self.scratch, self.endpoint)

        prefetch(0)
        for i, row in enumerate(todo):
            prefetch(i + 1)
            prefetch(i + 2)
            local, fetch_error = futures.pop(i).result()
            if fetch_error:
                errors.append(_error_record(row, part, "read", fetch_error))
                continue
            try:
                reply, described = self.run_video(row, local)
            finally:
                if local != row["path"]:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(local)
            if not reply["ok"]:
                errors.append(_error_record(row, part, reply["stage"], reply["error"]))
                continue
            result = reply["result"]
            ok_records += _shard_records(described, part, result, self.cfg)
            done.append(described)
            stats["frames_decoded"] += result["decoded_frames"]
            stats["source_frames"] += result["num_frames"]
            stats["decode_s"] += result["decode_s"]
            stats["score_s"] += result["score_s"]
        errors.sort(key=lambda e: e["line"])
        summary = part_marker(part, len(rows), errors, rows=len(ok_records),
                              frames_decoded=stats["frames_decoded"], source_frames=stats["source_frames"],
                              decode_s=stats["decode_s"], score_s=stats["score_s"],
                              seconds=time.perf_counter() - t0)
        summary.update(self.marker_extra(done))
        commit_part(self.out, part, shards.shard_table(ok_records, self.cfg.cell),
                    shards.error_table(errors), summary, compression=self.cfg.compression,
                    endpoint=self.endpoint)
        return summary

    def run_video(self, row: dict, local: str) -> tuple[dict, dict]:
        """(decoder reply, the manifest row its shard rows describe) for one video at the
        local path `local`; the prepare job's worker re-encodes here (`prepare.PrepareWorker`)."""
        return self.decoder.run(local, self.config), row

    def marker_extra(self, done: list[dict]) -> dict[str, Any]:
        """Fields the part's marker carries beyond `part_marker`'s, given the rows of the
        videos that succeeded (none for precompute)."""
        return {}

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter teardown: best effort only
            self.decoder.close()
            self.pool.shutdown(wait=False)


def part_marker(part: int, videos: int, errors: list[dict], *, rows: int = 0, frames_decoded: int = 0,
                source_frames: int = 0, decode_s: float = 0.0, score_s: float = 0.0, seconds: float = 0.0,
                retry: bool = False) -> dict[str, Any]:
    """The summary of a part, written as its marker (`_parts/part-N.json`) and summed by the
    driver: `videos` manifest lines, of which `errors` (error records) failed; `rows` shard
    rows; `retry`: the part did not finish (its videos are 'worker' errors) and is redone."""
    return {
        "part": part, "videos": videos, "ok": videos - len(errors), "failed": len(errors),
        "failed_by_reason": dict(Counter(reason_category(e["error"]) for e in errors)),
        "rows": rows, "frames_decoded": int(frames_decoded), "source_frames": int(source_frames),
        "decode_s": round(decode_s, 4), "score_s": round(score_s, 4), "seconds": round(seconds, 4),
        "retry": retry, "schema_version": shards.SCHEMA_VERSION,
    }


def commit_part(out: str, part: int, table, errors, summary: dict, *, compression: str = "zstd",
                endpoint: str | None = None) -> None:
    """Write a part's shard, row and errors files, then its marker: the part exists for
    readers only from the moment the marker does (each write is atomic on its own)."""
    compression = None if compression == "none" else compression
    shard_rows.write_shard_files(out, part, table, compression=compression or "none", endpoint=endpoint)
    storage.write_table_atomic(shards.error_file(out, part), errors, compression=compression, endpoint=endpoint)
    storage.write_json_atomic(shards.marker_file(out, part), summary, endpoint=endpoint)



def _commit_failed_part(out: str, part: int, rows: list[ManifestRow], reason: str,
                        cfg: PrecomputeConfig) -> dict:
    """Every video of a part that Ray could not finish becomes a 'worker' error, in a part
    marked retry=True: visible to readers, redone by the next run."""
    errors = [_error_record(_row_dict(r), part, "manifest" if r.error else "worker",
                            r.error or f"worker failed: {reason or 'the part did not finish'}; rerun to retry")
              for r in rows]
    summary = part_marker(part, len(rows), errors, retry=True)
    commit_part(out, part, shards.shard_table([], cfg.cell), shards.error_table(errors), summary,
                compression=cfg.compression, endpoint=cfg.s3_endpoint or None)
    return summary
