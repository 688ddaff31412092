"""The black box: the preset's backbone, global average pooling and two fully connected layers
(3 margin logits, or 1 malignancy logit)."""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..config import ModelConfig, Preset, get_preset
from ..model import build_backbone
from ..errors import InputError

__all__ = ["TASKS", "BlackBox", "blackbox_preset", "build_blackbox"]


TASKS = ("margin", "malignancy")




class BlackBox(nn.Module):
    """VGG-16 conv layers (or the tiny backbone) + global average pooling + two fully connected
    layers. ``forward`` returns logits (B, 3) for ``task="margin"``, (B, 1) for ``"malignancy"``.

    ``backbone`` is the GradCAM target layer: :meth:`classify` maps its output to the logits.
    """

    def __init__(self, cfg: ModelConfig, task: str = "margin", hidden: int | None = None,
                 dropout: float | None = None, backbone: nn.Module | None = None):
        super().__init__()
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        self.cfg, self.task = cfg, task
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        c = int(self.backbone.out_channels)
        hidden = int(hidden or c)
        dropout = cfg.head_dropout if dropout is None else dropout
        self.num_outputs = cfg.num_classes if task == "margin" else 1
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, self.num_outputs),
        )
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
                nn.init.zeros_(layer.bias)

    def classify(self, features: Tensor) -> Tensor:
        """Backbone output (B, C, H, W) -> logits (B, n)."""
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, S, S), got {tuple(images.shape)}")
        return self.classify(self.backbone(images))


def blackbox_preset(preset: str) -> str:
    """The black box's recipe for a preset name: "tiny" -> "tiny-blackbox" (config); any other
    name is used as it is (the paper's black box trains with the paper preset)."""
    return "tiny-blackbox" if preset == "tiny" else preset


def build_blackbox(preset: str | Preset, task: str = "margin", pretrained: str | None = None) -> BlackBox:
    """A fresh black box for ``preset`` (its ModelConfig decides backbone, pretrained weights and
    image size); ``pretrained`` overrides the preset's choice ("none" for tests)."""
    p = get_preset(blackbox_preset(preset)) if isinstance(preset, str) else preset
    if pretrained is not None:
        p = p.replace({"model.pretrained": pretrained})
    return BlackBox(p.model, task)
