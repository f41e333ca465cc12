"""`mgtc prepare`: re-encode a data set for training and write the motion shards of the
re-encoded videos, in one pass over the source (decoded once).

Per video, in the actor's decoder process (`prepare_video`, crash-isolated like precompute's
scoring): probe and length check, `reencode.reencode` (short side, keyframe interval,
stride lattice, yuv420p H.264) into a temporary file, then `score_video` on that file, so
the shards describe exactly the frames the trainer will decode from the prepared video. The
actor (`PrepareWorker`) commits the file (rename, or one PutObject on S3) before the part's
marker; the part itself is committed by precompute's `commit_part`, so resume, error rows
and the summary are precompute's. After the parts, the driver writes the new manifest (the
videos that succeeded, in source order, same labels) and `_prepare.json` (`pipeline.prepared`
has the layout and the rule configs are checked with).

Rates: `sampling_rates` are given in source frames (as `data.sampling_rate`) and must be
multiples of the stride; the shards hold them in frames of the prepared files (s / stride),
as `mgtc precompute` run on the prepared manifest would write them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import re
import time
import uuid
from typing import Any, Callable

from pipeline import prepared, reencode, shards, storage
from pipeline.precompute.config import ConfigError, PrecomputeConfig
from pipeline.precompute.job import JobKind, Summary, run_precompute
from pipeline.precompute.parts import PartWorker
from pipeline.precompute.scoring import VideoError, check_length, probe_file, score_video

# Rates (source frames) the shards get when none are given: precompute's, those the stride keeps.
DEFAULT_RATES = PrecomputeConfig().sampling_rates


def encode_settings(short_side: int = 320, keyint: int = 16, stride: int = 1, crf: int = 23,
                    preset: str = "medium", cfg: PrecomputeConfig | None = None) -> reencode.EncodeSettings:
    """EncodeSettings, validated (ConfigError naming every bad value); the decode threads and
    chunk size are the job's (`cfg`)."""
    e = []
    if short_side < 0 or short_side % 2:
        e.append(f"short_side={short_side}: must be an even number of px, or 0 (keep the source size)")
    if keyint < 1:
        e.append(f"keyint={keyint}: must be >= 1")
    if stride < 1:
        e.append(f"stride={stride}: must be >= 1")
    if not 0 <= crf <= 51:
        e.append(f"crf={crf}: x264 takes 0..51")
    presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
    if preset not in presets:
        e.append(f"preset={preset!r}: allowed: {', '.join(presets)}")
    if e:
        raise ConfigError("invalid prepare settings:\n  - " + "\n  - ".join(e))
    cfg = cfg or PrecomputeConfig()
    return reencode.EncodeSettings(short_side=short_side, keyint=keyint, stride=stride, crf=crf, preset=preset,
                                   chunk_frames=cfg.chunk_frames, decode_threads=cfg.decode_threads)


def settings_record(encode: reencode.EncodeSettings) -> dict[str, Any]:
    """The `prepare` entry of the metadata: what a config is checked against."""
    return {"short_side": encode.short_side, "keyint": encode.keyint, "stride": encode.stride,
            "crf": encode.crf, "preset": encode.preset, "codec": "h264", "pix_fmt": "yuv420p"}


def shard_config(cfg: PrecomputeConfig, stride: int, rates_given: bool = True) -> PrecomputeConfig:
    """`cfg` (sampling rates in source frames) in frames of the prepared files: s / stride.
    Rates that are not multiples of the stride are an error when given, else dropped (the
    defaults 2 4 at stride 4 give 4 -> 1)."""
    rates = cfg.sampling_rates
    bad = [s for s in rates if s % stride]
    if bad and (rates_given or len(bad) == len(rates)):
        raise ConfigError(
            f"sampling_rates={list(rates)} (source frames): {', '.join(map(str, bad))} not a multiple of "
            f"--stride {stride}: prepared videos keep only one source frame in {stride}; give "
            f"--sampling-rates {stride} {2 * stride} ... or a smaller --stride")
    kept = tuple(s // stride for s in rates if s % stride == 0)
    return dataclasses.replace(cfg, sampling_rates=kept).validate()


def video_name(row: dict) -> str:
    """File name of a prepared video: source manifest line + the source's stem, characters
    outside [A-Za-z0-9._-] replaced (unique per line; safe in a list file and a key)."""
    stem = os.path.splitext(os.path.basename(row["video"]))[0]
    return f"{int(row['line']):07d}-{re.sub(r'[^A-Za-z0-9._-]', '_', stem)[:80]}.mp4"


def prepare_video(path: str, cfg: PrecomputeConfig, *, dst: str, encode: dict) -> dict[str, Any]:
    """Re-encode the local video `path` into the local file `dst`, then score `dst` (runs in
    the decoder process). `cfg`: rates in prepared frames. Returns `score_video`'s result of
    the prepared file, its `decode_s` / `decoded_frames` including the source's, plus
    `encode`: `reencode.reencode`'s record, and `cpu_s`: this process's CPU seconds for the
    video (decode + encode + score). Raises VideoError (stage encode: x264 / writing)."""
    import av

    cpu0 = time.process_time()
    settings = reencode.EncodeSettings(**encode)
    info = probe_file(path, settings.decode_threads)
    check_length(len(range(0, info.num_frames, settings.stride)), cfg)  # before paying for the encode
    try:
        record = reencode.reencode(path, dst, settings)
    except reencode.EncodeError as err:
        raise VideoError(err.stage, err.reason) from None
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError("encode", f"encode failed: {err}") from None
    result = score_video(dst, cfg)
    result["encode"] = record
    result["decoded_frames"] += record["prepared_frames"]
    result["decode_s"] += record["decode_s"]
    result["cpu_s"] = time.process_time() - cpu0
    return result


class PrepareWorker(PartWorker):
    """`PartWorker` whose videos are re-encoded into `out`/videos/ before they are scored;
    the shard rows describe the prepared files (path = their URI). `encode`: EncodeSettings
    as a dict. Usable without Ray like PartWorker."""

    def __init__(self, config: dict, out: str, env=None, encode: dict | None = None):
        super().__init__(config, out, env)
        self.encode = dict(encode or {})
        self.folder = storage.join(storage.normalize(out), prepared.VIDEOS_DIR)
        if not storage.is_s3(self.folder):
            os.makedirs(self.folder, exist_ok=True)
        self.encode_s = self.cpu_s = 0.0

    def run_video(self, row: dict, local: str) -> tuple[dict, dict]:
        name = video_name(row)
        uri = storage.join(self.folder, name)
        # Local output: the temporary file sits beside its final name (rename = commit).
        where = self.scratch if storage.is_s3(uri) else self.folder
        tmp = os.path.join(where, f".{name}.tmp-{uuid.uuid4().hex}")
        try:
            reply = self.decoder.run(local, self.config, {"dst": tmp, "encode": self.encode})
            if reply["ok"]:
                try:
                    self._commit_video(tmp, uri)
                    self.encode_s += reply["result"]["encode"]["encode_s"]
                    self.cpu_s += reply["result"]["cpu_s"]
                except OSError as err:
                    reply = {"ok": False, "stage": "encode", "error": f"write failed: {storage.redact(str(err))}"}
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return reply, {**row, "path": uri, "video": f"{prepared.VIDEOS_DIR}/{name}", "source": row["video"]}

    def _commit_video(self, tmp: str, uri: str) -> None:
        if storage.is_s3(uri):
            with open(tmp, "rb") as f:
                storage.write_bytes_atomic(uri, f.read(), endpoint=self.endpoint)
        else:
            os.replace(tmp, uri)

    def marker_extra(self, done: list[dict]) -> dict[str, Any]:
        """The part's prepared videos ([source line, manifest path, label, source path]) and
        its encoding seconds and decoder-process CPU seconds; the driver writes the new
        manifest from these."""
        extra = {"prepared": [[r["line"], r["video"], r["label"], r["source"]] for r in done],
                 "encode_s": round(self.encode_s, 4), "cpu_s": round(self.cpu_s, 4)}
        self.encode_s = self.cpu_s = 0.0
        return extra


def manifest_text(entries: list[list]) -> str:
    """The new manifest: CSV `path,label,source`, paths relative to it, in source order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "source"])
    for _, path, label, source in sorted(entries, key=lambda e: e[0]):
        writer.writerow([path, label, source])
    return buffer.getvalue()


def _versions() -> dict[str, str]:
    import av

    from pipeline.vocab import git_commit

    codec = av.library_versions.get("libavcodec")
    return {"mgtc": git_commit(short=True), "av": av.__version__,
            "libavcodec": ".".join(map(str, codec)) if codec else "unknown"}


def run_prepare(manifest: str, out: str, cfg: PrecomputeConfig, encode: reencode.EncodeSettings,
                log: Callable[[str], None] = print, rates_given: bool = True) -> Summary:
    """Run (or resume) `mgtc prepare`; returns the summary of the whole output. `cfg`:
    shard and execution settings, sampling rates in source frames."""
    shard_cfg = shard_config(cfg, encode.stride, rates_given)
    settings = settings_record(encode)
    kind = JobKind(name="prepare", worker=PrepareWorker,
                   worker_kwargs={"encode": dataclasses.asdict(encode)},
                   meta={prepared.SETTINGS_KEY: settings,
                         "source_sampling_rates": [int(s) for s in cfg.sampling_rates
                                                   if s % encode.stride == 0]})
    if encode.short_side and shard_cfg.short_side > encode.short_side:
        raise ConfigError(f"short_side={shard_cfg.short_side} of the shards (data.short_side) is above "
                          f"--short-side {encode.short_side} of the videos: the trainer would upscale them")
    # Temporary files of a killed run (never those of a running actor: none has started).
    storage.delete_hidden(storage.join(storage.normalize(out), prepared.VIDEOS_DIR))
    summary = run_precompute(manifest, out, shard_cfg, log, kind)
    out = storage.normalize(out)
    endpoint = cfg.s3_endpoint or None
    markers = shards.read_markers(out, shards.committed_parts(out))
    entries = [e for m in markers.values() for e in m.get("prepared", [])]
    storage.write_bytes_atomic(storage.join(out, prepared.MANIFEST_FILE), manifest_text(entries).encode(),
                               endpoint=endpoint)
    meta = {
        prepared.SETTINGS_KEY: settings,
        "manifest": prepared.MANIFEST_FILE,
        "source_manifest": shards.read_meta(out)["manifest"],  # uri, sha256, lines
        "shard_sampling_rates": list(shard_cfg.sampling_rates),
        "source_sampling_rates": kind.meta["source_sampling_rates"],
        "shard_short_side": shard_cfg.short_side,
        "videos": {"listed": len(entries), "failed": summary.failed, "source_lines": summary.videos},
        "encode_s": round(sum(m.get("encode_s", 0.0) for m in markers.values()), 3),
        "complete": summary.complete,
        "versions": _versions(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json_atomic(storage.join(out, prepared.META_FILE), meta, endpoint=endpoint)
    return summary
