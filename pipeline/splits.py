"""Official split files of the benchmark data sets -> our manifests (`path,label` CSV, labels
0-based). `mgtc manifest convert <kind> ...` (jobs/manifest.py) is the command line.

- UCF101 (`ucfTrainTestlist/`): `trainlistNN.txt` lines `Class/v_Class_g08_c01.avi 1`
  (1-based labels), `testlistNN.txt` lines `Class/v_Class_g01_c01.avi` (no label),
  `classInd.txt` lines `1 ApplyEyeMakeup`. The label is classInd's index of the folder
  name minus 1; a trainlist label that disagrees with classInd is an error.
- HMDB51 (`testTrainMulti_7030_splits/`): one `<class>_test_split<N>.txt` per class and
  split, lines `<video>.avi <id>` with 1 = train, 2 = test, 0 = unused. Classes are
  indexed in sorted name order (51 classes); videos live in `<videos>/<class>/<video>`.
- Kinetics CSV (`label,youtube_id,time_start,time_end,split[,is_cc]`): the video is
  `<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`, flat in `<videos>/` (cvdfoundation
  layout) or in `<videos>/<label>/` (`layout="by_label"`). Classes are indexed in sorted name
  order of the CSV, or by a class list file (one name per line) so train and val agree.
- Something-Something v2: `something-something-v2-labels.json` (`{"Template name": "idx"}`)
  and the train / validation JSON (`[{"id": "78687", "template": "Holding [something] ..."}]`);
  the video is `<videos>/<id>.webm`, the label the template with brackets removed.

Every converter returns `(rows, classes)`: rows `(path, label)` in file order, classes the
names by index. Problems raise SplitError naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from pipeline import storage

KINDS = ("ucf101", "hmdb51", "kinetics", "ssv2")


class SplitError(ValueError):
    """An official split file that cannot be converted; names the file and line."""


def _lines(path: str | Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of non-blank, non-comment lines."""
    text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    return [(i, ln.strip()) for i, ln in enumerate(text.lstrip("\ufeff").splitlines(), 1)
            if ln.strip() and not ln.lstrip().startswith("#")]


def _video(videos: str, *parts: str) -> str:
    return storage.join(storage.normalize(videos), *parts)


def read_class_ind(path: str | Path) -> list[str]:
    """UCF101's classInd.txt (`1 ApplyEyeMakeup` ...) -> names by 0-based index."""
    entries = {}
    for line, text in _lines(path):
        fields = text.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise SplitError(f"{path}:{line}: expected '<index> <ClassName>', got {text!r}")
        entries[int(fields[0])] = fields[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise SplitError(f"{path}: class indices must be 1..{len(entries)} (1-based, as shipped)")
    return [entries[i] for i in range(1, len(entries) + 1)]


def ucf101(split_file: str | Path, videos: str, class_ind: str | Path | None = None):
    """UCF101 trainlist / testlist -> (rows, classes); classInd.txt defaults to the split
    file's folder."""
    split_file = Path(split_file)
    class_ind = Path(class_ind) if class_ind else split_file.parent / "classInd.txt"
    if not class_ind.is_file():
        raise SplitError(f"{class_ind}: no such file (UCF101's classInd.txt, needed for the labels)")
    classes = read_class_ind(class_ind)
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for line, text in _lines(split_file):
        fields = text.split()
        name = fields[0].replace("\\", "/").split("/")[0]
        if name not in index or len(fields) > 2:
            raise SplitError(f"{split_file}:{line}: {text!r}: expected '<Class>/<video>.avi [label]' "
                             f"with a class of {class_ind.name}")
        label = index[name]
        if len(fields) == 2 and fields[1] != str(label + 1):
            raise SplitError(f"{split_file}:{line}: label {fields[1]} disagrees with {class_ind.name} "
                             f"({name} is {label + 1}, 1-based)")
        rows.append((_video(videos, fields[0].replace("\\", "/")), label))
    return rows, classes


_HMDB = re.compile(r"^(.+)_test_split(\d+)\.txt$")


def hmdb51(splits_dir: str | Path, videos: str, split: int, subset: str):
    """HMDB51 split folder -> (rows, classes) of `subset` ('train' = 1, 'test' = 2) of split N."""
    wanted = {"train": "1", "test": "2"}[subset]
    files = sorted(p for p in Path(splits_dir).iterdir() if (m := _HMDB.match(p.name)) and m[2] == str(split))
    if not files:
        raise SplitError(f"{splits_dir}: no <class>_test_split{split}.txt files (HMDB51's testTrainMulti_7030_splits)")
    classes = sorted(_HMDB.match(p.name)[1] for p in files)
    rows = []
    for path in files:
        name = _HMDB.match(path.name)[1]
        for line, text in _lines(path):
            fields = text.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise SplitError(f"{path}:{line}: expected '<video>.avi <0|1|2>', got {text!r}")
            if fields[1] == wanted:
                rows.append((_video(videos, name, fields[0]), classes.index(name)))
    return rows, classes


def kinetics(csv_file: str | Path, videos: str, classes_file: str | Path | None = None, layout: str = "flat"):
    """Kinetics annotation CSV -> (rows, classes)."""
    text = Path(csv_file).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not need <= set(reader.fieldnames or ()):
        raise SplitError(f"{csv_file}: header {reader.fieldnames}: a Kinetics CSV needs columns {sorted(need)}")
    records = list(reader)
    if classes_file:
        classes = [t for _, t in _lines(classes_file)]
    else:
        classes = sorted({r["label"] for r in records})
    index = {name: i for i, name in enumerate(classes)}
    rows = []
    for line, r in enumerate(records, 2):
        if r["label"] not in index:
            raise SplitError(f"{csv_file}:{line}: label {r['label']!r} is not in {classes_file}")
        try:
            name = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4"
        except ValueError:
            raise SplitError(f"{csv_file}:{line}: time_start / time_end must be integers") from None
        parts = (r["label"], name) if layout == "by_label" else (name,)
        rows.append((_video(videos, *parts), index[r["label"]]))
    return rows, classes


def ssv2(split_json: str | Path, labels_json: str | Path, videos: str):
    """Something-Something v2 train / validation JSON + labels JSON -> (rows, classes)."""
    labels = json.loads(Path(labels_json).read_text())
    if not isinstance(labels, dict):
        raise SplitError(f"{labels_json}: expected {{'Template name': 'index'}} (something-something-v2-labels.json)")
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    entries = json.loads(Path(split_json).read_text())
    rows = []
    for i, entry in enumerate(entries):
        if "template" not in entry:
            raise SplitError(f"{split_json}: entry {i} ({entry.get('id')!r}) has no template: "
                             "the test JSON has no labels")
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in labels:
            raise SplitError(f"{split_json}: entry {i}: template {template!r} is not in {labels_json}")
        rows.append((_video(videos, f"{entry['id']}.webm"), int(labels[template])))
    return rows, classes


def write_csv(rows: list[tuple[str, int]], out: str) -> None:
    """A `path,label` CSV manifest (quoted as needed: Kinetics paths hold spaces and commas)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    storage.write_bytes_atomic(out, buf.getvalue().encode("utf-8"))
