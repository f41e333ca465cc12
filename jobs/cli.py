"""The `mgtc` console script: one subcommand per job, each a thin module in `jobs/`.

Every job module exposes `main(argv: list[str] | None) -> int`, so the same code runs as
`mgtc <cmd> ...` locally and as `python -m jobs.<module> ...` under `ray job submit`.
Modules are imported lazily: `mgtc flops` must not pay for importing Ray.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.demo", "synthetic data -> precompute -> train -> eval, on embedded defaults"),
    "synth": ("jobs.synth", "write a synthetic motion-classification video data set"),
    "manifest": ("jobs.manifest", "convert an official split file (UCF101, HMDB51, Kinetics, SSv2) to a manifest"),
    "precompute": ("jobs.precompute", "decode videos once and write motion-score shards (Ray Data)"),
    "prepare": ("jobs.prepare", "re-encode a data set for training (short side, keyframes, stride) + its motion shards"),
    "reshard": ("jobs.reshard", "add per-row Arrow files to shard folders written before they existed"),
    "calibrate": ("jobs.calibrate", "tau for a target data-set-wide masking ratio, per sampling rate"),
    "train": ("jobs.train", "fine-tune or MAE pre-train a VideoMAE ViT with a token strategy (Ray Train)"),
    "eval": ("jobs.evaluate", "multi-view evaluation of a checkpoint"),
    "predict": ("jobs.predict", "classify videos (one by one, or a list with Ray Data), any strategy at inference"),
    "export": ("jobs.export", "export a checkpoint: Hugging Face directory, torch.export or TorchScript program"),
    "sweep": ("jobs.sweep", "grid over frame rate x strategy x ratio x seed, nested MLflow runs"),
    "flops": ("jobs.flops", "encoder multiply-adds per view for a model / clip / keep ratio"),
    "visualize": ("jobs.visualize", "mask visualisation and motion heat map for one video"),
    "ui": ("jobs.ui", "serve or point to the MLflow UI"),
    "submit": ("jobs.submit", "submit a job to a Ray cluster (Ray Jobs API)"),
    "jobs": ("jobs.jobs_cmd", "list / logs / stop jobs on a Ray cluster"),
    "tracking-server": ("jobs.tracking_server", "run a shared MLflow tracking server"),
    "bench": ("jobs.bench", "benchmarks that write docs/BENCHMARKS.md"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mgtc <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mgtc: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"mgtc {name}: not yet available in this version", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
