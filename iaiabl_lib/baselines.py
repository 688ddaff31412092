"""The paper's baselines (Barnett et al. 2021, §4 and Table 1; Fig. 5).

* **ProtoPNet** (Chen et al. 2019): IAIA-BL's own training with the ``protopnet`` /
  ``tiny-protopnet`` preset (k = 1 max pooling, no fine-annotation loss, off-class weight −0.5).
  :func:`train_protopnet` only picks the preset and calls :func:`iaiabl_lib.train.train`.
* **Black-box VGG-16 margin classifier**: VGG-16's convolutional layers (the same backbone and
  pretrained handling as IAIA-BL, ``model.build_backbone``; the tiny backbone at tiny scale), global
  average pooling and two added fully connected layers → 3 margin logits (``task="margin"``).
* **End-to-end VGG-16 malignancy classifier**: the same network with one logit
  (``task="malignancy"``), trained on the pathology labels directly.
* **GradCAM** (Selvaraju et al. 2017) and **GradCAM++** (Chattopadhay et al. 2018) saliency maps of
  the black boxes, batched: :func:`gradcam`. The test suite checks them against the maintained
  ``pytorch_grad_cam`` package on the same model and inputs.
* **Radiologists' estimate**: the AUROC of the BI-RADS assessment (CBIS-DDSM's ``assessment``
  column, 0-5) as a malignancy score: :func:`radiologist_auroc`.

A black-box run directory mirrors an IAIA-BL run (the same helpers of ``train.py`` write it: one
atomic file at a time, config.json last, state dicts loaded with ``weights_only=True``)::

    RUN/config.json    {"kind": "blackbox", "task": "margin"|"malignancy", "preset_name": ...,
                        "preset": {model, loss, train}, "data": ..., "selected_epoch": ..., ...}
    RUN/model.pt       state dict only
    RUN/history.csv    train.py's columns; stage "blackbox"; ce = loss (CE or BCE)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
import warnings
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .atomic import atomic_write_json
from .config import MARGINS, ModelConfig, Preset, get_preset, resolve_preset
from . import fastpath
from .fastpath import autocast_dtype, needs_scaler, pick_device
from .lock import LOCK_NAME, exclusive_lock
from .model import build_backbone
from .predict import as_images, malignancy_probability, margin_probabilities
from .rundir import check_run, load_state, recorded_data_dir, read_history, save_state, split_record, write_history

__all__ = [
    "TASKS", "BlackBox", "BlackBoxRun", "build_blackbox", "train_blackbox", "load_blackbox",
    "blackbox_predict", "gradcam", "gradcam_both", "train_protopnet", "protopnet_preset",
    "radiologist_auroc", "read_assessments", "add_cli", "run_cli",
]

TASKS = ("margin", "malignancy")


# ---------------------------------------------------------------------------------------------
# The black-box network
# ---------------------------------------------------------------------------------------------


class BlackBox(nn.Module):
    """VGG-16 conv layers (or the tiny backbone) + global average pooling + two fully connected
    layers. ``forward`` returns logits (B, 3) for ``task="margin"``, (B, 1) for ``"malignancy"``.

    ``backbone`` is the GradCAM target layer: :meth:`classify` maps its output to the logits.
    """

    def __init__(self, cfg: ModelConfig, task: str = "margin", hidden: int | None = None,
                 dropout: float = 0.5, backbone: nn.Module | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        self.cfg, self.task = cfg, task
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        c = int(self.backbone.out_channels)
        hidden = int(hidden or c)
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


def build_blackbox(preset: str | Preset, task: str = "margin", pretrained: str | None = None) -> BlackBox:
    """A fresh black box for ``preset`` (its ModelConfig decides backbone, pretrained weights and
    image size); ``pretrained`` overrides the preset's choice ("none" for tests)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    if pretrained is not None:
        p = p.replace({"model.pretrained": pretrained})
    return BlackBox(p.model, task)


# ---------------------------------------------------------------------------------------------
# GradCAM / GradCAM++ (batched)
# ---------------------------------------------------------------------------------------------


def _targets(target_class, logits: Tensor) -> Tensor:
    """(B,) int64 target indices: None -> the predicted class (index 0 for a one-logit model)."""
    b, n = logits.shape
    if target_class is None:
        return logits.argmax(dim=1) if n > 1 else torch.zeros(b, dtype=torch.long, device=logits.device)
    t = torch.as_tensor(target_class, dtype=torch.long, device=logits.device)
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"target_class: expected an int or {b} ints, got shape {tuple(t.shape)}")
    if bool(((t < 0) | (t >= n)).any()):
        raise ValueError(f"target_class out of range: the model has {n} output(s)")
    return t


def _normalise_maps(cam: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-map min-max normalisation to [0, 1] (pytorch_grad_cam's ``scale_cam_image``)."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    cam = cam - lo
    hi = cam.flatten(1).max(dim=1).values[:, None, None]
    return cam / (hi + eps)


def gradcam_both(model: BlackBox, images: Tensor, target_class=None,
                 size: int | tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """GradCAM and GradCAM++ from one forward/backward pass.

    The backbone runs without a graph; only the head is differentiated (the gradients of the
    target logit with respect to the last conv feature map A, which is all both methods need).

        GradCAM:    α_c = mean_{ij} ∂y/∂A_{c,ij}
        GradCAM++:  α_c = Σ_{ij} relu(g_{c,ij}) · g² / (2 g² + Σ_{ij}A_{c,ij} · g³)   (g = ∂y/∂A)
        map = relu(Σ_c α_c A_c), bilinearly upsampled to the image, min-max normalised to [0, 1]

    images (B, 3, S, S) normalised; target_class: None (predicted class), an int, or (B,) ints.
    Returns ``(gradcam (B, S, S), gradcampp (B, S, S), logits (B, n))``, detached.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.backbone(images).float()
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.classify(feats).float()                           # (B, n)
            t = _targets(target_class, logits)
            score = logits.gather(1, t[:, None]).sum()
            (grads,) = torch.autograd.grad(score, feats)                     # (B, C, H, W)
    finally:
        model.train(was_training)
    a, g = feats.detach(), grads.detach()
    w_cam = g.mean(dim=(2, 3))                                               # (B, C)
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w_pp = (g.clamp_min(0) * alpha).sum(dim=(2, 3))                          # (B, C)
    size = size or tuple(images.shape[-2:])
    if isinstance(size, int):
        size = (size, size)
    out = []
    for w in (w_cam, w_pp):
        cam = (w[:, :, None, None] * a).sum(dim=1).clamp_min(0)             # (B, H, W)
        # normalise, upsample, normalise again: pytorch_grad_cam's order (the two agree up to
        # the 1e-7 guard of the division, which matters for maps with a tiny maximum)
        cam = _normalise_maps(cam)
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        out.append(_normalise_maps(cam))
    return out[0], out[1], logits.detach()


def gradcam(model: BlackBox, images: Tensor, target_class=None, plus_plus: bool = False) -> Tensor:
    """GradCAM (or GradCAM++ with ``plus_plus``) of ``model`` for ``target_class`` (None: the
    predicted class; the malignancy model has one logit, class 0): (B, 3, S, S) -> (B, S, S) in
    [0, 1], upsampled to the image size. See :func:`gradcam_both`."""
    cam, campp, _ = gradcam_both(model, images, target_class)
    return campp if plus_plus else cam


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def blackbox_predict(model: "BlackBox | BlackBoxRun", data, batch_size: int = 64, device=None,
                     cams: bool = True, target_class=None) -> dict[str, np.ndarray]:
    """Predictions of a black box on a TensorSet (or images (N, 3, S, S) normalised, or grey
    crops (N, S, S)).

    Returns numpy arrays: ``logits`` (N, n); ``margin_prob`` (N, 3) for the margin task or
    ``malignancy_prob`` (N,) for the malignancy task; with ``cams``: ``gradcam`` and ``gradcampp``
    (N, S, S) for ``target_class`` (default: the predicted margin class / the malignant logit).
    """
    model = getattr(model, "model", model)          # a BlackBoxRun or the network
    images = as_images(data)
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device).eval()
    size = int(model.cfg.image_size)
    logits, cam, campp = [], [], []
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size].to(device).float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if cams:
            tc = target_class
            if tc is not None and np.ndim(tc) > 0:
                tc = torch.as_tensor(np.asarray(tc)[s:s + batch_size])
            c, cp, lg = gradcam_both(model, x, tc)
            cam.append(c.cpu())
            campp.append(cp.cpu())
        else:
            with torch.no_grad():
                lg = model(x).float()
        logits.append(lg.cpu())
    lg = torch.cat(logits) if logits else torch.zeros(0, model.num_outputs)
    out = {"logits": lg.numpy()}
    if model.task == "margin":
        out["margin_prob"] = margin_probabilities(lg)
    else:
        out["malignancy_prob"] = malignancy_probability(lg[:, 0], fitted=True)   # trained end to end
    if cams:
        empty = torch.zeros(0, size, size)
        out["gradcam"] = (torch.cat(cam) if cam else empty).numpy()
        out["gradcampp"] = (torch.cat(campp) if campp else empty).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class BlackBoxRun:
    """A loaded black-box run: ``model`` (eval mode), ``task``, ``preset``, ``dir``, ``config``,
    ``history`` (list of dicts), ``data_dir`` (the prepared dataset it was trained on, if found)."""

    model: BlackBox
    task: str
    preset: Preset
    dir: Path
    config: dict
    history: list[dict]
    data_dir: Path | None = None

    @property
    def kind(self) -> str:
        return "blackbox"


def _auroc(task: str, labels: np.ndarray, logits: np.ndarray) -> float | None:
    """The model-selection metric of train.py: the average one-vs-rest margin AUROC
    (``train.average_margin_auroc``), or the malignancy AUROC; None when undefined."""
    from sklearn.metrics import roc_auc_score

    from .predict import average_margin_auroc

    if len(labels) == 0:
        return None
    if task == "margin":
        value = average_margin_auroc(labels, logits)
    else:
        value = float(roc_auc_score(labels, logits[:, 0])) if len(np.unique(labels)) == 2 else math.nan
    return None if not math.isfinite(value) else value


def _loss(task: str, logits: Tensor, margin: Tensor, malignant: Tensor) -> Tensor:
    if task == "margin":
        return F.cross_entropy(logits.float(), margin)
    return F.binary_cross_entropy_with_logits(logits[:, 0].float(), malignant.float())


def _target_labels(task: str, ts) -> Tensor:
    return ts.labels if task == "margin" else ts.malignant


@torch.no_grad()
def _logits(model: BlackBox, images: Tensor, batch_size: int, autocast) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, images.shape[0], batch_size):
        with autocast():
            out.append(model(images[s:s + batch_size]).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_outputs), np.float32)


def train_blackbox(data: str | Path, preset: str = "tiny", out: str | Path = "runs/blackbox",
                   task: str = "margin", epochs: int | None = None, seed: int = 0,
                   device: str | torch.device | None = None, progress: bool = True,
                   overrides: dict[str, Any] | None = None) -> Path:
    """Train a black-box VGG-16 (tiny backbone at tiny scale) on the prepared dataset ``data``.

    ``task="margin"``: 3-way cross entropy on the margin labels; ``"malignancy"``: binary cross
    entropy on the pathology labels (the end-to-end malignancy classifier). Uses the preset's
    backbone, pretrained weights, image size, batch size, augmentation (``dataset.augment_batch``,
    batches from ``dataset.BatchPlan``), epochs and learning rates (backbone: ``lr_joint_backbone``,
    added layers: ``lr_joint_add_on``; Adam, step decay). The weights of the epoch with the best
    validation AUROC are kept (the last epoch when the validation split is empty or undefined).
    Returns the run directory. Holds the run directory's lock (``lock.exclusive_lock``) throughout.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK_NAME, f"run directory {out}"):
        return _train_blackbox(data, preset, out, task, epochs, seed, device, progress, overrides)


def _train_blackbox(data: str | Path, preset: str, out: Path, task: str, epochs: int | None, seed: int,
                    device, progress: bool, overrides: dict[str, Any] | None) -> Path:
    """The body of :func:`train_blackbox`, under its lock."""
    from .data.dataset import (BatchPlan, augment_batch, check_classes, load_prepared,
                               pre_augment, to_tensors)
    from .train.schedule import epoch_size

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    p = resolve_preset(preset, overrides, epochs)
    tc = p.train
    n_epochs = int(tc.epochs)
    dev = pick_device(device)
    data = Path(data)
    ds = load_prepared(data, size=p.model.image_size)             # a missing folder: says how to make one
    check_classes(ds, splits=("train",))
    train_set = to_tensors(ds.subset("train"), dev)
    val_ds = ds.subset("val")
    val_set = to_tensors(val_ds, dev) if len(val_ds) else None
    if task == "malignancy" and len(torch.unique(train_set.malignant)) < 2:
        raise ValueError(f"{data}: the training split has only one pathology class; the malignancy "
                         "classifier needs benign and malignant cases")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if tc.augment and tc.pre_augment_per_class > 0:
        train_set = pre_augment(train_set, tc.pre_augment_per_class, generator)
        augment_online = False
    else:
        augment_online = bool(tc.augment)

    fastpath.setup(dev, seed)                  # global seeds and the device's switches, in one call
    model = BlackBox(p.model, task).to(dev)
    cuda = dev.type == "cuda"
    if cuda and tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(dev, tc.amp_dtype)

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=bool(cuda and tc.amp))

    scaler = torch.amp.GradScaler("cuda", enabled=bool(cuda and tc.amp and needs_scaler(amp_dtype)))
    fused = {"fused": True} if cuda else {}
    opt = torch.optim.Adam([
        {"params": model.backbone.parameters(), "lr": tc.lr_joint_backbone},
        {"params": model.head.parameters(), "lr": tc.lr_joint_add_on},
    ], weight_decay=tc.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.lr_step_size, gamma=tc.lr_gamma)

    train_labels = _target_labels(task, train_set).cpu().numpy()
    history: list[dict] = []
    best_state, best_auc, best_epoch = None, -math.inf, n_epochs
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_epochs, desc=f"blackbox {task}", unit="epoch")
    for epoch in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        plan = BatchPlan(train_set, batch_size=tc.batch_size, fine_batch_size=0, generator=generator,
                         epoch_size=epoch_size(tc, len(train_set)))     # the paper preset: 15 000
        for idx, _ in plan:
            idx = idx.to(dev)
            x = train_set.images[idx]
            if augment_online:
                x, _ = augment_batch(x, [], generator)
            if cuda and tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(x)
            loss = _loss(task, logits, train_set.labels[idx], train_set.malignant[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        train_auc = _auroc(task, train_labels, _logits(model, train_set.images, tc.eval_batch_size, autocast))
        val_auc = None
        if val_set is not None:
            val_auc = _auroc(task, _target_labels(task, val_set).cpu().numpy(),
                             _logits(model, val_set.images, tc.eval_batch_size, autocast))
        ce = total / max(seen, 1)
        history.append({"epoch": epoch, "stage": "blackbox", "ce": ce, "loss": ce,
                        "train_auroc": train_auc, "val_auroc": val_auc, "lr": lr,
                        "seconds": round(time.perf_counter() - t0, 3)})
        if val_auc is not None and val_auc >= best_auc:
            best_auc, best_epoch = val_auc, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if bar is not None:
            bar.set_postfix(loss=f"{ce:.3f}", val_auroc="-" if val_auc is None else f"{val_auc:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    if best_state is None:
        best_epoch = n_epochs
        best_state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    best_state = {k: v.contiguous() for k, v in best_state.items()}

    config = {
        "kind": "blackbox", "task": task, "preset_name": p.name, "preset": p.to_dict(),
        "data": str(data.resolve()), "seed": int(seed), "overrides": dict(overrides or {}),
        "device": str(dev), "classes": list(MARGINS) if task == "margin" else ["malignant"],
        "n_train": len(train_set), "n_val": 0 if val_set is None else len(val_set),
        "selected_epoch": best_epoch,
        "selected_val_auroc": None if best_auc == -math.inf else best_auc,
        "selection": "weights of the epoch with the best validation AUROC (average one-vs-rest "
                     "margin AUROC, or malignancy AUROC)",
        "architecture": f"{p.model.backbone} conv layers + global average pooling + Linear(C, C) + "
                        f"ReLU + Dropout(0.5) + Linear(C, {model.num_outputs})",
        "torch": torch.__version__, "split": split_record(data), "complete": True,
    }
    (out / "config.json").unlink(missing_ok=True)     # a half-written run never looks complete
    config["model_pt"] = save_state(best_state, out / "model.pt")   # rundir.check_run compares it
    write_history(out / "history.csv", history)
    atomic_write_json(out / "config.json", config)
    return out


def load_blackbox(run_dir: str | Path, device: str | torch.device | None = None) -> BlackBoxRun:
    """Load a black-box run written by :func:`train_blackbox` (weights_only; no download: the
    backbone is built without pretrained weights and then receives the saved ones)."""
    run_dir = Path(run_dir)
    config = check_run(run_dir, kind="blackbox")   # finished, model.pt the file it wrote
    preset = Preset.from_dict(config["preset"])
    cfg = dataclasses.replace(preset.model, pretrained="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BlackBox(cfg, config["task"])
    model.cfg = preset.model
    model.load_state_dict(load_state(run_dir / "model.pt"))
    model.to(pick_device(device)).eval()
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
    data_dir = recorded_data_dir(config)
    if data_dir is not None and not data_dir.is_dir():
        data_dir = None
    return BlackBoxRun(model, config["task"], preset, run_dir, config, history, data_dir)


# ---------------------------------------------------------------------------------------------
# ProtoPNet
# ---------------------------------------------------------------------------------------------


def protopnet_preset(preset: str = "tiny") -> str:
    """The ProtoPNet twin of a preset: "paper" -> "protopnet", "tiny" -> "tiny-protopnet"."""
    if preset in ("protopnet", "tiny-protopnet") or preset.endswith("-protopnet"):
        return preset
    return "protopnet" if preset == "paper" else f"{preset}-protopnet"


def train_protopnet(data: str | Path, preset: str = "tiny", out: str | Path = "runs/protopnet",
                    epochs: int | None = None, seed: int = 0, device=None, progress: bool = True,
                    overrides: dict[str, Any] | None = None):
    """The ProtoPNet baseline: IAIA-BL's training (``train.train``) with the ProtoPNet preset
    (k = 1, no fine-annotation loss, off-class weight −0.5). Returns what ``train.train`` returns."""
    from . import train as train_mod

    return train_mod.train(data, protopnet_preset(preset), out, epochs=epochs, seed=seed,
                           device=device, progress=progress, overrides=overrides)


# ---------------------------------------------------------------------------------------------
# Radiologists' estimate (BI-RADS assessment as a malignancy score)
# ---------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().split())


def _csv_assessments(path: Path) -> dict[int, tuple[str, str]]:
    """{1-based data-row number: (patient_id, assessment)}, numbered like
    ``cbis_ddsm.read_mass_csv`` (blank rows count)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        where = {_norm(h): i for i, h in enumerate(header)}
        if "assessment" not in where or "patient_id" not in where:
            raise ValueError(f"{path}: no 'assessment' column; the radiologists' estimate needs "
                             "CBIS-DDSM's BI-RADS assessment")
        ia, ip = where["assessment"], where["patient_id"]
        rows = {}
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            get = (lambda i: cells[i].strip() if i < len(cells) else "")
            rows[number] = (get(ip), get(ia))
    return rows


def read_assessments(data: str | Path, cbis_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """BI-RADS assessment (float, NaN where unknown) of every row of prepared dataset ``data``,
    and where it came from ("manifest" or the CSV path).

    The importer's manifest has no assessment column (INTERFACES.md §2), so unless a future
    manifest carries one, the values are read from the source CSVs through each row's
    ``source_csv`` (file name) and ``csv_row`` (1-based data row), in ``cbis_dir`` (default: the
    ``source`` of summary.json); the row's patient id is checked."""
    data = Path(data)
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    if manifest and "assessment" in manifest[0]:
        vals = np.array([float(r["assessment"]) if str(r["assessment"]).strip() else np.nan
                         for r in manifest])
        return vals, "manifest"
    if cbis_dir is None:
        summary = json.loads((data / "summary.json").read_text(encoding="utf-8")) \
            if (data / "summary.json").is_file() else {}
        cbis_dir = summary.get("source")
        if not cbis_dir:
            raise FileNotFoundError(f"{data}: summary.json names no source tree; pass cbis_dir")
    cbis_dir = Path(cbis_dir)
    tables: dict[str, dict] = {}
    vals = np.full(len(manifest), np.nan)
    for i, r in enumerate(manifest):
        name = r.get("source_csv", "")
        if name not in tables:
            path = cbis_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: source CSV not found; the radiologists' estimate "
                                        "reads BI-RADS assessments from the CBIS-DDSM CSVs (pass "
                                        "the download folder as cbis_dir)")
            tables[name] = _csv_assessments(path)
        found = tables[name].get(int(r["csv_row"]))
        if found is None or found[0] != r.get("patient_id"):
            raise ValueError(f"{cbis_dir / name}: row {r['csv_row']} is not patient "
                             f"{r.get('patient_id')}; the CSV changed since `iaiabl prepare`")
        try:
            vals[i] = float(found[1])
        except ValueError:
            pass
    return vals, str(cbis_dir)


def radiologist_auroc(data: str | Path, split: str = "test", cbis_dir: str | Path | None = None,
                      alpha: float = 0.05) -> dict:
    """Malignancy AUROC (DeLong CI) of the radiologists' BI-RADS assessment on ``split``.

    Returns ``{"value", "ci_low", "ci_high", "n", "source", "split"}`` (value None when one
    pathology is missing)."""
    from .metrics import malignancy_auroc

    data = Path(data)
    scores, source = read_assessments(data, cbis_dir)
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    keep = np.array([r["split"] == split for r in manifest]) & np.isfinite(scores)
    malignant = np.array([int(r["malignant"]) for r in manifest])[keep]
    result = dict(malignancy_auroc(malignant, scores[keep], alpha=alpha))
    result.update(n=int(keep.sum()), source=source, split=split)
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``baseline --data DATA --model blackbox|protopnet|radiologists --task
    margin|malignancy --preset tiny|paper --out RUN [--epochs E] [--seed S] [--device D]``."""
    p = subparsers.add_parser(
        "baseline", help="train a baseline of the paper (black-box VGG-16, ProtoPNet)",
        description="Baselines of Barnett et al. (2021): a black-box VGG-16 margin or malignancy "
                    "classifier (GradCAM / GradCAM++ for its saliency), ProtoPNet (IAIA-BL's "
                    "training with the ProtoPNet preset), or the radiologists' BI-RADS estimate.")
    p.add_argument("--data", required=True, type=Path, metavar="DATA", help="prepared dataset")
    p.add_argument("--model", choices=("blackbox", "protopnet", "radiologists"), default="blackbox")
    p.add_argument("--task", choices=TASKS, default="margin",
                   help="blackbox only: margin (3 logits) or end-to-end malignancy (1 logit)")
    p.add_argument("--preset", default="tiny", metavar="PRESET",
                   help="tiny (CPU) or paper (GPU; VGG-16 with ImageNet weights); default tiny")
    p.add_argument("--out", type=Path, metavar="RUN", help="run directory to write")
    p.add_argument("--epochs", type=int, metavar="E", help="epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--split", default="test", help="radiologists only: split to score (default test)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    if args.model == "radiologists":
        result = radiologist_auroc(args.data, split=args.split)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out / "radiologists.json", result)
        return 0
    if args.out is None:
        raise ValueError("--out RUN is required to train a baseline")
    get_preset(args.preset)  # a clear error for an unknown preset
    if args.model == "protopnet":
        if args.task != "margin":
            print("note: ProtoPNet classifies margins; its malignancy comes from stage B as in IAIA-BL")
        train_protopnet(args.data, args.preset, args.out, epochs=args.epochs, seed=args.seed,
                        device=args.device, progress=True)
    else:
        train_blackbox(args.data, args.preset, args.out, task=args.task, epochs=args.epochs,
                       seed=args.seed, device=args.device, progress=True)
    print(f"wrote {args.out}")
    return 0
