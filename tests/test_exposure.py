"""A local run listens on loopback only (issue 13, items 10 and 11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Starts Ray the way `mgtc train` / `precompute` / `demo` do, makes it start workers (a task,
# a Ray Data actor pool), then prints every listening socket of its process tree.
PROBE = textwrap.dedent("""
    import os, time, psutil, ray, ray.data
    from pipeline.localray import init_local

    init_local(num_cpus=2)
    ray.get(ray.remote(lambda: os.getpid()).remote())

    class Double:
        def __call__(self, batch):
            return {"id": batch["id"] * 2}

    ray.data.range(8).map_batches(Double, batch_size=4, concurrency=1).take_all()
    time.sleep(2)  # agents open their metrics / gRPC ports shortly after start
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    print("LISTEN", proc.name(), conn.laddr.ip, conn.laddr.port, flush=True)
        except psutil.Error:
            pass
    ray.shutdown()
""")
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.mark.integration
def test_a_local_ray_listens_on_loopback_only(tmp_path):
    env = {"PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    sockets = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("LISTEN")]
    names = {name for name, *_ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the probe saw Ray's own servers
    exposed = [s for s in sockets if s[1] not in LOOPBACK]
    assert exposed == [], exposed


def test_explicit_sqlite_store_keeps_artifacts_beside_it(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from pipeline.config import load_config
    from pipeline.tracking import finish_run, resolve_tracking_uri, start_run

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = tmp_path / "stores" / "a" / "mlflow.db"
    store.parent.mkdir(parents=True)
    cfg = load_config(None, ["data.num_classes=4", "data.train_manifest=t.txt", "masking.strategy=none",
                             f"tracking.tracking_uri=sqlite:///{store}", f"scaling.storage_path={tmp_path}/ray"])
    uri = resolve_tracking_uri(cfg)
    run_id = start_run(cfg, uri=uri, run_name="r", kind="eval", params={})
    finish_run(uri, run_id, final={"top1": 1.0})
    location = MlflowClient(uri).get_run(run_id).info.artifact_uri
    assert location.startswith((store.parent / "mlartifacts").as_uri()), location
    assert (store.parent / "mlartifacts").is_dir() and not (elsewhere / "mlruns").exists()


@pytest.mark.integration
def test_the_test_sessions_ray_is_loopback_only(ray_local):
    """The suite's own Ray starts as a local run does (`localray.init_local`)."""
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}
