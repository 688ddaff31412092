"""Explanations of IAIA-BL (Barnett et al. 2021, §3, Fig. 3 and Appendix A).

Local (one case), "this looks like that":

    margin logit_c = Σ_j  h1[c, j] · s_j          (h1 has no bias)
                   = Σ_j  contribution[c, j]        contribution = similarity × weight

:func:`explain_case` lists the prototypes that contribute most to the predicted class, each with
its similarity s_j (Eq. 2), its h1 weight, the contribution, where in the case it was found (the
prototype activation map, PAM: the similarity map upsampled to the image) and where the prototype
itself comes from (its source training case, box and self-activation, recorded by the push).
:func:`case_text` says the same in words a radiologist reads.

Class level: :func:`class_activation_map`, Appendix A Eq. 11, the h1-weighted sum of the PAMs of a
class's prototypes: CAM_c = Σ_{j: class(p_j) = c} h1[c, j] · PAM_j. It is what the paper compares
with GradCAM / GradCAM++ of a black box (Fig. 5).

Global: :func:`prototype_gallery`, each prototype's nearest training patches (one batched pass of
squared distances over the training split).

Every function takes a loaded run (``train.load_run``) and works on any device; explaining one
case costs a single forward pass (well under 500 ms on a CPU with the tiny preset).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .config import MARGIN_WORDS, MARGINS
from .model import activation_map
from .predict import as_images, malignancy_probability, margin_probabilities
from .words import article, pct

__all__ = [
    "PrototypeEvidence", "CaseExplanation", "explain_case", "class_activation_map",
    "Neighbour", "PrototypeGalleryEntry", "prototype_gallery", "case_text", "dataset_for",
    "prepare_image", "prototype_record", "PrototypeHealth", "OFF_LESION_THRESHOLD", "margin_band",
    "prototype_health",
    "leading_prototype", "dismissed_probabilities", "Dismissal", "dismissal",
]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def dataset_for(run, data):
    """A PreparedDataset at the run's image size: ``data`` (a PreparedDataset, or a path, loaded
    now) or, when None, the run's own (``Run.dataset()``: loaded once per Run object). No module
    keeps a dataset: to explain many cases of another dataset, load it once and pass it."""
    from .data.dataset import load_prepared

    size = int(run.preset.model.image_size)
    if data is None:
        if hasattr(run, "dataset"):
            return run.dataset()
        data = getattr(run, "data_dir", None)
        if data is None or not Path(data).is_dir():
            raise FileNotFoundError(
                f"the prepared dataset of run {getattr(run, 'dir', '?')} ({data}) is not available; "
                "pass data=PATH (or --data DATA)")
    if isinstance(data, (str, Path)):
        return load_prepared(data, size=size)
    if data.images.shape[-1] != size:
        import copy

        from .data.dataset import resize_images, resize_masks

        data = copy.copy(data)
        data.images = resize_images(data.images, size)
        data.lesion_masks = resize_masks(data.lesion_masks, size)
        data.fine_masks = resize_masks(data.fine_masks, size)
    return data


def prepare_image(image, size: int) -> tuple[np.ndarray, Tensor]:
    """A grey ROI crop -> (grey uint8 (size, size), normalised tensor (1, 3, size, size)).

    ``image``: uint8 (S, S) (the prepared dataset's convention), float (S, S) in [0, 1], or an
    already normalised tensor (3, S, S) / (1, 3, S, S). Resized like ``dataset.load_prepared``."""
    from .data.dataset import normalise, resize_images
    from .push import grey_uint8

    if isinstance(image, Tensor) and image.ndim in (3, 4) and image.shape[-3] == 3:
        x = image[None] if image.ndim == 3 else image
        if x.shape[0] != 1:
            raise ValueError(f"one case at a time: got images of shape {tuple(image.shape)}")
        x = x.float().cpu()
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return grey_uint8(x)[0], x
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    arr = np.squeeze(arr)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"expected a square grey ROI crop (S, S), got shape {np.shape(image)}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError("a float ROI crop must lie in [0, 1] (or pass uint8 0-255)")
        arr = np.rint(arr * 255).astype(np.uint8)
    arr = resize_images(arr[None], size)[0]
    return arr, normalise(torch.from_numpy(arr)[None, None])


def prototype_record(run, j: int) -> dict:
    """The push record of prototype ``j`` (push.json, docs/INTERFACES.md §4: one name per field,
    boxes ``[y0, x0, y1, x1]`` end-exclusive in the source crop's pixels) with tuples for the boxes
    and the patch; a prototype without a record (a model never pushed) gets its class and Nones."""
    recs = getattr(run, "push", None) or []
    rec = dict(recs[j]) if j < len(recs) else {}
    cls = int(rec.get("class", int(run.model.prototype_class[j])))
    as_tuple = lambda v: None if v is None else tuple(int(x) for x in v)   # noqa: E731
    return {
        "class": cls, "class_name": MARGINS[cls],
        "source_index": rec.get("source_index"), "source_id": rec.get("source_id"),
        "patch": as_tuple(rec.get("patch")), "rf_box": as_tuple(rec.get("rf_box")),
        "high_activation_box": as_tuple(rec.get("high_activation_box")),
        "sq_distance": rec.get("sq_distance"),
    }


# ---------------------------------------------------------------------------------------------
# Local explanation
# ---------------------------------------------------------------------------------------------


@dataclass
class PrototypeEvidence:
    """One prototype's part in a decision (a row of the paper's Fig. 3)."""

    index: int                      # prototype j
    cls: int                        # its class (index into MARGINS)
    class_name: str
    similarity: float               # s_j, Eq. 2
    weight: float                   # h1[c, j] for the explained class c
    contribution: float             # similarity × weight
    activation: np.ndarray          # (S, S) PAM of prototype j over the case
    source_id: str | None           # the training case the prototype was projected onto
    source_index: int | None
    patch: tuple[int, int] | None   # latent-grid cell of the prototype in its source
    rf_box: tuple[int, int, int, int] | None          # receptive field of that cell (y0, x0, y1, x1)
    high_activation_box: tuple[int, int, int, int] | None  # 95th-percentile box of the self-activation
    source_image: np.ndarray | None  # (S, S) uint8 the source ROI
    self_activation: np.ndarray | None  # (S, S) the prototype's PAM on its own source

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The box shown around the prototype: its high-activation box, else its receptive field."""
        return self.high_activation_box or self.rf_box

    @property
    def patch_image(self) -> np.ndarray | None:
        """The prototype as an image: the source ROI inside :attr:`box`."""
        if self.source_image is None or self.box is None:
            return None
        y0, x0, y1, x1 = self.box
        return self.source_image[y0:y1, x0:x1]

    @property
    def case_box(self) -> tuple[int, int, int, int]:
        """Where the prototype is found in the case: the 95th-percentile box of its PAM."""
        return _hot_box(self.activation)


@dataclass
class CaseExplanation:
    """Why the model says what it says about one case."""

    case_id: str | None
    image: np.ndarray                  # (S, S) uint8 the ROI as the model saw it
    margin_logits: np.ndarray          # (3,)
    margin_prob: np.ndarray            # (3,)
    predicted_class: int               # argmax of margin_prob
    explained_class: int               # the class the contributions refer to (default: predicted)
    malignancy_prob: float | None
    similarity: np.ndarray             # (m,) s_j
    weights: np.ndarray                # (3, m) h1
    contributions: np.ndarray          # (3, m) similarity × weight; row c sums to margin logit c
    prototype_class: np.ndarray        # (m,)
    prototypes: list[PrototypeEvidence]  # the top prototypes, by contribution to explained_class
    lesion_mask: np.ndarray | None = None   # (S, S) when known
    true_margin: int | None = None
    true_malignant: int | None = None
    malignancy_equation: dict = field(default_factory=dict)   # run.malignancy (Eq. 10)
    cam: np.ndarray | None = None      # (S, S) Eq. 11 class activation map of the predicted class
                                       # (own-class prototypes), from the same forward pass
    seconds: float = 0.0               # time taken by explain_case

    @property
    def predicted_margin(self) -> str:
        return MARGINS[self.predicted_class]

    @property
    def explained_margin(self) -> str:
        return MARGINS[self.explained_class]

    def evidence(self, cls: int | None = None) -> float:
        """Total evidence (the margin logit) for class ``cls`` (default: the explained class)."""
        return float(self.contributions[self.explained_class if cls is None else cls].sum())


def leading_prototype(expl: CaseExplanation) -> PrototypeEvidence:
    """What a reader of the case sees first: the most activated prototype (largest similarity,
    Eq. 2) of the predicted class, the same choice as ``evaluate.predicted_class_pam`` (the most
    activated prototype overall when pruning left that class without prototypes). ``expl`` must
    list that prototype: explain with ``top`` = the number of prototypes."""
    own = np.flatnonzero(expl.prototype_class == expl.predicted_class)
    pool = own if len(own) else np.arange(len(expl.similarity))
    j = int(pool[np.argmax(expl.similarity[pool])])
    for p in expl.prototypes:
        if p.index == j:
            return p
    raise ValueError(f"prototype {j} (the most activated of the predicted class) is not among the "
                     f"{len(expl.prototypes)} listed: explain the case with top={len(expl.similarity)}")


def _hot_box(pam: np.ndarray, percentile: float = 95.0) -> tuple[int, int, int, int]:
    from .push import high_activation_box

    return tuple(int(v) for v in high_activation_box(torch.as_tensor(pam)[None].float(), percentile)[0])


def _resolve_case(run, case, data):
    """(case_id, grey uint8, normalised tensor, lesion mask or None, margin or None, malignant or None)."""
    size = int(run.preset.model.image_size)
    if isinstance(case, (str, Path)) and (Path(case).suffix.lower() in (".dcm", ".dicom") or Path(case).is_file()):
        raise ValueError(f"{case}: explain_case takes a prepared case (id or index) or an ROI crop; "
                         "for a raw DICOM cut the ROI first with report.crop_dicom_case (or use "
                         "`iaiabl explain --run RUN FILE.dcm --box ...`)")
    if isinstance(case, (int, np.integer, str)):
        ds = dataset_for(run, data)
        if isinstance(case, str):
            try:
                i = ds.ids.index(case)
            except ValueError:
                raise ValueError(f"case {case!r} is not an id of the prepared dataset "
                                 f"{getattr(ds, 'path', '')} (ids look like {ds.ids[0]!r})") from None
        else:
            i = int(case)
            if not -len(ds) <= i < len(ds):
                raise IndexError(f"case index {i} out of range: the dataset has {len(ds)} cases")
            i %= len(ds)
        grey, x = prepare_image(ds.images[i], size)
        return (ds.ids[i], grey, x, ds.lesion_masks[i].astype(np.uint8), int(ds.labels[i]),
                int(ds.malignant[i]))
    grey, x = prepare_image(case, size)
    return None, grey, x, None, None, None


@torch.no_grad()
def explain_case(run, case, data=None, top: int = 3, explained_class: int | None = None,
                 case_id: str | None = None, lesion_mask: np.ndarray | None = None) -> CaseExplanation:
    """Explain one case.

    run: a loaded IAIA-BL/ProtoPNet run (``train.load_run``).
    case: an index or an id of the run's prepared dataset (or of ``data``: a path or a
        PreparedDataset), or a grey ROI crop (S, S) (uint8, or float in [0, 1]), or a normalised
        tensor (3, S, S).
    top: how many prototypes to report (by contribution to the explained class).
    explained_class: the class whose evidence is listed (default: the predicted class).
    """
    t0 = time.perf_counter()
    model = run.model
    was = model.training
    model.eval()
    cid, grey, x, mask, true_margin, true_malignant = _resolve_case(run, case, data)
    if lesion_mask is not None:
        mask = np.asarray(lesion_mask).astype(np.uint8)
    dev = model.prototypes.device
    try:
        out = model(x.to(dev))
    finally:
        model.train(was)
    size = grey.shape[-1]
    logits = out.margin_logits[0].float().cpu()
    prob = margin_probabilities(logits)
    sim = out.similarity[0].float().cpu().numpy()                         # (m,)
    weights = model.margin_head.weight.detach().float().cpu().numpy()     # (3, m)
    contrib = weights * sim[None, :]                                      # (3, m)
    pred = int(np.argmax(prob))
    c = pred if explained_class is None else int(explained_class)
    if not 0 <= c < weights.shape[0]:
        raise ValueError(f"explained_class {c} out of range 0..{weights.shape[0] - 1}")
    order = np.argsort(-contrib[c], kind="stable")[:max(0, int(top))]
    cam = _cam_from_maps(model, out.similarity_maps, torch.tensor([pred]), size)[0].cpu().numpy()   # (S, S)
    maps = out.similarity_maps[0, torch.as_tensor(order, dtype=torch.long, device=dev)]   # (k, H, W)
    pams = activation_map(maps[None].float(), size)[0].cpu().numpy() if len(order) else np.zeros((0, size, size))
    arrays = getattr(run, "push_arrays", None) or {}
    src_imgs, self_act = arrays.get("source_image"), arrays.get("self_activation")
    pclass = model.prototype_class.cpu().numpy()
    evidence = []
    for r, j in enumerate(order):
        j = int(j)
        rec = prototype_record(run, j)
        evidence.append(PrototypeEvidence(
            index=j, cls=int(pclass[j]), class_name=MARGINS[int(pclass[j])],
            similarity=float(sim[j]), weight=float(weights[c, j]), contribution=float(contrib[c, j]),
            activation=pams[r],
            source_id=rec["source_id"], source_index=rec["source_index"], patch=rec["patch"],
            rf_box=rec["rf_box"], high_activation_box=rec["high_activation_box"],
            source_image=None if src_imgs is None or j >= len(src_imgs) else src_imgs[j],
            self_activation=None if self_act is None or j >= len(self_act) else self_act[j],
        ))
    mal = getattr(run, "malignancy", None) or {}
    expl = CaseExplanation(
        case_id=case_id if case_id is not None else cid, image=grey,
        margin_logits=logits.numpy(), margin_prob=prob, predicted_class=pred, explained_class=c,
        malignancy_prob=malignancy_probability(out.malignancy_logit[0].float(), model.malignancy_fitted),
        similarity=sim, weights=weights, contributions=contrib, prototype_class=pclass,
        prototypes=evidence, lesion_mask=mask, true_margin=true_margin, true_malignant=true_malignant,
        malignancy_equation=dict(mal), cam=cam)
    expl.seconds = time.perf_counter() - t0
    return expl


# ---------------------------------------------------------------------------------------------
# Class activation map (Appendix A, Eq. 11)
# ---------------------------------------------------------------------------------------------


def _model_of(run_or_model):
    return getattr(run_or_model, "model", run_or_model)


def _cam_from_maps(model, maps: Tensor, cls: Tensor, size: int, own_class_only: bool = True) -> Tensor:
    """Eq. 11 from similarity maps already computed: maps (b, m, H, W), cls (b,) -> (b, S, S)."""
    w = model.margin_head.weight.detach().float()                         # (3, m)
    if own_class_only:
        w = w * model.class_identity().T.float()
    pam = activation_map(maps.float(), size)                              # (b, m, S, S)
    return torch.einsum("bm,bmhw->bhw", w[cls.to(w.device)], pam)         # (b, S, S)


@torch.no_grad()
def class_activation_map(run, images, cls, batch_size: int = 128, own_class_only: bool = True) -> np.ndarray:
    """Appendix A, Eq. 11: CAM_c = Σ_{j: class(p_j) = c} h1[c, j] · PAM_j.

    images: a TensorSet, normalised images (N, 3, S, S), or grey crops (N, S, S) / one (S, S);
    cls: a class index, or one per image ((N,) ints; e.g. the predicted classes).
    own_class_only=False sums over all prototypes (off-class weights included).
    Returns (N, S, S) float32 (not normalised: the units of the margin logit per pixel)."""
    model = _model_of(run)
    size = int(model.cfg.image_size)
    x = as_images(images, size)
    n = x.shape[0]
    cls_t = torch.as_tensor(cls, dtype=torch.long).flatten()
    if cls_t.numel() == 1:
        cls_t = cls_t.expand(n)
    if cls_t.numel() != n:
        raise ValueError(f"cls: one class or one per image ({n}), got {cls_t.numel()}")
    dev = model.prototypes.device
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, n, batch_size):
            maps = model(x[s:s + batch_size].to(dev)).similarity_maps             # (b, m, H, W)
            out.append(_cam_from_maps(model, maps, cls_t[s:s + batch_size], size, own_class_only).cpu())
    finally:
        model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, size, size)).numpy()


# ---------------------------------------------------------------------------------------------
# Global explanation: each prototype's nearest training patches
# ---------------------------------------------------------------------------------------------


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
    from .model import log_similarity
    from .push import receptive_field, rf_box

    model = run.model
    full = dataset_for(run, data)
    if split:
        names = (split,) if isinstance(split, str) else tuple(split)
        rows = np.flatnonzero(np.isin(full.split, names))
        ds = full.subset(names)
    else:
        rows, ds = np.arange(len(full)), full
    if len(ds) == 0:
        raise ValueError(f"prototype_gallery: split {split!r} is empty")
    size = int(model.cfg.image_size)
    x = as_images(ds.images, size)
    dev = model.prototypes.device
    was = model.training
    model.eval()
    mins, args = [], []
    try:
        for s in range(0, len(ds), batch_size):
            d = model(x[s:s + batch_size].to(dev)).sq_dist.float()           # (b, m, H, W)
            grid = int(d.shape[-1])
            v, a = d.flatten(2).min(dim=2)                                   # (b, m)
            mins.append(v.cpu())
            args.append(a.cpu())
    finally:
        model.train(was)
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
        raise ValueError(f"prototype(s) {bad} do not exist: this model has {model.num_prototypes} "
                         f"prototypes (0..{model.num_prototypes - 1}) after pruning")
    needed = sorted({int(i) for j in chosen for i in best_i[:, j].tolist()})
    where = {i: r for r, i in enumerate(needed)}
    pam = np.zeros((0, model.num_prototypes, size, size), np.float32)
    if needed:
        maps = model(x[needed].to(dev)).similarity_maps.float()
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
                high_activation_box=_hot_box(act), image=ds.images[i], activation=act))
        src = arrays.get("source_image")
        sa = arrays.get("self_activation")
        entries.append(PrototypeGalleryEntry(
            index=j, cls=int(pclass[j]), class_name=MARGINS[int(pclass[j])],
            source_id=rec["source_id"], source_image=None if src is None else src[j],
            box=rec["high_activation_box"] or rec["rf_box"],
            self_activation=None if sa is None else sa[j], neighbours=neighbours))
    return entries


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
    on the border of the latent grid, and how many prototypes pruning merged into it. ``flags`` says
    in words why a reader should distrust it: mostly off the mass and its margin (``margin_ap``
    below ``threshold``), or on the image border."""
    from scipy import ndimage

    from .metrics import activation_precision

    model = run.model
    ds = dataset_for(run, data).subset(split)
    size = int(model.cfg.image_size)
    x = as_images(ds.images, size)
    dev = model.prototypes.device
    was = model.training
    model.eval()
    try:
        maps = torch.cat([model(x[i:i + batch_size].to(dev)).similarity_maps.float().cpu()
                          for i in range(0, len(ds), batch_size)])          # (N, m, H, W)
    finally:
        model.train(was)
    grid = int(maps.shape[-1])
    band = margin_band(size, grid)
    disk = ndimage.generate_binary_structure(2, 1)
    widened = np.stack([ndimage.binary_dilation(m > 0, disk, iterations=band) for m in ds.lesion_masks])
    pclass = model.prototype_class.cpu().numpy()
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
            full = dataset_for(run, data)
            self_ap = float(activation_precision(arrays["self_activation"][j],
                                                 full.lesion_masks[int(rec["source_index"])]))
        patch = rec["patch"]
        border = patch is not None and (min(patch) == 0 or max(patch) == grid - 1)
        flags = []
        if np.isfinite(ap_margin) and ap_margin < threshold:
            flags.append(f"most of its strongest activation ({100 * (1 - ap_margin):.0f} %) lies off the "
                         "mass and its margin")
        if border:
            flags.append("it was taken from the border of its source image")
        original = kept[j] if j < len(kept) else j
        out.append(PrototypeHealth(j, int(cls), ap, ap_margin, self_ap, bool(border),
                                   merged.get(int(original), 0), flags))
    return out


# ---------------------------------------------------------------------------------------------
# What if a prototype is dismissed (the paper's Fig. 1e)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def dismissed_probabilities(run, similarity, keep) -> dict[str, Any]:
    """Margin and malignancy probabilities with some prototypes dismissed: their similarity is set
    to 0 and the model's own heads recompute the scores, ``model.heads(similarity * keep)`` (h1,
    then h2). Because h1 is a sum without bias, the margin scores lose exactly the dismissed
    prototypes' contributions.

    similarity (m,), keep (m,) 0/1 (or bool). Returns {"margin_logits" (3,), "margin_prob" (3,),
    "malignancy_prob" (float, or None when the run has no fitted h2)}."""
    model = run.model
    dev = model.prototypes.device
    s = torch.as_tensor(np.asarray(similarity, dtype=np.float32), device=dev)[None]
    k = torch.as_tensor(np.asarray(keep, dtype=np.float32), device=dev)[None]
    logits, mal = model.heads(s * k)
    return {"margin_logits": logits[0].float().cpu().numpy(),
            "margin_prob": margin_probabilities(logits[0].float()),
            "malignancy_prob": malignancy_probability(mal[0].float(), model.malignancy_fitted)}


@dataclass
class Dismissal:
    """The reading of one case with some prototypes dismissed, beside the reading as made."""

    dismissed: tuple[int, ...]
    margin_prob: np.ndarray            # (3,) after the dismissal
    malignancy_prob: float | None
    before_margin_prob: np.ndarray     # (3,) as read
    before_malignancy_prob: float | None

    @property
    def predicted_class(self) -> int:
        return int(np.argmax(self.margin_prob))

    @property
    def call_changes(self) -> bool:
        return self.predicted_class != int(np.argmax(self.before_margin_prob))

    @property
    def largest_change(self) -> float:
        """The largest change of any probability (margins and malignancy), as a fraction."""
        d = np.abs(np.asarray(self.margin_prob) - np.asarray(self.before_margin_prob))
        out = float(d.max()) if d.size else 0.0
        if self.malignancy_prob is not None and self.before_malignancy_prob is not None:
            out = max(out, abs(self.malignancy_prob - self.before_malignancy_prob))
        return out


def dismissal(run, expl: CaseExplanation, dismissed) -> Dismissal:
    """The reading of ``expl``'s case with the prototypes ``dismissed`` (indices) switched off
    (:func:`dismissed_probabilities`)."""
    keep = np.ones(len(expl.similarity), dtype=np.float32)
    dismissed = tuple(int(j) for j in dismissed)
    keep[list(dismissed)] = 0
    after = dismissed_probabilities(run, expl.similarity, keep)
    return Dismissal(dismissed, after["margin_prob"], after["malignancy_prob"],
                     np.asarray(expl.margin_prob), expl.malignancy_prob)


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------


def _margin_phrase(cls: int) -> str:
    """'a spiculated margin (lines radiating from the edge)'."""
    words = MARGIN_WORDS[MARGINS[cls]]
    name, _, gloss = words.partition(" (")
    return f"{article(name)} {name} margin" + (f" ({gloss}" if gloss else "")


def case_text(expl: CaseExplanation) -> str:
    """A paragraph for a clinician: the margin call with its probabilities, the prototypes that
    drove it (what they are and where they come from, with similarity × weight = points), the
    malignancy estimate and what to check on the images."""
    probs = expl.margin_prob
    pred = expl.predicted_class
    others = ", ".join(f"{MARGINS[c]} {pct(probs[c])}" for c in range(len(MARGINS)) if c != pred)
    subject = "This mass" if expl.case_id is None else f"This mass ({expl.case_id})"
    parts = [f"{subject}: the model reads the margin as {MARGIN_WORDS[MARGINS[pred]]}, with "
             f"probability {pct(probs[pred])} ({others})."]
    c = expl.explained_class
    if c != pred:
        parts.append(f"The evidence below is the evidence for {MARGINS[c]}, not for the predicted margin.")
    protos = [p for p in expl.prototypes]
    for r, p in enumerate(protos):
        if expl.case_id is not None and p.source_id == expl.case_id:
            origin = "from this very case (it is one of the training cases)"
        elif p.source_id:
            origin = f"from a previous case ({p.source_id})"
        else:
            origin = "from a training case"
        lead = ("This mass's margin looks most like" if r == 0 else
                "It also resembles" if p.contribution > 0 else "It resembles")
        sign = "for" if p.contribution >= 0 else "against"
        parts.append(
            f"{lead} prototype {p.index}, {_margin_phrase(p.cls)} {origin}: similarity "
            f"{p.similarity:.2f} × weight {p.weight:+.2f} = {abs(p.contribution):.2f} points {sign} "
            f"{MARGINS[c]}.")
    if protos:
        shown = sum(p.contribution for p in protos)
        n_all = len(expl.similarity)
        parts.append(f"Together these {len(protos)} prototypes add {shown:.2f} points for {MARGINS[c]}; "
                     f"all {n_all} prototypes together give {MARGINS[c]} a score of "
                     f"{expl.evidence(c):.2f} (" + ", ".join(
                         f"{MARGINS[k]} {expl.evidence(k):.2f}" for k in range(len(MARGINS)) if k != c)
                     + "), and the probabilities are the softmax of these scores.")
    if expl.malignancy_prob is not None:
        parts.append(f"From this margin evidence alone, the model estimates the probability of "
                     f"malignancy at {pct(expl.malignancy_prob)} (a logistic regression on the three "
                     "margin scores, the paper's Eq. 10); it sees nothing but the margin.")
    parts.append("The coloured maps show where in this image each prototype was found; check that "
                 "they lie on the edge of the mass, not on background tissue, a marker or the image border.")
    if expl.true_margin is not None:
        truth = f"The recorded margin of this case is {MARGINS[expl.true_margin]}"
        if expl.true_malignant is not None:
            truth += f" and its pathology {'malignant' if expl.true_malignant else 'benign'}"
        parts.append(truth + ".")
    return " ".join(parts)
