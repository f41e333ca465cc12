"""`mgtc submit <precompute|prepare|train|eval|sweep|predict> [job args] --address http://<head>:8265`

Runs `python -m jobs.<module> <job args>` on a Ray cluster through the Ray Jobs API, with
the project's code as working_dir and the runtime env of `cluster/runtime_env.yaml`.
Options below are mgtc's; every other argument goes to the job unchanged (put job args
that clash with them after `--`). With `--follow` the logs stream here and the exit code
mirrors the job: 0 SUCCEEDED, the driver's code when FAILED, 130 when STOPPED.

    mgtc submit train --config jobs/configs/k400_vitb_32x2_mgtc25.yaml --set optim.epochs=1 \\
        --address http://127.0.0.1:8265 --follow
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import submit as sub

EXIT_ERROR = 2  # could not submit: the message says why


def build_parser() -> argparse.ArgumentParser:
    """mgtc's own options; `parse_known_args` leaves the rest to the job."""
    parser = argparse.ArgumentParser(
        prog="mgtc submit", allow_abbrev=False,
        usage="mgtc submit {%s} [job args] --address URL [options] [-- job args]" % ",".join(sub.JOB_MODULES),
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="Jobs API of the head, e.g. http://127.0.0.1:8265 "
                        "(default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)")
    parser.add_argument("--follow", action="store_true",
                        help="stream the logs until the job ends; exit code mirrors its status")
    parser.add_argument("--runtime-env", type=Path, default=sub.DEFAULT_RUNTIME_ENV,
                        help="runtime env YAML; relative working_dir resolves against the "
                             "current directory (default: %(default)s)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra env var for the job, e.g. MLFLOW_TRACKING_URI=http://mlflow:5000 "
                             "(endpoints only: credentials are refused)")
    parser.add_argument("--submission-id", help="override the generated mgtc-<kind>-<config>-<time>-<hex>")
    parser.add_argument("--name", help="config name for the id and metadata (default: --config's stem)")
    parser.add_argument("--entrypoint-num-cpus", type=float, help="CPUs reserved for the driver")
    parser.add_argument("--entrypoint-num-gpus", type=float, help="GPUs reserved for the driver")
    parser.add_argument("--no-check", action="store_true",
                        help="skip parsing the job args locally with the job's own parser")
    parser.add_argument("--print-submission", action="store_true",
                        help="print the resolved submission as JSON and stop (submits nothing)")
    return parser


def split_argv(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(kind, mgtc args, job args): the kind comes first, `--` ends mgtc's options."""
    if not argv or argv[0].startswith("-"):
        return None, argv, []
    kind, rest = argv[0], argv[1:]
    if "--" in rest:
        cut = rest.index("--")
        return kind, rest[:cut], rest[cut + 1:]
    return kind, rest, []


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`--env KEY=VALUE` items as a dict; a pair without '=' is a usage error."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise sub.SubmitError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _resources(args: argparse.Namespace) -> dict[str, float]:
    return {k: v for k, v in (("entrypoint_num_cpus", args.entrypoint_num_cpus),
                              ("entrypoint_num_gpus", args.entrypoint_num_gpus)) if v is not None}


def run(kind: str, args: argparse.Namespace, job_args: list[str]) -> int:
    """Plan, check, submit and optionally follow one job; SubmitErrors go to the caller."""
    plan = sub.plan_submission(
        kind, job_args, runtime_env_path=args.runtime_env, base_dir=Path.cwd(),
        extra_env=parse_env(args.env), name=args.name, sub_id=args.submission_id,
        entrypoint_resources=_resources(args))
    if not args.no_check:
        working_dir = Path(plan.runtime_env.get("working_dir", Path.cwd()))
        ok, message = sub.check_job_args(working_dir, kind, job_args)
        if not ok:
            print(message, file=sys.stderr)
            return EXIT_ERROR
        if message:
            print(f"mgtc submit: {message}", file=sys.stderr)
    if args.print_submission:
        print(plan.describe())
        return 0
    cluster = sub.Cluster(args.address)
    sub_id = cluster.submit(plan)
    addr = f"--address {cluster.address}"
    print(f"submitted {sub_id} to {cluster.address} "
          f"(working dir {plan.packed_bytes / 2**20:.1f} MiB, commit {plan.metadata['git_commit']})\n"
          f"  logs: mgtc jobs logs {sub_id} --follow {addr}\n"
          f"  stop: mgtc jobs stop {sub_id} {addr}", flush=True)
    if not args.follow:
        return 0
    return follow(cluster, sub_id)


def follow(cluster: sub.Cluster, sub_id: str) -> int:
    """Stream the logs; exit code mirrors the final status. Ctrl-C detaches, the job runs on."""
    try:
        info = cluster.follow(sub_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; {sub_id} keeps running "
              f"(mgtc jobs stop {sub_id} --address {cluster.address})", file=sys.stderr)
        return sub.EXIT_STOPPED
    print(f"job {sub_id} {info.status}" + (f": {info.message.splitlines()[0]}" if info.message else ""),
          file=sys.stderr)
    return sub.exit_code(info)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    kind, own, after_dashes = split_argv(argv)
    if kind is None:
        parser.parse_args(own)  # -h prints help and exits; anything else is a usage error
        parser.error(f"the job kind comes first: one of {', '.join(sub.JOB_MODULES)}")
    if kind not in sub.JOB_MODULES:
        parser.error(f"unknown job kind {kind!r}; expected one of {', '.join(sub.JOB_MODULES)}")
    args, job_args = parser.parse_known_args(own)
    try:
        return run(kind, args, job_args + after_dashes)
    except sub.SubmitError as err:
        print(f"mgtc submit: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
