"""The GPU path's checks (`mgtc bench gpu`, issue 17): what one run measures (`Plan`), one
`Row` per check, and the checks themselves: CUDA visible, fp32 vs bf16 logits, the varlen
kernel vs the per-clip loop, host syncs per training step, one Ray Train step with NCCL,
decoding; the forward+backward speeds are `pipeline.bench.gpu_speed`. `jobs/bench_gpu.py`
runs them in order and writes the table.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.bench.machine import bench_command, utc_now

SECTION = "## GPU path (issue 17)"
# Speed last: its compiled cases stop starting when the time budget runs out.
CHECKS = ("cuda", "precision", "varlen", "syncs", "ray", "decode", "speed")
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets; the first
# name fragment found in torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0),
)
LOGITS_RTOL = 0.03  # fp32 vs bf16 logits, relative L2 (bf16 keeps 8 significant bits)
VARLEN_RTOL = 0.01  # varlen kernel vs per-clip loop, both bf16, relative L2
TARGETS = {"mfu": 0.40, "mgtc50_speedup": 1.8, "packed_vs_ratio": 1.10}
COMPILE_ESTIMATE_S = 75.0  # budget reserved per compiled case (inductor, ViT-B block fwd+bwd)


class Skip(Exception):
    """A check that cannot run here (reason in the message): a 'skipped' row."""


@dataclass
class Row:
    check: str
    setting: str
    value: str = ""
    target: str = ""
    status: str = "measured"  # pass | FAIL | measured | met | missed | skipped | error
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """What one run measures: model size and clip shape, batch, iterations, where."""

    device: torch.device
    model: str
    frames: int
    size: int
    batch: int
    iters: int
    warmup: int
    compile_backend: str
    budget_s: float
    peak_tflops: float | None
    started: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ------------------------------------------------------------------------------ helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(step: Callable[[], None], plan: Plan, iters: int | None = None, warmup: int | None = None) -> float:
    """Median wall ms of `step` over `iters` calls after `warmup` (the device synchronised
    around each call)."""
    for _ in range(plan.warmup if warmup is None else warmup):
        step()
    times = []
    for _ in range(plan.iters if iters is None else iters):
        synchronize(plan.device)
        start = time.perf_counter()
        step()
        synchronize(plan.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def autocast(plan: Plan, enabled: bool = True):
    return torch.autocast(plan.device.type, dtype=torch.bfloat16, enabled=enabled)


def low_precision(plan: Plan) -> torch.dtype:
    """bf16 on the GPU; fp32 for the CPU smoke test's timed parts (CPU bf16 is emulated)."""
    return torch.bfloat16 if plan.cuda else torch.float32


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp32."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def peak_tflops(name: str) -> float | None:
    for fragment, peak in PEAK_BF16_TFLOPS:
        if fragment in name:
            return peak
    return None


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def num_tokens(plan: Plan) -> int:
    return (plan.frames // 2) * (plan.size // 16) ** 2


def build(plan: Plan, **kwargs) -> torch.nn.Module:
    from pipeline.model import build_model

    torch.manual_seed(0)
    model = build_model(plan.model, 400, num_frames=plan.frames, img_size=plan.size, head_init_scale=1.0, **kwargs)
    return model.to(plan.device)


def threshold_lengths(n: int, batch: int) -> list[int]:
    """Variable per-clip kept counts, 25%..75% of n, mean 50% (the MGTC 50% row's count)."""
    return [round(v) for v in np.linspace(0.25 * n, 0.75 * n, batch)]


# ------------------------------------------------------------------------------ 1-2


def check_cuda(plan: Plan) -> list[Row]:
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if not plan.cuda:
        raise Skip(f"no CUDA in this run ({versions}; --dry-run uses the CPU)")
    props = torch.cuda.get_device_properties(plan.device)
    name = torch.cuda.get_device_name(plan.device)
    peak = plan.peak_tflops or peak_tflops(name)
    value = (f"{name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
             f"{torch.cuda.device_count()} visible")
    note = f"{versions}, cuDNN {torch.backends.cudnn.version()}; peak bf16 {peak or '?'} TFLOP/s"
    return [Row("CUDA visible", "torch.cuda", value, "a CUDA device", "pass", note)]


def check_precision(plan: Plan) -> list[Row]:
    model = build(plan).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, plan.frames, plan.size, plan.size, generator=gen).to(plan.device)
    with torch.no_grad(), matmul_precision("highest"):
        reference = model(x).float()
    with torch.no_grad(), autocast(plan):
        low = model(x)
    error = relative_l2(low, reference)
    agree = float((low.float().argmax(1) == reference.argmax(1)).float().mean())
    ok = error <= LOGITS_RTOL and low.dtype == torch.bfloat16
    return [Row("fp32 vs bf16 logits", f"ViT-{plan.model} {plan.frames}x{plan.size}, 4 clips, eval",
                f"rel. L2 {error:.4f}, top-1 agree {agree:.0%}, logits {str(low.dtype)[6:]}",
                f"rel. L2 <= {LOGITS_RTOL}", "pass" if ok else "FAIL",
                "fp32 reference with TF32 off; random init, head scale 1")]


# ------------------------------------------------------------------------------ 3


def check_varlen(plan: Plan) -> list[Row]:
    from pipeline.model import vit_size
    from pipeline.packing import Packing, packed_attention

    dims = vit_size(plan.model)
    heads, head_dim = dims.heads, dims.dim // dims.heads
    n = num_tokens(plan)
    lengths = threshold_lengths(n, 8)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    packing = Packing.from_mask(mask.to(plan.device))
    gen = torch.Generator().manual_seed(0)
    total = sum(lengths)
    base = [torch.randn(total, heads, head_dim, generator=gen) for _ in range(4)]
    q, k, v, grad = (t.to(plan.device, low_precision(plan)) for t in base)

    def run(path: str) -> tuple[torch.Tensor, ...]:
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = packed_attention(*leaves, packing, path=path)
        out.backward(grad)
        return (out.detach(), *(t.grad for t in leaves))

    def step(path: str) -> Callable[[], None]:
        return lambda: run(path)

    setting = f"8 clips, {min(lengths)}-{max(lengths)} tokens, {heads} heads x {head_dim}, {str(q.dtype)[6:]}"
    loop = run("loop")
    loop_ms = timed_ms(step("loop"), plan)
    if not plan.cuda:
        try:
            run("varlen")
        except NotImplementedError:
            pass
        raise Skip(f"varlen_attn is CUDA-only (NotImplementedError here); loop fwd+bwd {loop_ms:.1f} ms/layer")
    varlen = run("varlen")
    varlen_ms = timed_ms(step("varlen"), plan)
    errors = [relative_l2(a, b) for a, b in zip(varlen, loop)]
    ok = max(errors) <= VARLEN_RTOL
    return [Row("varlen kernel vs per-clip loop", setting,
                "rel. L2 out {:.1e}, dq {:.1e}, dk {:.1e}, dv {:.1e}".format(*errors),
                f"<= {VARLEN_RTOL}", "pass" if ok else "FAIL",
                f"fwd+bwd per layer: varlen {varlen_ms:.2f} ms, loop {loop_ms:.2f} ms "
                f"({loop_ms / varlen_ms:.1f}x)")]


# ------------------------------------------------------------------------------ 4


class HostReads(TorchDispatchMode):
    """Counts, on any device, the ops that read a tensor back to the host on CUDA (a CPU-GPU
    sync): .item() / bool() / int(), data-dependent output shapes (nonzero, masked_select,
    unique), repeat_interleave without output_size, and `.tolist()` (which bypasses the
    dispatcher for CPU tensors, so it is wrapped while the mode is active)."""

    SYNCING = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
               "aten._unique2.default", "aten.unique_dim.default"}

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self._tolist = torch.Tensor.tolist

    def __enter__(self):
        original, ops = self._tolist, self.ops

        def tolist(tensor):
            ops.append("Tensor.tolist")
            return original(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in self.SYNCING or (name.startswith("aten.repeat_interleave.Tensor") and kwargs.get("output_size") is None):
            self.ops.append(name)
        return func(*args, **kwargs)


def count_syncs(step: Callable[[], None], device: torch.device) -> tuple[int, list[str]]:
    """Host syncs of one call of `step`: CUDA's sync debug mode on a GPU (every blocking
    copy / stream sync warns), the host-read ops elsewhere."""
    if device.type != "cuda":
        with HostReads() as mode:
            step()
        return len(mode.ops), mode.ops
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    return len(found), found


def training_step(strategy: str, plan: Plan) -> Callable[[], None]:
    """One step of `train_epoch` (data batch -> selection -> loss -> backward -> fused AdamW
    -> epoch counters) with the project's own functions, on a synthetic batch."""
    from pipeline.clips import to_model_inputs
    from pipeline.config import load_config
    from pipeline.modeling import make_model
    from pipeline.training import EpochCounters, make_optimizer, make_recipe, select_train

    extra = ["masking.tau=0.02"] if strategy == "mgtc_threshold" else ["masking.ratio=0.5"]
    cfg = load_config(None, [
        "data.shards=synthetic", "data.num_classes=400", f"data.num_frames={plan.frames}",
        f"data.input_size={plan.size}", f"data.short_side={plan.size}", f"model.size={plan.model}",
        f"masking.strategy={strategy}", "optim.batch_size=4", *extra,
    ])
    model = make_model(cfg).to(plan.device).train()
    recipe = make_recipe(cfg, 0.02 if strategy == "mgtc_threshold" else None, plan.device, rank=0)
    optimizer = make_optimizer(cfg, model, 1, plan.device)
    counters = EpochCounters(recipe)
    grid = recipe.grid
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (4, plan.frames, plan.size, plan.size, 3), dtype=np.uint8))
    scores = torch.from_numpy(rng.random((4, *grid), dtype=np.float32) * 0.04)
    scores[:, 0] = math.inf
    batch = {"pixels": pixels, "scores": scores, "label": torch.arange(4)}
    if plan.cuda:
        batch = {k: v.pin_memory() for k, v in batch.items()}

    def step() -> None:
        x, s, labels = to_model_inputs(batch, plan.device)
        sel = select_train(recipe, s)
        loss, encoded = recipe.loss(model, recipe, x, sel, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if plan.cuda:  # fused AdamW; the CPU AdamW reads its (host) step counters
            optimizer.step()
        counters.add(loss, sel.lengths, encoded)

    return step


def check_syncs(plan: Plan) -> list[Row]:
    rows = []
    for strategy, allowed in (("mgtc_ratio", 0), ("mgtc_threshold", 1)):
        step = training_step(strategy, plan)
        step()  # the first step initialises cuBLAS / cuDNN / the allocator
        count, found = count_syncs(step, plan.device)
        how = "CUDA sync debug mode" if plan.cuda else "host-read ops (CPU)"
        rows.append(Row("host syncs per training step", f"{strategy}, ViT-{plan.model}, batch 4", str(count),
                        f"<= {allowed}", "pass" if count <= allowed else "FAIL",
                        f"{how}: {'; '.join(sorted(set(found)))[:160] or 'none'}"))
    return rows


# ------------------------------------------------------------------------------ 5


def ray_train_step(config: dict) -> None:
    """Ray Train worker: the project's training pieces for one step, then an all-reduce."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from pipeline.config import from_dict
    from pipeline.modeling import autocast as run_autocast, make_model
    from pipeline.training import make_optimizer, make_recipe, select_train

    cfg = from_dict(config["cfg"])
    device = ray.train.torch.get_device()
    model = make_model(cfg).to(device)
    recipe = make_recipe(cfg, None, device, rank=0)
    optimizer = make_optimizer(cfg, model, 1, device)
    ddp = ray.train.torch.prepare_model(model)
    b, t, s = cfg.optim.batch_size, cfg.data.num_frames, cfg.data.input_size
    x = torch.randn(b, 3, t, s, s, device=device)
    scores = torch.rand(b, *recipe.grid, device=device)
    sel = select_train(recipe, scores)
    with run_autocast(cfg, device):
        logits = ddp(x, sel.ids_keep, sel.keep_mask)
    loss = F.cross_entropy(logits.float(), torch.arange(b, device=device) % cfg.data.num_classes)
    loss.backward()
    optimizer.step()
    total = torch.ones(1, device=device)
    dist.all_reduce(total)
    metrics = {"loss": float(loss), "all_reduce": float(total), "backend": dist.get_backend(),
               "device": str(device), "logits_dtype": str(logits.dtype)}
    # Ray Train 2.x keeps a report's metrics in the Result only with a checkpoint.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "step.txt").write_text("1")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def check_ray(plan: Plan) -> list[Row]:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.config import load_config, to_dict

    cfg = load_config(None, [
        "data.shards=synthetic", "data.num_classes=400", f"data.num_frames={plan.frames}",
        f"data.input_size={plan.size}", f"data.short_side={plan.size}", f"model.size={plan.model}",
        "masking.strategy=mgtc_ratio", "masking.ratio=0.5", "optim.batch_size=4",
        f"scaling.use_gpu={str(plan.cuda).lower()}",
    ])
    started_here = not ray.is_initialized()
    if started_here:  # local, loopback only: the train controller and one worker
        from pipeline.localray import init_local

        init_local(num_cpus=2 if not plan.cuda else 4, num_gpus=1 if plan.cuda else 0)
    backend = "nccl" if plan.cuda else "gloo"
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as storage:
            trainer = TorchTrainer(
                ray_train_step,
                train_loop_config={"cfg": to_dict(cfg)},
                torch_config=TorchConfig(backend=backend),
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=plan.cuda, resources_per_worker={"CPU": 1}),
                run_config=ray.train.RunConfig(name="bench-gpu", storage_path=storage),
            )
            metrics = trainer.fit().metrics or {}
    finally:
        if started_here:
            ray.shutdown()
    ok = metrics.get("backend") == backend and metrics.get("all_reduce") == 1.0 and math.isfinite(metrics.get("loss", math.nan))
    return [Row("Ray Train step", f"1 worker, {backend}, ViT-{plan.model} MGTC 50%, fused AdamW",
                f"backend {metrics.get('backend')}, loss {metrics.get('loss', math.nan):.3f}, "
                f"logits {metrics.get('logits_dtype', '?')[6:]}", f"{backend}, finite loss",
                "pass" if ok else "FAIL", f"{metrics.get('device')}; {time.perf_counter() - start:.0f} s with start-up")]


# ------------------------------------------------------------------------------ 7


def synthetic_video(path: Path, seconds: float, fps: int, width: int, height: int) -> Path:
    """An H.264 file with default x264 settings: a texture panning over noise (PyAV)."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            shift = (4 * i) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, shift:shift + width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def check_decode(plan: Plan) -> list[Row]:
    """Clips of 16 frames at stride 4 from a K400-like video (10 s, 30 fps, 340x256)."""
    import decord

    seconds = 10.0 if plan.cuda else 1.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_video(Path(tmp) / "k400_like.mp4", seconds, 30, 340, 256)
        frames = int(seconds * 30)
        span = min(64, frames)
        starts = list(range(0, frames - span + 1, max(1, (frames - span) // 7 or 1)))[:8]
        clips = [list(range(s, s + span, max(1, span // 16)))[:16] for s in starts]
        setting = f"{len(clips)} clips of 16 frames, 340x256 H.264, {seconds:.0f} s"

        def decode_cpu() -> None:
            reader = decord.VideoReader(str(path), num_threads=1)
            for idx in clips:
                reader.get_batch(idx).asnumpy()

        ms = timed_ms(decode_cpu, plan, iters=3, warmup=1)
        rows.append(Row("decode: decord CPU, 1 thread", setting, f"{len(clips) / (ms / 1e3):.1f} clips/s"))
        if importlib.util.find_spec("torchcodec") is None:
            rows.append(Row("decode: torchcodec CUDA", setting, status="skipped", note="torchcodec not installed"))
            return rows
        if not plan.cuda:
            rows.append(Row("decode: torchcodec CUDA", setting, status="skipped", note="needs CUDA"))
            return rows
        from torchcodec.decoders import VideoDecoder

        def decode_gpu() -> None:
            decoder = VideoDecoder(str(path), device=str(plan.device))
            for idx in clips:
                decoder.get_frames_at(indices=idx)

        ms = timed_ms(decode_gpu, plan, iters=3, warmup=1)
        rows.append(Row("decode: torchcodec CUDA", setting, f"{len(clips) / (ms / 1e3):.1f} clips/s",
                        note="frames stay on the GPU"))
    return rows


# ------------------------------------------------------------------------------ report


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| check | setting | result | target | status | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = (r.check, r.setting, r.value, r.target, r.status, r.note)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def section_text(table: str, plan: Plan, argv: list[str]) -> str:
    command = bench_command("gpu", argv)
    date = utc_now()
    device = torch.cuda.get_device_name(plan.device) if plan.cuda else f"CPU ({platform.processor() or 'unknown'})"
    return "\n".join([
        SECTION, "",
        f"- device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python "
        f"{platform.python_version()}",
        f"- date: {date}; wall time {plan.elapsed():.0f} s",
        f"- command: `{command}`", "",
        table, "",
        "Throughput rows time forward + cross-entropy + backward (no optimizer step, token "
        "selection precomputed) under bf16 autocast, median of "
        f"{plan.iters} steps after {plan.warmup} warm-up steps. MFU = model FLOPs per step "
        "(6 x encoder multiply-adds of the real kept tokens, `pipeline/flops.py`: forward 2 "
        "FLOPs per MAC, backward twice the forward) / step time / the GPU's dense bf16 peak. "
        "'threshold' clips keep 25%-75% of the tokens (mean 50%, the MGTC 50% count); padded "
        "runs them padded to the longest clip with a key-padding mask. 'compiled' is "
        "`torch.compile` of every block (`model.compile`), dynamic shapes for the threshold "
        "rows only.",
        "",
    ])
