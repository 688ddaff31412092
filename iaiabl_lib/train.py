"""Training IAIA-BL: stages A1 (warm-up + joint), A2 (push), A3 (last layer) and B (malignancy head)
of Barnett et al. (2021) §3.3, with checkpoints that are state dicts + JSON and exact resume.

Schedule (epochs counted from 1; the first ``warm_epochs`` are warm-up)::

    for epoch in 1..E:
        A1   warm-up (add_on + prototypes; backbone frozen)  or  joint (backbone + add_on +
             prototypes; h1, h2 fixed):  CE + λc·Clst − λs·Sep + λf·Fine            (Eq. 3-8)
        if epoch ≥ push_start and (epoch − push_start) % push_every == 0, or epoch == E:
            A2   push: each prototype ← nearest same-class training patch            (push.py)
            A3   last layer: h1 only, CE + λ1·L1(off-class h1) on cached similarities
            keep the model if its validation average margin AUROC is the best so far
        resume checkpoint (RUN/resume.pt)
    best pushed model → prune duplicate prototypes (prune.py) → A3 again if any were merged
    B    h2 ← logistic regression of malignancy on the frozen margin logits (Eq. 10)
    RUN/model.pt, config.json, push.json, push.npz, prune.json, malignancy.json, history.csv

Only pushed models are eligible for selection: only they are interpretable (every prototype is a
real training patch). Stage B never returns to A.

Fast path (GPU): the whole TensorSet lives on the device, augmentation runs batched on the device,
bf16 autocast (fp16 + GradScaler where bf16 is missing), channels_last, fused Adam, cudnn.benchmark,
optional torch.compile, and no host synchronisation inside the step loop (loss terms are
accumulated as tensors, read once per epoch). ``make_step(..., reference=True)`` runs the same code
in plain fp32 / contiguous / unfused form, for benchmarks.
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import fastpath
from .config import MARGINS, PRESET_NAMES, Preset, get_preset
from .losses import cluster_separation, cross_entropy, fine_annotation_loss, l1_off_class
from .model import IAIABL, IAIABLOutput
from .prune import prune_duplicates, resize_prototypes
from .push import push_prototypes
from .push import select as select_push

HISTORY_COLUMNS = ("epoch", "stage", "ce", "clst", "sep", "l1", "fine", "loss",
                   "train_auroc", "val_auroc", "val_lesion_ap", "distinct_prototypes", "push_lesion_ap",
                   "lr", "seconds")
"""history.csv columns; ``stage`` is one of warm, joint, push, last_layer, prune.

Diagnostics of where the prototypes look (issue: prototypes that leave the lesion or merge):
``val_lesion_ap`` is Eq. 9 on the validation split with the paper's protocol (every prototype of
the true class against the lesion mask, mean over pairs), after every warm/joint epoch and push;
at push rows, ``distinct_prototypes`` counts the distinct training patches the prototypes were
projected onto (fewer than m: some merged) and ``push_lesion_ap`` is the mean Eq. 9 of each
prototype's self-activation map on its source image's lesion mask (where the pushed patches are)."""

RESUME_FILE = "resume.pt"
RUN_FILES = ("config.json", "model.pt", "push.json", "push.npz", "prune.json", "malignancy.json",
             "history.csv")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely (e.g. it carries a pickled Python object)."""


# ---------------------------------------------------------------------------------------------
# Device, presets, files
# ---------------------------------------------------------------------------------------------


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (``"cuda"``, ``"cuda:1"``, ``"cpu"``, ...), else CUDA when present, else CPU."""
    if device is not None and str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available here; "
                               "use --device cpu (or leave it out to pick automatically)")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _coerce(value: Any, current: Any, key: str) -> Any:
    if not isinstance(value, str) or isinstance(current, str):
        return value
    text = value.strip()
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"override {key}={value!r}: expected true/false")
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"override {key}={value!r}: not a number") from None


def resolve_preset(preset: str | Preset, overrides: dict[str, Any] | None = None,
                   epochs: int | None = None) -> Preset:
    """A fresh Preset: ``preset`` (a name or a Preset, copied) with dotted ``overrides`` applied,
    e.g. ``{"train.warm_epochs": 1, "model.topk": 1}``, and ``epochs`` (if given) as train.epochs."""
    p = get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section not in ("model", "loss", "train") or not name:
            raise ValueError(f"override {key!r}: use 'model.X', 'loss.X' or 'train.X'")
        obj = getattr(p, section)
        if not hasattr(obj, name):
            names = ", ".join(f.name for f in obj.__dataclass_fields__.values())
            raise ValueError(f"override {key!r}: {type(obj).__name__} has no field {name!r} (fields: {names})")
        setattr(obj, name, _coerce(value, getattr(obj, name), key))
    if epochs is not None:
        p.train.epochs = int(epochs)
    t = p.train
    if t.epochs < 1 or t.warm_epochs < 0 or t.push_every < 1 or t.last_layer_epochs < 0 or t.batch_size < 1:
        raise ValueError(f"preset {p.name}: need epochs ≥ 1, warm_epochs ≥ 0, push_every ≥ 1, "
                         f"last_layer_epochs ≥ 0, batch_size ≥ 1 (got {t.epochs}, {t.warm_epochs}, "
                         f"{t.push_every}, {t.last_layer_epochs}, {t.batch_size})")
    return p


def push_epochs(t) -> list[int]:
    """The epochs (1-based) after which A2 + A3 run: push_start, push_start + push_every, ... ≤ E,
    and always the last epoch (so the final model is pushed, hence interpretable)."""
    out = [e for e in range(max(1, t.push_start), t.epochs + 1) if (e - t.push_start) % t.push_every == 0]
    if t.epochs not in out:
        out.append(t.epochs)
    return out


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory, os.replace)."""
    path = Path(path)
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def save_state(obj: dict, path: Path) -> None:
    """torch.save of a state dict (tensors, numbers, strings, lists, dicts only), atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    """torch.load(path, weights_only=True). A file that carries a pickled Python object (not a
    plain state dict) is refused with a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refusing to load it: it carries a pickled Python object, not a plain state dict "
            f"(torch.load(weights_only=True) said: {str(err).splitlines()[0]}). Only load "
            "checkpoints you trust; re-create it with torch.save(model.state_dict(), ...) or retrain "
            "with `iaiabl train`."
        ) from None


def _write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                    for k in HISTORY_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_history(path: str | Path) -> list[dict]:
    """history.csv as a list of dicts (numbers as int/float, empty cells as None)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in row.items():
                if v == "" or v is None:
                    out[k] = None
                elif k == "stage":
                    out[k] = v
                elif k == "epoch":
                    out[k] = int(v)
                else:
                    out[k] = float(v)
            rows.append(out)
    return rows


# ---------------------------------------------------------------------------------------------
# Metrics used for model selection
# ---------------------------------------------------------------------------------------------


def average_margin_auroc(labels: np.ndarray, margin_logits: np.ndarray) -> float:
    """Average over the 3 margin classes of the one-vs-rest AUROC of the margin probabilities
    (softmax of the margin logits); NaN when a class is missing from ``labels``."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < len(MARGINS):
        return float("nan")
    z = np.asarray(margin_logits, dtype=np.float64)
    prob = np.exp(z - z.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return float(np.mean([roc_auc_score(labels == c, prob[:, c]) for c in range(len(MARGINS))]))


# ---------------------------------------------------------------------------------------------
# Stage A1: the step
# ---------------------------------------------------------------------------------------------

STAGE_TRAINABLE = {
    "warm": ("add_on", "prototypes"),
    "joint": ("backbone", "add_on", "prototypes"),
    "last_layer": ("margin_head",),
    "frozen": (),
}
"""Which parts of the network each stage trains (h2 is fitted by scikit-learn in stage B)."""


def set_stage(model: IAIABL, stage: str) -> None:
    """requires_grad on exactly the parts ``STAGE_TRAINABLE[stage]``."""
    trainable = STAGE_TRAINABLE[stage]
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in trainable)


def make_optimizer(model: IAIABL, preset: Preset, stage: str, reference: bool = False) -> torch.optim.Optimizer:
    """Adam for ``stage`` (warm, joint, last_layer) with the preset's learning rates; weight decay
    on the convolution weights (not biases, not prototypes). Fused on CUDA unless ``reference``."""
    t = preset.train

    def conv(module, lr):
        weights = [p for p in module.parameters() if p.ndim > 1]
        biases = [p for p in module.parameters() if p.ndim <= 1]
        return [{"params": weights, "lr": lr, "weight_decay": t.weight_decay},
                {"params": biases, "lr": lr, "weight_decay": 0.0}]

    if stage == "warm":
        groups = conv(model.add_on, t.lr_warm_add_on) + [
            {"params": [model.prototypes], "lr": t.lr_warm_prototypes, "weight_decay": 0.0}]
    elif stage == "joint":
        groups = conv(model.backbone, t.lr_joint_backbone) + conv(model.add_on, t.lr_joint_add_on) + [
            {"params": [model.prototypes], "lr": t.lr_joint_prototypes, "weight_decay": 0.0}]
    elif stage == "last_layer":
        groups = [{"params": [model.margin_head.weight], "lr": t.lr_last_layer, "weight_decay": 0.0}]
    else:
        raise ValueError(f"no optimiser for stage {stage!r}")
    groups = [g for g in groups if g["params"]]
    fused = (not reference) and model.prototypes.is_cuda
    return torch.optim.Adam(groups, fused=True) if fused else torch.optim.Adam(groups)


class Batch(NamedTuple):
    """One A1 batch: the lesion-scale batch followed by the fine-annotation batch."""

    images: Tensor                  # (B, 3, S, S) ImageNet-normalised (augmented)
    labels: Tensor                  # (B,) margin index
    relevant_mask: Tensor | None    # (B − mask_start, 1, S, S) 1 = relevant, for rows mask_start:
    mask_start: int = 0             # first row that carries a mask (the fine batch when lesion masks are off)


def a1_objective(out: IAIABLOutput, batch: Batch, prototype_class: Tensor, preset: Preset) -> dict[str, Tensor]:
    """Stage-A1 objective (Eq. 8): CE + λc·Clst − λs·Sep + λf·Fine; nothing on h1 (it is fixed).

    Fine (Eq. 7) is evaluated on the rows that carry a mask: lesion masks on the lesion-scale batch
    (``train.use_lesion_masks``), fine masks on the fine batch (``train.use_fine_loss``).
    """
    w = preset.loss
    ce = cross_entropy(out.margin_logits, batch.labels)
    clst, sep = cluster_separation(out.min_k_dist, batch.labels, prototype_class)
    mask = batch.relevant_mask
    if mask is not None and mask.shape[0] > 0 and w.fine != 0:
        s = batch.mask_start
        fine = fine_annotation_loss(out.similarity_maps[s:], batch.labels[s:], prototype_class, mask)
    else:
        fine = ce.new_zeros(())
    loss = w.ce * ce + w.clst * clst - w.sep * sep + w.fine * fine
    return {"ce": ce, "clst": clst, "sep": sep, "fine": fine, "loss": loss}


def make_step(model: IAIABL, preset: Preset, optimizer: torch.optim.Optimizer, reference: bool = False,
              forward: Callable | None = None, amp: bool | None = None) -> Callable[[Batch], dict[str, Tensor]]:
    """A stage-A1 training step ``step(batch) -> {ce, clst, sep, fine, loss, margin_logits}``
    (detached tensors on the device; nothing is synchronised with the host).

    Fast path (``reference=False``): autocast in ``fastpath.autocast_dtype`` (bf16; fp16 + a
    GradScaler on GPUs without native bf16) when ``amp`` is on, by default ``train.amp`` on CUDA
    only (``amp=True`` switches it on for a CPU too, for tests); channels_last when
    ``train.channels_last`` (the model is converted here). ``reference=True``: fp32, contiguous,
    whatever the preset says: the same code, for benchmarks. ``forward``: a compiled ``model``
    (torch.compile) to call instead of ``model``. The loss terms are computed in fp32 from the
    autocast network outputs (``a1_objective`` runs outside the autocast region).
    """
    dev = model.prototypes.device
    t = preset.train
    if amp is None:
        amp = t.amp and dev.type == "cuda"
    use_amp = (not reference) and amp
    dtype = fastpath.autocast_dtype(dev, t.amp_dtype) if use_amp else torch.float32
    channels_last = (not reference) and t.channels_last
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    scaler = torch.amp.GradScaler(dev.type) if use_amp and fastpath.needs_scaler(dtype) else None
    fwd = forward if forward is not None else model

    def step(batch: Batch) -> dict[str, Tensor]:
        images = batch.images
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=use_amp):
            out = fwd(images)
        terms = a1_objective(out, batch, model.prototype_class, preset)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms["loss"].backward()
            optimizer.step()
        result = {k: v.detach() for k, v in terms.items()}
        result["margin_logits"] = out.margin_logits.detach()
        return result

    step.scaler = scaler  # type: ignore[attr-defined]
    return step


def train_step(model: IAIABL, preset: Preset, optimizer: torch.optim.Optimizer, batch: Batch,
               reference: bool = False) -> dict[str, Tensor]:
    """One A1 step on ``batch`` (``make_step`` built and called once; for benchmarks and tests)."""
    return make_step(model, preset, optimizer, reference=reference)(batch)


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def _images_of(x) -> Tensor:
    images = getattr(x, "images", x)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"expected images (a tensor or array (N, 3, S, S)) or a TensorSet, got {type(x).__name__}")
    return images


@torch.no_grad()
def similarities(model: IAIABL, images: Tensor, batch_size: int = 256) -> Tensor:
    """s_j (Eq. 2) of every image, in eval mode and fp32: (N, 3, S, S) -> (N, m) on the model's device."""
    was = model.training
    model.eval()
    dev = model.prototypes.device
    try:
        parts = [model(images[i:i + batch_size].to(dev)).similarity for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0, model.num_prototypes, device=dev)


@torch.no_grad()
def predict(model: IAIABL, images_or_tensorset, batch_size: int = 256, device=None) -> dict[str, np.ndarray]:
    """Run the model (eval mode, fp32) on images (N, 3, S, S) ImageNet-normalised, or a TensorSet.

    Returns numpy arrays: margin_logits (N, 3), margin_prob (N, 3), malignancy_prob (N,),
    similarity (N, m), similarity_maps (N, m, H, W).
    """
    images = _images_of(images_or_tensorset)
    dev = pick_device(device) if device is not None else model.prototypes.device
    if dev != model.prototypes.device:
        model.to(dev)
    was = model.training
    model.eval()
    keys = ("margin_logits", "malignancy_logit", "similarity", "similarity_maps")
    parts: dict[str, list] = {k: [] for k in keys}
    try:
        for i in range(0, images.shape[0], batch_size):
            out = model(images[i:i + batch_size].to(dev).float())
            for k in keys:
                parts[k].append(getattr(out, k).float().cpu())
    finally:
        model.train(was)
    res = {k: torch.cat(v).numpy() if v else np.zeros((0,)) for k, v in parts.items()}
    logits = torch.from_numpy(res["margin_logits"])
    res["margin_prob"] = torch.softmax(logits, dim=1).numpy() if len(logits) else np.zeros((0, 3))
    res["malignancy_prob"] = torch.sigmoid(torch.from_numpy(res.pop("malignancy_logit"))).numpy()
    return res


# ---------------------------------------------------------------------------------------------
# Stage A3: the last layer
# ---------------------------------------------------------------------------------------------


def train_last_layer(model: IAIABL, preset: Preset, train_set, val_set=None, generator: torch.Generator | None = None,
                     epochs: int | None = None, on_epoch: Callable[[dict], None] | None = None,
                     bar: Callable = lambda it, **kw: it, desc: str = "last layer") -> float:
    """Stage A3: h1 alone, CE + λ1·L1(off-class h1), Adam at ``train.lr_last_layer`` for
    ``train.last_layer_epochs`` epochs of minibatches, on CACHED similarities of the un-augmented
    training set: the backbone, add-on and prototypes are frozen, so s_j is exact and computed once.

    train_set / val_set: TensorSets (images, labels); on_epoch receives each epoch's
    {ce, l1, loss, train_auroc, val_auroc, lr}. Returns the final validation average margin AUROC
    (NaN without val_set).
    """
    t = preset.train
    epochs = t.last_layer_epochs if epochs is None else epochs
    dev = model.prototypes.device
    s_train = similarities(model, train_set.images, t.eval_batch_size)          # (N, m)
    s_val = similarities(model, val_set.images, t.eval_batch_size) if val_set is not None else None
    y = train_set.labels.to(dev)

    def val_auc() -> float:
        if s_val is None:
            return float("nan")
        with torch.no_grad():
            return average_margin_auroc(val_set.labels.cpu().numpy(), model.margin_head(s_val).cpu().numpy())

    set_stage(model, "last_layer")
    opt = make_optimizer(model, preset, "last_layer")
    w = model.margin_head.weight
    n = s_train.shape[0]
    auc = val_auc()
    gdev = generator.device if generator is not None else "cpu"
    for _ in bar(range(epochs), desc=desc):
        perm = torch.randperm(n, generator=generator, device=gdev).to(dev)
        sums = torch.zeros(3, device=dev)
        steps = 0
        for i in range(0, n, t.batch_size):
            b = perm[i:i + t.batch_size]
            ce = cross_entropy(model.margin_head(s_train[b]), y[b])
            l1 = l1_off_class(w, model.prototype_class)
            loss = preset.loss.ce * ce + preset.loss.l1 * l1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([ce, l1, loss]).detach()
            steps += 1
        ce_, l1_, loss_ = (sums / max(steps, 1)).tolist()
        with torch.no_grad():
            train_auc = average_margin_auroc(y.cpu().numpy(), model.margin_head(s_train).cpu().numpy())
        auc = val_auc()
        if on_epoch is not None:
            on_epoch({"ce": ce_, "l1": l1_, "loss": loss_, "train_auroc": train_auc, "val_auroc": auc,
                      "lr": opt.param_groups[0]["lr"]})
    set_stage(model, "frozen")
    return auc


# ---------------------------------------------------------------------------------------------
# Stage B: the malignancy head (Eq. 10)
# ---------------------------------------------------------------------------------------------


def malignancy_equation(coef: np.ndarray, intercept: float, scale: np.ndarray) -> str:
    """Eq. 10 as text: P(malignant) = σ(a·circumscribed + b·indistinct + c·spiculated + d)."""
    terms = " ".join(f"{'+' if a >= 0 else '−'} {abs(a):.3f}·{name}" for a, name in zip(coef, MARGINS))
    terms = terms[2:] if terms.startswith("+ ") else "−" + terms[2:]
    d = f"{'+' if intercept >= 0 else '−'} {abs(intercept):.3f}"
    scales = ", ".join(f"{name} {s:.2f}" for name, s in zip(MARGINS, scale))
    return (f"P(malignant) = σ({terms} {d})\n"
            f"  inputs: the margin logits of h1; their std on the training set: {scales}")


def fit_malignancy_head(model: IAIABL, margin_logits: np.ndarray, malignant: np.ndarray, seed: int = 0) -> dict:
    """Stage B: h2 ← scikit-learn LogisticRegression of ``malignant`` on the frozen, unnormalised
    margin logits (N, 3) of the training split; coef/intercept are copied into
    ``model.malignancy_head``. Returns the malignancy.json dictionary."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(margin_logits, dtype=np.float64)
    y = np.asarray(malignant, dtype=np.int64)
    scale = x.std(axis=0)
    note = None
    if len(np.unique(y)) < 2:
        p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
        coef, intercept = np.zeros(len(MARGINS)), math.log(p / (1 - p))
        note = "the training split has only one pathology: h2 is a constant"
    else:
        lr = LogisticRegression(max_iter=1000, random_state=seed).fit(x, y)
        coef, intercept = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
    with torch.no_grad():
        model.malignancy_head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None])
        model.malignancy_head.bias.fill_(float(intercept))
    report = {
        "equation": malignancy_equation(coef, intercept, scale),
        "coefficients": {m: float(a) for m, a in zip(MARGINS, coef)},
        "offset": float(intercept),
        "scale": {m: float(s) for m, s in zip(MARGINS, scale)},
        "standardised_coefficients": {m: float(a * s) for m, a, s in zip(MARGINS, coef, scale)},
        "inputs": "margin logits of h1 (unnormalised), training split",
        "n_train": int(len(y)),
        "n_malignant": int(y.sum()),
    }
    if note:
        report["note"] = note
    return report


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished run, as ``load_run`` reads it back."""

    model: IAIABL
    preset: Preset
    dir: Path
    push: list[dict] = field(default_factory=list)
    push_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    malignancy: dict = field(default_factory=dict)
    prune: dict = field(default_factory=dict)
    data_dir: Path | None = None
    config: dict = field(default_factory=dict)


def build_model(preset: Preset, prototype_class: list[int] | None = None, pretrained: bool = True) -> IAIABL:
    """IAIABL for ``preset``; ``pretrained=False`` skips loading ImageNet weights (they are about to
    be overwritten by a state dict); ``prototype_class``: the classes of a pruned model."""
    cfg = copy.deepcopy(preset.model)
    if not pretrained:
        cfg.pretrained = "none"
    with warnings.catch_warnings():
        if not pretrained:
            warnings.simplefilter("ignore")
        model = IAIABL(cfg)
    model.cfg = preset.model
    if prototype_class is not None and list(prototype_class) != model.prototype_class.tolist():
        resize_prototypes(model, prototype_class)
    return model


def load_run(run_dir: str | Path, device=None) -> Run:
    """Read a run directory written by :func:`train`: the model (eval mode, on ``device``), its
    preset, push records and arrays, history, malignancy and pruning reports."""
    d = Path(run_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d}: not a run directory (no config.json); train one with "
                                "`iaiabl train --data DATA --preset tiny --out RUN`")
    if not (d / "model.pt").is_file():
        hint = " (training was interrupted: re-run the same `iaiabl train` command to resume)" \
            if (d / RESUME_FILE).is_file() else ""
        raise FileNotFoundError(f"{d}: no model.pt{hint}")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    preset = Preset.from_dict(config["preset"])
    model = build_model(preset, config.get("prototype_class"), pretrained=False)
    state = load_state(d / "model.pt")
    model.load_state_dict(state)
    model.to(pick_device(device)).eval()

    def read_json(name):
        p = d / name
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    push = read_json("push.json")
    arrays = {}
    if (d / "push.npz").is_file():
        with np.load(d / "push.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    history = read_history(d / "history.csv") if (d / "history.csv").is_file() else []
    data_dir = Path(config["data"]) if config.get("data") else None
    return Run(model=model, preset=preset, dir=d, push=push if isinstance(push, list) else [],
               push_arrays=arrays, history=history, malignancy=read_json("malignancy.json"),
               prune=read_json("prune.json"), data_dir=data_dir, config=config)


def _np_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_np_rng_state(s: dict) -> None:
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def _tensors_of(arrays: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _clone_state(model: IAIABL) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Trainer:
    """Holds the state of one run; ``run()`` executes the schedule of the module docstring."""

    def __init__(self, preset: Preset, train_set, val_set, train_ids: list[str], train_index: np.ndarray,
                 out: Path, device: torch.device, seed: int, progress: bool, run_config: dict,
                 callback: Callable[[dict], None] | None = None):
        from .data.dataset import BatchPlan, augment_batch, pre_augment

        self._BatchPlan, self._augment = BatchPlan, augment_batch
        self.preset, self.t = preset, preset.train
        self.plain, self.val = train_set, val_set       # un-augmented train split (push, A3, B), val
        self.ids, self.index = train_ids, train_index
        self.out, self.dev, self.seed, self.progress = out, device, seed, progress
        self.run_config, self.callback = run_config, callback
        torch.manual_seed(seed)
        np.random.seed(seed)
        fastpath.configure_backends(device)
        self.model = build_model(preset).to(device)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.a1_set = train_set
        if self.t.pre_augment_per_class > 0:  # offline augmentation (paper: 5000 per class), fixed by the seed
            g = torch.Generator(device=device).manual_seed(seed + 1)
            self.a1_set = pre_augment(train_set, self.t.pre_augment_per_class, g)
        self.opt = {s: make_optimizer(self.model, preset, s) for s in ("warm", "joint")}
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt["joint"], step_size=self.t.lr_step_size,
                                                     gamma=self.t.lr_gamma)
        self.forward = torch.compile(self.model) if self.t.compile else None
        self.steps = {s: make_step(self.model, preset, self.opt[s], forward=self.forward) for s in ("warm", "joint")}
        self.timing: tuple[float, float, float | None] | None = None   # probe(): step s, eval images/s, GiB
        self.epoch = 0
        self.history: list[dict] = []
        self.best: dict | None = None     # state, val_auroc, epoch, push records/arrays

    # -- helpers --------------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        if self.progress:
            from tqdm.auto import tqdm
            tqdm.write(text)

    def _bar(self, iterable, **kw):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm
        return tqdm(iterable, leave=False, dynamic_ncols=True, **kw)

    def _row(self, stage: str, t0: float, **values) -> dict:
        row = {"epoch": self.epoch, "stage": stage, **values, "seconds": round(time.perf_counter() - t0, 3)}
        self.history.append(row)
        return row

    def _val_auroc(self, sim: Tensor | None = None) -> float:
        sim = similarities(self.model, self.val.images, self.t.eval_batch_size) if sim is None else sim
        logits = self.model.margin_head(sim)
        return average_margin_auroc(self.val.labels.cpu().numpy(), logits.detach().cpu().numpy())

    def _validate(self) -> dict:
        """Validation average margin AUROC and lesion activation precision (Eq. 9, the paper's
        protocol), from one pass over the validation split."""
        from .evaluate import pair_activation_precision, true_class_pams

        out = predict(self.model, self.val.images, self.t.eval_batch_size)
        labels = self.val.labels.cpu().numpy()
        pams, valid = true_class_pams(out["similarity_maps"], self.model.prototype_class, labels,
                                      self.val.images.shape[-1])
        ap, count = pair_activation_precision(pams, valid, self.val.lesion_masks[:, 0].cpu().numpy())
        keep = count > 0
        lesion_ap = float((ap[keep] * count[keep]).sum() / count[keep].sum()) if keep.any() else float("nan")
        return {"val_auroc": average_margin_auroc(labels, out["margin_logits"]), "val_lesion_ap": lesion_ap}

    def _push_diagnostics(self, records: list[dict], arrays: dict) -> dict:
        """How many distinct training patches the prototypes sit on, and how much of their
        self-activation lies on the lesion of their source image."""
        from .metrics import activation_precision

        distinct = len({(r["source_index"], *r["patch"]) for r in records})
        rows = torch.as_tensor(np.searchsorted(self.index, arrays["source_index"]))
        masks = self.plain.lesion_masks[rows.to(self.plain.lesion_masks.device), 0].cpu().numpy()
        ap = activation_precision(arrays["self_activation"], masks)
        return {"distinct_prototypes": distinct, "push_lesion_ap": float(np.mean(ap))}

    def _batches(self) -> list[tuple[Tensor, int]]:
        """This epoch's A1 batches (index tensors drawn up front, moved to the device in one copy)."""
        t = self.t
        plan = list(self._BatchPlan(self.a1_set.labels, self.a1_set.has_fine, batch_size=t.batch_size,
                                    fine_batch_size=self._fine_batch_size(), generator=self.gen))
        sizes = [(len(a), len(b)) for a, b in plan]
        flat = torch.cat([torch.cat([a, b]) for a, b in plan]).to(self.dev, non_blocking=True)
        return [(idx, na) for idx, (na, _) in zip(torch.split(flat, [a + b for a, b in sizes]), sizes)]

    def _fine_batch_size(self) -> int:
        return self.t.fine_batch_size if self.t.use_fine_loss else 0

    def _make_batch(self, idx: Tensor, n_lesion: int, generator: torch.Generator | None = None) -> Batch:
        t, ts = self.t, self.a1_set
        images, labels = ts.images[idx], ts.labels[idx]                       # (B, 3, S, S), (B,)
        need_mask = (t.use_lesion_masks or t.use_fine_loss) and self.preset.loss.fine != 0
        masks = None
        if need_mask:   # lesion masks on the lesion-scale rows, fine masks on the fine rows
            masks = torch.cat([ts.lesion_masks[idx[:n_lesion]], ts.fine_masks[idx[n_lesion:]]])
        if t.augment:
            images, masks = self._augment(images, masks if masks is not None else [], generator or self.gen)
            masks = masks if isinstance(masks, Tensor) else None
        start = 0 if t.use_lesion_masks else n_lesion
        return Batch(images, labels, masks[start:] if masks is not None else None, start)

    # -- before the first epoch: batch fitting and the run-time estimate (fastpath.py) ----------

    def _probe_indices(self, b: int, f: int, gen: torch.Generator) -> tuple[Tensor, int]:
        """Random rows of the A1 set for a probe batch: b lesion-scale rows, f fine-annotated rows."""
        ts = self.a1_set
        lesion = torch.randint(len(ts), (b,), device=self.dev, generator=gen)
        pool = torch.nonzero(ts.has_fine.to(self.dev)).flatten()
        fine = pool[torch.randint(len(pool), (f,), device=self.dev, generator=gen)] if f and len(pool) else pool[:0]
        return torch.cat([lesion, fine]), b

    def probe(self) -> None:
        """Fit the A1 batch into the GPU's memory (``train.fit_batch_to_memory``, CUDA) and time
        ``train.estimate_steps`` steps and one evaluation batch on the real data. Runs on the
        model itself with a throw-away optimiser and generator; the weights are restored
        afterwards, so the run is exactly what it would have been without the probe."""
        t, dev, model = self.t, self.dev, self.model
        fit = t.fit_batch_to_memory and fastpath.fits_batches(dev)
        if not fit and t.estimate_steps <= 0:
            return
        saved = _clone_state(model)
        gen = torch.Generator(device=dev).manual_seed(self.seed + 2)
        model.train()
        set_stage(model, "joint")
        opt = make_optimizer(model, self.preset, "joint")
        step = make_step(model, self.preset, opt, forward=self.forward)

        def run(b: int, f: int):
            return step(self._make_batch(*self._probe_indices(b, f, gen), generator=gen))

        try:
            if fit:
                before = (t.batch_size, self._fine_batch_size())
                b, f = fastpath.fit_batch(run, *before, dev, log=print)
                if (b, f) != before:
                    t.batch_size = b
                    t.fine_batch_size = f if t.use_fine_loss else t.fine_batch_size
                    self.run_config["batch_fitted"] = {"preset": list(before), "used": [b, f],
                                                       "device": fastpath.device_name(dev)}
                    self.run_config["preset"] = self.preset.to_dict()
                    print(f"training with A1 batches of {b} + {f} (the preset's {before[0]} + {before[1]} "
                          f"do not fit in this GPU's memory)")
            if t.estimate_steps > 0:
                fine = self._fine_batch_size()
                if dev.type == "cuda":       # the peak of the timed steps, not of failed fits
                    torch.cuda.reset_peak_memory_stats(dev)
                step_s = fastpath.time_calls(lambda: run(t.batch_size, fine), dev, t.estimate_steps,
                                             warmup=0 if fit else 1)
                peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None
                n = min(len(self.plain), t.eval_batch_size)
                fwd_s = fastpath.time_calls(lambda: similarities(model, self.plain.images[:n], t.eval_batch_size),
                                            dev, 1, warmup=1)
                self.timing = (step_s, n / fwd_s, peak)
        finally:
            model.load_state_dict(saved)
            set_stage(model, "frozen")
            opt.state.clear()            # the throw-away optimiser's moments, before freeing memory
            fastpath.free_memory(dev)

    def estimate(self) -> fastpath.RunEstimate | None:
        """The expected wall time of the epochs still to run (after ``probe``; None without it)."""
        if self.timing is None:
            return None
        t = self.t
        step_s, rate, peak = self.timing
        left = range(self.epoch + 1, t.epochs + 1)
        pushes = len(set(push_epochs(t)) & set(left))
        n_plain, n_val = len(self.plain), len(self.val)
        steps = len(left) * math.ceil(len(self.a1_set) / t.batch_size)
        # validation every epoch; per push: the search, A3's caches of train and val, validation;
        # at the end: validation and stage B's pass over the training split
        forward = len(left) * n_val + pushes * (2 * n_plain + 2 * n_val) + (n_plain + n_val)
        return fastpath.RunEstimate(fastpath.device_name(self.dev), t.batch_size, self._fine_batch_size(),
                                    steps, step_s, forward, rate, None if peak is None else round(peak, 2))

    # -- stages ---------------------------------------------------------------------------------

    def a1_epoch(self, stage: str) -> dict:
        """One warm-up or joint epoch (Eq. 8)."""
        t0 = time.perf_counter()
        model = self.model
        model.train()
        set_stage(model, stage)
        step = self.steps[stage]
        sums = torch.zeros(5, device=self.dev)
        n, logits, labels = 0, [], []
        for idx, n_lesion in self._bar(self._batches(), desc=f"epoch {self.epoch} {stage}"):
            batch = self._make_batch(idx, n_lesion)
            r = step(batch)
            sums += torch.stack([r["ce"], r["clst"], r["sep"], r["fine"], r["loss"]]).float()
            n += 1
            logits.append(r["margin_logits"])
            labels.append(batch.labels)
        set_stage(model, "frozen")
        ce, clst, sep, fine, loss = (sums / max(n, 1)).tolist()              # the one sync per epoch
        train_auc = average_margin_auroc(torch.cat(labels).cpu().numpy(), torch.cat(logits).float().cpu().numpy())
        lr = self.opt[stage].param_groups[0]["lr"]
        if stage == "joint":
            self.sched.step()
        return self._row(stage, t0, ce=ce, clst=clst, sep=sep, fine=fine, loss=loss,
                         train_auroc=train_auc, lr=lr, **self._validate())

    def last_layer(self) -> float:
        """Stage A3 on the current model; history rows; returns the final validation AUROC."""
        t0 = time.perf_counter()

        def on_epoch(values: dict) -> None:
            nonlocal t0
            self._row("last_layer", t0, **values)
            t0 = time.perf_counter()

        return train_last_layer(self.model, self.preset, self.plain, self.val, self.gen,
                                on_epoch=on_epoch, bar=self._bar, desc=f"epoch {self.epoch} last layer")

    def push_cycle(self) -> None:
        """A2 push, A3 last layer, then model selection on the validation AUROC."""
        t0 = time.perf_counter()
        set_stage(self.model, "frozen")
        autocast = fastpath.autocast_dtype(self.dev, self.t.amp_dtype) if (self.t.amp and self.dev.type == "cuda") else None
        result = push_prototypes(self.model, self.plain.images, self.plain.labels, self.ids, self.index,
                                 self.t.eval_batch_size, epoch=self.epoch, autocast=autocast)
        self._row("push", t0, **self._validate(), **self._push_diagnostics(result.records, result.arrays))
        auc = self.last_layer()
        self._log(f"epoch {self.epoch}: pushed; validation average margin AUROC {auc:.3f}")
        best_auc = None if self.best is None else self.best["val_auroc"]
        if best_auc is None or (not math.isnan(auc) and (math.isnan(best_auc) or auc > best_auc)):
            self.best = {"state": _clone_state(self.model), "val_auroc": auc, "epoch": self.epoch,
                         "push": result.records, "push_arrays": result.arrays}

    # -- checkpoints ----------------------------------------------------------------------------

    def resume_state(self) -> dict:
        best = None
        if self.best is not None:
            best = {"state": self.best["state"], "val_auroc": self.best["val_auroc"], "epoch": self.best["epoch"],
                    "push_json": json.dumps(self.best["push"]), "push_arrays": _tensors_of(self.best["push_arrays"])}
        return {
            "format": 1,
            "run_config": json.dumps(self._resume_key()),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.opt.items()},
            "scheduler": self.sched.state_dict(),
            "scalers": {k: s.scaler.state_dict() for k, s in self.steps.items() if s.scaler is not None},
            "rng": {"torch": torch.get_rng_state(), "numpy": _np_rng_state(), "generator": self.gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "best": best,
            "history_json": json.dumps(self.history),
        }

    def _resume_key(self) -> dict:
        return {k: self.run_config[k] for k in ("preset", "data", "seed")}

    def try_resume(self) -> bool:
        path = self.out / RESUME_FILE
        if not path.is_file():
            return False
        state = load_state(path)
        if state.get("format") != 1 or json.loads(state["run_config"]) != json.loads(json.dumps(self._resume_key())):
            self._log(f"{path}: written by a run with other settings; starting afresh")
            return False
        self.model.load_state_dict(state["model"])
        for k, o in self.opt.items():
            o.load_state_dict(state["optimizers"][k])
        self.sched.load_state_dict(state["scheduler"])
        for k, s in state.get("scalers", {}).items():
            self.steps[k].scaler.load_state_dict(s)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        _set_np_rng_state(rng["numpy"])
        self.gen.set_state(rng["generator"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        b = state["best"]
        if b is not None:
            self.best = {"state": b["state"], "val_auroc": b["val_auroc"], "epoch": b["epoch"],
                         "push": json.loads(b["push_json"]),
                         "push_arrays": {k: v.numpy() for k, v in b["push_arrays"].items()}}
        self.history = json.loads(state["history_json"])
        self.epoch = int(state["epoch"])
        self._log(f"resuming {self.out} after epoch {self.epoch}")
        return True

    # -- the schedule ---------------------------------------------------------------------------

    def run(self, resume: bool) -> None:
        t = self.t
        t_start = time.perf_counter()
        self.probe()             # may change the batch size, which the resume check compares
        start_epoch = self.epoch
        if resume and self.try_resume():
            start_epoch = self.epoch
        est = self.estimate()
        if est is not None:
            self.run_config["estimate"] = est.to_dict()
            self._log(est.describe())
        atomic_write_json(self.out / "config.json", self.run_config)
        pushes = set(push_epochs(t))
        outer = range(self.epoch + 1, t.epochs + 1)
        if self.progress:
            from tqdm.auto import tqdm
            outer = tqdm(outer, desc=f"IAIA-BL {self.preset.name}", initial=self.epoch, total=t.epochs,
                         dynamic_ncols=True)
        for epoch in outer:
            self.epoch = epoch
            row = self.a1_epoch("warm" if epoch <= t.warm_epochs else "joint")
            if self.progress:
                outer.set_postfix(stage=row["stage"], loss=f"{row['loss']:.3f}", val_auroc=f"{row['val_auroc']:.3f}")
            if epoch in pushes:
                self.push_cycle()
            save_state(self.resume_state(), self.out / RESUME_FILE)
            _write_history(self.out / "history.csv", self.history)
            if self.callback is not None:
                self.callback({"epoch": epoch, "history": self.history, "model": self.model})
        self.run_config["started_at_epoch"] = start_epoch
        self.finish(t_start)

    def finish(self, t_start: float | None = None) -> None:
        """Best pushed model → prune → (A3) → stage B → the run files; the resume file goes.
        ``t_start``: when ``run`` began (config.json's ``wall_seconds``, to set against the estimate)."""
        t, model, best = self.t, self.model, self.best
        assert best is not None, "no pushed model (push_epochs always includes the last epoch)"
        self.epoch = t.epochs
        model.load_state_dict(best["state"])
        records, arrays = best["push"], best["push_arrays"]
        if t.prune_duplicates:
            t0 = time.perf_counter()
            report = prune_duplicates(model, records, t.prune_tolerance)
            records, arrays = select_push(records, arrays, report["kept"])
            if report["after"] < report["before"]:
                self._row("prune", t0, val_auroc=self._val_auroc())
                self.last_layer()
        else:
            m = model.num_prototypes
            report = {"before": m, "after": m, "merged": [], "kept": list(range(m)),
                      "prototype_class": model.prototype_class.tolist(), "enabled": False}
        report["best_epoch"] = best["epoch"]
        val_auc = self._val_auroc()
        self._log(f"prune: {report['before']} → {report['after']} prototypes; "
                  f"validation average margin AUROC {val_auc:.3f} (pushed model of epoch {best['epoch']})")
        # stage B on the frozen margin logits of the training split
        with torch.no_grad():
            logits = model.margin_head(similarities(model, self.plain.images, t.eval_batch_size)).cpu().numpy()
        malignancy = fit_malignancy_head(model, logits, self.plain.malignant.cpu().numpy(), self.seed)
        self._log("stage B, malignancy head h2 (Eq. 10):\n" + malignancy["equation"])
        config = dict(self.run_config, num_prototypes=model.num_prototypes,
                      prototype_class=model.prototype_class.tolist(), best_epoch=best["epoch"],
                      val_average_margin_auroc=val_auc, complete=True)
        if t_start is not None:
            config["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        out = self.out
        save_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
        atomic_write_json(out / "push.json", records)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(out / "push.npz", buf.getvalue())
        atomic_write_json(out / "prune.json", report)
        atomic_write_json(out / "malignancy.json", malignancy)
        _write_history(out / "history.csv", self.history)
        atomic_write_json(out / "config.json", config)
        (out / RESUME_FILE).unlink(missing_ok=True)


def _load_splits(data: str | Path, preset: Preset, device: torch.device):
    """The prepared dataset's train and val splits as TensorSets on ``device`` (resized to the
    preset's image size), with the train rows' ids and dataset indices."""
    from .data.dataset import check_classes, load_prepared, to_tensors

    path = Path(data)
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} not found; make one with "
                                f"`iaiabl synth --out SRC` then `iaiabl prepare --cbis SRC --out {path}`")
    ds = load_prepared(path, size=preset.model.image_size)
    check_classes(ds, splits=("train", "val"))
    train_rows = np.flatnonzero(ds.split == "train")
    val_rows = np.flatnonzero(ds.split == "val")
    train_set = to_tensors(ds.select(train_rows), device)
    val_set = to_tensors(ds.select(val_rows), device)
    return train_set, val_set, [ds.ids[i] for i in train_rows], train_rows


def train(data: str | Path, preset: str | Preset, out: str | Path, epochs: int | None = None, seed: int = 0,
          device=None, progress: bool = True, overrides: dict[str, Any] | None = None, resume: bool = True,
          callback: Callable[[dict], None] | None = None) -> Run:
    """Train IAIA-BL on the prepared dataset ``data`` with ``preset`` (a name or a Preset) into the
    run directory ``out`` (see the module docstring for the schedule and the files).

    epochs: overrides train.epochs; overrides: dotted keys, e.g. {"train.warm_epochs": 1};
    resume: continue from ``out/resume.pt`` if an earlier run with the same settings was
    interrupted (the result is identical to an uninterrupted run on CPU); callback: called with
    {"epoch", "history", "model"} after each epoch's checkpoint. Returns ``load_run(out)``.
    """
    preset = resolve_preset(preset, overrides, epochs)
    dev = pick_device(device)
    out = Path(out)
    train_set, val_set, ids, index = _load_splits(data, preset, dev)
    out.mkdir(parents=True, exist_ok=True)
    run_config = {
        "preset_name": preset.name,
        "preset": preset.to_dict(),
        "data": str(Path(data).resolve()),
        "seed": int(seed),
        "overrides": dict(overrides or {}),
        "device": str(dev),
        "classes": list(MARGINS),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "torch": torch.__version__,
        "complete": False,
    }
    if not resume:
        (out / RESUME_FILE).unlink(missing_ok=True)
    atomic_write_json(out / "config.json", run_config)
    trainer = _Trainer(preset, train_set, val_set, ids, index, out, dev, seed, progress, run_config, callback)
    trainer.run(resume)
    return load_run(out, device=dev)


def estimate(data: str | Path, preset: str | Preset, epochs: int | None = None, seed: int = 0, device=None,
             overrides: dict[str, Any] | None = None) -> fastpath.RunEstimate:
    """How long ``train(data, preset, ...)`` would take on ``device``, without training: the
    trainer's probe (``fastpath``: fit the batch to the GPU's memory, time
    ``train.estimate_steps`` A1 steps and one evaluation batch on this data set) and nothing else.
    ``RunEstimate.describe()`` says it in words; ``iaiabl train --estimate-only`` prints it."""
    preset = resolve_preset(preset, overrides, epochs)
    if preset.train.estimate_steps <= 0:
        preset.train.estimate_steps = 3
    dev = pick_device(device)
    train_set, val_set, ids, index = _load_splits(data, preset, dev)
    trainer = _Trainer(preset, train_set, val_set, ids, index, Path("."), dev, seed, False, {}, None)
    trainer.probe()
    est = trainer.estimate()
    assert est is not None
    return est


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    """Register ``iaiabl train``."""
    p = subparsers.add_parser(
        "train", help="train IAIA-BL on a prepared dataset (stages A1, A2, A3, B)",
        description="Train IAIA-BL: warm-up and joint epochs, push + last layer on schedule, pruning, "
                    "then the malignancy head. Resumes an interrupted run in the same --out.")
    p.add_argument("--data", required=True, help="prepared dataset (from `iaiabl prepare`)")
    p.add_argument("--preset", default="tiny", choices=PRESET_NAMES, help="tiny (CPU) | paper (GPU) | ...")
    p.add_argument("--out", default=None, help="run directory to write (required unless --estimate-only)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if RUN/resume.pt exists")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set train.warm_epochs=1 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--estimate-only", action="store_true",
                   help="print how long the run would take on this device (a few timed steps) and exit")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.warm_epochs=1")
        overrides[key.strip()] = value
    if args.estimate_only:
        est = estimate(args.data, args.preset, epochs=args.epochs, seed=args.seed, device=args.device,
                       overrides=overrides)
        print(est.describe())
        return 0
    if args.out is None:
        raise ValueError("--out is required: the run directory to write (or pass --estimate-only)")
    t0 = time.perf_counter()
    run = train(args.data, args.preset, args.out, epochs=args.epochs, seed=args.seed, device=args.device,
                progress=not args.quiet, overrides=overrides, resume=not args.no_resume)
    cfg = run.config
    print(f"run {run.dir}: preset {run.preset.name}, {cfg.get('num_prototypes')} prototypes "
          f"({run.prune.get('before')} → {run.prune.get('after')} after pruning), best pushed epoch "
          f"{cfg.get('best_epoch')}, validation average margin AUROC {cfg.get('val_average_margin_auroc'):.3f}, "
          f"{time.perf_counter() - t0:.0f} s" + (f" (estimated {cfg['estimate']['seconds']:.0f} s)" if "estimate" in cfg else ""))
    if args.quiet:   # with progress output the trainer has printed it already
        print("malignancy head h2 (Eq. 10):\n" + run.malignancy.get("equation", ""))
    return 0
