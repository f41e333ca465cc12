"""The progress display: live on a terminal, one plain line per milestone elsewhere."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from conftest import REPO
from pipeline.progress import format_duration, is_live, progress

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_is_one_line_per_milestone_and_a_summary(monkeypatch):
    monkeypatch.delenv("MGTC_PROGRESS", raising=False)
    out = io.StringIO()
    with progress("precompute", total=10, unit="videos", stream=out) as bar:
        for part in range(2):
            for _ in range(5):
                bar.update(advance=1, errors=part)
            bar.line(f"part {part + 1}/2 written")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["precompute: part 1/2 written", "precompute: part 2/2 written"]
    assert len(lines) == 3 and lines[2].startswith("precompute: 10/10 videos · errors 1 · ")
    assert "videos/s" in lines[2] and lines[2].endswith("elapsed")
    assert not CONTROL.search(out.getvalue())


def test_live_output_redraws_on_a_terminal_and_ends_with_the_summary(monkeypatch):
    monkeypatch.delenv("MGTC_PROGRESS", raising=False)
    out = Tty()
    assert is_live(out)
    with progress("eval", total=4, unit="views", stream=out) as bar:
        bar.update(advance=4)
        bar.line("done")
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: the bar redraws in place
    assert "eval: done" in text and "eval: 4/4 views" in text


def test_forced_plain_on_a_terminal_and_dumb_terminals(monkeypatch):
    monkeypatch.setenv("MGTC_PROGRESS", "plain")
    assert not is_live(Tty())
    monkeypatch.delenv("MGTC_PROGRESS")
    monkeypatch.setenv("TERM", "dumb")
    assert not is_live(Tty())


def test_a_failed_block_prints_no_summary():
    out = io.StringIO()
    try:
        with progress("train", total=3, stream=out, live=False) as bar:
            bar.update(advance=1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert out.getvalue() == ""


def test_eta_and_fields():
    out = io.StringIO()
    with progress("train", total=4, unit="steps", stream=out, live=False) as bar:
        bar.update(2, loss=1.23456, val_top1=None)
        assert bar.info().startswith("loss 1.23 · ") and "ETA" in bar.info()
        bar.update(description="epoch 2/3", loss=None)
        assert "loss" not in bar.info()
    assert [format_duration(s) for s in (7, 123, 3723, float("nan"))] == ["7s", "2:03", "1:02:03", "?"]


def test_piped_output_of_a_process_has_no_control_characters():
    code = ("from pipeline.progress import progress\n"
            "with progress('demo', total=3, unit='steps') as bar:\n"
            "    for i in range(3):\n"
            "        bar.update(advance=1, loss=0.5)\n"
            "        bar.line(f'epoch {i + 1}/3')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert out.splitlines()[:3] == ["demo: epoch 1/3", "demo: epoch 2/3", "demo: epoch 3/3"]
    assert not CONTROL.search(out)
