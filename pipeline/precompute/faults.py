"""Fault injection for the precompute job: every `MGTC_FAULT_*` hook, in one place.

The job's promise is that one bad video costs one error row, never the actor or the job: a
decoder child that segfaults or hangs is restarted, an actor that dies has its part's videos
recorded as 'worker' errors, and a killed job resumes to the same shards. Those paths only run
when something breaks, so tests/test_precompute.py breaks things on purpose through these
environment variables (inert unless set; the driver forwards them to the workers with the AWS
chain, see `job.py`):

- MGTC_FAULT_CRASH=<substring>: the decoder child segfaults on a video whose path contains it.
- MGTC_FAULT_HANG=<substring>: the decoder child hangs (an hour) on such a video.
- MGTC_FAULT_DELAY_S=<seconds>: the decoder child sleeps this long before every video, so a
  test can kill the job mid-way.
- MGTC_FAULT_WORKER_EXIT=<substring>: the actor process itself exits (code 3) on a part
  holding such a video (the decoder child dies with it).

Production code calls one function per site: `before_video(path)` in the decoder child,
`worker_exit(paths)` in `PartWorker.process_part`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

FAULT_ENV = ("MGTC_FAULT_CRASH", "MGTC_FAULT_HANG", "MGTC_FAULT_DELAY_S", "MGTC_FAULT_WORKER_EXIT")


def before_video(path: str) -> None:
    """Decoder child, before decoding `path`: MGTC_FAULT_CRASH / _HANG / _DELAY_S."""
    crash, hang = os.environ.get("MGTC_FAULT_CRASH"), os.environ.get("MGTC_FAULT_HANG")
    if crash and crash in path:
        os.kill(os.getpid(), signal.SIGSEGV)
    if hang and hang in path:
        time.sleep(3600)
    delay = float(os.environ.get("MGTC_FAULT_DELAY_S") or 0)
    if delay > 0:
        time.sleep(delay)


def worker_exit(paths: Iterable[str]) -> None:
    """Actor, before scoring a part of `paths`: MGTC_FAULT_WORKER_EXIT ends the process at once
    (`os._exit`: no cleanup, no exception Ray could catch, like an OOM kill)."""
    exit_on = os.environ.get("MGTC_FAULT_WORKER_EXIT")
    if exit_on and any(exit_on in p for p in paths):
        os._exit(3)


def clear() -> None:
    """Drop every hook from this process's env (an actor takes only the driver's, never a stale one)."""
    for key in FAULT_ENV:
        os.environ.pop(key, None)
