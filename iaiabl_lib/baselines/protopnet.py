"""ProtoPNet (Chen et al. 2019): IAIA-BL's own training with the ProtoPNet preset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["protopnet_preset", "train_protopnet"]


def protopnet_preset(preset: str = "tiny") -> str:
    """The ProtoPNet twin of a preset: "paper" -> "protopnet", "tiny" -> "tiny-protopnet"
    (``config.protopnet_name``)."""
    from ..config import protopnet_name

    return protopnet_name(preset)


def train_protopnet(data: str | Path, preset: str = "tiny", out: str | Path = "runs/protopnet",
                    epochs: int | None = None, seed: int = 0, device=None, progress: bool = True,
                    overrides: dict[str, Any] | None = None):
    """The ProtoPNet baseline: IAIA-BL's training (``train.train``) with the ProtoPNet preset
    (k = 1, no fine-annotation loss, off-class weight −0.5). Returns what ``train.train`` returns."""
    from .. import train as train_mod

    return train_mod.train(data, protopnet_preset(preset), out, epochs=epochs, seed=seed,
                           device=device, progress=progress, overrides=overrides)
