"""Ray's own lines off the console, kept in the Ray session logs; `--verbose` shows them.

What a user saw on `mgtc demo` before (each line below is now off the console, on disk):
  - every worker's stdout/stderr (`(TrainController pid=...) Requesting resources`, one
    `TrainingReport(...)` dict per epoch, Ray Data's `ExecutionOptions.exclude_resources`
    deprecation, actor start-up chatter): `ray.init(log_to_driver=False)`; Ray still writes
    them to `<session>/logs/worker-*.out|err`;
  - the driver's own Ray logger (the token-auth banner, "Started a local Ray instance"):
    `logging_level=ERROR` (errors still show);
  - Ray Data's console handler ("Progress bars disabled", execution plans, progress lines
    off a terminal): raised to ERROR; its file handler (`<session>/logs/ray-data/`) keeps all;
  - the C++ core worker's `E ... has constructor arguments in the object store and
    max_restarts > 0` (Ray Data's actor pools, Ray issue 53727; harmless for our actors,
    which take no object-store arguments worth restarting for): written by native code to
    file descriptor 2, which `quiet_native_stderr` points at `<session>/logs/mgtc-driver-
    stderr.log`; Python's `sys.stderr` stays on the terminal, so our errors and tracebacks
    still reach the user;
  - known-harmless Python warnings (`NOISY_WARNINGS`) are ignored where they are raised, in
    the driver and (through PYTHONWARNINGS, inherited by a local Ray's workers) in workers;
  - Ray Tune's experiment box ("Configuration for experiment ...", "View detailed results
    here", the TensorBoard hint), which its new output engine prints even at `verbose=0`
    (Ray 2.60): `RAY_AIR_NEW_OUTPUT=0`, Ray's documented switch to the legacy engine, which
    prints nothing at `verbose=0` (`mgtc sweep` reports trials itself);
  - the raylet's "WARNING: N PYTHON worker processes have been started ..., which is Nx the
    maximum expected startup concurrency": a sweep running trials side by side starts about
    8 processes per trial (Tune's trial actor, Ray Train's controller and workers, Ray Data's
    coordinators and decode actors), which trips it on a small machine while nothing is
    wrong. It comes through the driver's error channel, which also carries real errors, so
    it cannot be filtered there; `local_system_config` raises the local Ray's start-up
    concurrency, the number the warning counts against, instead.

`MGTC_VERBOSE=1` (`--verbose`) leaves all of it on, as Ray prints it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from pipeline.progress import verbose

# (message prefix, why it is harmless here)
NOISY_WARNINGS = (
    ("`ExecutionOptions.exclude_resources` is deprecated",
     "raised inside Ray Train's own dataset setup (Ray 2.60), not by our code"),
)
_STATE: dict[str, Any] = {"printed": False}


def prepare() -> None:
    """Before `ray.init`: warnings filtered in this process and in the workers a local Ray
    starts (they inherit PYTHONWARNINGS from the driver); MLflow's INFO lines (creating the
    embedded store's tables) off the console, in this process and in those workers
    (MLFLOW_LOGGING_LEVEL, unless the user set it)."""
    if verbose():
        return
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow reads this when it is imported, here and in the workers a local Ray starts.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    entries = [f"ignore:{message}" for message, _ in NOISY_WARNINGS]
    current = os.environ.get("PYTHONWARNINGS", "")
    os.environ["PYTHONWARNINGS"] = ",".join([*([current] if current else []), *entries])
    for message, _ in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message))


def quiet_tune() -> None:
    """Before a Tune run: the legacy output engine, silent at `verbose=0` (unless the user
    chose an engine with RAY_AIR_NEW_OUTPUT, or --verbose)."""
    if not verbose():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def local_system_config(concurrent_jobs: int) -> dict[str, Any]:
    """`_system_config` of a local Ray that runs `concurrent_jobs` training runs at once:
    worker start-up concurrency of 8 processes per run (at least the cores), so the
    raylet's worker-count warning (at 4x that) stays for real runaways."""
    if verbose():
        return {}
    return {"worker_maximum_startup_concurrency": max(os.cpu_count() or 1, 8 * max(1, concurrent_jobs))}


def init_kwargs() -> dict[str, Any]:
    """The quiet part of `ray.init(...)`: workers' output stays in their log files."""
    if verbose():
        return {"log_to_driver": True}
    return {"log_to_driver": False, "logging_level": logging.ERROR}


def after_init() -> str:
    """After `ray.init`: Ray Data's console quiet, native stderr to the session logs, and the
    logs folder printed once per process. Returns that folder ('' when unknown)."""
    logs = session_logs()
    if not verbose():
        quiet_ray_data()
        if logs:
            quiet_native_stderr(Path(logs) / "mgtc-driver-stderr.log")
    if logs and not _STATE["printed"]:
        _STATE["printed"] = True
        hint = "" if verbose() else " (--verbose or MGTC_VERBOSE=1 shows them here)"
        print(f"Ray logs: {logs}{hint}", flush=True)
    return logs


def session_logs() -> str:
    """The logs folder of the Ray session this driver is connected to ('' if none)."""
    try:
        from ray._private import worker

        node = worker._global_node
        return str(Path(node.get_session_dir_path()) / "logs") if node is not None else ""
    except (ImportError, AttributeError):
        return ""


def quiet_ray_data() -> None:
    """Ray Data's console handler shows errors only, its progress bars are off (our display
    is the one progress display); its log file keeps everything."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if "File" not in type(handler).__name__:
            handler.setLevel(logging.ERROR)


def quiet_native_stderr(path: Path) -> None:
    """Point file descriptor 2 (native code: Ray's C++ core worker) at `path`, and keep
    Python's `sys.stderr` on the original stream. Once per process."""
    if _STATE.get("native"):
        return
    sys.stderr.flush()
    original = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(target, 2)
    os.close(target)
    sys.stderr = os.fdopen(original, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    _STATE["native"] = str(path)


def add_verbose_flag(parser) -> None:
    """`--verbose` on a command that runs Ray (call `set_verbose(args.verbose)` after parsing)."""
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines and full tracebacks (also MGTC_VERBOSE=1)")


def report_failure(command: str, err: BaseException) -> int:
    """What a command does when its Ray job raised: re-raise under --verbose (the full
    traceback), else print `failure_line` on stderr and return exit code 1."""
    if verbose():
        raise err
    print(failure_line(command, err), file=sys.stderr, flush=True)
    return 1


def failure_line(command: str, err: BaseException) -> str:
    """One line for a job that failed in a worker: the innermost error and where the logs are."""
    leaf = root_cause(err)
    text = str(leaf).strip().splitlines()
    reason = f"{type(leaf).__name__}: {text[-1] if text else ''}".strip().rstrip(":")
    logs = session_logs()
    where = f"; Ray logs: {logs}" if logs else ""
    return f"{command}: failed: {reason}{where} (--verbose for the full traceback)"


def root_cause(err: BaseException) -> BaseException:
    """The original error under Ray's wrappers (RayTaskError.cause, Ray Train's worker
    failures, __cause__ chains)."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            err = next(iter(failures.values()))
            continue
        inner = getattr(err, "cause", None)
        if isinstance(inner, BaseException):
            err = inner
            continue
        if err.__cause__ is not None:
            err = err.__cause__
            continue
        break
    return err
