"""Typed config: YAML + overrides, every bad field named, validated before Ray starts."""

import pytest

from pipeline.config import Config, ConfigError, flat_params, from_dict, load_config, replace, to_dict


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


GOOD = """
data: {train_manifest: data/train.csv, shards: data/shards, num_classes: 6, num_frames: 8, sampling_rate: 2}
model: {size: tiny}
masking: {strategy: mgtc_ratio, ratio: 0.5}
optim: {epochs: 3, batch_size: 4, warmup_epochs: 1}
"""


def test_yaml_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["masking.ratio=0.25", "data.scale=[0.5, 1.0]", "scaling.num_workers=2"])
    assert isinstance(cfg, Config)
    assert cfg.masking.ratio == 0.25 and cfg.data.scale == (0.5, 1.0) and cfg.scaling.num_workers == 2
    assert cfg.data.num_frames == 8 and cfg.model.size == "tiny"
    assert flat_params(cfg)["masking.strategy"] == "mgtc_ratio"
    assert to_dict(cfg)["optim"]["epochs"] == 3
    assert replace(cfg, ["masking.strategy=random"]).masking.strategy == "random"


def test_every_bad_field_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD), [
            "masking.ratio=1.5", "masking.strategy=best", "model.size=huge",
            "data.num_frames=7", "optim.epochs=0", "scaling.precision=fp16",
        ])
    msg = str(err.value)
    for needle in ("masking.ratio=1.5", "masking.strategy='best': allowed: none, random",
                   "model.size='huge': allowed: tiny, small, base, large", "data.num_frames=7",
                   "optim.epochs=0", "scaling.precision='fp16': allowed: fp32, bf16"):
        assert needle in msg


@pytest.mark.parametrize("override, needle", [
    ("masking.colour=red", "masking: unknown field(s) colour"),
    ("bogus.x=1", "unknown section 'bogus'"),
    ("ratio=0.5", "expected section.key=value"),
    ("optim.epochs=two", "optim.epochs: expected an integer, got 'two'"),
    ("data.hflip=maybe", "data.hflip: expected true/false"),
    ("masking.strategy=mgtc_threshold", "mgtc_threshold needs masking.tau"),
    ("masking.tau=-0.1", "masking.tau=-0.1: must be a finite value >= 0"),
    ("masking.strategy=running_cell", "running_cell needs 0.25 <= ratio"),
])
def test_bad_values_name_the_field(tmp_path, override, needle):
    extra = ["masking.ratio=0.1"] if "running_cell" in override else []
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write(tmp_path, GOOD), [override, *extra])
    assert needle in str(err.value)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_mgtc_needs_shards(tmp_path):
    with pytest.raises(ConfigError, match="needs motion-score shards"):
        load_config(write(tmp_path, GOOD), ["data.shards="])


def test_source_fps_and_training_mode_rules(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["data.source_fps=25"])
    assert cfg.data.source_fps == 25.0
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD), [
            "data.source_fps=0", "data.mixup=0.8", "optim.batch_size=3",
        ])
    assert "data.source_fps=0.0: must be > 0" in str(err.value)
    assert "optim.batch_size=3: data.mixup / data.cutmix need an even batch" in str(err.value)
    with pytest.raises(ConfigError, match="optim.mode=pretrain needs a fixed-length strategy"):
        load_config(write(tmp_path, GOOD), ["optim.mode=pretrain", "masking.strategy=mgtc_threshold", "masking.tau=0.1"])
    assert load_config(write(tmp_path, GOOD), ["optim.mode=pretrain", "optim.batch_size=3", "data.mixup=0.8"])


def test_from_dict_round_trips_and_validates(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert from_dict(to_dict(cfg)) == cfg
    raw = to_dict(cfg)
    raw["masking"]["ratio"] = 2.0
    with pytest.raises(ConfigError, match="masking.ratio=2.0"):
        from_dict(raw)


# ------------------------------------------------------------------------------------------
# Issue 13, item 8: early, one-line config errors


def test_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  num_classes: 4\n  shards: [unclosed\nmodel:\n  size: tiny\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "line 4, column" in message, message
    with pytest.raises(ConfigError, match=r"--set 'data.shards=\[x': not a YAML value: .*line 1"):
        load_config(None, ["data.shards=[x"])


@pytest.mark.parametrize("item", ["optim.lr=.inf", "optim.weight_decay=.nan", "data.mixup=.inf",
                                  "scaling.cpus_per_worker=.inf", "optim.lr=-.inf", "masking.tau=.nan"])
def test_infinite_or_nan_floats_are_refused(item):
    with pytest.raises(ConfigError, match=rf"{item.split('=')[0]}: expected a finite number"):
        load_config(None, ["data.num_classes=4", "data.train_manifest=t.txt", item])


def test_set_to_null_empties_a_string_field():
    cfg = load_config(None, ["data.num_classes=4", "data.train_manifest=t.txt", "masking.strategy=none",
                             "data.shards=~", "model.checkpoint=null"])
    assert cfg.data.shards == "" and cfg.model.checkpoint == ""
