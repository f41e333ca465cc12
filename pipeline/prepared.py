"""Prepared data sets (`mgtc prepare`): where their files are, and which configs they serve.

A prepare output is a precompute output (shards/, rows/, errors/, _parts/, _precompute.json)
plus the re-encoded videos, a manifest of them and `_prepare.json`:

    OUT/videos/<source line>-<name>.mp4   the re-encoded videos (the source is never touched)
    OUT/manifest.csv                      path,label,source: the videos that succeeded, in
                                          source order, with the source labels
    OUT/_prepare.json                     settings (short_side, keyint, stride, crf, preset),
                                          source manifest, counts, versions

Frame j of a video prepared with stride k is source frame j*k. Configs keep
`data.sampling_rate` in source frames (16x4 stays 16x4) and say `data.video_stride: k`;
the clips then read every (sampling_rate / k)-th frame of the files, and the shards (in
frames of the files, like everything precompute writes) hold rate sampling_rate / k.
`problems` is the rule, used before Ray starts (`preflight`) and by `clips.check_shards`.
"""

from __future__ import annotations

from typing import Any

from pipeline import storage

META_FILE = "_prepare.json"
VIDEOS_DIR = "videos"
MANIFEST_FILE = "manifest.csv"
# The keys of `_precompute.json` / `_prepare.json` that describe the encoding.
SETTINGS_KEY = "prepare"


def problems(data, settings: dict[str, Any] | None, where: str) -> list[str]:
    """What keeps the data config `data` (a DataConfig) from reading videos prepared with
    `settings` (the `prepare` entry of the output's metadata; None: source videos), one line
    each, naming both values; [] when it fits. `where` names the data in the messages."""
    out: list[str] = []
    if settings is None:
        if data.video_stride != 1:
            out.append(f"data.video_stride={data.video_stride}, but {where} holds source videos, not "
                       "videos prepared with --stride: set data.video_stride=1")
        return out
    stride, short = int(settings.get("stride", 1)), int(settings.get("short_side", 0))
    if data.video_stride != stride:
        out.append(
            f"data.video_stride={data.video_stride}, but {where} was prepared with --stride {stride} "
            f"(its videos keep one source frame in {stride}): set data.video_stride={stride} "
            f"(data.sampling_rate stays in source frames)")
    if data.sampling_rate % stride:
        out.append(
            f"data.sampling_rate={data.sampling_rate} (source frames) is not a multiple of the --stride "
            f"{stride} {where} was prepared with: its videos hold only one source frame in {stride}; "
            f"use a sampling rate in {stride}, {2 * stride}, ... or prepare the source again")
    if short and data.short_side > short:
        out.append(
            f"data.short_side={data.short_side}, but {where} was prepared at --short-side {short} "
            f"(frames would be upscaled): use data.short_side <= {short} or prepare at that size")
    return out


def read_settings(folder: str, *, endpoint: str | None = None) -> dict[str, Any] | None:
    """The `prepare` settings of a prepare output folder (or of the folder of its manifest),
    None when the folder holds no `_prepare.json` (source videos)."""
    uri = storage.join(storage.normalize(folder), META_FILE)
    if not storage.exists(uri, endpoint=endpoint):
        return None
    return storage.read_json(uri, endpoint=endpoint).get(SETTINGS_KEY)
