"""Duplicate-prototype pruning after the last push (Barnett et al. 2021, after the last push; ProtoPNet's pruning
step, reduced to exact duplicates).

Two prototypes of the same class are duplicates when the push projected them onto the same latent
patch of the same training image, or when their squared L2 distance is below
``TrainConfig.prune_tolerance``. Duplicates produce (nearly) the same similarity score s_j, so a
group of them is merged into its lowest-numbered member, and the removed members' columns of h1 are
ADDED to the kept column:

    h1[:, kept] ← Σ_{j in group} h1[:, j]

which leaves the margin logits h1·s unchanged for exact duplicates. The model then has fewer
prototypes (m' ≤ m): ``prototypes`` (m', C), ``prototype_class`` (m',) and ``margin_head``
(3 × m'). ``config.json`` of the run stores the kept classes (``prototype_class``) so that
``rundir.load_run`` rebuilds these shapes with ``model.resize_prototypes`` before loading the state dict.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .config import MARGINS
from .model import IAIABL, resize_prototypes     # re-exported: the book and older code import it from here

__all__ = ["duplicate_groups", "resize_prototypes", "prune_duplicates"]


def duplicate_groups(
    prototypes: Tensor, prototype_class: Tensor, sources: list[tuple] | None, tolerance: float
) -> list[tuple[list[int], str]]:
    """Groups (sorted member lists, reason) of same-class duplicates, members ≥ 2, by union-find.

    prototypes (m, C); prototype_class (m,); sources: per prototype a hashable key of where it was
    projected (source index, row, col), or None to use the distance criterion only.
    """
    m = prototypes.shape[0]
    parent = list(range(m))
    reason: dict[int, set[str]] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    p = prototypes.detach().double()
    d = torch.cdist(p, p) ** 2                                                # (m, m)
    cls = prototype_class.tolist()
    for i in range(m):
        for j in range(i + 1, m):
            if cls[i] != cls[j]:
                continue
            why = []
            if sources is not None and sources[i] == sources[j]:
                why.append("same patch")
            if float(d[i, j]) < tolerance:
                why.append("distance")
            if why:
                ri, rj = find(i), find(j)
                root, child = min(ri, rj), max(ri, rj)
                reason.setdefault(root, set()).update(why)
                if child != root:
                    parent[child] = root
                    reason[root].update(reason.pop(child, set()))
    groups: dict[int, list[int]] = {}
    for i in range(m):
        groups.setdefault(find(i), []).append(i)
    return [(members, " + ".join(sorted(reason.get(root, set()))))
            for root, members in sorted(groups.items()) if len(members) > 1]


@torch.no_grad()
def prune_duplicates(model: IAIABL, push_records: list[dict] | None, tolerance: float) -> dict:
    """Merge duplicate prototypes of ``model`` in place (see the module docstring).

    push_records: the push records of the current prototypes (``push.push_prototypes``), for the
    same-patch criterion; None to use the distance criterion alone.
    Returns the report written to ``prune.json``:
    ``{"before": m, "after": m', "merged": [{"kept", "removed", "class", "reason"}],
       "kept": [old indices kept, in order], "prototype_class": [...], "tolerance": t}``.
    """
    m = model.num_prototypes
    sources = None
    if push_records is not None:
        sources = [(r["source_index"], *r["patch"]) for r in push_records]
    groups = duplicate_groups(model.prototypes, model.prototype_class, sources, tolerance)
    removed = {j for members, _ in groups for j in members[1:]}
    keep = [j for j in range(m) if j not in removed]
    new_index = {old: new for new, old in enumerate(keep)}
    for members, _ in groups:
        for j in members[1:]:
            new_index[j] = new_index[members[0]]
    # assignment matrix A (m, m'): h1' = h1 · A sums each group's columns into its kept member
    a = torch.zeros(m, len(keep), dtype=model.margin_head.weight.dtype, device=model.prototypes.device)
    dev = model.prototypes.device
    a[torch.arange(m, device=dev), torch.tensor([new_index[j] for j in range(m)], device=dev)] = 1
    weight = model.margin_head.weight @ a                                     # (3, m')
    protos = model.prototypes[keep].clone()                                   # (m', C)
    pclass = model.prototype_class[keep].clone()
    resize_prototypes(model, pclass)
    model.prototypes.copy_(protos)
    model.margin_head.weight.copy_(weight)
    return {
        "before": m,
        "after": len(keep),
        "merged": [{"kept": members[0], "removed": members[1:],
                    "class": MARGINS[int(pclass[new_index[members[0]]])], "reason": why}
                   for members, why in groups],
        "kept": keep,
        "prototype_class": pclass.tolist(),
        "tolerance": tolerance,
    }
