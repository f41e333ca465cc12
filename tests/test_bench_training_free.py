"""`mgtc bench training-free`'s table and plot for several models (all tokens and MGTC)."""

from __future__ import annotations

from pipeline.bench import training_free as tf


def rows_for(model: str, full: float) -> list[dict]:
    rows = [{"model": model, "strategy": "none", "ratio": 0.0, "top1": full, "top5": 90.0, "kept": 1.0}]
    for ratio in tf.RATIOS:
        for strategy in tf.STRATEGIES:
            rows.append({"model": model, "strategy": strategy, "ratio": ratio, "top1": full - 40 * ratio,
                         "top5": 80.0, "kept": 1.0 - ratio,
                         "tau": 0.01 if strategy == "mgtc_threshold" else None})
    return rows


def test_one_row_per_model_strategy_ratio_and_one_panel_per_model(tmp_path):
    import matplotlib.image

    rows = rows_for("all-tokens", 55.6) + rows_for("mgtc", 59.7)
    text = tf.table(rows).splitlines()
    assert len(text) == 2 + 2 * (1 + len(tf.RATIOS) * len(tf.STRATEGIES))
    assert text[2].startswith("| all-tokens | none | 0.00 |  | 100.0 | 55.6 |")
    assert any(line.startswith("| mgtc | mgtc_threshold | 0.50 | 0.0100 | 50.0 | 39.7 |") for line in text)
    path = tmp_path / "tf.png"
    tf.plot(rows, path)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > 2 * height  # two panels side by side (5.5 x 4 in each)
