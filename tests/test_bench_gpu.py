"""`mgtc bench gpu`: refuses cleanly without CUDA; its CPU dry run goes through every check
(tiny model) and writes its table; peaks and budget behave."""

from __future__ import annotations

import pytest
import torch

from jobs import bench_gpu
from pipeline.bench import gpu

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@needs_no_cuda
def test_without_cuda_it_exits_with_one_clear_line(capsys):
    assert bench_gpu.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "no CUDA device visible" in err and "--dry-run" in err


@pytest.mark.integration  # end to end: every check on the tiny model (~20 s idle, minutes under load)
def test_dry_run_goes_through_every_check_and_writes_the_table(tmp_path, capsys):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## Other (issue 1)\n\nkept\n")
    assert bench_gpu.main(["--dry-run", "--skip", "ray", "--output", str(output)]) == 0
    text = output.read_text()
    assert "## Other (issue 1)\n\nkept" in text and bench_gpu.SECTION in text
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    status = {line.split(" | ")[0][2:]: line.split(" | ")[4] for line in rows}
    assert status["CUDA visible"] == "skipped" and status["varlen kernel vs per-clip loop"] == "skipped"
    assert status["fp32 vs bf16 logits"] == "pass" and status["host syncs per training step"] == "pass"
    for case in ("all tokens", "MGTC 25%", "MGTC 50%", "threshold, packed", "threshold, padded"):
        assert status[f"fwd+bwd: {case}"] == "measured", case
    assert "decode: decord CPU, 1 thread" in status
    assert not any(s in ("FAIL", "error") for s in status.values()), status
    assert "| fwd+bwd: all tokens | ViT-tiny 4x32, batch 4, float32, compiled |" in text


@pytest.mark.integration
def test_dry_run_ray_train_step(ray_local, tmp_path):
    plan = bench_gpu.make_plan(bench_gpu.build_parser().parse_args(["--dry-run"]))
    (row,) = gpu.check_ray(plan)
    assert row.status == "pass" and "backend gloo" in row.value, row


def test_peaks_come_from_the_device_name():
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("Some Future GPU") is None


def test_a_failing_check_is_a_row_not_a_crash(monkeypatch):
    def broken(plan):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setitem(bench_gpu.RUNNERS, "cuda", ("CUDA visible", broken))
    plan = bench_gpu.make_plan(bench_gpu.build_parser().parse_args(["--dry-run"]))
    (row,) = bench_gpu.run_checks(plan, ["cuda"])
    assert (row.status, row.note) == ("error", "RuntimeError: kernel exploded")
