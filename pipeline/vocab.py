"""The project's shared vocabulary, importable without torch (decoder processes, CLIs).

What several layers must agree on lives here once: strategy and score-mode names, the
token grid and the boundary distance, VideoMAE's normalisation constants, the environment
handed to Ray workers (and the mapping that keeps its values out of logs), the code
version, and how a command connects to Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator

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

# timm.data.constants.IMAGENET_DEFAULT_{MEAN,STD} (VideoMAE's normalisation), written out so
# that this module needs no timm (a test checks they agree).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The AWS chain the driver sees, handed to Ray workers (a cluster started before these were
# set would not pass them on). Always wrapped in a LogSafeEnv.
FORWARDED_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CA_BUNDLE",
)


def boundary_distance(tubelet: int) -> int:
    """Frames between the last frame of tubelet t and the first frame of tubelet t-1."""
    return 2 * tubelet - 1


def token_grid(num_frames: int, height: int, width: int, tubelet: int, patch: int) -> tuple[int, int, int]:
    """Token grid (T', H', W') of a clip [T, H, W]; ValueError naming what does not tile."""
    if tubelet < 1 or patch < 1:
        raise ValueError(f"tubelet={tubelet} and patch={patch} must be >= 1")
    if num_frames < tubelet or num_frames % tubelet:
        raise ValueError(f"num_frames={num_frames} must be a positive multiple of tubelet={tubelet}")
    for name, value in (("height", height), ("width", width)):
        if value < patch or value % patch:
            raise ValueError(f"{name}={value} must be a positive multiple of patch={patch}")
    return num_frames // tubelet, height // patch, width // patch


def running_cell_masked(ratio: float) -> int:
    """Tokens masked per 2x2 group by `running_cell` at masking `ratio`: int(4 * ratio).
    The strategy exists for 1..3 (0.25 <= ratio < 1)."""
    return int(4 * ratio)


class LogSafeEnv(dict):
    """Environment variables for Ray workers. The repr shows the names only, so that
    credentials never land in a log line that prints actor arguments."""

    def __repr__(self) -> str:
        return f"LogSafeEnv({sorted(self)})"


def forwarded_env(names: Iterable[str] = FORWARDED_ENV) -> LogSafeEnv:
    """The variables of `names` that are set in this process."""
    return LogSafeEnv({k: os.environ[k] for k in names if os.environ.get(k)})


def job_metadata() -> dict[str, Any]:
    """The metadata of the Ray job this process is the entrypoint of ({} otherwise).

    Ray 2.60 passes the job's config as JSON in `RAY_JOB_CONFIG_JSON_ENV_VAR`.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        meta = json.loads(raw).get("metadata", {})
    except (ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def git_commit(repo: str | Path | None = None, *, short: bool = False) -> str:
    """HEAD of the repository holding `repo` (default: this code), abbreviated if `short`.

    A job submitted with `mgtc submit` runs from an uploaded working dir without `.git`;
    its submission metadata carries the commit (`git_commit`), which is used then.
    'unknown' when neither is available.
    """
    where = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = _git(where, "rev-parse", *(("--short",) if short else ()), "HEAD")
        if sha:
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    return job_metadata().get("git_commit") or "unknown"


def git_dirty(repo: str | Path) -> bool:
    """Tracked files of the repository holding `repo` are modified (False outside git)."""
    try:
        return bool(_git(Path(repo), "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def ray_session(**local_init: Any) -> Iterator[bool]:
    """Connect to Ray for the duration of the block: the running session (tests, notebooks),
    else the cluster in RAY_ADDRESS (a submitted job), else a new local Ray bound to
    127.0.0.1 (`localray.init_local(**local_init)`). Yields True when the block started that
    local Ray, which is shut down when the block ends; a Ray it did not start is left running."""
    import ray

    from pipeline import raylog  # Ray's own lines stay in its session logs unless --verbose

    started = False
    if not ray.is_initialized():
        raylog.prepare()
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], **raylog.init_kwargs())
        else:
            from pipeline.localray import init_local

            init_local(**local_init, **raylog.init_kwargs())  # loopback only
            started = True
        raylog.after_init()
    try:
        yield started
    finally:
        if started:
            ray.shutdown()
