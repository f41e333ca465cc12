"""The project's shared vocabulary, importable without torch (decoder processes, CLIs).

Names that several modules check against or offer as choices live here once: strategy and
score-mode names, where augmentation runs, which decoder reads videos.
"""

from __future__ import annotations

# Token-selection strategies (pipeline.selection) and the ones that need motion scores.
STRATEGIES = ("none", "random", "tube", "running_cell", "mgtc_ratio", "mgtc_threshold")
SCORE_STRATEGIES = ("mgtc_ratio", "mgtc_threshold")
# How token motion is measured (pipeline.motion): across the tubelet boundary, between
# consecutive frames (shards hold the maps of both), or across the boundary after removing
# the dominant global translation ("compensated", pipeline.compensation: computed on the
# decoded clip, shards hold no maps for it).
SCORE_MODES = ("boundary", "consecutive", "compensated")
SHARD_SCORE_MODES = ("boundary", "consecutive")
# Where RandAugment runs (pipeline.augment): "auto" = on the trainer when it trains on a GPU,
# in the decode actors otherwise. Video decoders behind pipeline.video's reader interface.
AUGMENT_ON = ("auto", "actor", "trainer")
DECODERS = ("decord", "torchcodec")
