"""Ray's own lines off the console: what `ray.init` is given, native stderr to a file with
Python's stderr kept, and one clear line for an error raised in a worker."""

from __future__ import annotations

import logging
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
    import os

    assert os.environ["PYTHONWARNINGS"].startswith("default,ignore:`ExecutionOptions.exclude_resources`")


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
