"""`mgtc jobs list|status|logs|stop` against a Ray cluster's Jobs API.

    mgtc jobs list --address http://127.0.0.1:8265
    mgtc jobs logs <submission id> --follow --address ...   (exit code mirrors the job)
    mgtc jobs stop <submission id> [--wait] --address ...
"""

from __future__ import annotations

import argparse
import sys

from jobs.submit import EXIT_ERROR, follow
from pipeline import submit as sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgtc jobs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("list", "all jobs on the cluster, oldest first"),
                        ("status", "status, metadata and exit code of one job"),
                        ("logs", "the logs of one job"),
                        ("stop", "stop a running job")):
        cmd = commands.add_parser(name, help=help_)
        if name != "list":
            cmd.add_argument("submission_id")
        cmd.add_argument("--address", help="Jobs API of the head (default: $RAY_API_SERVER_ADDRESS, "
                                           "then $RAY_ADDRESS)")
        if name == "logs":
            cmd.add_argument("--follow", action="store_true",
                             help="stream until the job ends; exit code mirrors its status")
        if name == "stop":
            cmd.add_argument("--wait", action="store_true", help="return once the job has stopped")
    return parser


def list_jobs(cluster: sub.Cluster) -> int:
    rows = [("SUBMISSION ID", "STATUS", "KIND", "CONFIG", "COMMIT", "STARTED")]
    for job in sorted(cluster.list(), key=lambda j: j.start_time or 0):
        meta = job.metadata or {}
        rows.append((job.submission_id or job.job_id or "-", str(job.status), meta.get("mgtc_kind", "-"),
                     meta.get("mgtc_config", "-"), meta.get("git_commit", "-"),
                     sub.format_time_ms(job.start_time)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def status(cluster: sub.Cluster, sub_id: str) -> int:
    info = cluster.info(sub_id)
    print(f"{sub_id}: {info.status}")
    print(f"  entrypoint: {info.entrypoint}")
    print(f"  started:    {sub.format_time_ms(info.start_time)}   ended: {sub.format_time_ms(info.end_time)}")
    for key, value in sorted((info.metadata or {}).items()):
        print(f"  {key}: {value}")
    if info.status.is_terminal():
        print(f"  exit code:  {sub.exit_code(info)}")
    if info.message:
        print(f"  message:    {info.message.splitlines()[0]}")
    return 0


def stop(cluster: sub.Cluster, sub_id: str, wait: bool) -> int:
    was_running = cluster.stop(sub_id)
    if not was_running:
        print(f"{sub_id} was not running ({cluster.info(sub_id).status})")
        return 0
    print(f"stop requested for {sub_id}")
    if wait:
        print(f"{sub_id} {cluster.wait(sub_id).status}")
    return 0


def run(args: argparse.Namespace) -> int:
    cluster = sub.Cluster(args.address)
    if args.command == "list":
        return list_jobs(cluster)
    if args.command == "status":
        return status(cluster, args.submission_id)
    if args.command == "stop":
        return stop(cluster, args.submission_id, args.wait)
    if args.follow:
        return follow(cluster, args.submission_id)
    print(cluster.logs(args.submission_id), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except sub.SubmitError as err:
        print(f"mgtc jobs: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
