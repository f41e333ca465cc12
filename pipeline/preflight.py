"""Checks of a Config's inputs in the driver, before Ray starts: a wrong path or label fails
in seconds with one line naming it, not minutes later inside a Ray worker.

Local paths only are opened here (an s3:// manifest is read by the job as before); labels
of every local manifest the job reads are checked against `data.num_classes`.
"""

from __future__ import annotations

from pipeline import storage
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
    outside data.num_classes, data.decoder=torchcodec where torchcodec cannot load."""
    problems = []
    if cfg.data.decoder == "torchcodec":
        from pipeline.video import torchcodec_reason

        reason = torchcodec_reason()
        if reason:
            problems.append(f"data.decoder=torchcodec: {reason}")
    if cfg.data.shards and not storage.is_s3(cfg.data.shards) and not storage.exists(cfg.data.shards):
        problems.append(f"data.shards: {cfg.data.shards}: no such folder (run mgtc precompute first)")
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
    return problems
