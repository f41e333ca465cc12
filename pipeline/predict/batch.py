"""Batch inference over a list of videos with Ray Data, to resumable Parquet parts.

    list -> parts of `part_size` lines (the precompute job's `split_parts`)
      -> Ray Data: one row per video of the parts not yet committed
      -> map_batches(ViewDecoder, CPU actors: test views, or an error row)
      -> map_batches(ViewModel, model actors: num_gpus=1 each on a GPU cluster, else CPU)
      -> driver: views averaged per video; a part is written the moment its last video is
         done: <out>/predictions/part-N.parquet, then its marker <out>/_parts/part-N.json

The layout and commit rule are the precompute output's (`pipeline.shards`: a part exists
for readers only once its marker does; a rerun skips committed parts), so a killed job
resumes where it stopped and never duplicates a row. `<out>/_predict.json` records the
checkpoint, strategy and list: a rerun with other settings is refused, not mixed in.

One row per video (PREDICTION_SCHEMA): video, path, line, label (-1 = none), ok, error,
top_ids / top_names / top_probs (best first), views, kept_ratio, gflops_per_view, and with
`features` the pooled feature vector (mean over views). A video that cannot be decoded is
a row with ok = false and its reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from pipeline import shards, storage
from pipeline.manifest import ManifestRow, check_labels, parse_manifest, resolve_path
from pipeline.precompute import manifest_fingerprint, split_parts
from pipeline.predict.loading import Masking
from pipeline.vocab import forwarded_env, ray_session

PREDICTIONS_DIR = "predictions"
META_FILE = "_predict.json"
SUCCESS_FILE = shards.SUCCESS_FILE
# A decode actor that crashes natively (decord) is restarted once; its block is then dropped
# (its videos' part stays uncommitted, redone by the next run), not the job.
ACTOR_RETRIES = 1
MAX_ERRORED_BLOCKS = 16


def prediction_schema(features: bool) -> pa.Schema:
    fields = [
        ("video", pa.string()), ("path", pa.string()), ("line", pa.int64()), ("label", pa.int64()),
        ("ok", pa.bool_()), ("error", pa.string()), ("top_ids", pa.list_(pa.int32())),
        ("top_names", pa.list_(pa.string())), ("top_probs", pa.list_(pa.float32())), ("views", pa.int32()),
        ("kept_ratio", pa.float32()), ("gflops_per_view", pa.float32()),
    ]
    if features:
        fields.append(("feature", pa.list_(pa.float32())))
    return pa.schema(fields)


def prediction_file(out: str, part: int) -> str:
    return storage.join(out, PREDICTIONS_DIR, f"{shards.part_name(part)}.parquet")


def read_predictions(out: str) -> pa.Table:
    """All committed prediction rows of an output (one table)."""
    out = storage.normalize(out)
    files = [prediction_file(out, p) for p in shards.committed_parts(out)]
    tables = [storage.read_table(f) for f in files]
    return pa.concat_tables(tables) if tables else prediction_schema(False).empty_table()


# ------------------------------------------------------------------------- the list


def read_video_list(uri: str) -> list[ManifestRow]:
    """A manifest (`<path> <label>` lines or CSV, see pipeline.manifest) or a plain list of
    video paths, one per line (no labels: label None)."""
    from pipeline.manifest import check_official

    check_official(uri)
    text = storage.open_text(uri).getvalue().lstrip("\ufeff")
    base = storage.parent(storage.normalize(uri))
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and all(len(ln.split()) == 1 and "," not in ln for _, ln in lines):
        rows = []
        for n, video in lines:
            try:
                rows.append(ManifestRow(n, video, resolve_path(video, base), None))
            except ValueError as err:
                rows.append(ManifestRow(n, video, "", None, str(err)))
        return rows
    return parse_manifest(text, base)


# ------------------------------------------------------------------------- Ray Data stages


class ViewDecoder:
    """Ray Data callable class: video rows -> test views, or one error row per bad video.

    In: path, video_id. Out: pixels [V, T, S, S, 3] uint8, scores [V, T', S/p, S/p], video_id,
    view, num_views (views of that video), error ("" = a view; else the reason, with one
    all-zero view standing in so that every batch keeps one schema).
    """

    def __init__(self, cfg, env: dict | None = None):
        import torch

        from pipeline.clips import ClipMaker

        os.environ.update(env or {})
        self.maker = ClipMaker(cfg, "test")
        torch.set_num_threads(1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pipeline.predict.core import decode_error

        spec = self.maker.spec
        out: dict[str, list] = {k: [] for k in ("pixels", "scores", "video_id", "view", "num_views", "error")}
        for path, vid in zip(batch["path"].tolist(), batch["video_id"].tolist()):
            try:
                views = self.maker.make({"path": path, "label": 0, "video_id": vid})
            except Exception as err:  # noqa: BLE001 - decoders fail with many exception types
                t, s, (gh, gw) = spec.num_frames, spec.input_size, spec.grid
                views, error = [(0, np.zeros((t, s, s, 3), np.uint8),
                                 np.zeros((t // spec.tubelet, gh, gw), np.float32))], decode_error(err)
            else:
                error = ""
            for view, pixels, scores in views:
                out["pixels"].append(pixels)
                out["scores"].append(scores.astype(np.float32, copy=False))
                out["video_id"].append(vid)
                out["view"].append(view)
                out["num_views"].append(len(views))
                out["error"].append(error)
        return {
            "pixels": np.stack(out["pixels"]), "scores": np.stack(out["scores"]),
            "video_id": np.asarray(out["video_id"], np.int64), "view": np.asarray(out["view"], np.int64),
            "num_views": np.asarray(out["num_views"], np.int64), "error": np.asarray(out["error"], dtype=object),
        }


class ViewModel:
    """Ray Data callable class (one model per actor): views -> probs [B, C], kept [B] (and
    feature [B, D]); error rows pass through with zeros."""

    def __init__(self, settings: dict, num_threads: int = 1, env: dict | None = None):
        import torch

        from pipeline.predict.core import Predictor
        from pipeline.predict.loading import load_for_inference

        os.environ.update(env or {})
        torch.set_num_threads(max(1, num_threads))
        s = settings
        loaded = load_for_inference(s["checkpoint"], config=s["config"], overrides=s["overrides"],
                                    masking=Masking(**s["masking"]) if s["masking"] else None, device="auto")
        self.predictor = Predictor(loaded, features=s["features"])
        self.num_classes = loaded.num_classes
        self.dim = loaded.model.embed_dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["video_id"])
        good = np.asarray([not e for e in batch["error"]], dtype=bool)
        probs = np.zeros((n, self.num_classes), np.float32)
        kept = np.zeros(n, np.int64)
        feature = np.zeros((n, self.dim), np.float32)
        if good.any():
            res = self.predictor({k: batch[k][good] for k in ("pixels", "scores", "video_id", "view")})
            probs[good], kept[good] = res["probs"], res["kept"]
            if "feature" in res:
                feature[good] = res["feature"]
        out = {k: batch[k] for k in ("video_id", "view", "num_views", "error")}
        out.update(probs=probs, kept=kept)
        if self.predictor.features:
            out["feature"] = feature
        return out


# ------------------------------------------------------------------------- driver


@dataclass
class BatchSettings:
    """What a batch-inference run needs (the job's command line)."""

    checkpoint: str
    config: str | None = None
    overrides: tuple[str, ...] = ()
    masking: Masking | None = None
    labels: str | None = None
    top_k: int = 5
    features: bool = False
    batch_size: int = 8
    part_size: int = 64
    decode_actors: int = 0  # 0 = the CPUs the model actors leave
    model_actors: int = 1
    track: bool = True

    def actor_settings(self) -> dict:
        return {"checkpoint": self.checkpoint, "config": self.config, "overrides": list(self.overrides),
                "masking": dataclasses.asdict(self.masking) if self.masking else None, "features": self.features}


class _Parts:
    """Per-video view accumulation and per-part completion, on the driver."""

    def __init__(self, out: str, todo: dict[int, list[ManifestRow]], first_id: dict[int, int], shape, k: int,
                 names, features: bool, log: Callable[[str], None]):
        from pipeline.predict.core import summarize

        self._summarize = summarize
        self.out, self.shape, self.k, self.names, self.features, self.log = out, shape, k, names, features, log
        self.schema = prediction_schema(features)
        self.rows: dict[int, ManifestRow] = {}
        self.part_of: dict[int, int] = {}
        self.pending: dict[int, int] = {}
        self.records: dict[int, list[dict]] = {p: [] for p in todo}
        for p, rows in todo.items():
            self.pending[p] = len(rows)
            for j, r in enumerate(rows):
                vid = first_id[p] + j
                self.rows[vid], self.part_of[vid] = r, p
        self.views: dict[int, list] = {}
        self.done_parts = 0
        self.videos = self.failed = self.clips = 0
        self.kept_sum = self.gflops_sum = 0.0
        self.first_at: float | None = None  # seconds from the pipeline's start to the first result
        self.first_clips = 0  # views in that first result

    def error(self, vid: int, reason: str) -> None:
        self._finish(vid, None, reason)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for i, vid in enumerate(batch["video_id"].tolist()):
            if batch["error"][i]:
                self._finish(vid, None, str(batch["error"][i]))
                continue
            got = self.views.setdefault(vid, [])
            got.append((batch["probs"][i], int(batch["kept"][i]), batch["feature"][i] if self.features else None))
            self.clips += 1
            if len(got) == int(batch["num_views"][i]):
                self._finish(vid, self.views.pop(vid), "")

    def _finish(self, vid: int, views: list | None, error: str) -> None:
        row, part = self.rows[vid], self.part_of[vid]
        rec = {"video": row.video, "path": storage.redact(row.path), "line": row.line,
               "label": -1 if row.label is None else int(row.label), "ok": not error, "error": error,
               "top_ids": [], "top_names": [], "top_probs": [], "views": 0,
               "kept_ratio": None, "gflops_per_view": None}
        if views:
            res = self._summarize(row.video, np.stack([v[0] for v in views]), np.asarray([v[1] for v in views]),
                                  self.shape, k=self.k, names=self.names,
                                  feature=np.stack([v[2] for v in views]) if self.features else None)
            rec.update(top_ids=res.top_ids, top_names=res.top_names, top_probs=res.top_probs, views=res.views,
                       kept_ratio=res.kept_ratio, gflops_per_view=res.gflops_per_view)
            if self.features:
                rec["feature"] = res.feature
            self.kept_sum += res.kept_ratio
            self.gflops_sum += res.gflops_per_view
        elif self.features:
            rec["feature"] = None
        self.videos += 1
        self.failed += bool(error)
        self.records[part].append(rec)
        self.pending[part] -= 1
        if self.pending[part] == 0:
            self.commit(part)

    def commit(self, part: int) -> None:
        recs = sorted(self.records.pop(part), key=lambda r: r["line"])
        table = pa.Table.from_pylist(recs, schema=self.schema)
        storage.write_table_atomic(prediction_file(self.out, part), table)
        marker = {"part": part, "videos": len(recs), "ok": sum(r["ok"] for r in recs),
                  "failed": sum(not r["ok"] for r in recs), "schema_version": 1}
        storage.write_json_atomic(shards.marker_file(self.out, part), marker)
        self.done_parts += 1


def _check_or_write_meta(out: str, meta: dict) -> None:
    uri = storage.join(out, META_FILE)
    if not storage.exists(uri):
        storage.write_json_atomic(uri, meta)
        return
    old = storage.read_json(uri)
    diffs = [f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in meta.items() if old.get(k) != v]
    if diffs:
        raise ValueError(f"output {storage.redact(out)} holds predictions of another run ({'; '.join(diffs)}); "
                         "resume needs the same list and settings: use another --out or delete it")


def run_batch(manifest: str, out: str, settings: BatchSettings, *, log: Callable[[str], None] = print,
              progress_s: float = 10.0, loaded=None) -> dict[str, Any]:
    """Predict every video of `manifest` into `out` (resuming); returns the run's summary:
    videos, failed, parts, parts_skipped, clips, clips_per_s, videos_per_s, seconds,
    first_result_s (seconds to the first view's result: actor start-up, model load, the first
    decode), steady_clips_per_s (the views after the first per second after it),
    kept_ratio, gflops_per_view, and top1 / top5 (%) over labelled rows when the list has labels."""
    import ray
    import ray.data

    from pipeline.predict.core import model_shape

    t0 = time.monotonic()
    if loaded is None:
        loaded = _load(settings)
    rows = read_video_list(manifest)
    labelled = [r for r in rows if r.label is not None and not r.error]
    check_labels(labelled, loaded.num_classes, manifest)
    cfg, names = loaded.cfg, loaded.class_names
    del loaded  # the driver needs the config; the actors load their own model
    out = storage.normalize(out)
    m = cfg.masking
    meta = {"checkpoint": storage.redact(settings.checkpoint), "strategy": m.strategy, "ratio": m.ratio, "tau": m.tau,
            "top_k": settings.top_k, "features": settings.features, "part_size": settings.part_size,
            "manifest_sha256": manifest_fingerprint(rows), "videos": len(rows)}
    _check_or_write_meta(out, meta)
    parts = split_parts(rows, settings.part_size)
    first_id = {p: p * settings.part_size for p in range(len(parts))}
    committed = set(shards.committed_parts(out))
    todo = {p: r for p, r in enumerate(parts) if p not in committed}
    state = _Parts(out, todo, first_id, model_shape(cfg), settings.top_k, names, settings.features, log)
    items = []
    for p, part_rows in todo.items():
        for j, r in enumerate(part_rows):
            if r.error:
                state.error(first_id[p] + j, f"manifest: {r.error}")
            else:
                items.append({"path": r.path, "video_id": first_id[p] + j})
    views_per_video = cfg.data.test_clips * cfg.data.test_crops
    log(f"[predict] {len(parts)} parts, {len(parts) - len(todo)} already committed; "
        f"{len(items)} videos x {views_per_video} views to run ({m.strategy}"
        + (f", tau {m.tau}" if m.tau is not None else f", ratio {m.ratio}") + ")")
    failure = ""
    run_start = time.monotonic()
    if items:
        with ray_session():
            run_start = time.monotonic()  # clips/s counts the pipeline (actor start included), not Ray's start
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            cpus = max(1, int(resources.get("CPU", 1)))
            model_cpus = 1
            decoders = settings.decode_actors or max(1, cpus - settings.model_actors * (0 if gpus else model_cpus))
            ctx = ray.data.DataContext.get_current()
            saved = ctx.max_errored_blocks
            ctx.max_errored_blocks = MAX_ERRORED_BLOCKS
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            env = forwarded_env()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
                ds = ds.map_batches(
                    ViewDecoder, fn_constructor_kwargs={"cfg": cfg, "env": env}, batch_size=1, batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(decoders, len(items))),
                    num_cpus=1, max_restarts=ACTOR_RETRIES, max_task_retries=ACTOR_RETRIES,
                )
            ds = ds.map_batches(
                ViewModel,
                fn_constructor_kwargs={"settings": settings.actor_settings(), "num_threads": model_cpus, "env": env},
                batch_size=settings.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=settings.model_actors),
                num_cpus=model_cpus, num_gpus=1 if gpus else 0,
            )
            total = len(items)
            last = time.monotonic()
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    state.add(batch)
                    if state.first_at is None and state.clips:
                        state.first_at, state.first_clips = time.monotonic() - run_start, state.clips
                    now = time.monotonic()
                    if now - last >= progress_s:
                        last = now
                        log(_progress(state, total, views_per_video, now - run_start))
            except Exception as err:  # noqa: BLE001 - Ray surfaces worker failures as many types
                failure = storage.redact(f"{type(err).__name__}: {err}")[:500]
                log(f"[predict] Ray Data stopped early: {failure}")
            finally:
                ctx.max_errored_blocks = saved
    else:
        log(f"[predict] all {len(parts)} parts of {storage.redact(out)} are already committed")
    seconds = time.monotonic() - run_start
    left = sorted(p for p in todo if p in state.records)
    summary = _summary(out, len(parts), len(parts) - len(todo), state, seconds, time.monotonic() - t0, left, failure)
    if not left:
        storage.write_json_atomic(storage.join(out, SUCCESS_FILE), summary)
    log(format_summary(summary))
    return summary


def _progress(state: _Parts, total: int, views_per_video: int, elapsed: float) -> str:
    rate = state.clips / elapsed if elapsed > 0 else 0.0
    left = (total - state.videos) * views_per_video
    eta = left / rate if rate > 0 else math.nan
    return (f"[predict] videos {state.videos}/{total} (failed {state.failed}) | parts committed "
            f"{state.done_parts} | {rate:.2f} clips/s | ETA {eta:.0f} s")


def _summary(out: str, parts: int, skipped: int, state: _Parts, seconds: float, total_s: float, left: list[int],
             failure: str) -> dict[str, Any]:
    ok = state.videos - state.failed
    table = read_predictions(out)
    s = {
        "out": storage.redact(out), "parts": parts, "parts_skipped": skipped, "parts_left": len(left),
        "videos": state.videos, "failed": state.failed, "clips": state.clips, "seconds": seconds,
        "total_seconds": total_s, "clips_per_s": state.clips / seconds if seconds > 0 and state.clips else math.nan,
        "videos_per_s": ok / seconds if seconds > 0 and ok else math.nan,
        "first_result_s": state.first_at if state.first_at is not None else math.nan,
        "steady_clips_per_s": ((state.clips - state.first_clips) / (seconds - state.first_at)
                               if state.first_at is not None and state.clips > state.first_clips
                               and seconds > state.first_at else math.nan),
        "kept_ratio": state.kept_sum / ok if ok else math.nan,
        "gflops_per_view": state.gflops_sum / ok if ok else math.nan, "failure": failure,
    }
    s.update(accuracy(table))
    return s


def accuracy(table: pa.Table) -> dict[str, float]:
    """top1 / top5 (%) over the ok, labelled rows of a predictions table ({} when none;
    top5 only when at least 5 classes were written per video)."""
    labels = table.column("label").to_pylist()
    ok = table.column("ok").to_pylist()
    tops = table.column("top_ids").to_pylist()
    pairs = [(y, t) for y, good, t in zip(labels, ok, tops) if good and y >= 0]
    if not pairs:
        return {}
    out = {"top1": 100.0 * sum(t[0] == y for y, t in pairs) / len(pairs), "labelled_videos": float(len(pairs))}
    if all(len(t) >= 5 for _, t in pairs):
        out["top5"] = 100.0 * sum(y in t[:5] for y, t in pairs) / len(pairs)
    return out


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"[predict] done in {s['total_seconds']:.1f} s: {s['parts']} parts ({s['parts_skipped']} already committed"
        + (f", {s['parts_left']} NOT committed: rerun to finish" if s["parts_left"] else "") + ")",
        f"  videos          {s['videos']} this run ({s['failed']} failed: error rows)",
        f"  clips/s         {s['clips_per_s']:.2f} ({s['clips']} views in {s['seconds']:.1f} s; first result "
        f"after {s['first_result_s']:.1f} s, then {s['steady_clips_per_s']:.2f} clips/s)",
        f"  kept tokens     {100 * s['kept_ratio']:.1f}%   GFLOPs/view {s['gflops_per_view']:.3g}",
    ]
    if "top1" in s:
        top5 = f" / {s['top5']:.2f}%" if "top5" in s else " (top-5: --top-k 5 or more)"
        lines.append(f"  top-1 / top-5   {s['top1']:.2f}%{top5} ({s['labelled_videos']:.0f} labelled videos, whole output)")
    lines.append(f"  output          {s['out']}/{PREDICTIONS_DIR}/")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the job


def main_batch(args, masking: Masking | None) -> int:
    """`mgtc predict --manifest LIST --out URI ...` (see jobs/predict.py)."""
    import sys

    from pipeline.config import ConfigError
    from pipeline.manifest import ManifestError
    from pipeline.checkpoints import CheckpointError
    from pipeline.predict.labels import LabelsError

    settings = BatchSettings(
        checkpoint=args.checkpoint, config=args.config, overrides=tuple(args.overrides), masking=masking,
        labels=args.labels, top_k=args.top_k, features=args.features, batch_size=args.batch_size,
        part_size=args.part_size, decode_actors=args.decode_actors, model_actors=args.model_actors,
        track=not args.no_track,
    )
    try:
        summary = run_tracked(args.manifest, args.out, settings)
    except (CheckpointError, ConfigError, LabelsError, ManifestError, ValueError, FileNotFoundError) as err:
        print(f"mgtc predict: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if not (isinstance(v, float) and not math.isfinite(v))}))
    return 1 if summary["failed"] or summary["parts_left"] else 0


def run_tracked(manifest: str, out: str, settings: BatchSettings, **kwargs) -> dict[str, Any]:
    """`run_batch` as one MLflow run (params: checkpoint, strategy, ratio, tau, list, output;
    metrics: throughput, kept ratio, GFLOPs, top-1 / top-5 when the list has labels)."""
    loaded = _load(settings)
    if not settings.track:
        return run_batch(manifest, out, settings, loaded=loaded, **kwargs)
    from pipeline.tracking import finish_run, log_metrics, resolve_tracking_uri, start_run

    cfg = loaded.cfg
    uri = resolve_tracking_uri(cfg)
    m = cfg.masking
    params = {"checkpoint": storage.redact(settings.checkpoint), "strategy": m.strategy, "mask_ratio": m.ratio,
              "tau": "none" if m.tau is None else m.tau, "manifest": storage.redact(manifest),
              "out": storage.redact(out), "top_k": settings.top_k, "model": cfg.model.size,
              "num_frames": cfg.data.num_frames, "sampling_rate": cfg.data.sampling_rate,
              "views_per_video": f"{cfg.data.test_clips}x{cfg.data.test_crops}"}
    name = cfg.tracking.run_name or f"predict_{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = start_run(cfg, uri=uri, run_name=name, kind="predict", params=params)
    try:
        summary = run_batch(manifest, out, settings, loaded=loaded, **kwargs)
    except Exception:
        finish_run(uri, run_id, status="FAILED")
        raise
    numeric = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log_metrics(uri, run_id, numeric, step=0)
    finish_run(uri, run_id, final=summary)
    return {**summary, "mlflow_run_id": run_id, "tracking_uri": uri}


def _load(settings: BatchSettings):
    """The checkpoint, config and class names, checked in the driver before Ray starts (the
    model actors load their own copy)."""
    from pipeline.predict.loading import load_for_inference

    return load_for_inference(settings.checkpoint, config=settings.config, overrides=list(settings.overrides),
                              masking=settings.masking, labels=settings.labels, device="cpu")
