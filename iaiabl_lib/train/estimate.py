"""``estimate(DATA, preset)``: how long ``train`` would take here, without training: the trainer's
probe (``probe``) and nothing else."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import fastpath
from ..config import Preset, resolve_preset
from ..fastpath import pick_device
from .probe import estimate_left, probe, use_batch
from .splits import load_splits
from .trainer import Trainer

__all__ = ["estimate"]


def estimate(data: str | Path, preset: str | Preset, epochs: int | None = None, seed: int = 0, device=None,
             overrides: dict[str, Any] | None = None) -> fastpath.RunEstimate:
    """How long ``train(data, preset, ...)`` would take on ``device``, without training: the
    trainer's probe (``fastpath``: fit the batch to the GPU's memory, time
    ``train.estimate_steps`` A1 steps and one evaluation batch on this data set) and nothing else.
    ``RunEstimate.describe()`` says it in words; ``iaiabl train --estimate-only`` prints it. Like
    :func:`train`, it leaves the caller's random state and backend switches as they were."""
    preset = resolve_preset(preset, overrides, epochs)
    if preset.train.estimate_steps <= 0:
        preset = preset.replace({"train.estimate_steps": 3})
    dev = pick_device(device)
    train_set, val_set, ids, index = load_splits(data, preset, dev)
    with fastpath.restore_process_state():                              # the caller's seeds and switches
        fastpath.setup(dev, seed)
        trainer = Trainer(preset, train_set, val_set, ids, index, Path("."), dev, seed, False, {}, None)
        use_batch(trainer, probe(trainer))
        est = estimate_left(trainer)
    assert est is not None
    return est
