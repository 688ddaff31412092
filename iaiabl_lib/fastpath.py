"""The fast training path's device policy: the device, precision, batch fitting and the run-time
estimate.

Device (``pick_device``)
    CUDA when present, else the CPU; an explicit ``--device`` is checked against what exists.

Precision (``autocast_dtype``)
    bf16 autocast on GPUs with native bf16 (Ampere and later: A100, H100, H200); fp16 with a
    ``GradScaler`` on GPUs without it (Colab's T4, V100, P100). ``torch.cuda.is_bf16_supported()``
    says True on a T4 by default because bf16 can be *emulated* there, slowly; we ask for native
    support only. On a CPU, bf16 (used only when asked for: tests of fast-vs-reference agreement).

Batch fitting (``fit_batch``)
    The paper's A1 batch is 75 lesion-scale + 10 fine-annotated images. Before the first epoch the
    trainer tries one step at that size; on a CUDA out-of-memory error it shrinks both parts by a
    quarter (keeping their ratio) until a step runs, and says so. A 16 GB T4 trains the paper
    preset this way without a separate configuration.

Estimate (``RunEstimate``)
    The trainer times a few A1 steps and one evaluation batch on the real data, then multiplies:
    A1 steps × step time + images through the network for pushes, last-layer caches and validation
    ÷ evaluation rate. Printed before training starts and kept in ``config.json``, next to the
    measured ``wall_seconds`` of the run.
"""
from __future__ import annotations

import gc
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import InputError, UserError

__all__ = ["pick_device", "MIN_BATCH", "native_bf16", "AMP_DTYPES", "autocast_dtype", "needs_scaler",
           "configure_backends", "BACKEND_FLAGS", "setup", "restore_process_state", "sync", "device_name",
           "fits_batches", "free_memory", "time_calls",
           "fit_batch", "RunEstimate", "format_seconds"]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (``"cuda"``, ``"cuda:1"``, ``"cpu"``, ...), else CUDA when present, else CPU."""
    if device is not None and str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available here; "
                               "use --device cpu (or leave it out to pick automatically)")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

MIN_BATCH = 8
"""The smallest lesion-scale batch ``fit_batch`` tries before giving up."""


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA device with native bf16 matrix units (compute capability ≥ 8.0)."""
    if device.type != "cuda":
        return False
    return torch.cuda.is_bf16_supported(including_emulation=False)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(device: torch.device, choice: str = "auto") -> torch.dtype:
    """The autocast dtype of the fast path on ``device`` (module docstring). ``choice``
    (``train.amp_dtype``): "auto", or "bf16" / "fp16" to force one (e.g. fp16 on an H100 to
    reproduce a T4's numerics)."""
    if choice != "auto":
        try:
            return AMP_DTYPES[choice]
        except KeyError:
            raise InputError(f"train.amp_dtype {choice!r}: use auto, bf16 or fp16") from None
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.bfloat16


def needs_scaler(dtype: torch.dtype) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
    return dtype == torch.float16


BACKEND_FLAGS = (("cudnn", "benchmark"), ("cuda.matmul", "allow_tf32"), ("cudnn", "allow_tf32"))
"""The ``torch.backends`` switches :func:`configure_backends` sets (module under torch.backends, name)."""


def _flag_owner(module: str):
    owner = torch.backends
    for part in module.split("."):
        owner = getattr(owner, part)
    return owner


def configure_backends(device: torch.device) -> None:
    """The fast path's global switches on CUDA (:data:`BACKEND_FLAGS`): cuDNN autotuning, TF32
    matrix products and convolutions (fp32 work on Ampere and later). Nothing on a CPU."""
    if device.type == "cuda":
        for module, name in BACKEND_FLAGS:
            setattr(_flag_owner(module), name, True)


def setup(device: torch.device, seed: int) -> None:
    """Set the process-wide switches of a training run: the global torch and NumPy seeds (the
    layers' initialisation, dropout and augmentation draw from them), and the device's backends
    (:func:`configure_backends`). The library's entry points call it only inside
    :func:`restore_process_state`, which gives the caller's state back afterwards."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    configure_backends(device)


@contextmanager
def restore_process_state() -> Iterator[None]:
    """On leaving the ``with`` block (even by an exception), put back what :func:`setup` changes:
    the global torch generators (CPU and every CUDA device), NumPy's global generator and the
    backend switches (:data:`BACKEND_FLAGS`). ``train.train``, ``train.estimate`` and
    ``baselines.train_blackbox`` run inside one, so a notebook that trains keeps its own random
    state and switches; inside, the run sees exactly what ``setup`` gives it."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    numpy_state = np.random.get_state()
    flags = [getattr(_flag_owner(module), name) for module, name in BACKEND_FLAGS]
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        np.random.set_state(numpy_state)
        for (module, name), value in zip(BACKEND_FLAGS, flags):
            setattr(_flag_owner(module), name, value)


def sync(device: torch.device) -> None:
    """Wait for the device (timing only; never inside the training loop)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    return f"CPU ({torch.get_num_threads()} of {os.cpu_count()} threads)"


def fits_batches(device: torch.device) -> bool:
    """Whether the trainer fits its batch to ``device``'s memory before training: on CUDA, where an
    out-of-memory error is an exception to catch (a CPU swaps or gets killed instead)."""
    return device.type == "cuda"


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_calls(fn: Callable[[], object], device: torch.device, calls: int, warmup: int = 1) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (cuDNN autotuning, compilation)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / max(calls, 1)


def fit_batch(try_step: Callable[[int, int], object], batch_size: int, fine_batch_size: int,
              device: torch.device, log: Callable[[str], None] = print,
              min_batch_size: int = MIN_BATCH) -> tuple[int, int]:
    """The largest (lesion, fine) batch, from ``(batch_size, fine_batch_size)`` down by quarters,
    for which ``try_step(b, f)`` runs without a CUDA out-of-memory error.

    ``try_step`` runs one full training step (forward, backward, optimiser) at that size.
    Raises RuntimeError naming the device and what to do when even ``min_batch_size`` fails.
    """
    b, f = batch_size, fine_batch_size
    while True:
        failed = False
        try:
            try_step(b, f)
            sync(device)
        except torch.OutOfMemoryError:
            failed = True          # leave the except block first: the traceback holds the tensors
        if not failed:
            return b, f
        free_memory(device)
        where = device_name(device)
        if device.type == "cuda":
            where = f"the {torch.cuda.get_device_properties(device).total_memory / 2 ** 30:.0f} GiB of {where}"
        if b <= min_batch_size:
            raise UserError(
                f"a training step at batch {b} + {f} does not fit in {where}; train at a smaller image "
                f"size (--set model.image_size=...) or on a GPU with more memory")
        nb = max(min_batch_size, (3 * b) // 4)
        nf = max(1, round(f * nb / b)) if f else 0
        log(f"batch {b} + {f} does not fit in {where}; trying {nb} + {nf}")
        b, f = nb, nf


@dataclass
class RunEstimate:
    """What the trainer expects a run to take (module docstring); seconds are wall-clock."""

    device: str
    batch_size: int
    fine_batch_size: int
    a1_steps: int                     # warm-up + joint steps still to run
    step_seconds: float               # one A1 step, augmentation included
    forward_images: int               # images through the network for pushes, A3 caches, validation
    forward_images_per_second: float
    peak_memory_gib: float | None     # CUDA: peak allocated during the timed steps

    @property
    def seconds(self) -> float:
        return self.a1_steps * self.step_seconds + self.forward_images / max(self.forward_images_per_second, 1e-9)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 1)
        d["step_seconds"] = round(self.step_seconds, 5)
        d["forward_images_per_second"] = round(self.forward_images_per_second, 1)
        return d

    def describe(self) -> str:
        b = self.batch_size + self.fine_batch_size
        mem = "" if self.peak_memory_gib is None else f", {self.peak_memory_gib:.1f} GiB peak"
        return (f"estimated training time on {self.device}: {format_seconds(self.seconds)} "
                f"({self.a1_steps} A1 steps of {self.batch_size} + {self.fine_batch_size} at "
                f"{self.step_seconds * 1000:.0f} ms = {b / self.step_seconds:.0f} images/s{mem}; "
                f"{self.forward_images} images through the network for pushes and validation at "
                f"{self.forward_images_per_second:.0f} images/s)")


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "unknown"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60))} min"
