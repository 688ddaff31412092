"""Training a black box (one run directory, written like an IAIA-BL run) and loading it back."""
from __future__ import annotations

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
from torch import Tensor

from ..config import MARGINS, Preset, resolve_preset
from .. import fastpath
from ..fastpath import autocast_dtype, needs_scaler, pick_device
from ..lock import LOCK_NAME, exclusive_lock
from ..rundir import base_config, check_run, load_state, recorded_data_dir, read_history, save_state, write_config, write_history

from .blackbox import TASKS, BlackBox, blackbox_preset
from ..errors import InputError

__all__ = ["BlackBoxRun", "train_blackbox", "load_blackbox"]


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

    from ..predict import average_margin_auroc

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
    validation AUROC are kept, among the epochs from ``train.select_from_epoch`` on (the last epoch
    when none of them has a defined validation AUROC).
    Returns the run directory. Holds the run directory's lock (``lock.exclusive_lock``) throughout;
    the caller's random state and backend switches are as they were afterwards
    (``fastpath.restore_process_state``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with fastpath.restore_process_state(), exclusive_lock(out / LOCK_NAME, f"run directory {out}"):
        return _train_blackbox(data, preset, out, task, epochs, seed, device, progress, overrides)


def _train_blackbox(data: str | Path, preset: str, out: Path, task: str, epochs: int | None, seed: int,
                    device, progress: bool, overrides: dict[str, Any] | None) -> Path:
    """The body of :func:`train_blackbox`, under its lock."""
    from ..data.dataset import (AUGMENTATIONS, BatchPlan, augment_batch, check_classes, load_prepared,
                               pre_augment, to_tensors)
    from ..train.schedule import epoch_size

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    p = resolve_preset(blackbox_preset(preset) if isinstance(preset, str) else preset, overrides, epochs)
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
        raise InputError(f"{data}: the training split has only one pathology class; the malignancy "
                         "classifier needs benign and malignant cases")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if tc.augment and tc.pre_augment_per_class > 0:
        train_set = pre_augment(train_set, tc.pre_augment_per_class, generator, recipe=tc.augmentation)
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
    select_from = min(max(tc.select_from_epoch, 1), n_epochs)   # a shortened run selects from its last epoch
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
                x, _ = augment_batch(x, [], generator, **AUGMENTATIONS[tc.augmentation])
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
        if val_auc is not None and val_auc >= best_auc and epoch >= select_from:
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
        "kind": "blackbox", "task": task,
        **base_config(p, data, seed, overrides, dev, list(MARGINS) if task == "margin" else ["malignant"],
                      len(train_set), 0 if val_set is None else len(val_set)),
        "selected_epoch": best_epoch,
        "selected_val_auroc": None if best_auc == -math.inf else best_auc,
        "selection": "weights of the epoch with the best validation AUROC (average one-vs-rest "
                     "margin AUROC, or malignancy AUROC)" + (f", among epochs {select_from}-{n_epochs}"
                                                             if select_from > 1 else ""),
        "architecture": f"{p.model.backbone} conv layers + global average pooling + Linear(C, C) + "
                        f"ReLU + Dropout({p.model.head_dropout:g}) + Linear(C, {model.num_outputs})",
        "complete": True,
    }
    (out / "config.json").unlink(missing_ok=True)     # a half-written run never looks complete
    config["model_pt"] = save_state(best_state, out / "model.pt")   # rundir.check_run compares it
    write_history(out / "history.csv", history)
    write_config(out, config)
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
