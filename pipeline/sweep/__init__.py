"""Sweeps: a grid of training configs, run as parallel Ray Tune trials, one nested MLflow run each.

`spec` reads a sweep file (base config, grid axes, `sweep:` options) into validated trials;
`run` runs them (Ray Tune, one MLflow parent run, each trial's run its child; the MLflow
writes are `pipeline.tracking`'s); `report` aggregates the results over seeds into tables and
paired comparisons; `figures` draws the accuracy plots and mask pictures.
"""

from pipeline.sweep.report import TrialResult, aggregate, results_csv, results_markdown, study_markdown
from pipeline.sweep.run import SweepOutcome, run_sweep, train_and_test
from pipeline.sweep.spec import SweepError, SweepOptions, SweepSpec, Trial, comparison_pairs, load_sweep

__all__ = [
    "SweepError", "SweepOptions", "SweepSpec", "Trial", "TrialResult", "SweepOutcome",
    "load_sweep", "run_sweep", "train_and_test", "aggregate", "comparison_pairs",
    "results_csv", "results_markdown", "study_markdown",
]
