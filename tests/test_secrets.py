"""Credentials written into URIs never reach an output (issue 13, items 5 and 6): MLflow's
store and artifacts, checkpoints, stdout / stderr, Ray's session logs, shards and errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers.videos import make_video

from pipeline import storage
from pipeline.config import ConfigError, flat_params, load_config, redacted
from pipeline.manifest import parse_manifest
from pipeline.tracking import CREDENTIAL_ENV, finish_run, resolve_tracking_uri, start_run, take_credentials

SECRET = "Pw-9f3kQ-zz"


@pytest.fixture
def clean_credentials(monkeypatch):
    """MLflow's basic-auth variables as this test leaves them are removed afterwards."""
    for name in (*CREDENTIAL_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    yield
    for name in CREDENTIAL_ENV:
        os.environ.pop(name, None)


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret` (binary stores included)."""
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and secret.encode() in path.read_bytes():
                hits.append(str(path))
        except OSError:
            pass
    return hits


def test_tracking_uri_credentials_move_to_mlflow_auth_variables(clean_credentials):
    assert take_credentials(f"https://alice:{SECRET}@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET
    assert take_credentials("sqlite:////tmp/a/mlflow.db") == "sqlite:////tmp/a/mlflow.db"


def test_params_and_config_are_redacted():
    cfg = load_config(None, ["data.num_classes=4", "data.train_manifest=t.txt", "masking.strategy=none",
                             f"tracking.tracking_uri=http://alice:{SECRET}@host:5000"])
    assert SECRET not in str(flat_params(cfg)) and SECRET not in str(redacted(cfg))
    assert flat_params(cfg)["tracking.tracking_uri"] == "http://***@host:5000"


def test_credentials_in_data_uris_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.num_classes=4", f"data.shards=s3://key:{SECRET}@bucket/shards"])
    assert "data.shards: credentials in a URI are not supported" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError) as info:
        storage.filesystem_for(f"s3://key:{SECRET}@bucket/x.mp4")
    assert SECRET not in str(info.value)


def test_a_manifest_line_with_credentials_is_one_redacted_error_row():
    rows = parse_manifest(f"a.mp4 0\ns3://key:{SECRET}@bucket/v.mp4 1\nb.mp4 1\n", "/d")
    assert [r.error for r in (rows[0], rows[2])] == ["", ""]
    assert rows[1].error.startswith("bad path: credentials in the URI") and SECRET not in rows[1].error
    assert rows[1].video == "s3://***@bucket/v.mp4"


@pytest.mark.integration
def test_mlflow_env_uri_with_password_is_never_printed_or_stored(mlflow_server, clean_credentials, capfd, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.replace("http://", f"http://alice:{SECRET}@"))
    cfg = load_config(None, ["data.num_classes=4", "data.train_manifest=t.txt", "masking.strategy=none",
                             f"scaling.storage_path={tmp_path}/ray", "tracking.experiment=secrets"])
    uri = resolve_tracking_uri(cfg)
    assert uri == mlflow_server and os.environ["MLFLOW_TRACKING_URI"] == mlflow_server
    run_id = start_run(cfg, uri=uri, run_name="s", kind="eval", params={"checkpoint": f"s3://k:{SECRET}@b/c.pt"})
    finish_run(uri, run_id, final={"tracking_uri": f"http://a:{SECRET}@h", "top1": 1.0})  # MLflow prints "View run at"
    out = capfd.readouterr()
    assert "View run" in out.out and SECRET not in out.out + out.err
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    assert SECRET not in str(client.get_run(run_id).data.params)
    assert SECRET not in str(client.get_run(run_id).data.tags)
    local = client.download_artifacts(run_id, "", str(tmp_path / "arts"))
    assert files_holding(Path(local), SECRET) == []


@pytest.mark.integration
def test_variable_length_training_with_a_password_in_the_tracking_uri_leaves_it_nowhere(
        ray_local, mlflow_server, clean_credentials, tmp_path, tmp_path_factory, capfd):
    """One run for two things: mgtc_threshold's variable-length batches train (and validate),
    and the tracking URI's password reaches no output, MLflow record or file."""
    import numpy as np
    from test_training import clip_rows, datasets, tiny_config

    from jobs.train import format_summary
    from pipeline.trainer import run_training

    rows = clip_rows(8)  # the rows datasets(8, 2) trains on
    tau = float(np.median(np.concatenate([r["scores"][1:].ravel() for r in rows])))
    uri = mlflow_server.replace("http://", f"http://alice:{SECRET}@")
    cfg = tiny_config(tmp_path, uri, "scaling.num_workers=1", "scaling.cpus_per_worker=1", "optim.epochs=1",
                      "optim.warmup_epochs=0", "masking.strategy=mgtc_threshold", f"masking.tau={tau}",
                      "scaling.name=secret")
    summary = run_training(cfg, datasets=datasets(train_videos=8, val_videos=2))
    print(format_summary(summary))
    assert summary["epoch"] == 1
    assert 0.3 < summary["kept_ratio"] < 0.9 and summary["tau"] == tau
    out = capfd.readouterr()
    assert SECRET not in out.out + out.err
    assert SECRET not in str(summary)
    # MLflow server store + artifacts, checkpoints: everything under the session's tmp folders
    stored = files_holding(tmp_path_factory.getbasetemp(), SECRET)
    assert stored == [str(tmp_path / "config.yaml")]  # the user's own config file, nothing else
    session = Path(ray_local._private.worker._global_node.get_session_dir_path())
    assert files_holding(session / "logs", SECRET) == []


@pytest.mark.integration
def test_uris_pyarrow_rejects_cost_one_error_row_each(ray_local, tmp_path, capfd):
    from jobs import precompute as job
    from pipeline import shards

    good = [make_video(tmp_path / f"g{i}.mp4", seed=i) for i in range(2)]
    lines = [f"{good[0]} 0", f"s3://key:{SECRET}@bucket/v.mp4 1", "s3://bucket//double.mp4 1", f"{good[1]} 1"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert job.main([str(tmp_path / "list.txt"), "--out", str(out), "--short-side", "64", "--num-frames", "8",
                     "--sampling-rates", "2", "--actors", "1"]) == 0
    ok = shards.read_shards(str(out)).column("line").to_pylist()
    errors = {r["line"]: r for r in shards.read_errors(str(out)).to_pylist()}
    assert sorted(ok) == [1, 4] and sorted(errors) == [2, 3]
    assert errors[2]["stage"] == "manifest" and errors[2]["error"].startswith("bad path: credentials")
    assert errors[3]["error"].startswith("download failed: ") and "Empty path component" in errors[3]["error"]
    captured = capfd.readouterr()
    assert files_holding(out, SECRET) == [] and SECRET not in captured.out + captured.err
