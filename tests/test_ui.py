"""`mgtc ui`: the tracking server's URL when one is configured, else a loopback MLflow UI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import psutil
import pytest

from conftest import REPO, free_port, wait_http
from jobs import ui


def test_print_only_names_the_tracking_server_when_one_is_configured(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000/")
    assert ui.main(["--print-only"]) == 0
    out = capsys.readouterr().out
    assert "http://mlflow.internal:5000" in out
    assert "command:" not in out  # nothing to serve: the server has its own UI


def test_print_only_serves_the_local_store_on_loopback(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui.main(["--print-only", "--port", "5123", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "MLflow UI: http://127.0.0.1:5123" in out
    assert f"--backend-store-uri sqlite:///{tmp_path}/runs/mlflow.db" in out
    assert "--host 127.0.0.1 --port 5123" in out and "0.0.0.0" not in out


def test_a_sql_tracking_uri_is_the_store_served(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert ui.local_store("runs") == f"sqlite:///{tmp_path}/other.db"
    assert ui.server_uri() == ""


@pytest.mark.integration
def test_ui_serves_the_local_store_on_127_0_0_1_only(tmp_path):
    from mlflow import MlflowClient

    from pipeline.tracking import ensure_experiment

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp_id = ensure_experiment(client, "local-exp")
    client.create_run(exp_id, run_name="only-run")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.ui", "--port", str(port), "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", timeout=90)
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            names = [e["name"] for e in json.load(r)["experiments"]]
        assert "Default" in names and "local-exp" in names
        assert (tmp_path / "runs" / "mlflow.db").is_file()
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # jobs.ui stops its server group on SIGTERM
        out, _ = proc.communicate(timeout=30)
    assert f"MLflow UI: http://127.0.0.1:{port}" in out
    view = f"local-exp (1 runs): http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    assert view in out and "Default (" not in out  # experiments without runs are not listed
    assert proc.returncode == 0
