"""Checks of a Config's inputs in the driver, before Ray starts: a wrong path or label fails
in seconds with one line naming it, not minutes later inside a Ray worker.

Local paths only are opened here (an s3:// manifest is read by the job as before); labels
of every local manifest the job reads are checked against `data.num_classes`.
"""

from __future__ import annotations

from pipeline import prepared, storage
from pipeline.config import Config
from pipeline.manifest import ManifestError, check_labels, read_manifest


def manifests_of(cfg: Config, splits: tuple[str, ...]) -> dict[str, str]:
    """{`data.<split>_manifest`: uri} of the set manifests among `splits`."""
    d = cfg.data
    uris = {"train": d.train_manifest, "val": d.val_manifest, "test": d.test_manifest}
    return {f"data.{s}_manifest": uris[s] for s in splits if uris[s]}


def input_problems(cfg: Config, splits: tuple[str, ...] = ("train", "val")) -> list[str]:
    """One line per unusable local input of `cfg` for a job reading `splits` ([] = fine):
    a missing manifest or shards folder, a manifest that does not parse as a whole, labels
    outside data.num_classes, data.decoder=torchcodec where torchcodec cannot load, shards or
    prepared videos (`mgtc prepare`) whose stride or size the config cannot use."""
    problems = []
    if cfg.data.decoder == "torchcodec":
        from pipeline.video import torchcodec_reason

        reason = torchcodec_reason()
        if reason:
            problems.append(f"data.decoder=torchcodec: {reason}")
    if cfg.data.shards and not storage.is_s3(cfg.data.shards) and not storage.exists(cfg.data.shards):
        problems.append(f"data.shards: {cfg.data.shards}: no such folder (run mgtc precompute first)")
    elif cfg.data.shards and not storage.is_s3(cfg.data.shards):
        problems += _shard_problems(cfg)
    for name, uri in manifests_of(cfg, splits).items():
        if storage.is_s3(uri):
            continue
        if not storage.exists(uri):
            problems.append(f"{name}: {uri}: no such file")
            continue
        try:
            check_labels(read_manifest(uri), cfg.data.num_classes, uri)
        except (ManifestError, OSError) as err:
            problems.append(f"{name}: {storage.redact(str(err))}")
        folder = storage.parent(storage.normalize(uri))
        if cfg.data.shards and storage.normalize(cfg.data.shards) == folder:
            continue  # a prepare output: its shards' metadata was checked above
        # A manifest `mgtc prepare` wrote has _prepare.json beside it; others are source videos.
        problems += [f"{name}: {p}" for p in prepared.problems(cfg.data, prepared.read_settings(folder), uri)]
    return problems


def _shard_problems(cfg: Config) -> list[str]:
    """`clips.shard_problems` of a local shards folder, before Ray starts (a folder without
    metadata is left to the job, which names it)."""
    from pipeline import shards
    from pipeline.clips import shard_problems

    if not storage.exists(storage.join(cfg.data.shards, shards.META_FILE)):
        return []
    found = shard_problems(cfg, shards.read_meta(cfg.data.shards))
    return [f"data.shards: {storage.redact(cfg.data.shards)} do not fit the config: {p}" for p in found]
