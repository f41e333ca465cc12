"""The driver of the precompute job: parts to run, Ray Data over them, the run's summary."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline import shard_rows, shards, storage
from pipeline.manifest import ManifestRow, check_labels, read_manifest
from pipeline.precompute.config import ConfigError, PrecomputeConfig
from pipeline.precompute.faults import FAULT_ENV
from pipeline.precompute.parts import PartWorker, _apply_endpoint, _commit_failed_part, _row_dict
from pipeline.progress import progress
from pipeline.vocab import FORWARDED_ENV, forwarded_env, ray_session


@dataclass
class Summary:
    """Outcome of a run over the whole output (committed parts of earlier runs included)."""

    out: str
    parts: int = 0
    parts_run: int = 0
    parts_skipped: int = 0
    parts_failed: int = 0
    videos: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    rows: int = 0
    frames_decoded: int = 0
    source_frames: int = 0
    decode_s: float = 0.0
    score_s: float = 0.0
    videos_run: int = 0
    seconds: float = 0.0

    def add(self, marker: dict, *, this_run: bool) -> None:
        self.videos += marker["videos"]
        self.ok += marker["ok"]
        self.failed += marker["failed"]
        self.failed_by_reason.update(marker["failed_by_reason"])
        self.rows += marker["rows"]
        self.frames_decoded += marker["frames_decoded"]
        self.source_frames += marker["source_frames"]
        self.parts_failed += int(bool(marker.get("retry")))
        if this_run:
            self.videos_run += marker["videos"]
            self.decode_s += marker["decode_s"]
            self.score_s += marker["score_s"]

    @property
    def complete(self) -> bool:
        """Every manifest line ended as a shard row or an error row, no part left to retry."""
        return self.parts_failed == 0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failed_by_reason"] = dict(self.failed_by_reason)
        d["complete"] = self.complete
        return d


@dataclass(frozen=True)
class JobKind:
    """What the parts of a job run: precompute's `PartWorker` (default), or a variant of it
    (`prepare.PrepareWorker`) with its extra constructor arguments, and the entries it adds
    to the output's metadata (a rerun must match them, like the shard settings)."""

    name: str = "precompute"
    worker: type = PartWorker
    worker_kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def format_summary(s: Summary, name: str = "precompute") -> str:
    rate = s.videos_run / s.seconds if s.seconds > 0 else 0.0
    fps = s.frames_decoded / s.seconds if s.seconds > 0 and s.videos_run == s.videos else None
    lines = [
        f"[{name}] done in {s.seconds:.1f} s: {s.parts} parts "
        f"({s.parts_run} run now, {s.parts_skipped} already committed"
        + (f", {s.parts_failed} FAILED: rerun to retry" if s.parts_failed else "") + ")",
        f"  videos ok       {s.ok}",
        f"  videos failed   {s.failed}",
    ]
    lines += [f"    {name:<22}{n}" for name, n in sorted(s.failed_by_reason.items(), key=lambda kv: -kv[1])]
    lines += [
        f"  shard rows      {s.rows} (one per video and sampling rate)",
        f"  frames decoded  {s.frames_decoded}" + (f" ({fps:.0f} frames/s)" if fps else ""),
        f"  videos/s        {rate:.2f} ({s.videos_run} videos this run)",
        f"  decode / score  {s.decode_s:.1f} s / {s.score_s:.1f} s of decoder time",
        f"  output          {storage.redact(s.out)} ({shards.SHARDS_DIR}/, {shards.ERRORS_DIR}/)",
    ]
    return "\n".join(lines)


def split_parts(rows: list[ManifestRow], part_size: int) -> list[list[ManifestRow]]:
    """Deterministic parts: consecutive manifest rows, `part_size` per part."""
    return [rows[i:i + part_size] for i in range(0, len(rows), part_size)]


def manifest_fingerprint(rows: list[ManifestRow]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r.line, r.video, r.path, r.label, r.error]).encode())
    return digest.hexdigest()


def _check_or_write_meta(out: str, cfg: PrecomputeConfig, manifest_uri: str, rows: list[ManifestRow],
                         endpoint: str | None, extra: dict | None = None) -> None:
    """Record the settings and manifest of an output; refuse to mix in a different run."""
    meta = {
        "schema_version": shards.SCHEMA_VERSION,
        "config": cfg.shard_settings(),
        "score_mode": cfg.score_mode,
        "manifest": {"uri": storage.redact(manifest_uri), "sha256": manifest_fingerprint(rows),
                     "videos": len(rows)},
        **(extra or {}),
    }
    uri = storage.join(out, shards.META_FILE)
    if not storage.exists(uri, endpoint=endpoint):
        storage.write_json_atomic(uri, meta, endpoint=endpoint)
        return
    old = storage.read_json(uri, endpoint=endpoint)
    diffs = [f"{k}: {old.get('config', {}).get(k)!r} there, {v!r} now"
             for k, v in meta["config"].items() if old.get("config", {}).get(k) != v]
    if old.get("schema_version") != shards.SCHEMA_VERSION:
        diffs.append(f"schema_version: {old.get('schema_version')} there, {shards.SCHEMA_VERSION} now")
    diffs += [f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in (extra or {}).items() if old.get(k) != v]
    if old.get("manifest", {}).get("sha256") != meta["manifest"]["sha256"]:
        diffs.append("manifest: a different list of videos")
    if diffs:
        raise ConfigError(
            f"output {storage.redact(out)} holds shards of a different run ({'; '.join(diffs)}); "
            "resume needs the same manifest and settings: use another --out or delete it"
        )


@contextlib.contextmanager
def _data_context(**settings):
    """Set DataContext fields for this job only (the driver may run other datasets)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in settings}
    for k, v in settings.items():
        setattr(ctx, k, v)
    try:
        yield ctx
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)


def _part_line(marker: dict, done: int, total: int) -> str:
    """One line per finished part (the plain form of the progress display)."""
    return (f"part {done}/{total}: videos ok {marker['ok']} failed {marker['failed']}, "
            f"{marker['frames_decoded']} frames")


def _run_parts(out: str, cfg: PrecomputeConfig, todo: dict[int, list[ManifestRow]],
               log: Callable[[str], None], kind: JobKind) -> tuple[dict[int, dict], str]:
    """Run the pending parts through Ray Data; returns (summaries by part, failure text)."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    with ray_session():
        actors = cfg.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actors = min(actors, len(todo))
        items = [{"part": p, "rows": json.dumps([_row_dict(r) for r in rows])} for p, rows in todo.items()]
        log(f"[{kind.name}] {len(todo)} parts to run ({sum(map(len, todo.values()))} videos) "
            f"on {actors} actor(s)")
        done: dict[int, dict] = {}
        failure = ""
        # Native crashes are absorbed by DecoderProcess; these caps are the second line:
        # Ray's defaults (max_restarts=-1, max_task_retries=-1) would retry a poison part
        # forever, and max_errored_blocks=-1 lets the other parts finish when one cannot.
        with _data_context(max_errored_blocks=-1, actor_task_retry_on_errors=False):
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            with warnings.catch_warnings():
                # max_restarts/max_task_retries only exist as ray_remote_args (deprecated
                # spelling in 2.60, no named replacement yet).
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
                ds = ds.map_batches(
                    kind.worker,
                    fn_constructor_kwargs={
                        "config": dataclasses.asdict(cfg), "out": out,
                        "env": forwarded_env((*FORWARDED_ENV, *FAULT_ENV)) if cfg.forward_env else None,
                        **kind.worker_kwargs,
                    },
                    batch_size=1,
                    compute=ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                    num_cpus=1,
                    max_restarts=cfg.max_task_retries,
                    max_task_retries=cfg.max_task_retries,
                )
            total = sum(map(len, todo.values()))
            with progress(kind.name, total=total, unit="videos") as bar:
                bar.update(errors=0)
                try:
                    for row in ds.iter_rows():
                        marker = json.loads(row["summary"])
                        done[int(row["part"])] = marker
                        bar.update(advance=marker["videos"], errors=sum(m["failed"] for m in done.values()))
                        bar.line(_part_line(marker, len(done), len(todo)))
                except Exception as err:  # noqa: BLE001  (Ray surfaces worker failures as many types)
                    failure = storage.redact(f"{type(err).__name__}: {err}")[:500]
                    bar.line(f"Ray Data stopped early: {failure}")
        return done, failure


def run_precompute(manifest: str, out: str, cfg: PrecomputeConfig,
                   log: Callable[[str], None] = print, kind: JobKind = JobKind()) -> Summary:
    """Run (or resume) the precompute job (or the variant `kind`: `mgtc prepare`); returns
    the summary of the whole output."""
    cfg.validate()
    t0 = time.monotonic()
    _apply_endpoint(cfg)
    endpoint = cfg.s3_endpoint or None
    out = storage.normalize(out)
    rows = read_manifest(manifest, path_column=cfg.path_column or None,
                         label_column=cfg.label_column or None, endpoint=endpoint)
    check_labels(rows, cfg.num_classes, manifest)
    parts = split_parts(rows, cfg.part_size)
    _check_or_write_meta(out, cfg, manifest, rows, endpoint, kind.meta)
    for folder in (shards.SHARDS_DIR, shard_rows.ROWS_DIR, shards.ERRORS_DIR, shards.PARTS_DIR, ""):
        storage.delete_hidden(storage.join(out, folder) if folder else out)
    markers = shards.read_markers(out, [p for p in shards.committed_parts(out) if p < len(parts)])
    todo = {p: rows_ for p, rows_ in enumerate(parts) if p not in markers or markers[p].get("retry")}
    for p in todo:
        if p in markers:  # a failed part is hidden while it is redone
            storage.delete(shards.marker_file(out, p), endpoint=endpoint)
    summary = Summary(out=out, parts=len(parts), parts_skipped=len(parts) - len(todo), parts_run=len(todo))
    for p, marker in markers.items():
        if p not in todo:
            summary.add(marker, this_run=False)
    if todo:
        done, failure = _run_parts(out, cfg, todo, log, kind)
        # A part whose summary never reached the driver may still have been committed.
        committed = set(shards.committed_parts(out))
        late = shards.read_markers(out, [p for p in todo if p not in done and p in committed])
        for p, part_rows in todo.items():
            marker = done.get(p) or late.get(p) or _commit_failed_part(out, p, part_rows, failure, cfg)
            summary.add(marker, this_run=True)
    else:
        log(f"[{kind.name}] all {len(parts)} parts of {storage.redact(out)} are already committed")
    summary.seconds = time.monotonic() - t0
    if summary.complete:
        storage.write_json_atomic(storage.join(out, shards.SUCCESS_FILE), summary.as_dict(), endpoint=endpoint)
    else:
        storage.delete(storage.join(out, shards.SUCCESS_FILE), endpoint=endpoint)
    return summary
