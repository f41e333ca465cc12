"""The driver's live view of a Ray Train run (`pipeline.progress` display).

Rank 0 posts where it is (epoch, step, running loss, clips/s, data wait) at most twice a
second, and each finished epoch's metrics, to a `ProgressBoard`: a zero-CPU actor the
driver created. A driver thread reads the board and draws one display:

    epoch 3/8 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 21/30 loss 1.52 · clips/s 64.1 · data wait 8% · ETA 2:10

and prints one line per epoch (`train demo-mgtc: epoch 3/8: loss 1.49 · val top-1 41.7 ·
...`), which is all a non-interactive log gets. Posting is fire-and-forget: a slow driver
never slows a step.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import ray

from pipeline.progress import format_duration, progress

POST_INTERVAL_S = 0.5


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest step state and the list of finished epochs of one training run."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.epochs: list[dict[str, Any]] = []

    def post(self, state: dict[str, Any]) -> None:
        self.state = state

    def epoch_done(self, metrics: dict[str, Any]) -> None:
        self.epochs.append(metrics)

    def read(self, seen: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.state, self.epochs[seen:]


class StepPoster:
    """Rank 0's side: `step(...)` after each optimizer step, `epoch_done(...)` per epoch."""

    def __init__(self, board, steps: int) -> None:
        self.board = board
        self.steps = steps  # optimizer steps per epoch
        self.last = 0.0

    def step(self, *, epoch: int, step: int, steps: int, loss, clips: float, seconds: float, waited: float) -> None:
        now = time.monotonic()
        if self.board is None or (now - self.last < POST_INTERVAL_S and step < steps):
            return
        self.last = now
        self.board.post.remote({
            "epoch": epoch, "step": step, "steps": steps, "loss": float(loss),
            "clips_per_s": clips / seconds if seconds > 0 else 0.0,
            "data_wait": waited / seconds if seconds > 0 else 0.0,
        })

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.board is not None:
            self.board.epoch_done.remote({"epoch": epoch, **{k: v for k, v in metrics.items()
                                                              if isinstance(v, (int, float))}})


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """`epoch 3/8: loss 1.49 · val top-1 41.7% · 64.1 clips/s · data wait 8% · 28s`."""
    parts = [f"loss {m['loss']:.3g}"] if "loss" in m else []
    if "top1" in m:
        parts.append(f"val top-1 {m['top1']:.1f}%")
    if "clips_per_s" in m:
        parts.append(f"{m['clips_per_s']:.1f} clips/s")
    if "data_wait_frac" in m:
        parts.append(f"data wait {100 * m['data_wait_frac']:.0f}%")
    if "epoch_time" in m:
        parts.append(format_duration(m["epoch_time"]))
    return f"epoch {m['epoch']}/{epochs}: " + " · ".join(parts)


@contextmanager
def watch_training(title: str, epochs: int, steps_per_epoch: int, first_epoch: int = 1) -> Iterator[Any]:
    """Create the board, draw it until the block ends; yields the board's handle (None when
    there is nothing left to train, or when this process is itself a Ray worker, e.g. a
    sweep's trial: nobody watches its stdout)."""
    if first_epoch > epochs or ray.get_runtime_context().get_actor_id() is not None:
        yield None
        return
    board = ProgressBoard.remote()
    stop = threading.Event()
    total_steps = (epochs - first_epoch + 1) * steps_per_epoch
    with progress(title, total=steps_per_epoch, unit="steps", rate=False) as bar:
        bar.update(description=f"epoch {first_epoch}/{epochs}")
        start = time.monotonic()
        seen = [0]
        val_top1 = ["-"]  # the last validation's, shown until the next

        def draw() -> None:
            state, new = ray.get(board.read.remote(seen[0]))
            for m in new:
                bar.line(epoch_line(m, epochs))
            seen[0] += len(new)
            if not state:
                return
            done = (state["epoch"] - first_epoch) * steps_per_epoch + state["step"]
            elapsed = time.monotonic() - start
            eta = elapsed * (total_steps - done) / done if done > 0 else float("nan")
            top1 = next((m["top1"] for m in reversed(new) if "top1" in m), None)
            if top1 is not None:
                val_top1[0] = f"{top1:.1f}%"
            bar.update(state["step"], total=state["steps"], description=f"epoch {state['epoch']}/{epochs}",
                       **{"loss": f"{state['loss']:.3g}", "val top-1": val_top1[0],
                          "clips/s": f"{state['clips_per_s']:.1f}", "data wait": f"{100 * state['data_wait']:.0f}%",
                          "ETA": format_duration(eta)})

        def loop() -> None:
            while not stop.wait(POST_INTERVAL_S):
                try:
                    draw()
                except Exception:  # noqa: BLE001  (the display must never fail the run)
                    return

        thread = threading.Thread(target=loop, name="train-progress", daemon=True)
        thread.start()
        try:
            yield board
        finally:
            stop.set()
            thread.join(timeout=5)
            try:
                draw()  # the last epochs' lines
            except Exception:  # noqa: BLE001
                pass
            ray.kill(board)
            trained = seen[0]
            bar.finish(f"{trained} of {epochs - first_epoch + 1} epochs trained, up to epoch "
                       f"{first_epoch + trained - 1}/{epochs}" if trained else "no epoch finished")
