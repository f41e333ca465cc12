"""URIs, atomic writes and S3 (moto's real server over HTTP on 127.0.0.1)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline import storage


def test_join_parent_normalize(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.join("s3://b/p/", "x", "y.parquet") == "s3://b/p/x/y.parquet"
    assert storage.parent("s3://b/p/list.txt") == "s3://b/p"
    assert storage.normalize("rel/a.mp4") == str(tmp_path / "rel" / "a.mp4")
    assert storage.normalize("file:///abs/a.mp4") == "/abs/a.mp4"
    assert storage.join(str(tmp_path), "a") == str(tmp_path / "a")
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/s3/b")


def test_redact_hides_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3tVALUE")
    msg = ("failed s3cr3tVALUE https://u:pw@host/x?X-Amz-Signature=abc&secret_key=zzz "
           "access_key=AKIA123")
    out = storage.redact(msg)
    for secret in ("s3cr3tVALUE", "pw@", "abc", "zzz", "AKIA123"):
        assert secret not in out
    assert "https://***@host" in out


def test_atomic_local_write_leaves_no_temp_and_lists_only_complete(tmp_path):
    target = str(tmp_path / "d" / "f.json")
    storage.write_json_atomic(target, {"a": 1})
    storage.write_json_atomic(target, {"a": 2})  # replace
    assert storage.read_json(target) == {"a": 2}
    (tmp_path / "d" / ".g.json.tmp-dead").write_text("partial")  # a killed writer's leftover
    assert storage.list_dir(str(tmp_path / "d")) == ["f.json"]
    assert storage.delete_hidden(str(tmp_path / "d")) == 1
    assert sorted(os.listdir(tmp_path / "d")) == ["f.json"]
    assert storage.list_dir(str(tmp_path / "nope")) == []


def test_parquet_round_trip_local(tmp_path):
    table = pa.table({"x": [1, 2, 3]})
    uri = str(tmp_path / "t.parquet")
    assert storage.write_table_atomic(uri, table) > 0
    assert storage.read_table(uri).equals(table)


@pytest.mark.integration
def test_s3_round_trip_over_http(s3_bucket, tmp_path):
    base = f"s3://{s3_bucket}/run"
    storage.write_bytes_atomic(storage.join(base, "a", "x.bin"), b"payload")
    storage.write_table_atomic(storage.join(base, "a", "t.parquet"), pa.table({"v": [1.5]}))
    assert storage.exists(storage.join(base, "a", "x.bin"))
    assert not storage.exists(storage.join(base, "a", "missing"))
    assert storage.list_dir(storage.join(base, "a")) == ["t.parquet", "x.bin"]
    assert storage.read_table(storage.join(base, "a", "t.parquet")).column("v").to_pylist() == [1.5]
    assert storage.file_size(storage.join(base, "a", "x.bin")) == 7
    with storage.download_to_temp(storage.join(base, "a", "x.bin"), dir=str(tmp_path)) as local:
        assert open(local, "rb").read() == b"payload"
    assert list(tmp_path.iterdir()) == []  # the temporary copy is gone
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.read_bytes(storage.join(base, "nothing"))
    storage.delete(storage.join(base, "a", "x.bin"))
    assert storage.list_dir(storage.join(base, "a")) == ["t.parquet"]


@pytest.mark.integration
def test_s3_endpoint_argument_overrides_env(s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    uri = f"s3://{s3_bucket}/e.bin"
    storage.write_bytes_atomic(uri, b"1", endpoint=s3_server)
    assert storage.read_bytes(uri, endpoint=s3_server) == b"1"
