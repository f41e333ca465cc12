"""Test configs, built the way the CLI builds them: YAML text written to a file and read by
`pipeline.config.load_config`, then `--set section.key=value` overrides, so every test config
goes through the real coercion and validation (a bad override fails as it would for a user)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, load_config

# The tiny model every CPU test trains or evaluates: ViT-tiny on 32x32 frames.
TINY = ("model.size=tiny", "data.input_size=32", "data.short_side=32")


def tiny_config(*overrides: str) -> Config:
    """A validated Config: the defaults, `TINY`, then `overrides` (later ones win)."""
    return load_config(None, [*TINY, *overrides])


def yaml_config(tmp_path: Path, text: str, *overrides: str, name: str = "config.yaml") -> Config:
    """A validated Config from YAML `text` (written to `tmp_path / name`), then `overrides`."""
    path = Path(tmp_path) / name
    path.write_text(text)
    return load_config(path, list(overrides))
