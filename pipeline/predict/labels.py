"""Class names for predictions: read from a label file, in class-index order.

Accepted files (local or s3://), detected from the content:
- UCF101's `classInd.txt`: `1 ApplyEyeMakeup` per line (1-based indices, as shipped);
- plain text: one name per line, line i = class i (what `mgtc synth` writes as
  `classes.txt` and `mgtc manifest convert --classes-out` writes);
- JSON: a list of names, `{"name": index}` (Something-Something v2's labels file) or
  `{"index": "name"}`;
- CSV: `index,name` or `name,index` rows (a header row is skipped), or one name per row.
Indices must cover 0..C-1 (1..C for classInd) without gaps: a file that names fewer
classes than the model has is refused where it is checked (`check_class_count`).
"""

from __future__ import annotations

import csv
import io
import json

from pipeline import storage

# Beside a training manifest, these are taken as its class names (first found wins).
CLASS_FILES = ("classes.txt", "classInd.txt", "classes.json", "classes.csv")


class LabelsError(ValueError):
    """A label file that cannot give class names, or one that does not fit the model."""


def _dense(entries: dict[int, str], source: str, base: int) -> list[str]:
    """{index: name} -> names in index order; indices must be base..base+C-1."""
    if sorted(entries) != list(range(base, base + len(entries))):
        raise LabelsError(f"labels {source}: class indices must be {base}..{base + len(entries) - 1} without gaps")
    return [entries[i] for i in range(base, base + len(entries))]


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def parse_class_names(text: str, source: str = "<labels>") -> list[str]:
    """The class names of a label file's text, by 0-based class index (see module doc)."""
    text = text.lstrip("\ufeff")
    stripped = text.strip()
    if not stripped:
        raise LabelsError(f"labels {source}: file is empty")
    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise LabelsError(f"labels {source}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if isinstance(data, list) and all(isinstance(n, str) for n in data):
            return list(data)
        if isinstance(data, dict) and data:
            if all(_is_int(str(v)) for v in data.values()):
                return _dense({int(v): str(k) for k, v in data.items()}, source, 0)
            if all(_is_int(str(k)) for k in data):
                return _dense({int(k): str(v) for k, v in data.items()}, source, 0)
        raise LabelsError(f"labels {source}: JSON must be a list of names, {{name: index}} or {{index: name}}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if any("," in ln for ln in lines):
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO("\n".join(lines))) if r]
        if rows and len(rows[0]) >= 2 and not any(_is_int(c) for c in rows[0][:2]):
            rows = rows[1:]  # header
        if rows and all(len(r) >= 2 for r in rows):
            if all(_is_int(r[0]) for r in rows):
                return _dense({int(r[0]): r[1] for r in rows}, source, 0)
            if all(_is_int(r[1]) for r in rows):
                return _dense({int(r[1]): r[0] for r in rows}, source, 0)
        if all(len(r) == 1 for r in rows):
            return [r[0] for r in rows]
        raise LabelsError(f"labels {source}: CSV rows must be 'index,name', 'name,index' or one name")
    split = [ln.split(maxsplit=1) for ln in lines]
    if all(len(s) == 2 and _is_int(s[0]) for s in split):
        entries = {int(s[0]): s[1] for s in split}
        return _dense(entries, source, min(entries))  # classInd.txt is 1-based
    return lines


def read_class_names(uri: str) -> list[str]:
    """Class names of the label file at `uri` (local or s3://); LabelsError when unusable."""
    if not storage.exists(uri):
        raise LabelsError(f"labels {storage.redact(uri)}: no such file")
    text = storage.read_bytes(uri).decode("utf-8", errors="replace")
    return parse_class_names(text, storage.redact(uri))


def names_beside(manifest: str) -> tuple[list[str], str] | None:
    """(class names, file) of the first CLASS_FILES entry beside `manifest`, or None."""
    if not manifest:
        return None
    folder = storage.parent(storage.normalize(manifest))
    for name in CLASS_FILES:
        uri = storage.join(folder, name)
        if storage.exists(uri):
            return read_class_names(uri), uri
    return None


def check_class_count(names: list[str], num_classes: int, source: str) -> None:
    """LabelsError unless `names` has exactly `num_classes` entries."""
    if len(names) != num_classes:
        raise LabelsError(
            f"labels {source} name {len(names)} classes, the checkpoint's head has {num_classes}: "
            "another data set's label file?"
        )
