"""Manifests: VideoMAE list files and CSVs; every line becomes exactly one row."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, parse_manifest, parse_label, read_manifest, resolve_path


def test_videomae_list_relative_absolute_s3():
    text = "a/x.mp4 3\n/abs/y.mp4 0\n\ns3://bkt/z.mp4 7\n../up.mp4 1\n"
    rows = parse_manifest(text, "/data/k400")
    assert [(r.line, r.video, r.path, r.label, r.error) for r in rows] == [
        (1, "a/x.mp4", "/data/k400/a/x.mp4", 3, ""),
        (2, "/abs/y.mp4", "/abs/y.mp4", 0, ""),
        (4, "s3://bkt/z.mp4", "s3://bkt/z.mp4", 7, ""),
        (5, "../up.mp4", "/data/up.mp4", 1, ""),
    ]


def test_relative_paths_on_an_s3_manifest():
    rows = parse_manifest("v/a.mp4 1\n../b.mp4 2\n", "s3://bkt/lists")
    assert [r.path for r in rows] == ["s3://bkt/lists/v/a.mp4", "s3://bkt/b.mp4"]


def test_bad_lines_become_error_rows_not_exceptions():
    text = ("ok.mp4 1\nbad_label.mp4 cat\nfloat.mp4 1.0\nneg.mp4 -1\n"
            "has space.mp4 2\nonly_path.mp4\nhttp://host/v.mp4 1\nok.mp4 4\n")
    rows = parse_manifest(text, "/d")
    errors = {r.video: r.error for r in rows[:-1]}
    assert len(rows) == 8  # every non-blank line is a row
    assert errors["ok.mp4"] == "" and rows[0].label == 1
    assert errors["bad_label.mp4"].startswith("bad label")
    assert errors["float.mp4"].startswith("bad label")
    assert errors["neg.mp4"].startswith("bad label")
    assert errors["has space.mp4 2"].startswith("bad line") and "spaces" in errors["has space.mp4 2"]
    assert errors["only_path.mp4"].startswith("bad line")
    assert errors["http://host/v.mp4"].startswith("bad path: unsupported URI scheme")
    assert rows[-1].error == "duplicate: same video as line 1"
    assert rows[1].label is None


def test_unreadable_path_characters():
    raw = b"ok.mp4 1\nbad\xff\xfe.mp4 2\nctl\x07.mp4 3\nvid\xc3\xa9o_'\"x.mp4 4\n"
    rows = parse_manifest(raw.decode("utf-8", "surrogateescape"), "/d")
    assert rows[1].error.startswith("bad path: not valid UTF-8")
    assert rows[1].video == "bad\\xff\\xfe.mp4"  # printable, valid UTF-8 for Parquet
    assert rows[2].error.startswith("bad path: control character")
    assert rows[3].error == "" and rows[3].path == "/d/vidéo_'\"x.mp4"


def test_csv_with_header_and_named_columns():
    text = "label,video_path,split\n2,a.mp4,train\n,b.mp4,train\n5,\"c,d.mp4\",val\n"
    rows = parse_manifest(text, "/d")
    assert [(r.line, r.path, r.label) for r in rows] == [
        (2, "/d/a.mp4", 2), (3, "/d/b.mp4", None), (4, "/d/c,d.mp4", 5)]
    assert rows[1].error.startswith("bad label")
    custom = parse_manifest("clip;x\nfile,cls\nq.mp4,1\n".split("\n", 1)[1], "/d",
                            path_column="file", label_column="cls")
    assert [(r.path, r.label) for r in custom] == [("/d/q.mp4", 1)]
    with pytest.raises(ManifestError, match="no column"):
        parse_manifest("a.mp4 1\n", "/d", path_column="file")
    with pytest.raises(ManifestError, match="no lines"):
        parse_manifest("\n\n", "/d")


def test_parse_label_and_resolve_path():
    assert parse_label(" 12 ") == 12
    for bad in ("", "1e3", "٣", "x"):
        with pytest.raises(ValueError, match="bad label"):
            parse_label(bad)
    with pytest.raises(ValueError, match="names no object"):
        resolve_path("s3://bucket-only", "/d")
    assert resolve_path("file:///x/y.mp4", "/d") == "/x/y.mp4"


def test_read_manifest_resolves_against_its_folder(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text("videos/a.mp4 0\n")
    rows = read_manifest(str(tmp_path / "lists" / "train.csv"))
    assert rows[0].path == str(tmp_path / "lists" / "videos" / "a.mp4")
