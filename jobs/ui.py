"""`mgtc ui`: browse runs in the MLflow UI.

With MLFLOW_TRACKING_URI set to a tracking server (http:// or https://), that server already
serves the UI: print its URL and exit. Otherwise serve the local store (the embedded default
`runs/mlflow.db`, or the SQL store MLFLOW_TRACKING_URI names) with `mlflow ui` on 127.0.0.1
and print the URL; Ctrl-C stops it. Loopback only by default: the UI has no authentication.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.storage import redact

LOOPBACK = "127.0.0.1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgtc ui", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default=LOOPBACK,
                   help="bind address (default 127.0.0.1; anything else exposes an unauthenticated UI)")
    p.add_argument("--runs-dir", default="runs", help="run folder holding mlflow.db and mlartifacts/")
    p.add_argument("--print-only", action="store_true", help="print the URL and the command; serve nothing")
    return p


def server_uri() -> str:
    """The tracking server's URL when MLFLOW_TRACKING_URI is one, else ''."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    # printed: the password of http://user:pw@host stays out of the terminal
    return redact(uri.rstrip("/")) if uri.startswith(("http://", "https://")) else ""


def local_store(runs_dir: str) -> str:
    """The backend store to serve: a non-HTTP MLFLOW_TRACKING_URI, else <runs dir>/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri and not uri.startswith(("http://", "https://")):
        return uri
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def ui_command(store: str, host: str, port: int, runs_dir: str) -> list[str]:
    """`mlflow ui` on the store; artifacts of experiments made in the UI land in the run folder.

    One worker: a local UI has one reader, and MLflow's default four take a minute to start
    on a 2-core machine.
    """
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
            "--artifacts-destination", str(Path(runs_dir).resolve() / "mlartifacts"),
            "--host", host, "--port", str(port), "--workers", "1"]


def ui_env() -> dict[str, str]:
    """The server's environment: MLflow's job runner (GenAI evaluation jobs, several huey
    consumer processes) is off unless asked for; browsing runs does not use it."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    remote = server_uri()
    if remote:
        print(f"MLflow UI (tracking server from MLFLOW_TRACKING_URI): {remote}")
        return 0
    store = local_store(args.runs_dir)
    cmd = ui_command(store, args.host, args.port, args.runs_dir)
    print(f"MLflow UI: http://{args.host}:{args.port}  (store {store})")
    print("command: " + " ".join(shlex.quote(c) for c in cmd))
    if args.print_only:
        return 0
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).is_file():
        print("no runs yet: the store is created on first use")
    return serve(cmd)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(cmd: list[str]) -> int:
    """Run the UI until it exits, Ctrl-C or SIGTERM.

    The server gets its own process group: `mlflow ui` starts uvicorn workers, and stopping
    the group stops them all instead of leaving orphans holding the port.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    proc = subprocess.Popen(cmd, env=ui_env(), start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return 0


if __name__ == "__main__":
    sys.exit(main())
