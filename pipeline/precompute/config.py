"""Settings of the precompute job: `PrecomputeConfig`, read from YAML and flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pipeline import config
from pipeline.config import ConfigError
from pipeline.vocab import SCORE_MODES

COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
# Fields that change what the shards contain: a rerun into the same output must match them.
SHARD_FIELDS = ("sampling_rates", "short_side", "cell", "tubelet", "num_frames", "pad_short", "part_size")


@dataclass(frozen=True)
class PrecomputeConfig:
    """Settings of `mgtc precompute` (YAML `precompute:` section or flat keys, then flags).

    Shard content: sampling_rates, short_side (0 = keep source size), cell (px), tubelet,
    num_frames (clip length T: a video whose stride-s sequence is shorter than T at any rate
    is rejected unless pad_short), part_size (videos per committed part).
    Execution: actors (0 = one per cluster CPU), decode_threads per decoder, chunk_frames
    decoded at a time, timeout_s per video, crash_retries (fresh decoder per retry),
    max_task_retries (Ray actor restarts / task retries, capped: never -1), compression,
    s3_endpoint (overrides AWS_ENDPOINT_URL), forward_env, progress_interval_s.
    score_mode is recorded for calibrate/train; shards hold the maps of both modes.
    """

    sampling_rates: tuple[int, ...] = (2, 4)
    short_side: int = 224
    cell: int = 8
    tubelet: int = 2
    num_frames: int = 16
    pad_short: bool = False
    score_mode: str = "boundary"
    part_size: int = 32
    actors: int = 0
    decode_threads: int = 1
    chunk_frames: int = 64
    timeout_s: float = 300.0
    crash_retries: int = 1
    max_task_retries: int = 2
    compression: str = "zstd"
    s3_endpoint: str = ""
    forward_env: bool = True
    progress_interval_s: float = 10.0
    path_column: str = ""
    label_column: str = ""
    num_classes: int = 0  # labels must be in 0..num_classes-1 (a train config's data.num_classes); 0 = unchecked

    def validate(self) -> "PrecomputeConfig":
        """Raise ConfigError listing every invalid field; returns self."""
        e: list[str] = []
        rates = self.sampling_rates
        if not rates or any(not isinstance(r, int) or r < 1 for r in rates) or len(set(rates)) != len(rates):
            e.append(f"sampling_rates={rates!r}: need distinct integers >= 1")
        if self.cell < 1:
            e.append(f"cell={self.cell}: must be >= 1")
        if self.short_side < 0 or 0 < self.short_side < self.cell:
            e.append(f"short_side={self.short_side}: must be 0 (keep size) or >= cell={self.cell}")
        if self.tubelet < 1:
            e.append(f"tubelet={self.tubelet}: must be >= 1")
        if self.num_frames < 2 * max(self.tubelet, 1) or self.num_frames % max(self.tubelet, 1):
            e.append(f"num_frames={self.num_frames}: must be a multiple of tubelet={self.tubelet}, "
                     "at least two tubelets")
        if self.score_mode not in SCORE_MODES:
            e.append(f"score_mode={self.score_mode!r}: allowed: {', '.join(SCORE_MODES)}")
        for name in ("part_size", "decode_threads", "chunk_frames"):
            if getattr(self, name) < 1:
                e.append(f"{name}={getattr(self, name)}: must be >= 1")
        for name in ("actors", "crash_retries", "max_task_retries", "num_classes"):
            if getattr(self, name) < 0:
                e.append(f"{name}={getattr(self, name)}: must be >= 0")
        for name in ("timeout_s", "progress_interval_s"):
            if not getattr(self, name) > 0:
                e.append(f"{name}={getattr(self, name)}: must be > 0")
        if self.compression not in COMPRESSIONS:
            e.append(f"compression={self.compression!r}: allowed: {', '.join(COMPRESSIONS)}")
        if e:
            raise ConfigError("invalid precompute config:\n  - " + "\n  - ".join(e))
        return self

    @property
    def base_stride(self) -> int:
        """Decode stride: every sampling rate is a multiple of it."""
        return math.gcd(*self.sampling_rates)

    def shard_settings(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if k in SHARD_FIELDS}


def config_from_mapping(values: dict[str, Any], base: PrecomputeConfig | None = None) -> PrecomputeConfig:
    """A config from plain values (YAML / flags), converted by `pipeline.config`'s rules;
    unknown keys and values of the wrong type are errors naming them."""
    return dataclasses.replace(base or PrecomputeConfig(), **config.coerce_fields(PrecomputeConfig, values, "precompute"))


# Fields of a training config that are defaults of the precompute job, so that shards
# match what `train` will sample: precompute field -> (section, field).
TRAINING_FIELDS = {"short_side": ("data", "short_side"), "num_frames": ("data", "num_frames"),
                   "num_classes": ("data", "num_classes"), "tubelet": ("model", "tubelet"),
                   "score_mode": ("masking", "score_mode")}


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> PrecomputeConfig:
    """Settings from a YAML file, then `overrides` (flags), validated before Ray starts.

    The file may hold a `precompute:` section, flat precompute keys, or a training config,
    whose TRAINING_FIELDS given there are taken as defaults (read with the training config's
    own types and field names).
    """
    values: dict[str, Any] = {}
    if path:
        loaded = config.read_yaml(path)
        sections = {f.name for f in dataclasses.fields(config.Config)}
        if set(loaded) & (sections | {"precompute"}):
            training = config.build_sections({k: v for k, v in loaded.items() if k != "precompute"})
            for key, (section, name) in TRAINING_FIELDS.items():
                if name in (loaded.get(section) or {}):
                    values[key] = getattr(getattr(training, section), name)
            values.update(loaded.get("precompute") or {})
        else:
            values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_mapping(values).validate()
