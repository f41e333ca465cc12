"""Manifests: the videos of a data set and their labels.

Two formats, detected from the first non-blank line:
- VideoMAE list file (`train.csv`/`val.csv` in VideoMAE, despite the name): one video per
  line, `<path> <label>` separated by whitespace; paths cannot contain spaces.
- CSV with a header naming the path column (`path`, `video`, `video_path`, `filename`,
  `file` or `uri`) and the label column (`label`, `class`, `label_id`, `class_id`,
  `target`); other columns are ignored. `path_column=` / `label_column=` pick others.

A path may be absolute, `s3://...`, or relative to the manifest's folder (also when the
manifest itself is on S3). Blank lines and comment lines (first non-blank character `#`)
are skipped; every other line becomes one `ManifestRow`; a line that cannot name a video
and a label (bad label, unreadable path, duplicate) gets `error` set instead of raising,
so one bad line never sinks a job of 240k videos.

Labels are 0-based class indices. The official split files of UCF101 (`trainlistNN.txt`,
1-based, `testlistNN.txt`, no labels), HMDB51 (`<class>_test_splitN.txt`), Kinetics CSVs
(`youtube_id`, `time_start`, `time_end`) and Something-Something v2's JSON files are not
manifests: reading one is a ManifestError naming the `mgtc manifest convert` command that
turns it into a list file (`pipeline/splits.py`), never a silent off-by-one.
`check_labels` tests labels against `data.num_classes`.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from dataclasses import dataclass

from pipeline import storage

PATH_COLUMNS = ("path", "video", "video_path", "filename", "file", "uri")
LABEL_COLUMNS = ("label", "class", "label_id", "class_id", "target")
SUPPORTED_SCHEMES = ("s3", "file")


class ManifestError(ValueError):
    """A manifest that is unusable as a whole (empty, its CSV header lacks a column, an
    official split file that needs converting, labels outside the class count)."""


_CONVERT = "convert it to a list file first: mgtc manifest convert {kind} ... (docs/SHARDS.md, Manifests)"
_OFFICIAL_NAMES = (
    (re.compile(r"^(train|test)list\d+\.txt$", re.I), "ucf101", "UCF101's official split file (labels 1-based or absent)"),
    (re.compile(r"^classind\.txt$", re.I), "ucf101", "UCF101's class index, not a manifest"),
    (re.compile(r"^.+_test_split\d+\.txt$", re.I), "hmdb51", "an HMDB51 official split file (1 = train, 2 = test)"),
    (re.compile(r"\.json$", re.I), "ssv2", "a JSON file (Something-Something v2 labels?)"),
)


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line.

    line: 1-based line number in the manifest (the CSV header is line 1).
    video: the path exactly as written (undecodable bytes shown as backslash escapes).
    path: resolved URI (absolute local path or s3://...); "" when it cannot be resolved.
    label: integer class label, or None when the line has none that parses.
    error: "" for a usable row, else "<reason>: <detail>" (stage "manifest").
    """

    line: int
    video: str
    path: str
    label: int | None
    error: str = ""


def printable(text: str) -> str:
    """`text` as valid UTF-8 for Parquet and logs: bytes that were not UTF-8 (kept as
    surrogates when the manifest was read) become backslash escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def parse_label(text: str) -> int:
    """A class label: a non-negative integer written as one ('3', not '3.0' or 'cat')."""
    text = text.strip()
    if not text.lstrip("+").isdigit() or not text.isascii():
        raise ValueError(f"bad label: {printable(text)!r} is not a non-negative integer")
    return int(text)


def resolve_path(video: str, base: str) -> str:
    """URI of a manifest path: absolute and s3:// as they are, relative ones joined to the
    manifest's folder `base`. Raises ValueError('bad path: ...') for unreadable paths."""
    if not video:
        raise ValueError("bad path: empty")
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in video):
        raise ValueError(f"bad path: not valid UTF-8: {printable(video)!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in video):
        raise ValueError(f"bad path: control character in {printable(video)!r}")
    scheme, sep, _ = video.partition("://")
    if sep:
        if scheme.lower() not in SUPPORTED_SCHEMES:
            raise ValueError(f"bad path: unsupported URI scheme {scheme!r} (use a local path or s3://)")
        if storage.has_userinfo(video):
            raise ValueError(f"bad path: credentials in the URI ({storage.redact(video)}): "
                             "use the AWS credential chain (environment or ~/.aws)")
        if storage.is_s3(video):
            bucket, _, key = video[len(storage.S3_PREFIX):].partition("/")
            if not bucket or not key:
                raise ValueError(f"bad path: {video!r} names no object")
        return storage.normalize(video)
    if storage.is_s3(base):
        bucket, _, prefix = base[len(storage.S3_PREFIX):].partition("/")
        key = posixpath.normpath(posixpath.join("/", prefix, video)).lstrip("/")
        return f"{storage.S3_PREFIX}{bucket}/{key}"
    return os.path.normpath(os.path.join(storage.normalize(base), video))


def _header_columns(header: list[str], path_column: str | None, label_column: str | None):
    """Indices (path, label) in a CSV header, or None when it is not a manifest header."""
    names = [h.strip().lower() for h in header]

    def find(wanted: str | None, candidates: tuple[str, ...]) -> int | None:
        for name in ([wanted.lower()] if wanted else list(candidates)):
            if name in names:
                return names.index(name)
        return None

    p, lab = find(path_column, PATH_COLUMNS), find(label_column, LABEL_COLUMNS)
    return None if p is None or lab is None else (p, lab)


def _row(line: int, video: str, label_text: str, base: str) -> ManifestRow:
    shown = storage.redact(printable(video))
    errors = []
    try:
        path = resolve_path(video, base)
    except ValueError as err:
        path = ""
        errors.append(str(err))
    try:
        label: int | None = parse_label(label_text)
    except ValueError as err:
        label = None
        errors.append(str(err))
    return ManifestRow(line, shown, path, label, "; ".join(errors))


def _mark_duplicates(rows: list[ManifestRow]) -> list[ManifestRow]:
    """A video listed twice is processed once: later lines become error rows."""
    first: dict[str, int] = {}
    out = []
    for row in rows:
        if row.path and not row.error:
            seen = first.setdefault(row.path, row.line)
            if seen != row.line:
                row = ManifestRow(row.line, row.video, row.path, row.label,
                                  f"duplicate: same video as line {seen}")
        out.append(row)
    return out


def parse_manifest(text: str, base: str, *, path_column: str | None = None,
                   label_column: str | None = None) -> list[ManifestRow]:
    """Rows of a manifest's text; `base` is the folder relative paths are resolved against.

    Raises ManifestError only for a manifest that is unusable as a whole (a CSV header that
    names no path/label column when columns were requested, or no rows at all).
    """
    text = text.lstrip("\ufeff")
    lines = ["" if _skipped(ln) else ln for ln in text.splitlines()]
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise ManifestError("manifest has no lines (blank and # comment lines are skipped)")
    header = next(csv.reader([lines[first]]))
    columns = _header_columns(header, path_column, label_column) if len(header) > 1 else None
    if columns is None and (path_column or label_column or _looks_like_header(lines[first], header)):
        names = [h.strip().lower() for h in header]
        if "youtube_id" in names:
            raise ManifestError(f"manifest header {printable(lines[first])!r} is a Kinetics CSV: "
                                + _CONVERT.format(kind="kinetics"))
        wanted = (f"path column {path_column!r}" if path_column else f"a path column ({', '.join(PATH_COLUMNS)})")
        wanted += " and " + (f"label column {label_column!r}" if label_column
                             else f"a label column ({', '.join(LABEL_COLUMNS)})")
        raise ManifestError(f"CSV manifest header {printable(lines[first])!r} names no known columns: "
                            f"expected {wanted}")
    rows: list[ManifestRow] = []
    if columns is not None:
        p, lab = columns
        reader = csv.reader(io.StringIO("\n".join(lines[first + 1:])))
        for record in reader:
            line = first + 1 + reader.line_num
            if not any(field.strip() for field in record):
                continue
            if len(record) <= max(p, lab):
                rows.append(ManifestRow(line, storage.redact(printable(",".join(record))), "", None,
                                        f"bad line: expected {len(header)} CSV fields, got {len(record)}"))
                continue
            rows.append(_row(line, record[p].strip(), record[lab], base))
    else:
        for i, raw in enumerate(lines):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 2:
                rows.append(ManifestRow(
                    i + 1, storage.redact(printable(raw.strip())), "", None,
                    f"bad line: expected '<path> <label>', got {len(fields)} fields "
                    "(paths cannot contain spaces in VideoMAE list files)"))
                continue
            rows.append(_row(i + 1, fields[0], fields[1], base))
    return _mark_duplicates(rows)


def _skipped(line: str) -> bool:
    """Comment lines (`# ...`) count as blank."""
    return line.lstrip().startswith("#")


def _looks_like_header(line: str, fields: list[str]) -> bool:
    """A first line with several comma-separated fields that is not `<path> <label>`."""
    if len(fields) < 2:
        return False
    words = line.split()
    return not (len(words) == 2 and words[1].strip().isdigit())


def check_official(uri: str) -> None:
    """Raise ManifestError when `uri` is named like an official split file (see module doc)."""
    name = storage.basename(uri)
    for pattern, kind, what in _OFFICIAL_NAMES:
        if pattern.search(name):
            raise ManifestError(f"manifest {storage.redact(uri)} is {what}: " + _CONVERT.format(kind=kind))


def label_problems(rows: list[ManifestRow], num_classes: int) -> list[str]:
    """'line N: label L ...' for every usable row whose label is not in [0, num_classes)."""
    return [f"line {r.line} ({r.video}): label {r.label} is not in 0..{num_classes - 1}"
            for r in rows if not r.error and r.label is not None and not 0 <= r.label < num_classes]


def check_labels(rows: list[ManifestRow], num_classes: int, source: str) -> None:
    """Raise ManifestError naming the lines whose label does not fit `num_classes`
    (`data.num_classes`; labels are 0-based). Call it wherever a manifest is read for a
    model: precompute, train, eval, predict. num_classes <= 0 skips the check."""
    if num_classes <= 0:
        return
    bad = label_problems(rows, num_classes)
    if bad:
        more = f" (and {len(bad) - 5} more lines)" if len(bad) > 5 else ""
        raise ManifestError(
            f"manifest {storage.redact(source)}: {len(bad)} labels outside data.num_classes={num_classes} "
            f"(labels are 0-based): " + "; ".join(bad[:5]) + more)


def read_manifest(uri: str, *, path_column: str | None = None, label_column: str | None = None,
                  endpoint: str | None = None) -> list[ManifestRow]:
    """Read and parse a manifest (local path or s3://); see `parse_manifest`. Raises
    ManifestError for an official split file (convert it first) and FileNotFoundError."""
    check_official(uri)
    text = storage.open_text(uri, endpoint=endpoint).getvalue()
    return parse_manifest(text, storage.parent(storage.normalize(uri)),
                          path_column=path_column, label_column=label_column)
