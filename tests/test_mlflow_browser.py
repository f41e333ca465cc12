"""The MLflow UI as a user sees it: `mgtc ui` prints the experiment's runs view, and that page,
rendered by a real headless Chromium, lists the runs by name in the "Model training" workflow
(not the GenAI overview), without the usage-data banner. Skipped, with the reason, where no
Chromium is installed (`.ci/run` installs Debian's `chromium` when it can)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CONFIG = """
data: {{dataset: synthetic, train_manifest: data/train.csv, shards: data/shards, num_classes: 8, num_frames: 8,
        sampling_rate: 4, source_fps: 25}}
model: {{size: tiny}}
masking: {{strategy: mgtc_ratio, ratio: 0.5}}
optim: {{epochs: 2, batch_size: 4, warmup_epochs: 1}}
scaling: {{num_workers: 1, storage_path: {tmp}/runs/ray}}
tracking: {{experiment: browse-me, description: "MGTC 50% vs all tokens on synthetic motion"}}
"""
RUN_NAMES = ("mgtc-half-tokens", "all-tokens-baseline")


def render(url: str, budget_ms: int) -> str:
    """The page's DOM after its scripts ran (`--virtual-time-budget` lets the UI fetch and draw)."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
            capture_output=True, text=True, timeout=180)
    return out.stdout


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def make_runs(tmp_path, uri: str) -> None:
    """Two finished training runs with epoch curves and test results, through our tracking code."""
    from pipeline.config import replace
    from pipeline.tracking import finish_run, log_metrics, start_run, summary_params
    from tests.helpers.configs import yaml_config

    base = yaml_config(tmp_path, CONFIG.format(tmp=tmp_path))
    for name, strategy in zip(RUN_NAMES, ("mgtc_ratio", "none")):
        cfg = replace(base, [f"masking.strategy={strategy}"])
        run_id = start_run(cfg, uri=uri, run_name=name, kind="train", params=summary_params(cfg, world_size=1, tau=None))
        for epoch in (1, 2):
            log_metrics(uri, run_id, {"loss": 2.0 / epoch, "epoch_time": 1.0}, step=epoch)
        log_metrics(uri, run_id, {"test_top1": 50.0, "test_gflops_per_view": 0.08}, step=0)
        finish_run(uri, run_id, final={"test_top1": 50.0})


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium; "
                                              ".ci/run installs it)")
def test_printed_url_renders_the_training_runs_in_chromium(tmp_path, mlflow_server, monkeypatch, capsys):
    from jobs import ui

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    make_runs(tmp_path, mlflow_server)
    assert ui.main(["--experiment", "browse-me"]) == 0  # a tracking server: print its views, serve nothing
    printed = capsys.readouterr().out
    views = re.findall(r"browse-me \(2 runs\): (\S+)", printed)
    assert len(views) == 1 and re.fullmatch(
        rf"{mlflow_server}/#/experiments/\d+/runs\?workflowType=machine_learning", views[0]), printed
    text = ""
    for budget in (15_000, 60_000):  # a loaded machine may need longer to draw the table
        text = visible_text(render(views[0], budget))
        if all(name in text for name in RUN_NAMES):
            break
    assert all(name in text for name in RUN_NAMES), text[:2000]
    assert "MGTC 50% vs all tokens on synthetic motion" in text  # the experiment's description
    assert "Model registry" in text  # the "Model training" workflow's sidebar ...
    assert "Detect Issues" not in text and "Observability" not in text  # ... not the GenAI overview
    assert "MLflow collects usage data" not in text
