"""Sweeps: grid expansion and validation, aggregation over seeds, failed trials, MLflow REST."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import flat_params, load_config
from pipeline.sweep import (
    SweepError,
    Trial,
    TrialResult,
    aggregate,
    load_sweep,
    results_csv,
    results_markdown,
    run_sweep,
)

INLINE_BASE = {
    "data": {"num_classes": 4, "train_manifest": "train.txt", "shards": "shards", "num_frames": 8,
             "sampling_rate": 4},
    "masking": {"strategy": "none"},
    "optim": {"epochs": 1, "warmup_epochs": 0},
}
PAPER_GRID = {
    "frames": [
        {"data.num_frames": 8, "data.sampling_rate": 4},
        {"data.num_frames": 16, "data.sampling_rate": 2},
    ],
    "masking": [
        {"masking.strategy": "none"},
        {"masking.strategy": "mgtc_ratio", "masking.ratio": 0.5},
        {"masking.strategy": "random", "masking.ratio": 0.5},
    ],
    "optim.seed": [0, 1],
}


def write_sweep(tmp_path: Path, grid=None, base=None, sweep=None, **extra) -> Path:
    doc = {"base": base if base is not None else INLINE_BASE, "grid": grid if grid is not None else PAPER_GRID,
           "sweep": sweep or {"name": "t"}, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_tracking_parent_run_id_is_an_optional_config_field(tmp_path):
    base = ["data.num_classes=3", "data.train_manifest=train.txt", "masking.strategy=none"]
    assert load_config(None, base).tracking.parent_run_id == ""
    cfg = load_config(None, [*base, "tracking.parent_run_id=0123abcd"])
    assert cfg.tracking.parent_run_id == "0123abcd"
    assert flat_params(cfg)["tracking.parent_run_id"] == "0123abcd"


# ------------------------------------------------------------------------------ expansion


def test_grid_is_the_cross_product_with_linked_settings(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    assert len(spec.trials) == 2 * 3 * 2
    names = [t.name for t in spec.trials]
    assert len(set(names)) == len(names)
    assert names[:3] == ["8x4-none-s0", "8x4-none-s1", "8x4-mgtc_ratio-r0.5-s0"]
    linked = {(t.cfg.data.num_frames, t.cfg.data.sampling_rate) for t in spec.trials}
    assert linked == {(8, 4), (16, 2)}  # never 8x2 or 16x4
    t = next(t for t in spec.trials if t.name == "16x2-random-r0.5-s1")
    assert (t.cfg.masking.strategy, t.cfg.masking.ratio, t.cfg.optim.seed) == ("random", 0.5, 1)
    assert t.setting == "16x2-random-r0.5"
    assert t.cfg.optim.epochs == 1  # the base is kept where the grid says nothing


def test_set_and_cli_overrides_apply_to_every_trial(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, set=["optim.epochs=3"]), ["optim.lr=0.01"])
    assert {(t.cfg.optim.epochs, t.cfg.optim.lr) for t in spec.trials} == {(3, 0.01)}


def test_grid_axes_can_be_replaced_or_added_from_the_command_line(tmp_path):
    spec = load_sweep(write_sweep(tmp_path), axes=["optim.seed=[5]", "optim.lr=[0.001, 0.002]"])
    assert {t.cfg.optim.seed for t in spec.trials} == {5}
    assert len(spec.trials) == 2 * 3 * 1 * 2
    assert "8x4-none-lr=0.002-s5" in {t.name for t in spec.trials}
    with pytest.raises(SweepError, match="expected axis="):
        load_sweep(write_sweep(tmp_path), axes=["optim.seed"])


def test_base_path_is_found_next_to_the_sweep_file(tmp_path, monkeypatch):
    (tmp_path / "train_cfg.yaml").write_text(yaml.safe_dump(INLINE_BASE))
    path = write_sweep(tmp_path, base="train_cfg.yaml", grid={"optim.seed": [0, 1, 2]})
    monkeypatch.chdir("/")
    spec = load_sweep(path)
    assert spec.base_name == "train_cfg"
    assert [t.name for t in spec.trials] == ["8x4-none-s0", "8x4-none-s1", "8x4-none-s2"]


def test_invalid_trials_are_all_named_with_their_field(tmp_path):
    grid = {
        "masking": [
            {"masking.strategy": "mgtc_ratio", "masking.ratio": 0.25},
            {"masking.strategy": "mgtc_threshold"},  # no tau, not calibrated
            {"masking.strategy": "running_cell", "masking.ratio": 0.1},  # int(4 * 0.1) = 0
        ],
        "optim.seed": [0],
    }
    with pytest.raises(SweepError) as err:
        load_sweep(write_sweep(tmp_path, grid=grid))
    text = str(err.value)
    assert "trial 0" not in text
    assert "trial 1 (masking.strategy=mgtc_threshold, optim.seed=0)" in text and "masking.tau" in text
    assert "trial 2 (masking.strategy=running_cell, masking.ratio=0.1, optim.seed=0)" in text
    assert "masking.ratio=0.1" in text


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"masking": [{"masking.ratoi": 0.5}]}, "unknown field(s) ratoi"),
        ({"optim.seed": [0], "seeds": [{"optim.seed": 1}]}, "optim.seed set by two grid axes"),
        ({"masking": [{"masking.strategy": "none", "masking.ratio": 0.25},
                      {"masking.strategy": "none", "masking.ratio": 0.5}]}, "same setting as trial 0"),
        ({"frames": [8, 16]}, "a named axis takes mappings"),
        ({"optim.seed": []}, "non-empty list"),
        ({"masking": [{"ratio": 0.5}]}, "keys must be section.field"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(SweepError) as err:
        load_sweep(write_sweep(tmp_path, grid=grid))
    assert message in str(err.value)


def test_bad_sweep_file_keys_and_options(tmp_path):
    with pytest.raises(SweepError, match="unknown key"):
        load_sweep(write_sweep(tmp_path, grdi={}))
    with pytest.raises(SweepError, match=r"sweep: unknown field\(s\) max_concurent"):
        load_sweep(write_sweep(tmp_path, sweep={"name": "x", "max_concurent": 2}))
    with pytest.raises(SweepError, match="max_concurrent"):
        load_sweep(write_sweep(tmp_path, sweep={"name": "x", "max_concurrent": -1}))
    with pytest.raises(SweepError, match="data: expected a mapping of fields"):
        load_sweep(write_sweep(tmp_path, base={"data": 3}))
    with pytest.raises(SweepError, match=r"(?s)base config: .*num_classes"):
        load_sweep(write_sweep(tmp_path, base={"data": {"train_manifest": "t.txt"}}))


@pytest.mark.parametrize("name, trials", [("sweep_synthetic_paper", 21), ("sweep_smoke", 2), ("sweep_study_motion", 24),
                                          ("sweep_study_hard", 24), ("sweep_study_smoke", 8)])
def test_shipped_sweep_files_validate(name, trials):
    repo = Path(__file__).resolve().parent.parent
    spec = load_sweep(repo / "jobs" / "configs" / f"{name}.yaml")
    assert len(spec.trials) == trials


def test_the_paper_sweep_holds_the_studys_settings():
    repo = Path(__file__).resolve().parent.parent
    spec = load_sweep(repo / "jobs" / "configs" / "sweep_synthetic_paper.yaml")
    settings = list(dict.fromkeys(t.setting for t in spec.trials))
    assert settings == ["8x4-none", "16x2-none", "16x2-mgtc_ratio-r0.25", "16x2-mgtc_ratio-r0.5",
                        "16x2-random-r0.5", "16x2-running_cell-r0.5", "16x2-mgtc_threshold-tau@r0.5"]
    assert {t.cfg.optim.seed for t in spec.trials} == {0, 1, 2}
    # Same time span: frames x stride is 32 source frames for both frame rates.
    assert {t.cfg.data.num_frames * t.cfg.data.sampling_rate for t in spec.trials} == {32}


@pytest.mark.parametrize("name", ["sweep_study_motion", "sweep_study_hard"])
def test_the_study_sweeps_compare_the_key_differences_over_three_seeds(name):
    from pipeline.sweep import comparison_pairs

    repo = Path(__file__).resolve().parent.parent
    spec = load_sweep(repo / "jobs" / "configs" / f"{name}.yaml")
    assert {t.cfg.optim.seed for t in spec.trials} == {0, 1, 2}
    assert {t.cfg.masking.score_mode for t in spec.trials} == {"boundary", "compensated"}
    assert ("16x2-mgtc_ratio-r0.5", "16x2-random-r0.5") in comparison_pairs(spec.options)
    assert ("16x2-none", "8x4-none") in comparison_pairs(spec.options)
    assert ("16x2-mgtc_ratio-r0.25", "16x2-none") in comparison_pairs(spec.options)
    assert {t.cfg.data.test_clips for t in spec.trials} == {1}


# ------------------------------------------------------------------------------ aggregation


def _results(spec, metrics_of, failed=()):
    out = []
    for t in spec.trials:
        if t.name in failed:
            out.append(TrialResult(t, "FAILED", {}, "RuntimeError: boom"))
        else:
            out.append(TrialResult(t, "FINISHED", metrics_of(t)))
    return out


def test_aggregation_is_mean_and_sample_std_over_seeds(tmp_path):
    base = {**INLINE_BASE}
    grid = {"masking": PAPER_GRID["masking"][:2], "optim.seed": [0, 1, 2]}
    spec = load_sweep(write_sweep(tmp_path, base=base, grid=grid))
    top1 = {0: 60.0, 1: 70.0, 2: 80.0}

    def metrics(t: Trial):
        bonus = 5.0 if t.cfg.masking.strategy == "mgtc_ratio" else 0.0
        return {"top1": top1[t.cfg.optim.seed] + bonus, "kept_ratio": 1 - t.cfg.masking.ratio * (
            t.cfg.masking.strategy != "none"), "gflops_per_view": 2.0, "train_clips_per_s": 10.0,
            "wall_time_s": 30.0 + t.cfg.optim.seed}

    rows = aggregate(_results(spec, metrics))
    assert [r["setting"] for r in rows] == ["8x4-none", "8x4-mgtc_ratio-r0.5"]
    none, mgtc = rows
    assert none["top1_mean"] == pytest.approx(70.0) and none["top1_std"] == pytest.approx(10.0)
    assert mgtc["top1_mean"] == pytest.approx(75.0) and mgtc["top1_std"] == pytest.approx(10.0)
    assert mgtc["kept_ratio_mean"] == pytest.approx(0.5) and mgtc["kept_ratio_std"] == pytest.approx(0.0)
    assert none["wall_time_s_mean"] == pytest.approx(31.0)
    assert (none["ok"], none["seeds"], none["status"]) == (3, 3, "ok")
    table = results_markdown(rows)
    assert "70.0 ± 10.0" in table and "75.0 ± 10.0" in table
    assert results_csv(rows).splitlines()[0].startswith("setting,frames,num_frames,sampling_rate,strategy")


def test_failed_seeds_are_rows_marked_failed_not_averaged(tmp_path):
    grid = {"masking": PAPER_GRID["masking"][:2], "optim.seed": [0, 1]}
    spec = load_sweep(write_sweep(tmp_path, grid=grid))
    failed = {"8x4-none-s1", "8x4-mgtc_ratio-r0.5-s0", "8x4-mgtc_ratio-r0.5-s1"}
    results = _results(spec, lambda t: {"top1": 50.0}, failed=failed)
    none, mgtc = aggregate(results)
    assert (none["status"], none["ok"], none["failed"]) == ("partial", 1, "8x4-none-s1")
    assert none["top1_mean"] == 50.0 and math.isnan(none["top1_std"])
    assert mgtc["status"] == "failed" and math.isnan(mgtc["top1_mean"])
    table = results_markdown([none, mgtc], results)
    assert "0/2 (failed)" in table
    assert "- `8x4-mgtc_ratio-r0.5-s0`: RuntimeError: boom" in table


def test_setting_names_become_valid_mlflow_metric_keys():
    from mlflow.utils.validation import _validate_metric_name

    from pipeline.tracking import metric_key

    key = metric_key("top1/16x2-mgtc_threshold-tau@r0.5")
    assert key == "top1/16x2-mgtc_threshold-tau_r0.5"
    _validate_metric_name(key)  # raises on a key MLflow refuses


# ------------------------------------------------------------------------------ running

# Stand-in trials run in Ray workers, which cannot import this test module by name.
@pytest.fixture(scope="module")
def picklable_tests():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def fake_train(cfg):
    """Instant stand-in for run_training: logs nothing, fails for seed 1 of mgtc_ratio."""
    if cfg.masking.strategy == "mgtc_ratio" and cfg.optim.seed == 1:
        raise RuntimeError("simulated trainer crash")
    kept = 1.0 if cfg.masking.strategy == "none" else 1 - cfg.masking.ratio
    return {"top1": 50.0 + 10 * kept + cfg.optim.seed, "kept_ratio": kept,
            "gflops_per_view": 4.0 * kept, "clips_per_s": 20.0 / kept, "wall_time_s": 3.0 * kept}


@pytest.mark.integration
def test_a_failed_trial_is_recorded_and_does_not_sink_the_sweep(tmp_path, ray_local, picklable_tests):
    from mlflow import MlflowClient

    threshold = {"masking.strategy": "mgtc_threshold", "masking.calibrated": True, "masking.ratio": 0.5}
    grid = {"masking": [*PAPER_GRID["masking"][:2], threshold], "optim.seed": [0, 1]}
    spec = load_sweep(write_sweep(tmp_path, grid=grid, sweep={"name": "fail", "max_concurrent": 2}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(spec, fake_train, runs_dir=tmp_path / "runs", tracking_uri=uri, log=lambda s: None)

    assert outcome.ok
    status = {r.trial.name: r.status for r in outcome.results}
    assert status == {"8x4-none-s0": "FINISHED", "8x4-none-s1": "FINISHED",
                      "8x4-mgtc_ratio-r0.5-s0": "FINISHED", "8x4-mgtc_ratio-r0.5-s1": "FAILED",
                      "8x4-mgtc_threshold-tau@r0.5-s0": "FINISHED",
                      "8x4-mgtc_threshold-tau@r0.5-s1": "FINISHED"}
    client = MlflowClient(uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_failed"] == 1 and parent.data.metrics["trials_finished"] == 5
    assert "top1/8x4-mgtc_threshold-tau_r0.5" in parent.data.metrics
    children = client.search_runs([outcome.experiment_id],
                                  f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == set(status)
    crashed = by_name["8x4-mgtc_ratio-r0.5-s1"]
    assert crashed.info.status == "FAILED"
    assert crashed.data.tags["error"].startswith("RuntimeError: simulated trainer crash")
    assert by_name["8x4-none-s0"].info.status == "FINISHED"
    assert by_name["8x4-none-s0"].data.metrics["top1"] == 60.0
    rows = {r["setting"]: r for r in outcome.rows}
    assert rows["8x4-mgtc_ratio-r0.5"]["status"] == "partial"
    for name in ("results.csv", "results.md", "trials.csv", "acc_vs_gflops.png", "acc_vs_wallclock.png"):
        assert (outcome.out_dir / name).is_file()
    assert "simulated trainer crash" in (outcome.out_dir / "results.md").read_text()


@pytest.mark.integration
def test_every_trial_failing_fails_the_sweep(tmp_path, ray_local, picklable_tests, capfd, monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    grid = {"masking": [{"masking.strategy": "mgtc_ratio", "masking.ratio": 0.5}], "optim.seed": [1]}
    spec = load_sweep(write_sweep(tmp_path, grid=grid))
    lines: list[str] = []
    outcome = run_sweep(spec, fake_train, runs_dir=tmp_path / "runs",
                        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", log=lines.append)
    # Tune's own box and result paths stay off the console (its new engine prints them even
    # at verbose=0); the sweep's lines are the user's report.
    console = capfd.readouterr()
    for tune_line in ("Configuration for experiment", "View detailed results", "tensorboard --logdir"):
        assert tune_line not in console.out + console.err
    assert not outcome.ok
    assert [r.status for r in outcome.results] == ["FAILED"]
    # The user reads why, on the sweep's own line for the trial.
    assert any("8x4-mgtc_ratio-r0.5-s1: FAILED: RuntimeError: simulated trainer crash" in line
               for line in lines), lines


# ------------------------------------------------------------------------------ MLflow REST API

TINY_BASE = {
    "data": {"dataset": "synthetic", "shards": "unused-shards", "num_classes": 4, "num_frames": 8,
             "sampling_rate": 1, "input_size": 32, "short_side": 32, "val_clips": 1, "val_crops": 1},
    "model": {"size": "tiny", "drop_path": 0.0},
    "masking": {"strategy": "none"},
    "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4, "lr": 1.0e-3},
    "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "max_failures": 0},
}


def tiny_clip_rows(num_videos: int, seed: int) -> list[dict]:
    """Clip rows of the data path's contract, rendered by pipeline.synth (8 frames of 32 px)."""
    import numpy as np

    from pipeline.motion import token_scores
    from pipeline.synth import render_video

    rng = np.random.default_rng(seed)
    rows = []
    for vid in range(num_videos):
        pixels = render_video(vid % 4, rng, size=32, frames=8)
        rows.append({"pixels": pixels, "scores": token_scores(pixels, 2, 16), "label": vid % 4,
                     "video_id": vid, "view": 0})
    return rows


def tiny_real_train(cfg):
    """The real `run_training` (TorchTrainer, tracking, checkpoints) on in-memory clips: the
    data path has its own tests, this one is about what a sweep leaves in MLflow. The random
    strategy's trial crashes before training, so the FAILED path is checked too (and the test
    pays for one real training run, about a minute on 2 cores, not two)."""
    import ray.data

    from pipeline.trainer import run_training

    if cfg.masking.strategy == "random":
        raise RuntimeError("simulated crash before training")
    train = tiny_clip_rows(12, seed=cfg.optim.seed)
    datasets = {"train": ray.data.from_items(train), "val": ray.data.from_items(tiny_clip_rows(4, seed=99))}
    return run_training(cfg, datasets=datasets, num_train_clips=len(train))


def rest(server: str, method: str, endpoint: str, **payload):
    import requests

    url = f"{server}/api/2.0/mlflow/{endpoint}"
    response = (requests.post(url, json=payload, timeout=30) if method == "POST"
                else requests.get(url, params=payload, timeout=30))
    response.raise_for_status()
    return response.json()


def as_dict(entries) -> dict[str, str]:
    return {e["key"]: e["value"] for e in entries or []}


@pytest.mark.integration
def test_sweep_parent_and_children_through_the_mlflow_rest_api(tmp_path, ray_local, mlflow_server,
                                                               picklable_tests):
    from tests.helpers.videos import write_moving_square_video

    video = write_moving_square_video(tmp_path / "square.mp4", frames=24, size=32, step=2)
    grid = {
        "frames": [{"data.num_frames": 8, "data.sampling_rate": 1}],
        "masking": [{"masking.strategy": "none"},
                    {"masking.strategy": "random", "masking.ratio": 0.5}],
        "optim.seed": [0],
    }
    base = {**TINY_BASE, "scaling": {**TINY_BASE["scaling"], "storage_path": str(tmp_path / "ray")},
            "tracking": {"experiment": "test-sweep-rest"}}
    spec = load_sweep(write_sweep(tmp_path, grid=grid, base=base,
                                  sweep={"name": "rest", "max_concurrent": 2, "mask_video": str(video)}))
    outcome = run_sweep(spec, tiny_real_train, runs_dir=tmp_path / "runs", tracking_uri=mlflow_server,
                        log=lambda s: None)
    assert outcome.ok and [r.status for r in outcome.results] == ["FINISHED", "FAILED"]

    parent = rest(mlflow_server, "GET", "runs/get", run_id=outcome.parent_run_id)["run"]
    assert parent["info"]["status"] == "FINISHED"
    params, tags = as_dict(parent["data"]["params"]), as_dict(parent["data"]["tags"])
    assert params["sweep.name"] == "rest" and params["sweep.num_trials"] == "2"
    assert '"masking.strategy": "random"' in params["sweep.grid"] and params["code_version"]
    assert tags["mgtc_kind"] == "sweep" and "mlflow.parentRunId" not in tags
    parent_metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert parent_metrics["trials_finished"] == 1 and parent_metrics["trials_failed"] == 1
    assert "top1/8x1-none" in parent_metrics
    listed = rest(mlflow_server, "GET", "artifacts/list", run_id=outcome.parent_run_id)
    files = {f["path"] for f in listed["files"]}
    assert {"results.csv", "results.md", "trials.csv", "acc_vs_gflops.png", "acc_vs_wallclock.png",
            "masks_8x1.png", "motion_8x1.png", "base_config.yaml", "sweep.yaml"} <= files

    found = rest(mlflow_server, "POST", "runs/search", experiment_ids=[outcome.experiment_id],
                 filter=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")["runs"]
    children = {c["info"]["run_name"]: c for c in found}
    assert set(children) == {"8x1-none-s0", "8x1-random-r0.5-s0"}
    for name, strategy in (("8x1-none-s0", "none"), ("8x1-random-r0.5-s0", "random")):
        p, t = as_dict(children[name]["data"]["params"]), as_dict(children[name]["data"]["tags"])
        assert (p["num_frames"], p["sampling_rate"], p["strategy"]) == ("8", "1", strategy)
        assert (p["data.num_frames"], p["data.sampling_rate"], p["masking.strategy"]) == ("8", "1", strategy)
        assert p["effective_fps"] == "30.0" and "tau" in p and "mask_ratio" in p
        assert (t["mgtc_frames"], t["mgtc_strategy"], t["mgtc_sweep"]) == ("8x1", strategy, "rest")

    trained = children["8x1-none-s0"]  # the trainer's own run, nested
    assert trained["info"]["status"] == "FINISHED" and as_dict(trained["data"]["tags"])["mgtc_mask"] == "full"
    m = {x["key"]: x["value"] for x in trained["data"]["metrics"]}
    assert 0 <= m["top1"] <= 100 and m["val_kept_ratio"] == 1.0
    assert m["val_gflops_per_view"] > 0 and m["clips_per_s"] > 0 and m["wall_time_s"] > 0
    arts = {f["path"] for f in rest(mlflow_server, "GET", "artifacts/list",
                                    run_id=trained["info"]["run_id"])["files"]}
    assert {"config.yaml", "final_metrics.json", "masks"} <= arts

    crashed = children["8x1-random-r0.5-s0"]
    assert crashed["info"]["status"] == "FAILED"
    assert as_dict(crashed["data"]["params"])["mask_ratio"] == "0.5"
    ctags = as_dict(crashed["data"]["tags"])
    assert ctags["error"] == "RuntimeError: simulated crash before training" and ctags["mgtc_mask"] == "r0.5"
    arts = {f["path"] for f in rest(mlflow_server, "GET", "artifacts/list",
                                    run_id=crashed["info"]["run_id"])["files"]}
    assert "error.txt" in arts
    table = (outcome.out_dir / "results.md").read_text()
    assert "| 8x1-none | 8x1 | none | full | 1/1 |" in table
    assert "| 8x1-random-r0.5 | 8x1 | random | r0.5 | 0/1 (failed) |" in table


def test_progress_callback_pickles_after_print_is_patched(monkeypatch):
    """Tune pickles its callbacks; Ray Train v2 swaps `builtins.print` in the driver, after
    which the original `print` no longer pickles. The default log must survive that."""
    import builtins

    from ray import cloudpickle

    from pipeline.sweep.run import _progress_callback, say

    from ray.train.v2._internal.logging import patch_print

    builtin_print = patch_print._original_print  # the real builtin, even if already swapped
    monkeypatch.setattr(builtins, "print", lambda *a, **k: builtin_print(*a, **k))
    with pytest.raises(Exception, match="not the same object"):
        cloudpickle.dumps(_progress_callback(3, builtin_print))  # what the old default did
    restored = cloudpickle.loads(cloudpickle.dumps(_progress_callback(3, say)))
    assert restored.done == 0


def test_comparisons_are_checked_at_load_and_bootstrapped_into_study_md(tmp_path):
    from pipeline.sweep import SweepError, study_markdown

    grid = {"masking": PAPER_GRID["masking"][:2], "optim.seed": [0, 1]}
    with pytest.raises(SweepError, match="unknown setting.*8x4-random"):
        load_sweep(write_sweep(tmp_path, grid=grid, sweep={"compare": ["8x4-mgtc_ratio-r0.5 vs 8x4-random"]}))
    with pytest.raises(SweepError, match="SETTING_A vs SETTING_B"):
        load_sweep(write_sweep(tmp_path, grid=grid, sweep={"compare": ["8x4-none"]}))
    spec = load_sweep(write_sweep(tmp_path, grid=grid, sweep={"compare": ["8x4-mgtc_ratio-r0.5 vs 8x4-none"]}))
    labels = [v % 4 for v in range(40)]

    def result(t):
        wrong = 4 if t.cfg.masking.strategy == "mgtc_ratio" else 12  # 90% vs 70% right
        preds = [(y + 1) % 4 if v < wrong else y for v, y in enumerate(labels)]
        r = TrialResult(t, "FINISHED", {"top1": 100.0 * (40 - wrong) / 40}, "", "",
                        {"video_id": list(range(40)), "label": labels, "pred": preds})
        return r

    results = [result(t) for t in spec.trials]
    rows = aggregate(results)
    assert rows[1]["top1_ci_low"] == rows[1]["top1_ci_high"] == pytest.approx(90.0)  # equal seeds
    text = study_markdown(spec, results, rows, ["a", "b", "c", "d"])
    assert "| 8x4-mgtc_ratio-r0.5 - 8x4-none | 40 | +20.0 |" in text
    assert "40 test videos per model" in text
    # Per class: the wrong videos are the first ones, videos 0-3 (one per class) for MGTC,
    # 0-11 (three per class) for all tokens; 10 videos per class.
    assert "| setting | a | b | c | d |" in text
    assert "| 8x4-mgtc_ratio-r0.5 | 90.0 | 90.0 | 90.0 | 90.0 |" in text
    assert "| 8x4-none | 70.0 | 70.0 | 70.0 | 70.0 |" in text
    assert "Top-1 per class" not in study_markdown(spec, results, rows)
    assert "top-1 95% interval" in results_markdown(rows)


def test_per_class_accuracy_is_per_class_and_averaged_over_seeds(tmp_path):
    from pipeline.sweep.report import per_class_accuracy

    spec = load_sweep(write_sweep(tmp_path, grid={"masking": PAPER_GRID["masking"][:1], "optim.seed": [0, 1]}))
    labels = [0, 0, 1, 1, 2]
    preds = {0: [0, 1, 1, 1, 0], 1: [0, 0, 1, 0, 0]}  # per seed
    results = [TrialResult(t, "FINISHED", {}, "", "", {"video_id": list(range(5)), "label": labels,
                                                        "pred": preds[t.cfg.optim.seed]})
               for t in spec.trials]
    results.append(TrialResult(spec.trials[0], "FAILED"))  # no predictions: left out
    (setting, values), = per_class_accuracy(results, 4).items()
    assert setting == spec.trials[0].setting
    assert values[:3] == pytest.approx([75.0, 75.0, 0.0]) and math.isnan(values[3])  # class 3: no video


def test_plot_points_of_settings_differing_only_in_another_key_are_labelled_apart(tmp_path):
    from pipeline.sweep.figures import accuracy_plot, point_label

    grid = {"masking": [{"masking.strategy": "none"}, {"masking.strategy": "mgtc_ratio", "masking.ratio": 0.5},
                        {"masking.strategy": "mgtc_ratio", "masking.ratio": 0.5, "masking.score_mode": "compensated"},
                        {"masking.strategy": "none", "optim.epochs": 3}],
            "optim.seed": [0]}
    spec = load_sweep(write_sweep(tmp_path, grid=grid))
    rows = aggregate([TrialResult(t, "FINISHED", {"top1": 50.0, "gflops_per_view": 1.0}) for t in spec.trials])
    labels = [point_label(r) for r in rows]
    assert labels == ["full", "r0.5", "r0.5 score_mode=compensated", "full epochs=3"], labels
    fig = accuracy_plot(rows, "gflops_per_view", "GFLOPs", "t")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(labels)
