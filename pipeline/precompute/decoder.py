"""Crash isolation: `DecoderProcess`, a child process per actor that runs `score_video` (or
`prepare.prepare_video`), and the length-prefixed pickle messages between the two
(`child_main` is the child)."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any

from pipeline import video
from pipeline.precompute import faults
from pipeline.precompute.config import PrecomputeConfig
from pipeline.precompute.scoring import VideoError, score_video, warm_up_scoring

_HEADER = struct.Struct("<Q")


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv_blocking(stream) -> Any | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(n))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the Ray actor) dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_main() -> None:
    """Decoder process: reads {path, config} requests on stdin, answers on stdout."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed (ffmpeg, stray prints) goes to stderr, not the protocol
    _die_with_parent()
    video.use_decord_without_torch()  # this process never imports torch; import now, while the parent waits
    warm_up_scoring()
    _send(protocol_out, {"ready": True})
    while True:
        request = _recv_blocking(sys.stdin.buffer)
        if request is None:
            return
        faults.before_video(request["path"])
        try:
            cfg = PrecomputeConfig(**request["config"])
            if request.get("prepare"):  # mgtc prepare: re-encode, then score the new file
                from pipeline.precompute.prepare import prepare_video

                result = prepare_video(request["path"], cfg, **request["prepare"])
            else:
                result = score_video(request["path"], cfg)
            reply = {"ok": True, "result": result}
        except VideoError as err:
            reply = {"ok": False, "stage": err.stage, "error": err.reason}
        except Exception as err:  # noqa: BLE001  (a bug must cost one video, not the actor)
            import traceback

            traceback.print_exc()
            reply = {"ok": False, "stage": "decode", "error": f"internal error: {type(err).__name__}: {err}"}
        _send(protocol_out, reply)


def _signal_reason(returncode: int | None) -> str:
    if returncode is None:
        return "decoder crashed: no exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        hint = " (killed: out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"decoder crashed: signal {-returncode} ({name}){hint}"
    return f"decoder crashed: exit code {returncode}"


class DecoderProcess:
    """A persistent child process that runs `score_video`, restarted when it dies.

    `run` never raises for a bad video: a crash (segfault, OOM kill, abort) or a timeout
    becomes {"ok": False, "stage": "decode", "error": ...}. A crashed video is retried
    `crash_retries` times in a fresh process (an OOM kill may be transient); a timeout is not.
    `timeout_s` counts from the request; a new child's start-up (imports) has its own
    `startup_s`, so a loaded machine does not turn a slow start into a video's timeout.
    """

    def __init__(self, timeout_s: float, crash_retries: int = 1, startup_s: float = 120.0):
        self.timeout_s, self.crash_retries, self.startup_s = timeout_s, crash_retries, startup_s
        self.proc: subprocess.Popen | None = None
        self.ready = False

    def _start(self) -> subprocess.Popen:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        return subprocess.Popen(
            [sys.executable, "-c", "from pipeline.precompute.decoder import child_main; child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )

    def _kill(self) -> int | None:
        proc, self.proc, self.ready = self.proc, None, False
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        return proc.returncode

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, min(n - got, 1 << 20))
            if not data:
                return None  # EOF: the child died
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _recv(self, deadline: float) -> dict | None:
        header = self._read_exact(_HEADER.size, deadline)
        body = None if header is None else self._read_exact(_HEADER.unpack(header)[0], deadline)
        return None if body is None else pickle.loads(body)

    def _wait_ready(self) -> str:
        """'' once the child has imported its decoder, else why it did not."""
        if self.ready:
            return ""
        try:
            self.ready = self._recv(time.monotonic() + self.startup_s) is not None
        except TimeoutError:
            self._kill()
            return f"decoder crashed: did not start within {self.startup_s:g} s"
        return "" if self.ready else _signal_reason(self._kill()) + " while starting"

    def _once(self, request: dict) -> dict:
        self.start()
        failed = self._wait_ready()
        if failed:
            return {"ok": False, "stage": "decode", "crash": True, "error": failed}
        deadline = time.monotonic() + self.timeout_s
        try:
            _send(self.proc.stdin, request)
            reply = self._recv(deadline)
        except TimeoutError:
            self._kill()
            return {"ok": False, "stage": "decode", "crash": False,
                    "error": f"timed out: no result after {self.timeout_s:g} s"}
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        if reply is None:
            return {"ok": False, "stage": "decode", "crash": True, "error": _signal_reason(self._kill())}
        return reply

    def run(self, path: str, config: dict, prepare: dict | None = None) -> dict:
        """Score the local video `path` (`score_video`), or with `prepare` = {dst, encode}
        re-encode it to `dst` first and score that (`prepare.prepare_video`)."""
        request = {"path": path, "config": config, "prepare": prepare}
        reply = self._once(request)
        for _ in range(self.crash_retries):
            if not reply.get("crash"):
                break
            reply = self._once(request)
        reply.pop("crash", None)
        return reply

    def start(self) -> None:
        """Start the child now (it imports decord while the caller does other work)."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self.proc = self._start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the child exits on its own
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._kill()
