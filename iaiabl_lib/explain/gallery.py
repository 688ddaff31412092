"""Global explanation: each prototype's nearest training patches (one batched pass of squared
distances over a split)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import MARGINS
from ..model import activation_map
from ..predict import as_images, eval_batches
from .case import hot_box
from .inputs import dataset_for, prototype_record
from ..errors import InputError

__all__ = ["Neighbour", "PrototypeGalleryEntry", "prototype_gallery"]


@dataclass
class Neighbour:
    index: int                  # row of the prepared dataset
    id: str
    label: int                  # its margin class
    sq_distance: float          # min over its patches of ||f(x)_l - p_j||^2
    similarity: float           # log similarity (Eq. 1) at that patch
    patch: tuple[int, int]      # latent cell (row, col)
    rf_box: tuple[int, int, int, int]
    high_activation_box: tuple[int, int, int, int]
    image: np.ndarray           # (S, S) uint8
    activation: np.ndarray      # (S, S) PAM of the prototype on this image


@dataclass
class PrototypeGalleryEntry:
    index: int
    cls: int
    class_name: str
    source_id: str | None
    source_image: np.ndarray | None
    box: tuple[int, int, int, int] | None
    self_activation: np.ndarray | None
    neighbours: list[Neighbour]


@torch.no_grad()
def prototype_gallery(run, data=None, n_nearest: int = 3, split: str | Sequence[str] = "train",
                      same_class: bool = False, batch_size: int = 256,
                      prototypes: Sequence[int] | None = None) -> list[PrototypeGalleryEntry]:
    """For every prototype (or those in ``prototypes``), its ``n_nearest`` nearest training
    images: the smallest patch-to-prototype squared distance per image, computed for all images in
    batches (one (b, m, H, W) distance tensor per batch), then a top-k per prototype.
    ``same_class``: search only the images of the prototype's class (as the push does)."""
    from ..model import log_similarity
    from ..push import receptive_field, rf_box

    model = run.model
    full = dataset_for(run, data)
    if split:
        names = (split,) if isinstance(split, str) else tuple(split)
        rows = np.flatnonzero(np.isin(full.split, names))
        ds = full.subset(names)
    else:
        rows, ds = np.arange(len(full)), full
    if len(ds) == 0:
        raise InputError(f"prototype_gallery: split {split!r} is empty")
    size = int(model.cfg.image_size)
    x = as_images(ds.images, size)
    mins, args = [], []
    for _, out in eval_batches(model, x, batch_size):
        d = out.sq_dist.float()                                              # (b, m, H, W)
        grid = int(d.shape[-1])
        v, a = d.flatten(2).min(dim=2)                                       # (b, m)
        mins.append(v.cpu())
        args.append(a.cpu())
    dmin, amin = torch.cat(mins), torch.cat(args)                          # (N, m)
    pclass = model.prototype_class.cpu()
    labels = torch.as_tensor(ds.labels)
    if same_class:
        dmin = dmin.masked_fill(labels[:, None] != pclass[None, :], float("inf"))
    k = min(int(n_nearest), len(ds))
    best_d, best_i = dmin.topk(k, dim=0, largest=False)                    # (k, m)
    chosen = list(range(model.num_prototypes)) if prototypes is None else [int(j) for j in prototypes]
    bad = [j for j in chosen if not 0 <= j < model.num_prototypes]
    if bad:
        raise InputError(f"prototype(s) {bad} do not exist: this model has {model.num_prototypes} "
                         f"prototypes (0..{model.num_prototypes - 1}) after pruning")
    needed = sorted({int(i) for j in chosen for i in best_i[:, j].tolist()})
    where = {i: r for r, i in enumerate(needed)}
    pam = np.zeros((0, model.num_prototypes, size, size), np.float32)
    if needed:
        maps = torch.cat([o.similarity_maps.float() for _, o in eval_batches(model, x[needed], batch_size)])
        pam = activation_map(maps, size).cpu().numpy()                    # (u, m, S, S)
    rf = receptive_field(torch.nn.Sequential(model.backbone, model.add_on))
    arrays = getattr(run, "push_arrays", None) or {}
    eps = float(model.cfg.epsilon)
    entries = []
    for j in chosen:
        rec = prototype_record(run, j)
        neighbours = []
        for r in range(k):
            d = float(best_d[r, j])
            if not np.isfinite(d):
                continue
            i = int(best_i[r, j])
            cell = int(amin[i, j])
            row, col = cell // grid, cell % grid
            act = pam[where[i], j]
            neighbours.append(Neighbour(
                index=int(rows[i]),
                id=ds.ids[i], label=int(ds.labels[i]), sq_distance=d,
                similarity=float(log_similarity(torch.tensor(d), eps)),
                patch=(row, col), rf_box=tuple(rf_box(rf, row, col, size)),
                high_activation_box=hot_box(act), image=ds.images[i], activation=act))
        src = arrays.get("source_image")
        sa = arrays.get("self_activation")
        entries.append(PrototypeGalleryEntry(
            index=j, cls=int(pclass[j]), class_name=MARGINS[int(pclass[j])],
            source_id=rec["source_id"], source_image=None if src is None else src[j],
            box=rec["high_activation_box"] or rec["rf_box"],
            self_activation=None if sa is None else sa[j], neighbours=neighbours))
    return entries
