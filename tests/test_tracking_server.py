"""`mgtc tracking-server`: the command it builds, then a real `mlflow server` with SQLite and
S3 artifacts on moto's S3 server, written to over HTTP by a client that holds no S3
credentials, as a job on a cluster does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobs import tracking_server as cli
from pipeline import tracking_server as ts

REPO = Path(__file__).resolve().parents[1]
SECRET = "mgtc-test-secret-9f3b2c7d1e"  # the server's AWS secret key: must never leak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_binds_loopback_with_explicit_allowed_hosts(tmp_path):
    config = ts.resolve(ts.default_config(tmp_path / "runs"))
    cmd = ts.build_command(config)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert {"localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"} <= set(hosts)
    assert not (tmp_path / "runs").exists(), "building the command creates nothing"


def test_wide_bind_needs_allowed_hosts_and_keeps_tunnels_working(tmp_path):
    wide = ts.ServerConfig(backend_store_uri="sqlite:///db/mlflow.db", artifacts_destination="s3://b/mlflow",
                           host="0.0.0.0")
    with pytest.raises(ts.TrackingServerError, match="--allowed-hosts"):
        ts.resolve(wide, tmp_path)
    config = ts.resolve(ts.ServerConfig(**{**wide.__dict__, "allowed_hosts": ("mlflow.internal", "mlflow.internal:5000")}),
                        tmp_path)
    hosts = ts.allowed_hosts(config)
    assert hosts[:4] == ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
    assert hosts[-2:] == ["mlflow.internal", "mlflow.internal:5000"]
    assert config.backend_store_uri == f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    assert config.artifacts_destination == "s3://b/mlflow"


@pytest.mark.parametrize("uri, match", [
    ("postgresql://mlflow:hunter2@db:5432/mlflow", "PGPASSWORD"),
    ("file:///tmp/mlruns", "file store"),
    ("./mlruns", "file store"),
    ("sqlite://", "needs a file"),
])
def test_backend_store_refusals(uri, match, tmp_path, capsys):
    with pytest.raises(ts.TrackingServerError, match=match) as err:
        ts.resolve(ts.ServerConfig(backend_store_uri=uri, artifacts_destination="s3://b/x"), tmp_path)
    assert "hunter2" not in str(err.value)
    assert cli.main(["--backend-store-uri", uri, "--print-command"]) == 2
    assert "hunter2" not in capsys.readouterr().err


def test_postgres_without_password_and_s3_endpoint(tmp_path):
    config = ts.resolve(ts.ServerConfig(backend_store_uri="postgresql://mlflow@db:5432/mlflow",
                                        artifacts_destination="s3://bucket/mlflow",
                                        s3_endpoint_url="http://127.0.0.1:9000"), tmp_path)
    assert config.backend_store_uri == "postgresql://mlflow@db:5432/mlflow"
    env = ts.server_env(config, {"AWS_REGION": "us-west-2"})
    assert env == {"AWS_REGION": "us-west-2", "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                   "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow's documented opt-out, unless the caller says
                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no idle job consumers
    assert ts.server_env(config, {"MLFLOW_DISABLE_TELEMETRY": "false"})["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert ts.server_env(config, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    assert ts.redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


# ---------------------------------------------------------------------------------------
# A real server on loopback with S3 artifacts (moto).
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(s3_server, tmp_path_factory):
    """`mgtc tracking-server` as users run it: a child process, credentials only in its env."""
    import boto3

    root = tmp_path_factory.mktemp("tracking")
    bucket = "mgtc-tracking-it"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "mgtc-test-key-id", "AWS_SECRET_ACCESS_KEY": SECRET}
    log_path = root / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "tracking-server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", f"s3://{bucket}/mlflow", "--port", str(port), "--workers", "1",
         "--allowed-hosts", f"mlflow.internal,mlflow.internal:{port}", "--s3-endpoint-url", s3_server],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        ts.wait_healthy(uri, proc, timeout_s=120)
        yield {"uri": uri, "port": port, "bucket": bucket, "endpoint": s3_server, "log": log_path}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


CLIENT = textwrap.dedent('''
    import json, sys
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np

    mlflow.set_experiment("mgtc-tracking-it")  # the URI comes from MLFLOW_TRACKING_URI
    with mlflow.start_run(run_name="cluster-job") as run:
        mlflow.log_params({"masking.strategy": "mgtc_ratio", "masking.ratio": 0.25})
        mlflow.set_tag("ray_submission_id", "mgtc-train-it-20261123-000000-abcd")
        for step in range(2):
            mlflow.log_metrics({"val/top1": 0.5 + step, "gflops_per_view": 120.0}, step=step)
        mlflow.log_dict({"masking": {"strategy": "mgtc_ratio", "ratio": 0.25}}, "config/resolved.json")
        fig, ax = plt.subplots()
        ax.plot([120, 180], [0.7, 0.72])
        mlflow.log_figure(fig, "plots/acc_vs_gflops.png")
        mlflow.log_image(np.zeros((32, 32, 3), np.uint8), artifact_file="masks/kept_tokens.png")
    print(json.dumps({"run": run.info.run_id, "experiment": run.info.experiment_id,
                      "artifact_uri": run.info.artifact_uri}))
''')


@pytest.mark.integration
def test_jobs_log_over_http_and_artifacts_land_in_s3(server):
    import boto3
    from mlflow.tracking import MlflowClient

    # The client is a job on a cluster node: MLFLOW_TRACKING_URI only, no S3 settings at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = server["uri"]
    proc = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ids["artifact_uri"].startswith("mlflow-artifacts:/"), "artifacts are proxied by the server"

    s3 = boto3.client("s3", endpoint_url=server["endpoint"], region_name="us-east-1")
    prefix = f"mlflow/{ids['experiment']}/{ids['run']}/artifacts/"
    keys = {o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=server["bucket"], Prefix=prefix)["Contents"]}
    assert {"config/resolved.json", "plots/acc_vs_gflops.png", "masks/kept_tokens.png"} <= keys

    run = MlflowClient(server["uri"]).get_run(ids["run"])
    assert run.data.params["masking.ratio"] == "0.25" and run.data.metrics["val/top1"] == 1.5
    recorded = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert SECRET not in recorded and "mgtc-test-key-id" not in recorded
    assert SECRET not in server["log"].read_text()
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.integration
def test_host_header_check_is_explicit(server):
    def status(host: str) -> int:
        request = urllib.request.Request(f"{server['uri']}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as err:
            return err.code

    assert status(f"localhost:{server['port']}") == 200  # SSH tunnel / port-forward
    assert status(f"mlflow.internal:{server['port']}") == 200  # the name jobs use
    assert status(f"attacker.example:{server['port']}") == 403  # DNS rebinding
    assert status(f"10.1.2.3:{server['port']}") == 403, "MLflow's private-IP default is replaced"
