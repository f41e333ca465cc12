"""`mgtc tracking-server`: run the shared MLflow tracking server in the foreground.

    # on this machine, for SSH-tunnel or port-forward access (the default bind):
    mgtc tracking-server --artifacts-destination s3://mgtc-data/mlflow
    # for a Ray cluster in the same network: bind wider, name the Host headers
    mgtc tracking-server --host 0.0.0.0 --allowed-hosts mlflow.internal,mlflow.internal:5000 \\
        --backend-store-uri sqlite:////var/lib/mlflow/mlflow.db \\
        --artifacts-destination s3://mgtc-data/mlflow

S3 credentials come from the AWS chain of this process (instance role, profile, env);
`--s3-endpoint-url` (default: $MLFLOW_S3_ENDPOINT_URL, then $AWS_ENDPOINT_URL) points at an
S3-compatible store. Jobs reach the server through MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from jobs.ui import runs_views
from pipeline import tracking_server as ts

DEFAULT_ROOT = Path("runs") / "mlflow"


def build_parser() -> argparse.ArgumentParser:
    defaults = ts.default_config(DEFAULT_ROOT)
    parser = argparse.ArgumentParser(prog="mgtc tracking-server", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend-store-uri", default=defaults.backend_store_uri,
                        help="sqlite:///<path> or postgresql://user@host/db (password in "
                             "PGPASSWORD or ~/.pgpass, never in the URI) (default: %(default)s)")
    parser.add_argument("--artifacts-destination", default=defaults.artifacts_destination,
                        help="s3://bucket/prefix or a local directory (default: %(default)s)")
    parser.add_argument("--host", default=defaults.host,
                        help="interface to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=defaults.port, help="(default: %(default)s)")
    parser.add_argument("--allowed-hosts", default="",
                        help="comma-separated Host headers clients use, e.g. mlflow.internal,"
                             "mlflow.internal:5000; required for a non-loopback --host")
    parser.add_argument("--workers", type=int, help="server worker processes (MLflow's default: 4)")
    parser.add_argument("--s3-endpoint-url",
                        default=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL"),
                        help="S3-compatible endpoint for the artifacts (default: $MLFLOW_S3_ENDPOINT_URL, "
                             "then $AWS_ENDPOINT_URL)")
    parser.add_argument("--experiment", default="", help="once healthy, print this experiment's runs view only")
    parser.add_argument("--print-command", action="store_true",
                        help="print the mlflow server command line and exit")
    return parser


def config_from_args(args: argparse.Namespace) -> ts.ServerConfig:
    hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    return ts.resolve(ts.ServerConfig(
        backend_store_uri=args.backend_store_uri, artifacts_destination=args.artifacts_destination,
        host=args.host, port=args.port, allowed_hosts=hosts, workers=args.workers,
        s3_endpoint_url=args.s3_endpoint_url or None))


def serve(config: ts.ServerConfig, experiment: str = "") -> int:
    """Run the server until it exits or we are told to stop; SIGINT/SIGTERM are passed on
    so that uvicorn's workers shut down cleanly."""
    proc = ts.start(config)

    def forward(signum, _frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    print(f"MLflow tracking server: {config.url}  (backend {config.backend_store_uri}, "
          f"artifacts {config.artifacts_destination}, allowed hosts "
          f"{','.join(ts.allowed_hosts(config))})", flush=True)
    try:
        ts.wait_healthy(config.url, proc)
    except ts.TrackingServerError as err:
        print(f"mgtc tracking-server: {err}", file=sys.stderr)
        return proc.wait() or 1
    views = runs_views(config.url, config.url, experiment)
    print("\n".join(f"  {line}" for line in views) if views else
          f"  no runs yet: experiments appear at {config.url}/#/experiments", flush=True)
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args)
    except ts.TrackingServerError as err:
        print(f"mgtc tracking-server: {err}", file=sys.stderr)
        return 2
    if args.print_command:
        print(" ".join(ts.build_command(config)))
        return 0
    return serve(config, args.experiment)


if __name__ == "__main__":
    sys.exit(main())
