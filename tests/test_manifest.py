"""Manifests: VideoMAE list files and CSVs; every line becomes exactly one row."""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, check_labels, parse_label, parse_manifest, read_manifest, resolve_path


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
    with pytest.raises(ManifestError, match="names no known columns: expected path column .file."):
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


# ------------------------------------------------------------------------------------------
# Issue 13: comments, unknown CSV headers, labels vs data.num_classes, official split files


def test_comment_and_blank_lines_are_skipped_not_bad_labels():
    rows = parse_manifest("# my videos\n\na.mp4 1\n   # indented comment\nb.mp4 2\n", "/d")
    assert [(r.line, r.video, r.error) for r in rows] == [(3, "a.mp4", ""), (5, "b.mp4", "")]
    rows = parse_manifest("# exported 2026-12-02\npath,label\n# none yet\nx.mp4,0\n", "/d")
    assert [(r.line, r.path, r.label, r.error) for r in rows] == [(4, "/d/x.mp4", 0, "")]


def test_csv_with_unknown_header_names_the_expected_columns():
    with pytest.raises(ManifestError, match=r"names no known columns: expected a path column "
                                            r"\(path, video.*\) and a label column \(label, class"):
        parse_manifest("clip_file,category\na.mp4,3\n", "/d")
    with pytest.raises(ManifestError, match=r"Kinetics CSV.*mgtc manifest convert kinetics"):
        parse_manifest("label,youtube_id,time_start,time_end,split\nabseiling,abc,0,10,train\n", "/d")
    # a list file whose first path holds a comma is still a list file
    assert parse_manifest("a,b.mp4 3\n", "/d")[0].label == 3


def test_labels_are_checked_against_num_classes_naming_the_line():
    rows = parse_manifest("a.mp4 0\nb.mp4 7\nc.mp4 99\nd.mp4 8\n", "/d")
    check_labels(rows, 100, "train.txt")
    with pytest.raises(ManifestError, match=r"train\.txt: 2 labels outside data\.num_classes=8 .*"
                                            r"line 3 \(c\.mp4\): label 99 is not in 0\.\.7; line 4"):
        check_labels(rows, 8, "train.txt")


@pytest.mark.parametrize("name", ["trainlist01.txt", "testlist03.txt", "classInd.txt",
                                  "brush_hair_test_split1.txt", "something-something-v2-train.json"])
def test_official_split_files_are_refused_pointing_to_convert(tmp_path, name):
    path = tmp_path / name
    path.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    with pytest.raises(ManifestError, match=r"mgtc manifest convert (ucf101|hmdb51|ssv2)"):
        read_manifest(str(path))


def _ucf(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g08_c01.avi 3\r\n\r\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\nYoYo/v_YoYo_g01_c02.avi\n")
    return lists


def test_convert_ucf101_train_and_test_lists(tmp_path, capsys):
    from jobs import manifest as job

    lists = _ucf(tmp_path)
    videos = tmp_path / "UCF-101"
    out = tmp_path / "train.csv"
    assert job.main(["convert", "ucf101", str(lists / "trainlist01.txt"), "--videos", str(videos),
                     "--out", str(out)]) == 0
    assert "data.num_classes=3" in capsys.readouterr().out
    rows = read_manifest(str(out))
    assert [(r.path, r.label, r.error) for r in rows] == [
        (str(videos / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"), 0, ""),
        (str(videos / "YoYo/v_YoYo_g08_c01.avi"), 2, "")]  # 1-based as shipped -> 0-based
    check_labels(rows, 3, str(out))
    assert job.main(["convert", "ucf101", str(lists / "testlist01.txt"), "--videos", str(videos),
                     "--out", str(tmp_path / "test.csv")]) == 0
    assert [r.label for r in read_manifest(str(tmp_path / "test.csv"))] == [1, 2]  # from classInd
    (lists / "trainlist02.txt").write_text("Archery/v_Archery_g08_c01.avi 1\n")
    assert job.main(["convert", "ucf101", str(lists / "trainlist02.txt"), "--videos", str(videos),
                     "--out", str(tmp_path / "x.csv")]) == 2
    assert "trainlist02.txt:1: label 1 disagrees with classInd.txt (Archery is 2, 1-based)" in capsys.readouterr().err


def test_convert_hmdb51_kinetics_and_ssv2(tmp_path):
    from pipeline import splits

    hmdb = tmp_path / "testTrainMulti_7030_splits"
    hmdb.mkdir()
    (hmdb / "wave_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (hmdb / "brush_hair_test_split1.txt").write_text("b1.avi 2 \nb2.avi 1 \n")
    (hmdb / "brush_hair_test_split2.txt").write_text("b1.avi 1 \nb2.avi 2 \n")
    rows, classes = splits.hmdb51(hmdb, "/v", 1, "train")
    assert classes == ["brush_hair", "wave"] and rows == [("/v/brush_hair/b2.avi", 0), ("/v/wave/w1.avi", 1)]
    assert splits.hmdb51(hmdb, "/v", 1, "test")[0] == [("/v/brush_hair/b1.avi", 0), ("/v/wave/w2.avi", 1)]

    k400 = tmp_path / "train.csv"
    k400.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                    "air drumming,--6bJUbfpnQ,17,27,train,0\nabseiling,-3B32lodo2M,59,69,train,0\n")
    rows, classes = splits.kinetics(k400, "/k", layout="by_label")
    assert classes == ["abseiling", "air drumming"]
    assert rows == [("/k/air drumming/--6bJUbfpnQ_000017_000027.mp4", 1), ("/k/abseiling/-3B32lodo2M_000059_000069.mp4", 0)]
    out = tmp_path / "k.csv"
    splits.write_csv(rows, str(out))
    assert [(r.path, r.label, r.error) for r in read_manifest(str(out))] == [(p, lab, "") for p, lab in rows]

    labels = tmp_path / "something-something-v2-labels.json"
    labels.write_text('{"Approaching something with your camera": "0", "Holding something next to something": "1"}')
    train = tmp_path / "something-something-v2-train.json"
    train.write_text('[{"id": "78687", "label": "holding potato next to vicks", '
                     '"template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks"]}]')
    assert splits.ssv2(train, labels, "/s") == ([("/s/78687.webm", 1)], ["Approaching something with your camera",
                                                                        "Holding something next to something"])
    test = tmp_path / "something-something-v2-test.json"
    test.write_text('[{"id": "1420"}]')
    with pytest.raises(splits.SplitError, match="has no template: the test JSON has no labels"):
        splits.ssv2(test, labels, "/s")


def test_fuzzed_manifest_lines_each_end_in_one_row_with_a_reason():
    """Random bytes, unicode and labels (seeded, bounded) in list files: every non-blank,
    non-comment line becomes exactly one row, usable (absolute path, label >= 0) or with a
    reason (SHARDS.md: "every manifest line ends in exactly one of the two tables")."""
    import random

    rng = random.Random(13)
    alphabet = ["a", "é", "名", " ", "\t", "#", "/", ".", "\\", "'", "\x00", "\x07", "@", ":", "s3://", "../"]
    for _ in range(300):
        lines = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.3:
                path = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            elif kind < 0.6:
                path = rng.randbytes(rng.randint(1, 10)).decode("utf-8", "surrogateescape").replace(",", ";")
            else:
                path = f"v{rng.randint(0, 50)}.mp4"
            label = rng.choice([str(rng.randint(-3, 120)), "x", "1.0", "", "٣", " 7 "])
            lines.append(f"{path} {label}")
        text = "\n".join(lines)
        kept = [i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
        if not kept:
            with pytest.raises(ManifestError, match="no lines"):
                parse_manifest(text, "/d")
            continue
        rows = parse_manifest(text, "/d")
        assert [r.line for r in rows] == kept, text
        for r in rows:
            if r.error:
                assert r.error.split(":")[0] in ("bad line", "bad label", "bad path", "duplicate"), r
            else:
                assert r.label is not None and r.label >= 0 and r.path.startswith(("/", "s3://")), r
