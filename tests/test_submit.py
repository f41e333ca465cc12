"""`mgtc submit` / `mgtc jobs`: building a submission offline, then a real Ray head.

Unit tests need no cluster. The `integration` tests start one real head for the module
(`ray start --head --block`: token auth, dashboard on 127.0.0.1, every port free, its own
temp dir and process group, so stopping it never touches another Ray on this machine),
first with a fake project whose jobs print and exit, then with the real precompute and
training jobs on synthetic videos.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from jobs import jobs_cmd
from jobs import submit as submit_cli
from pipeline import submit as sub
from pipeline.vocab import git_commit, git_dirty

REPO = Path(__file__).resolve().parents[1]
RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"  # distinctive: must never be printed


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# A fake project: jobs/train.py prints its args and metadata and exits with --exit-code.
# ---------------------------------------------------------------------------------------

FAKE_TRAIN = textwrap.dedent('''
    import argparse, json, os, sys, time

    def build_parser():
        parser = argparse.ArgumentParser(prog="train")
        parser.add_argument("--config")
        parser.add_argument("--exit-code", type=int, default=0)
        parser.add_argument("--sleep", type=float, default=0.0)
        return parser

    def main(argv=None):
        args = build_parser().parse_args(argv)
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata", {})
        print("fake-train", json.dumps({"meta": meta, "uri": os.environ.get("MLFLOW_TRACKING_URI")}), flush=True)
        time.sleep(args.sleep)
        return args.exit_code

    if __name__ == "__main__":
        sys.exit(main())
''')


@pytest.fixture(scope="module")
def fake_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fakeproj")
    (root / "jobs").mkdir()
    (root / "jobs" / "__init__.py").write_text("")
    (root / "jobs" / "train.py").write_text(FAKE_TRAIN)
    (root / "runtime_env.yaml").write_text(yaml.safe_dump({
        "working_dir": ".", "excludes": [".git", "ignored"],
        "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000", "PYTHONUNBUFFERED": "1"}}))
    return root


# ---------------------------------------------------------------------------------------
# Unit tests: no cluster.
# ---------------------------------------------------------------------------------------

def test_submission_id_is_readable_and_sortable():
    now = datetime(2026, 11, 23, 19, 4, 5, tzinfo=timezone.utc)
    assert sub.submission_id("train", "K400 ViT-B/MGTC 25%", now, "ab12") == \
        "mgtc-train-k400-vit-b-mgtc-25-20261123-190405-ab12"
    ids = {sub.submission_id("eval", "x", now) for _ in range(50)}
    assert len(ids) > 40, "the random suffix separates submissions in the same second"
    assert all(len(i) < 80 and i.replace("-", "").isalnum() for i in ids)


@pytest.mark.parametrize("args, name", [
    (["--config", "jobs/configs/k400_mgtc.yaml", "--set", "a.b=1"], "k400_mgtc"),
    (["--config=jobs/configs/synthetic_tiny.yaml"], "synthetic_tiny"),
    (["s3://bucket/k400/lists/train.csv", "--out", "s3://b/shards"], "train"),
    (["--set", "optim.epochs=1"], "default"),
    ([], "default"),
])
def test_config_name_from_job_args(args, name):
    assert sub.config_name(args) == name


def test_entrypoint_maps_kinds_to_modules_and_quotes_args():
    cmd = sub.entrypoint("eval", ["--config", "a b.yaml", "--checkpoint", "s3://x/ckpt;rm -rf /"])
    assert cmd.startswith("python -m jobs.evaluate ")
    assert "'a b.yaml'" in cmd and "'s3://x/ckpt;rm -rf /'" in cmd
    with pytest.raises(sub.SubmitError, match="unknown job kind 'bench'"):
        sub.entrypoint("bench", [])


def test_cli_splits_mgtc_options_from_job_args_keeping_order():
    kind, own, after = submit_cli.split_argv(
        ["precompute", "data/list.txt", "--out", "s3://b/s", "--address", "http://h:8265",
         "--sampling-rates", "2", "4", "--follow", "--", "--follow"])
    args, job_args = submit_cli.build_parser().parse_known_args(own)
    assert kind == "precompute" and args.address == "http://h:8265" and args.follow
    assert job_args + after == ["data/list.txt", "--out", "s3://b/s", "--sampling-rates", "2", "4", "--follow"]


@pytest.mark.parametrize("name, value, secret", [
    ("AWS_SECRET_ACCESS_KEY", "x", True),
    ("AWS_ACCESS_KEY_ID", "x", True),
    ("aws_session_token", "x", True),
    ("RAY_AUTH_TOKEN", "x", True),
    ("MLFLOW_TRACKING_TOKEN", "x", True),
    ("DB_PASSWORD", "x", True),
    ("tracking.password", "x", True),
    ("--token", "", True),
    ("OPENAI_API_KEY", "x", True),
    ("MLFLOW_TRACKING_URI", "http://user:pw@mlflow:5000", True),
    ("NOTE", "AKIAIOSFODNN7EXAMPLE", True),
    ("job argument 1", "-----BEGIN RSA PRIVATE KEY-----", True),
    ("HF_HOME", "hf_abcdefghijklmnopqrstuvwx", True),
    # Domain words and endpoints stay allowed.
    ("RAY_AUTH_MODE", "token", False),
    ("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000", False),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000", False),
    ("model.num_tokens", "1568", False),
    ("masking.token_ratio", "0.25", False),
    ("job argument 1", "data/my_secret_videos.txt", False),
    ("data.shards", "s3://mgtc-data/k400/shards", False),
])
def test_secret_detection(name, value, secret):
    assert (sub.secret_reason(name, value) is not None) == secret


def test_runtime_env_file_is_valid_for_ray_and_resolves_working_dir():
    from ray.runtime_env import RuntimeEnv

    env = sub.load_runtime_env(RUNTIME_ENV, REPO)
    assert env["working_dir"] == str(REPO)
    assert {".git", ".venv", "data", "runs", "mlruns", "mlflow.db", "*.mp4", "**/__pycache__"} <= set(env["excludes"])
    assert "pip" not in env and "py_modules" not in env, "deps live in the image, code in working_dir"
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert "MLFLOW_TRACKING_URI" in env["env_vars"]
    RuntimeEnv(**env)  # Ray's own parser accepts the file as mgtc sends it


def test_refuses_secrets_and_never_echoes_them(fake_project, monkeypatch, capsys):
    monkeypatch.chdir(fake_project)
    plan = dict(runtime_env_path=fake_project / "runtime_env.yaml", base_dir=fake_project)
    with pytest.raises(sub.SecretRefused, match="AWS_SECRET_ACCESS_KEY") as err:
        sub.plan_submission("train", [], extra_env={"AWS_SECRET_ACCESS_KEY": SECRET}, **plan)
    assert SECRET not in str(err.value)
    with pytest.raises(sub.SecretRefused, match="MLFLOW_TRACKING_URI.*password inside a URL"):
        sub.plan_submission("train", [], extra_env={"MLFLOW_TRACKING_URI": f"http://me:{SECRET}@m:5000"}, **plan)
    with pytest.raises(sub.SecretRefused, match="tracking.password"):
        sub.plan_submission("train", ["--set", f"tracking.password={SECRET}"], **plan)

    code = submit_cli.main(["train", "--env", f"AWS_SECRET_ACCESS_KEY={SECRET}", "--address",
                            "http://127.0.0.1:1", "--runtime-env", "runtime_env.yaml"])
    out = capsys.readouterr()
    assert code == submit_cli.EXIT_ERROR and "refusing to send 'AWS_SECRET_ACCESS_KEY'" in out.err
    assert SECRET not in out.out + out.err


def test_packed_size_estimate_matches_rays_zip(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    wd = tmp_path / "wd"
    for i, size in enumerate([0, 10, 70_000, 1_234_567]):
        (wd / f"d{i % 2}" / "sub").mkdir(parents=True, exist_ok=True)
        (wd / f"d{i % 2}" / "sub" / f"f{i}.bin").write_bytes(os.urandom(size))
    (wd / "skipme").mkdir()
    (wd / "skipme" / "x.bin").write_bytes(b"x" * 5000)
    files = sub.packed_files(wd, ["skipme"])
    assert sorted(name for name, _ in files) == [
        "d0/sub/f0.bin", "d0/sub/f2.bin", "d1/sub/f1.bin", "d1/sub/f3.bin"]
    zipped = tmp_path / "pkg.zip"
    create_package(str(wd), zipped, include_gitignore=True, excludes=["skipme"])
    estimate, actual = sub.packed_size(files), zipped.stat().st_size
    # Ray stores (no deflate): the estimate is exact up to the directory entries it adds.
    assert actual - 2_000 <= estimate <= actual


def test_repo_working_dir_packs_small_with_the_real_excludes():
    env = sub.load_runtime_env(RUNTIME_ENV, REPO)
    files = sub.packed_files(REPO, env["excludes"])
    names = [name for name, _ in files]
    assert not any(n.startswith((".git/", ".venv/")) or "__pycache__" in n for n in names)
    assert "pipeline/submit.py" in names and "cluster/runtime_env.yaml" in names
    assert sub.packed_size(files) < 20 * 2**20


def test_oversized_working_dir_names_the_biggest_offenders(tmp_path):
    wd = tmp_path / "proj"
    (wd / "jobs").mkdir(parents=True)
    (wd / "jobs" / "train.py").write_text("print(1)\n")
    (wd / "scratch").mkdir()
    # Sparse: 150 MiB by size, nothing on disk; the check reads sizes, never the bytes.
    with open(wd / "scratch" / "frames.npy", "wb") as f:
        f.truncate(150 * 2**20)
    limit = sub.upload_limit()
    assert limit == 100 * 2**20, "the dashboard's request cap (DASHBOARD_CLIENT_MAX_SIZE)"
    with pytest.raises(sub.WorkingDirTooLarge) as err:
        sub.check_upload_size(wd, [".git"])
    message = str(err.value)
    assert "150.0 MiB" in message and "100.0 MiB" in message
    assert "scratch/ (150.0 MiB)" in message and "scratch/frames.npy (150.0 MiB)" in message
    assert "excludes" in message
    assert sub.check_upload_size(wd, ["scratch"]) < 2**20


def test_git_commit_and_metadata(fake_project, tmp_path):
    assert (git_commit(tmp_path, short=True), git_dirty(tmp_path)) == ("unknown", False)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert git_commit(REPO, short=True) == sha

    plan = sub.plan_submission("train", ["--config", "cfg/tiny.yaml", "--exit-code", "0"],
                               runtime_env_path=fake_project / "runtime_env.yaml", base_dir=fake_project,
                               extra_env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert plan.submission_id.startswith("mgtc-train-tiny-")
    assert plan.metadata["mgtc_kind"] == "train" and plan.metadata["mgtc_config"] == "tiny"
    assert plan.metadata["git_commit"] == "unknown"
    assert all(isinstance(v, str) for v in plan.metadata.values())
    assert plan.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert plan.entrypoint == "python -m jobs.train --config cfg/tiny.yaml --exit-code 0"


def test_exit_code_mirrors_the_final_status():
    def info(status, code=None):
        return SimpleNamespace(status=status, driver_exit_code=code)

    assert sub.exit_code(info("SUCCEEDED", 0)) == 0
    assert sub.exit_code(info("FAILED", 3)) == 3
    assert sub.exit_code(info("FAILED", None)) == 1  # e.g. the runtime env failed to set up
    assert sub.exit_code(info("FAILED", -9)) == 1
    assert sub.exit_code(info("STOPPED")) == sub.EXIT_STOPPED


def test_address_normalisation(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sub.normalize_address("head:8265/") == "http://head:8265"
    assert sub.normalize_address("https://ray.example/") == "https://ray.example"
    with pytest.raises(sub.SubmitError, match="dashboard port"):
        sub.normalize_address("ray://head:10001")
    with pytest.raises(sub.SubmitError, match="no cluster address"):
        sub.normalize_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert sub.normalize_address(None) == "http://from-env:8265"


def test_token_sources_follow_rays_precedence(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sub.resolve_token()[0] is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert sub.resolve_token() == ("from-home", str(tmp_path / ".ray" / "auth_token"))
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert sub.resolve_token()[0] == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert sub.resolve_token() == ("from-env", "RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert sub.resolve_token()[0] is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(sub.AuthFailed, match="RAY_AUTH_TOKEN_PATH"):
        sub.resolve_token()


def test_unreachable_address_fails_fast_and_clearly():
    start = time.monotonic()
    with pytest.raises(sub.ClusterUnreachable, match=r"cannot reach the Ray dashboard at http://127\.0\.0\.1:\d+"):
        sub.Cluster(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 10


def test_job_args_are_checked_with_the_shipped_jobs_parser(fake_project):
    ok, _ = sub.check_job_args(fake_project, "train", ["--exit-code", "0"])
    assert ok
    ok, message = sub.check_job_args(fake_project, "train", ["--exit-kode", "0"])
    assert not ok and "unrecognized arguments: --exit-kode" in message and "mgtc submit train" in message
    ok, message = sub.check_job_args(fake_project, "sweep", [])
    assert not ok and "jobs.sweep does not exist" in message


def test_print_submission_shows_the_resolved_submission(fake_project, monkeypatch, capsys):
    monkeypatch.chdir(fake_project)
    code = submit_cli.main(["train", "--config", "x.yaml", "--print-submission", "--runtime-env", "runtime_env.yaml",
                            "--env", "AWS_ENDPOINT_URL=http://127.0.0.1:9000"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["entrypoint"] == "python -m jobs.train --config x.yaml"
    assert plan["runtime_env"]["working_dir"] == str(fake_project)
    assert plan["runtime_env"]["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert plan["metadata"]["mgtc_kind"] == "train"


# ---------------------------------------------------------------------------------------
# A real head.
# ---------------------------------------------------------------------------------------

class LocalHead:
    """`ray start --head --block` with token auth, alone in its process group.

    Every port is chosen free and the temp dir is its own (short: Ray's socket paths are
    limited), so it coexists with the session's `ray.init()`; SIGTERM to the group stops
    exactly this head and its workers (`ray stop` would stop every Ray on the machine).
    """

    def __init__(self):
        self.token = secrets.token_hex(16)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        ports = {"--port": free_port(), "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
                 "--metrics-export-port": free_port()}
        # 4 logical CPUs on the 2-core machine: the training job holds a decode actor (1)
        # and a trainer (0.5) while Ray Data's read tasks still need one CPU each.
        return [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--num-cpus=4",
                "--object-store-memory=1000000000", f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        # Jobs run `python`: this interpreter, as on a node whose image has the deps.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # No 30 s SIGTERM drain (meant for Serve replicas) when the test stops the head.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        return env

    def start(self, timeout_s: float = 180) -> None:
        log = open(self.temp_dir / "head.log", "w")
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        request = urllib.request.Request(f"{self.address}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.token}"})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.temp_dir / 'head.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"head not ready: {(self.temp_dir / 'head.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # ray start drains and stops its children
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            try:  # stragglers of the group (workers mid-exit)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    local = LocalHead()
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
def client_env(head, monkeypatch):
    """The client side as a user sets it up: token mode, the head's token in the env."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return head


@pytest.mark.integration
def test_follow_mirrors_success_and_failure(client_env, fake_project, monkeypatch, capsys):
    monkeypatch.chdir(fake_project)
    base = ["--address", client_env.address, "--runtime-env", "runtime_env.yaml", "--follow"]
    code = submit_cli.main(["train", "--config", "ok.yaml", *base])
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    assert "submitted mgtc-train-ok-" in out.out and "fake-train" in out.out
    printed = json.loads(out.out.split("fake-train", 1)[1].splitlines()[0])
    assert printed["meta"]["mgtc_kind"] == "train" and printed["meta"]["mgtc_config"] == "ok"
    assert printed["meta"]["job_submission_id"].startswith("mgtc-train-ok-")
    assert printed["uri"] == "http://mlflow.example:5000"

    code = submit_cli.main(["train", "--exit-code", "3", *base])
    out = capsys.readouterr()
    assert code == 3, out.out[-3000:] + out.err[-3000:]
    assert "FAILED" in out.err


@pytest.mark.integration
def test_stop_list_status_and_logs(client_env, fake_project, monkeypatch, capsys):
    monkeypatch.chdir(fake_project)
    addr = ["--address", client_env.address]
    assert submit_cli.main(["train", "--sleep", "300", "--name", "sleepy", *addr,
                            "--runtime-env", "runtime_env.yaml"]) == 0
    sub_id = capsys.readouterr().out.split()[1]
    cluster = sub.Cluster(client_env.address)
    deadline = time.monotonic() + 180  # the runtime env is set up first: slow on a busy machine
    while str(cluster.info(sub_id).status) == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(cluster.info(sub_id).status) == "RUNNING", cluster.logs(sub_id)[-3000:]

    assert jobs_cmd.main(["list", *addr]) == 0
    listing = capsys.readouterr().out
    assert sub_id in listing and "RUNNING" in listing and "sleepy" in listing

    assert jobs_cmd.main(["stop", sub_id, "--wait", *addr]) == 0
    assert "STOPPED" in capsys.readouterr().out
    assert jobs_cmd.main(["logs", sub_id, "--follow", *addr]) == sub.EXIT_STOPPED
    assert "fake-train" in capsys.readouterr().out
    assert jobs_cmd.main(["status", sub_id, *addr]) == 0
    assert "mgtc_config: sleepy" in capsys.readouterr().out


@pytest.mark.integration
def test_unknown_job_is_a_clear_error(client_env, capsys):
    for command in (["logs", "no-such-job"], ["stop", "no-such-job"], ["status", "no-such-job"]):
        assert jobs_cmd.main([*command, "--address", client_env.address]) == submit_cli.EXIT_ERROR
        err = capsys.readouterr().err
        assert "no job with that submission id" in err and "no-such-job" in err


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`mgtc ...` in a fresh process: what a user's shell runs, with no state cached by
    this test session's Ray."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_token_auth_as_ray_does_it_and_clear_auth_errors(head, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(head.token)
    # Ray's default: the token in ~/.ray/auth_token, the client in token mode.
    ok = _cli(["jobs", "list", "--address", head.address], {**base, "HOME": str(home), "RAY_AUTH_MODE": "token"})
    assert ok.returncode == 0, ok.stderr

    wrong = _cli(["jobs", "list", "--address", head.address], {**base, "RAY_AUTH_TOKEN": SECRET})
    assert wrong.returncode == submit_cli.EXIT_ERROR
    assert "rejected the token from RAY_AUTH_TOKEN" in wrong.stderr and SECRET not in wrong.stderr + wrong.stdout

    none = _cli(["jobs", "list", "--address", head.address], {**base, "RAY_AUTH_MODE": "disabled"})
    assert none.returncode == submit_cli.EXIT_ERROR
    assert "requires a token and none was sent" in none.stderr


# ---------------------------------------------------------------------------------------
# The real jobs on the head: precompute a few synthetic videos, train one epoch.
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tracking(s3_server, tmp_path_factory):
    """`mgtc tracking-server` (SQLite + S3 artifacts on moto) for the jobs to log to."""
    import boto3

    root = tmp_path_factory.mktemp("tracking")
    bucket = "it-mlflow"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "tracking-server", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", f"s3://{bucket}/mlflow",
         "--port", str(port), "--workers", "1", "--s3-endpoint-url", s3_server],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    from pipeline.tracking_server import wait_healthy

    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, proc, timeout_s=120)
        yield SimpleNamespace(uri=uri, bucket=bucket, endpoint=s3_server)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _run_job(cluster: sub.Cluster, kind: str, job_args: list[str], mlflow_uri: str, timeout_s: float):
    """Submit through the same plan as `mgtc submit`, wait, and fail with the job's logs."""
    plan = sub.plan_submission(kind, job_args, runtime_env_path=RUNTIME_ENV, base_dir=REPO,
                               extra_env={"MLFLOW_TRACKING_URI": mlflow_uri})
    sub_id = cluster.submit(plan)
    try:
        info = cluster.wait(sub_id, timeout_s=timeout_s)
    except TimeoutError:
        cluster.stop(sub_id)
        pytest.fail(f"{kind} did not finish in {timeout_s}s: {cluster.logs(sub_id)[-6000:]}")
    assert str(info.status) == "SUCCEEDED", f"{kind} {info.status}: {cluster.logs(sub_id)[-6000:]}"
    return sub_id


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_precompute_and_one_epoch_training_on_the_head(client_env, tracking, tmp_path):
    import boto3
    from mlflow.tracking import MlflowClient
    from ray.train import Result

    from pipeline import shards as shard_io
    from pipeline import synth

    data = synth.make_dataset(tmp_path / "data", videos_per_class=2, size=64, frames=24, fps=8, seed=0)
    train_videos = len(data["train"].read_text().splitlines())
    shards = tmp_path / "shards"
    storage = tmp_path / "ray_results"
    config = tmp_path / "it_train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "synthetic", "train_manifest": str(data["train"]),
                 "val_manifest": str(data["val"]), "shards": str(shards),
                 "num_classes": len(synth.CLASS_NAMES), "num_frames": 8, "sampling_rate": 2,
                 "source_fps": 8, "input_size": 64, "short_side": 64, "val_clips": 1, "val_crops": 1,
                 "decode_actors": 1},
        "model": {"size": "tiny"},
        "masking": {"strategy": "mgtc_ratio", "ratio": 0.25},
        "optim": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "storage_path": str(storage), "name": "it-train"},
        "tracking": {"experiment": "mgtc-cluster-it"},
    }))
    cluster = sub.Cluster(client_env.address)

    _run_job(cluster, "precompute", [str(data["train"]), "--out", str(shards), "--sampling-rates", "2",
                                     "--config", str(config)], tracking.uri, timeout_s=400)
    assert (shards / shard_io.SUCCESS_FILE).is_file()
    assert shard_io.read_shards(str(shards)).num_rows == train_videos, "one row per (video, sampling rate)"
    assert shard_io.read_errors(str(shards)).num_rows == 0

    train_id = _run_job(cluster, "train", ["--config", str(config)], tracking.uri, timeout_s=700)
    checkpoint = Result.from_path(str(storage / "it-train")).checkpoint
    assert checkpoint is not None and any(Path(checkpoint.path).iterdir()), "Ray Train kept no checkpoint"

    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name("mgtc-cluster-it")
    runs = client.search_runs([experiment.experiment_id], f"tags.ray_submission_id = '{train_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [r.info for r in runs]
    run = runs[0]
    assert "epoch_time" in run.data.metrics
    prefix = f"mlflow/{experiment.experiment_id}/{run.info.run_id}/artifacts/"
    s3 = boto3.client("s3", endpoint_url=tracking.endpoint, region_name="us-east-1")
    objects = s3.list_objects_v2(Bucket=tracking.bucket, Prefix=prefix).get("Contents", [])
    assert objects, f"no artifacts of run {run.info.run_id} in s3://{tracking.bucket}/{prefix}"
