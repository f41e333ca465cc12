"""`mgtc sweep --config jobs/configs/sweep_<name>.yaml`: a grid of training runs, nested in MLflow.

Every trial config is expanded and validated before Ray starts (a bad trial is named with
its field, and nothing runs). Trials then run as Ray Tune trials, as many at once as the
cluster's CPUs hold (or `sweep.max_concurrent`); each is a child MLflow run of one parent
run, which gets results.csv / results.md (top-1 mean ± std over seeds, kept tokens,
GFLOPs/view, clips/s, wall time), acc_vs_gflops.png, acc_vs_wallclock.png and the mask /
motion pictures.

Exit status: 0 when at least one trial finished (failed trials are recorded as FAILED child
runs and failed rows), 1 when every trial failed, 2 for an invalid sweep file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pipeline import raylog
from pipeline.progress import set_verbose
from pipeline.sweep import SweepError, load_sweep, results_markdown, run_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mgtc sweep", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="sweep file: base + grid + sweep options (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override on the base config of every trial (repeatable)")
    p.add_argument("--grid", dest="axes", action="append", default=[], metavar="AXIS=YAML_LIST",
                   help="replace or add a grid axis, e.g. --grid 'optim.seed=[0, 1]' (repeatable)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at once (default: sweep.max_concurrent, else what the CPUs hold)")
    p.add_argument("--tracking-uri", default="",
                   help="MLflow store (default: the base config's, MLFLOW_TRACKING_URI, or runs/mlflow.db)")
    p.add_argument("--runs-dir", default=None,
                   help="folder for Tune trial folders and a copy of the sweep's artifacts "
                        "(default: the trainer's run folder, runs/)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="logical CPUs of the local Ray started when RAY_ADDRESS is unset "
                        "(default: the cores; more lets a small machine hold a trainer, its "
                        "decode actor and the read tasks at once)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the trials; run nothing")
    raylog.add_verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        spec = load_sweep(args.config, args.overrides, args.axes)
    except SweepError as err:
        print(f"mgtc sweep: {err}", file=sys.stderr)
        return 2
    if args.max_concurrent is not None:
        if args.max_concurrent < 0:
            print("mgtc sweep: --max-concurrent must be >= 0", file=sys.stderr)
            return 2
        spec = dataclasses.replace(
            spec, options=dataclasses.replace(spec.options, max_concurrent=args.max_concurrent))
    print(f"sweep {spec.options.name} (base {spec.base_name}): {len(spec.trials)} trials")
    for trial in spec.trials:
        print(f"  {trial.index:3d}  {trial.name}")
    if args.dry_run:
        return 0
    outcome = run_sweep(spec, runs_dir=args.runs_dir, tracking_uri=args.tracking_uri,
                        num_cpus=args.num_cpus)
    print()
    print(results_markdown(outcome.rows, outcome.results))
    failed = sum(r.status != "FINISHED" for r in outcome.results)
    print(f"parent run {outcome.parent_run_id} in {outcome.tracking_uri}; "
          f"{len(outcome.results) - failed} finished, {failed} failed; artifacts in {outcome.out_dir}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
