"""Encoder multiply-adds: the formula, torch's FlopCounterMode cross-check, the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from jobs import flops as flops_job
from pipeline.flops import (
    block_macs,
    encoder_macs,
    encoder_shape,
    gmacs_per_view,
    measured_gmacs_per_view,
)
from pipeline.model import build_model
from pipeline.selection import num_kept


def test_vit_base_16x224_is_180_gmacs():
    assert gmacs_per_view([1568], encoder_shape("base")) == pytest.approx(180.3, abs=0.05)


def test_32_frames_half_kept_costs_the_blocks_of_16_frames_all_kept():
    base16, base32 = encoder_shape("base"), encoder_shape("base", num_frames=32)
    assert block_macs(1568, base32) == block_macs(1568, base16)
    # Only the tubelet embedding differs: it runs on all 3136 tubelets before selection.
    extra = gmacs_per_view([1568], base32) - gmacs_per_view([1568], base16)
    assert extra == pytest.approx(3136 / 2 * 1536 * 768 / 1e9)
    # 32x2 at 25% masked vs 32x2 full: the "over 31%" of the MGTC abstract.
    saving = 1 - gmacs_per_view([2352], base32) / gmacs_per_view([3136], base32)
    assert 0.31 < saving < 0.33


def test_variable_lengths_average_per_clip_costs():
    shape = encoder_shape("small")
    per_clip = [encoder_macs(n, shape) / 1e9 for n in (400, 1500)]
    assert gmacs_per_view(torch.tensor([400, 1500]), shape) == pytest.approx(sum(per_clip) / 2)
    # Attention is quadratic: the cost of the mean length underestimates the mean cost.
    assert gmacs_per_view([950], shape) < gmacs_per_view([400, 1500], shape)


def test_bad_counts_and_sizes():
    shape = encoder_shape("tiny", num_frames=4, img_size=32)
    with pytest.raises(ValueError, match="num_kept=0"):
        encoder_macs(0, shape)
    with pytest.raises(ValueError, match="num_kept=9"):
        encoder_macs(9, shape)
    with pytest.raises(ValueError, match="size='huge'"):
        encoder_shape("huge")
    with pytest.raises(ValueError, match="num_frames=7"):
        encoder_shape("base", num_frames=7)


@pytest.fixture(scope="module")
def small_config():
    torch.manual_seed(0)
    model = build_model("tiny", 5, num_frames=8, img_size=64).eval()  # 4 x 4 x 4 = 64 tokens
    return model, torch.randn(2, 3, 8, 64, 64), encoder_shape("tiny", num_frames=8, img_size=64)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("fused", [True, False])
def test_formula_matches_flop_counter(small_config, keep_ratio, fused):
    model, x, shape = small_config
    model.set_fused_attn(fused)
    kept = num_kept(shape.num_tokens, 1 - keep_ratio)
    ids_keep = torch.randperm(shape.num_tokens)[:kept].sort().values.expand(2, -1)
    counted = measured_gmacs_per_view(model, x, ids_keep)
    assert counted == pytest.approx(gmacs_per_view([kept, kept], shape), rel=0.02)


def test_formula_matches_flop_counter_on_packed_variable_lengths(small_config):
    model, x, shape = small_config
    model.set_fused_attn(True)
    keep_mask = torch.ones(2, shape.num_tokens, dtype=torch.bool)
    keep_mask[0, 20:] = False
    ids_keep = torch.arange(shape.num_tokens).expand(2, -1)
    counted = measured_gmacs_per_view(model, x, ids_keep, keep_mask)
    assert counted == pytest.approx(gmacs_per_view([20, 64], shape), rel=0.02)


def test_cli_prints_gmacs_and_kept_tokens(capsys):
    assert flops_job.main(["--model", "base", "--num-frames", "32", "--keep-ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "1568 / 3136" in out and "182.2 G multiply-adds per view" in out
    assert flops_job.main(["--model", "tiny", "--num-frames", "4", "--input-size", "32",
                           "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    formula = next(line for line in lines if line.startswith("encoder total")).split()[2]
    counted = next(line for line in lines if line.startswith("FlopCounterMode")).split()[1]
    assert formula == counted


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "huge"], "invalid choice: 'huge'"),
        (["--num-frames", "15"], "num_frames=15"),
        (["--input-size", "200"], "height=200"),
        (["--keep-ratio", "0"], "keep-ratio"),
        (["--keep-ratio", "1.5"], "keep-ratio"),
    ],
)
def test_cli_rejects_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        flops_job.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_does_not_import_ray():
    code = ("import sys, jobs.flops; jobs.flops.main(['--model', 'small']); "
            "assert 'ray' not in sys.modules, 'jobs.flops imported ray'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_benchmark_rewrites_only_its_own_section():
    from jobs.bench import replace_section
    from pipeline.bench.encoder import SECTION

    document = f"# Benchmarks\n\n## Precompute\n\nA\n\n{SECTION}\n\nold\n\n## Train\n\nB\n"
    updated = replace_section(document, f"{SECTION}\n\nnew\n")
    assert "old" not in updated and "new" in updated
    assert updated.index("## Precompute") < updated.index(SECTION) < updated.index("## Train")
    assert "\nA\n" in updated and "\nB\n" in updated
    appended = replace_section("# Benchmarks\n\n## Precompute\n\nA\n", f"{SECTION}\n\nnew\n")
    assert appended.endswith(f"{SECTION}\n\nnew\n") and "\nA\n" in appended


def test_benchmark_clips_keep_different_token_counts_per_clip():
    from pipeline.bench.encoder import moving_clips
    from pipeline.motion import token_scores_torch
    from pipeline.selection import select_tokens

    pixels = moving_clips(4, 8, 64, [0.3, 0.45, 0.6, 0.8])
    selection = select_tokens("mgtc_threshold", scores=token_scores_torch(pixels), tau=0.05)
    lengths = selection.lengths.tolist()
    assert lengths == sorted(lengths) and len(set(lengths)) == 4


def test_mean_gmacs_from_sums_equals_the_mean_over_clips():
    from pipeline.flops import mean_gmacs

    shape = encoder_shape("base", num_frames=16)
    counts = [1568, 700, 1200, 31]
    expected = gmacs_per_view(counts, shape)
    got = mean_gmacs(len(counts), sum(counts), sum(n * n for n in counts), shape)
    assert got == pytest.approx(expected, rel=1e-12)
    assert mean_gmacs(0, 0, 0, shape) == 0.0
