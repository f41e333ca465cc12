"""`mgtc ui`: browse runs in the MLflow UI.

With MLFLOW_TRACKING_URI set to a tracking server (http:// or https://), that server already
serves the UI: print its URL and exit. Otherwise serve the local store (the embedded default
`runs/mlflow.db`, or the SQL store MLFLOW_TRACKING_URI names) with `mlflow ui` on 127.0.0.1
and print the URL; Ctrl-C stops it. Loopback only by default: the UI has no authentication.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from pipeline.storage import redact

LOOPBACK = "127.0.0.1"
# MLflow's documented opt-out of usage data collection (also silences the UI's banner).
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgtc ui", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default=LOOPBACK,
                   help="bind address (default 127.0.0.1; anything else exposes an unauthenticated UI)")
    p.add_argument("--runs-dir", default="runs", help="run folder holding mlflow.db and mlartifacts/")
    p.add_argument("--experiment", default="", help="print the runs view of this experiment only")
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
    consumer processes) is off unless asked for; browsing runs does not use it. Usage data
    collection is off (MLflow's documented switch), unless the caller's environment says."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **TELEMETRY_OFF, **os.environ}


def runs_view_url(base_url: str, experiment_id: str) -> str:
    """The experiment's training runs in MLflow 3's "Model training" workflow.

    MLflow 3.17's UI starts in its GenAI workflow (traces overview, assistant) unless the URL
    or the browser's saved choice says `workflowType=machine_learning`; the experiment's
    `mlflow.experimentKind` tag (set by `tracking.ensure_experiment`) types the experiment
    itself, so the UI does not ask what kind it is."""
    return f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def runs_views(store: str, base_url: str, experiment: str = "") -> list[str]:
    """`<name> (<n> runs): <runs view URL>` for each experiment with runs (or the one
    named), most recently updated first; one explanatory line when the store cannot be read.

    store: a tracking server's URL (asked over REST, 5 s timeout, no retries: the URL is
    printed either way) or a SQL store URI (read with MLflow's client)."""
    try:
        found = _experiments(store)
    except Exception as err:  # an unreachable server or a store from another MLflow
        return [f"(experiments not listed: {type(err).__name__}: {str(err).splitlines()[0][:200]})"]
    return [f"{name} ({runs} runs): {runs_view_url(base_url, exp_id)}"
            for exp_id, name, runs in found if (runs and not experiment) or name == experiment]


def _experiments(store: str) -> list[tuple[str, str, int]]:
    """(id, name, runs up to 1000) of the active experiments, most recently updated first."""
    if store.startswith(("http://", "https://")):
        exps = _rest(store, "experiments/search", {"max_results": 50, "order_by": ["last_update_time DESC"]})
        out = []
        for exp in exps.get("experiments", []):
            runs = _rest(store, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})
            out.append((exp["experiment_id"], exp["name"], len(runs.get("runs", []))))
        return out
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    return [(e.experiment_id, e.name, len(client.search_runs([e.experiment_id], max_results=1000)))
            for e in client.search_experiments(order_by=["last_update_time DESC"], max_results=50)]


def _rest(server: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(f"{server}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    remote = server_uri()
    if remote:
        print(f"MLflow UI (tracking server from MLFLOW_TRACKING_URI): {remote}")
        for line in runs_views(remote, remote, args.experiment):
            print(f"  {line}")
        return 0
    store = local_store(args.runs_dir)
    cmd = ui_command(store, args.host, args.port, args.runs_dir)
    url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI: {url}  (store {store})")
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).is_file():
        print("no runs yet: the store is created on first use")
    else:
        for line in runs_views(store, url, args.experiment):
            print(f"  {line}")
    print("command: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if args.print_only:
        return 0
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
