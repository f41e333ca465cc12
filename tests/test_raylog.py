"""Ray's own lines off the console: what `ray.init` is given, native stderr to a file with
Python's stderr kept, and one clear line for an error raised in a worker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from conftest import REPO
from pipeline import raylog


class WorkerGroupError(Exception):
    """Shaped like Ray Train's: the failures by rank."""

    def __init__(self, failures):
        super().__init__("Worker group failed:\n  rank 0: long traceback ...")
        self.worker_failures = failures


class TaskError(Exception):
    """Shaped like RayTaskError: the original error as .cause."""

    def __init__(self, cause):
        super().__init__("ray::RayTrainWorker.run() (pid=1)\nTraceback ...")
        self.cause = cause


def test_failure_line_names_the_innermost_reason(monkeypatch):
    monkeypatch.delenv("MGTC_VERBOSE", raising=False)
    leaf = IndexError("Target 9 is out of bounds.")
    wrapped = RuntimeError("training failed")
    wrapped.__cause__ = WorkerGroupError({0: TaskError(leaf)})
    assert raylog.root_cause(wrapped) is leaf
    line = raylog.failure_line("mgtc train", wrapped)
    assert line.startswith("mgtc train: failed: IndexError: Target 9 is out of bounds.")
    assert "\n" not in line and "--verbose" in line


def test_quiet_and_verbose_init_arguments(monkeypatch):
    monkeypatch.delenv("MGTC_VERBOSE", raising=False)
    assert raylog.init_kwargs() == {"log_to_driver": False, "logging_level": logging.ERROR}
    monkeypatch.setenv("MGTC_VERBOSE", "1")
    assert raylog.init_kwargs() == {"log_to_driver": True}


def test_prepare_filters_the_known_warnings_for_workers_too(monkeypatch):
    monkeypatch.delenv("MGTC_VERBOSE", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    raylog.prepare()
    assert os.environ["PYTHONWARNINGS"].startswith("default,ignore:`ExecutionOptions.exclude_resources`")


def test_prepare_keeps_mlflow_store_creation_lines_off_the_console(tmp_path):
    """A fresh embedded store prints 'Creating initial MLflow database tables...' at INFO;
    after `prepare()` it does not (here, and in workers through MLFLOW_LOGGING_LEVEL);
    --verbose shows it."""
    code = ("from pipeline import raylog\n"
            "raylog.prepare()\n"
            "import mlflow\n"
            "mlflow.set_tracking_uri('sqlite:///' + {db!r})\n"
            "mlflow.set_experiment('e')\n")
    base = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    quiet = subprocess.run([sys.executable, "-c", code.format(db=str(tmp_path / "q.db"))], cwd=tmp_path,
                           capture_output=True, text=True, env=base, timeout=300)
    loud = subprocess.run([sys.executable, "-c", code.format(db=str(tmp_path / "v.db"))], cwd=tmp_path,
                          capture_output=True, text=True, env={**base, "MGTC_VERBOSE": "1"}, timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert "Creating initial MLflow database tables" in loud.stderr
    assert "INFO" not in quiet.stderr, quiet.stderr


def test_native_stderr_goes_to_the_log_file_python_stderr_stays(tmp_path):
    code = ("import os, sys\n"
            "from pathlib import Path\n"
            "from pipeline import raylog\n"
            f"raylog.quiet_native_stderr(Path({str(tmp_path / 'native.log')!r}))\n"
            "os.write(2, b'[E core_worker.cc] native line\\n')\n"
            "print('python error line', file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stderr == "python error line\n"
    assert (tmp_path / "native.log").read_text() == "[E core_worker.cc] native line\n"


def test_bench_predict_starts_a_quiet_local_ray(tmp_path):
    """`mgtc bench predict`'s own Ray: no Ray INFO lines or worker output on the console,
    the logs folder named once; the worker's line is in the session logs."""
    code = ("import os, sys, ray\n"
            "from pipeline.bench.predict import local_ray\n"
            "with local_ray() as started:\n"
            "    assert started\n"
            "    ray.get(ray.remote(lambda: print('worker line', flush=True)).remote())\n"
            "print('done')\n")
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console
    assert "INFO" not in console and "Started a local Ray instance" not in console, console
    assert "worker line" not in console, console
    assert console.count("Ray logs: ") == 1 and out.stdout.endswith("done\n"), console
