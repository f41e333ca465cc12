"""The shared vocabulary: torch-free, one copy of each name, log-safe worker env, Ray sessions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import vocab


def test_importable_without_torch():
    # decoder processes and CLIs import it (and the precompute package) without paying for torch
    code = "import sys, pipeline.vocab, pipeline.precompute; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_forwarded_env_names_only_in_its_repr(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ca.pem")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    env = vocab.forwarded_env()
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value" and env["AWS_CA_BUNDLE"] == "/etc/ca.pem"
    assert "AWS_PROFILE" not in env
    assert "s3cr3t" not in repr(env) and "s3cr3t" not in str([env])
    assert "AWS_SECRET_ACCESS_KEY" in repr(env)


def test_token_grid_names_what_does_not_tile():
    assert vocab.token_grid(16, 224, 160, 2, 16) == (8, 14, 10)
    with pytest.raises(ValueError, match="num_frames=15"):
        vocab.token_grid(15, 224, 224, 2, 16)
    with pytest.raises(ValueError, match="width=40"):
        vocab.token_grid(16, 224, 40, 2, 16)


@pytest.mark.integration
def test_ray_session_leaves_a_running_ray_running(ray_local):
    with vocab.ray_session(num_cpus=1) as started:
        assert started is False
    assert ray_local.is_initialized()
