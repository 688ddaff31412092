"""What a resumable run saves besides the weights: the random generators' states, and copies of
state dicts that can be kept in memory (the best pushed model). The resume file itself is written
by the trainer (``Trainer.resume_state``) with ``rundir.save_state``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..model import IAIABL

__all__ = ["capture_rng", "restore_rng", "tensors_of", "clone_state"]


def capture_rng(generator: torch.Generator) -> dict:
    """The state of every random generator a run draws from: torch's global one, numpy's global
    one, the run's own ``generator`` and CUDA's (empty list without CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "generator": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Set every generator back to what ``capture_rng`` saw."""
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
    generator.set_state(state["generator"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tensors_of(arrays: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def clone_state(model: IAIABL) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
