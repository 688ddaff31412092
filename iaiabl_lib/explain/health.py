"""The library's one rule for which prototypes a reader should distrust (chapter 13, the explorers,
the gallery and ``iaiabl explain`` all call :func:`prototype_health`): where each prototype looks on
its own class's training cases (Eq. 9 per prototype), and how the margin layer h1 uses it.

A prototype is flagged when
  * most of its strongest activation lies off the mass and its margin (``OFF_LESION_THRESHOLD``);
  * it was taken from the border of its source image;
  * its h1 weight counts against its own class (it speaks for its class by looking *unlike* it);
  * its h1 weights count against every class (it can only ever lower the scores).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import MARGINS
from ..model import activation_map
from ..predict import as_images, eval_batches
from .inputs import dataset_for, prototype_record

__all__ = ["PrototypeHealth", "OFF_LESION_THRESHOLD", "margin_band", "prototype_health"]


@dataclass
class PrototypeHealth:
    """Where one prototype looks, measured: a reason to trust or to distrust the evidence it gives."""

    index: int
    cls: int
    lesion_ap: float             # Eq. 9 on the lesion, mean over the split's cases of its class
    margin_ap: float             # Eq. 9 on the lesion and a band around its edge (the margin), same cases
    self_ap: float | None        # Eq. 9 of its self-activation on its source case's lesion (push)
    on_border: bool              # its source patch is a cell on the edge of the latent grid
    merged: int                  # how many other prototypes were merged into it by pruning
    weights: tuple[float, ...] = ()   # its column of h1: (circumscribed, indistinct, spiculated)
    flags: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


OFF_LESION_THRESHOLD = 0.5
"""A prototype whose top 5 % activation lies mostly off the mass and its margin (Eq. 9 against the
lesion widened by ``margin_band`` pixels, below this) is flagged."""


def margin_band(size: int, grid: int) -> int:
    """Width in pixels of the margin band around a lesion: one latent cell (size / grid, 8 px at
    64 px, 16 px at 224 px). A prototype that matches the margin sits on the lesion's edge, and the
    upsampled map of one cell spreads over about that distance on both sides of it."""
    return max(1, int(round(size / grid)))


@torch.no_grad()
def prototype_health(run, data=None, split: str = "train", threshold: float = OFF_LESION_THRESHOLD,
                     batch_size: int = 256) -> list[PrototypeHealth]:
    """For every prototype of ``run``: its activation precision (Eq. 9, τ = 0.95) on the ``split``
    cases of its own class against the lesion (``lesion_ap``) and against the lesion with its
    margin band (``margin_ap``, the lesion widened by ``margin_band`` pixels: a margin prototype
    sits on the edge), that of its self-activation on its source case, whether its source patch sits
    on the border of the latent grid, how many prototypes pruning merged into it, and its column of
    h1. ``flags`` says in words why a reader should distrust it (the module docstring's four rules)."""
    from scipy import ndimage

    from ..metrics import activation_precision

    model = run.model
    ds = dataset_for(run, data).subset(split)
    size = int(model.cfg.image_size)
    x = as_images(ds.images, size)
    maps = torch.cat([out.similarity_maps.float().cpu()
                      for _, out in eval_batches(model, x, batch_size)])  # (N, m, H, W)
    grid = int(maps.shape[-1])
    band = margin_band(size, grid)
    disk = ndimage.generate_binary_structure(2, 1)
    widened = np.stack([ndimage.binary_dilation(m > 0, disk, iterations=band) for m in ds.lesion_masks])
    pclass = model.prototype_class.cpu().numpy()
    h1 = model.margin_head.weight.detach().float().cpu().numpy()             # (3, m)
    full = dataset_for(run, data)                                            # every split: the push's sources
    arrays = getattr(run, "push_arrays", None) or {}
    merged = {int(g["kept"]): len(g["removed"]) for g in (getattr(run, "prune", None) or {}).get("merged", [])}
    kept = (getattr(run, "prune", None) or {}).get("kept", list(range(len(pclass))))
    out = []
    for j, cls in enumerate(pclass):
        rows = np.flatnonzero(ds.labels == cls)
        pam = activation_map(maps[rows, j][:, None], size)[:, 0].numpy()     # (n, S, S)
        ap = float(np.mean(activation_precision(pam, ds.lesion_masks[rows]))) if len(rows) else float("nan")
        ap_margin = float(np.mean(activation_precision(pam, widened[rows]))) if len(rows) else float("nan")
        rec = prototype_record(run, j)
        self_ap = None
        if "self_activation" in arrays and rec["source_index"] is not None:
            self_ap = float(activation_precision(arrays["self_activation"][j],
                                                 full.lesion_masks[int(rec["source_index"])]))
        patch = rec["patch"]
        border = patch is not None and (min(patch) == 0 or max(patch) == grid - 1)
        flags = []
        if np.isfinite(ap_margin) and ap_margin < threshold:
            off, limit = 100 * (1 - ap_margin), 100 * (1 - threshold)
            shown = f"{off:.0f}" if round(off) > round(limit) else f"{off:.1f}"   # never "50 % ... above 50 %"
            flags.append(f"{shown} % of its strongest activation lies off the mass and its margin "
                         f"(flagged above {limit:.0f} %)")
        if border:
            flags.append("it was taken from the border of its source image")
        w = h1[:, j]
        if (w < 0).all():
            flags.append("its weights count against every margin: it can only lower the scores")
        elif w[cls] < 0:
            flags.append(f"its weight counts against its own class ({MARGINS[cls]})")
        original = kept[j] if j < len(kept) else j
        out.append(PrototypeHealth(j, int(cls), ap, ap_margin, self_ap, bool(border),
                                   merged.get(int(original), 0), tuple(float(v) for v in w), flags))
    return out


# ---------------------------------------------------------------------------------------------
