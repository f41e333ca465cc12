"""Inference: classify videos with a trained checkpoint, any token strategy at inference.

- `labels`: class names from a label file (classInd.txt, JSON, CSV, one per line).
- `loading`: a checkpoint (training directory or official .pth) -> config + model + names.
- `core`: test views -> model -> per-video top-k, in one process (`mgtc predict VIDEO...`).
- `batch`: the same over a manifest with Ray Data, to resumable Parquet parts
  (`mgtc predict --manifest LIST --out URI`).
Nothing is imported here: `mgtc predict VIDEO` must not pay for importing Ray.
"""
