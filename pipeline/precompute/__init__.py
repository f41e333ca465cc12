"""The precompute job: decode every video once and write motion cell maps to Parquet shards.

    manifest -> parts of `part_size` lines -> Ray Data (one row per part)
      -> map_batches(PartWorker, actor pool of `actors`) -> per part, committed atomically:
         shards/part-N.parquet + errors/part-N.parquet + _parts/part-N.json (marker, last)

Why parts, and why the actor writes them instead of `Dataset.write_parquet`: Ray's writer
names files by write UUID and writes them in place, so a killed job leaves partial files
that look complete and a rerun duplicates rows. A part is a deterministic slice of the
manifest, written under deterministic names and committed by a marker written last, so
a rerun skips committed parts, rewrites the others and ends with the same files as an
uninterrupted run. Only one summary row per part travels back through Ray.

Per video (`score_video`): decode once at stride gcd(rates), resized at decode time to the
short side, in chunks (memory stays at one chunk), and derive every sampling rate from that
sequence: pair cells (distance 1), boundary cells (distance 2*tubelet-1) and whole-frame
scores. Decoding runs in a child process per actor (`DecoderProcess`): a segfault, an OOM
kill or a hang in the native decoder becomes that video's error row and a fresh child,
never a lost actor, and Ray's own retries are capped so that nothing can loop forever.

Modules: `config` (PrecomputeConfig and its loading), `scoring` (numba kernel, CellScorer,
score_video), `decoder` (DecoderProcess, the child process and its messages), `parts`
(PartWorker, shard / error records, part markers and commits), `job` (the driver),
`prepare` (`mgtc prepare`: a PartWorker that re-encodes each video, then scores the new
file; same parts, commits and resume).
"""

from pipeline.precompute.config import (COMPRESSIONS, SCORE_MODES, SHARD_FIELDS, ConfigError, PrecomputeConfig,
                                        config_from_mapping, load_config)
from pipeline.precompute.decoder import DecoderProcess, child_main
from pipeline.precompute.job import JobKind, Summary, format_summary, manifest_fingerprint, run_precompute, split_parts
from pipeline.precompute.faults import FAULT_ENV
from pipeline.precompute.parts import PartWorker, commit_part, part_marker, reason_category
from pipeline.precompute.scoring import CellScorer, VideoError, check_length, score_video, warm_up_scoring

__all__ = [
    "COMPRESSIONS", "FAULT_ENV", "SCORE_MODES", "SHARD_FIELDS", "CellScorer", "ConfigError",
    "DecoderProcess", "JobKind", "PartWorker", "PrecomputeConfig", "Summary", "VideoError", "check_length",
    "child_main", "commit_part", "config_from_mapping", "format_summary", "load_config", "manifest_fingerprint",
    "part_marker", "reason_category", "run_precompute", "score_video", "split_parts", "warm_up_scoring",
]
