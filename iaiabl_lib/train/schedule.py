"""The training schedule (Barnett et al. 2021 §2.3): which stage runs after which epoch, and how many
optimiser steps each stage takes.

    for epoch in 1..E:                              (the first warm_epochs are warm-up)
        A1   warm-up or joint epoch: epoch_images images in batches of batch_size + fine_batch_size
        if epoch in push_epochs(train):
            A2   push (push.py)
            A3   last layer: last_layer_epochs epochs of epoch_images cached similarities
            keep the model if its validation AUROC is the best so far
    best pushed model → prune → (A3) → B

An epoch is ``train.epoch_images`` images, however they are produced: the paper's epoch is its
offline-augmented training set of 5000 images per class (15 000), so the paper preset draws 15 000
class-balanced images per epoch and augments them on the fly (``data.dataset.balanced_order``);
``epoch_images = 0`` is one pass over the training split (the tiny presets).

``steps_per_stage`` counts the steps of a preset on a training split of a given size; ``AUTHORS_CODE``
and ``PAPER_TEXT`` hold the same figures for the authors' published code and the paper's text, and
``schedule_table`` puts the three side by side (chapter 14, README).
"""
from __future__ import annotations

import math

from ..config import Preset

__all__ = ["push_epochs", "epoch_size", "a1_steps_per_epoch", "steps_per_stage", "AUTHORS_CODE",
           "PAPER_TEXT", "schedule_table"]


def push_epochs(t) -> list[int]:
    """The epochs (1-based) after which A2 + A3 run: push_start, push_start + push_every, ... ≤ E,
    and always the last epoch (so the final model is pushed, hence interpretable)."""
    out = [e for e in range(max(1, t.push_start), t.epochs + 1) if (e - t.push_start) % t.push_every == 0]
    if t.epochs not in out:
        out.append(t.epochs)
    return out


def epoch_size(t, n_train: int) -> int:
    """Images per A1 epoch: ``train.epoch_images``, else the pre-augmented set (3 × per class),
    else one pass over the ``n_train`` training images."""
    if t.epoch_images:
        return int(t.epoch_images)
    if t.pre_augment_per_class:
        return 3 * int(t.pre_augment_per_class)
    return int(n_train)


def a1_steps_per_epoch(t, n_train: int) -> int:
    return math.ceil(epoch_size(t, n_train) / t.batch_size)


def steps_per_stage(preset: Preset, n_train: int) -> dict:
    """The schedule of ``preset`` on ``n_train`` training images, in optimiser steps."""
    t = preset.train
    per_epoch = a1_steps_per_epoch(t, n_train)
    pushes = push_epochs(t)
    joint = t.epochs - min(t.warm_epochs, t.epochs)
    return {
        "epochs": t.epochs,
        "epoch_images": epoch_size(t, n_train),
        "batch": f"{t.batch_size} + {t.fine_batch_size if t.use_fine_loss else 0}",
        "warm_epochs": min(t.warm_epochs, t.epochs),
        "a1_steps_per_epoch": per_epoch,
        "a1_steps": per_epoch * t.epochs,
        "pushes": len(pushes),
        "push_epochs": pushes,
        "a3_steps_per_push": t.last_layer_epochs * per_epoch,
        "lr_decays": joint // t.lr_step_size,
        "lr_decay_every_steps": t.lr_step_size * per_epoch,
    }


AUTHORS_CODE = {
    "source": "github.com/alinajadebarnett/iaiabl: settings.py, main.py, train.sh",
    "epochs": 130,
    "epoch_images": 15000,          # train_augmented_5000: 5000 per class
    "batch": "75 + 10",             # train_batch_size; finer_train_loader batch_size=10
    "warm_epochs": 10,              # num_warm_epochs
    "a1_steps_per_epoch": 200,      # 15000 / 75
    "a1_steps": 130 * 200,
    "pushes": 12,                   # epochs 10, 20, ..., 120 (0-based; push_start = 10)
    "push_epochs": [11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121],   # 1-based
    "a3_steps_per_push": 10 * 200,  # 10 iterations of the last layer over the training loader
    "lr_decays": 120 // 5,          # StepLR(step_size=5) after each joint epoch
    "lr_decay_every_steps": 5 * 200,
}
"""The schedule of the authors' published code, read from its settings.py, main.py and train.sh."""

PAPER_TEXT = {
    "source": "Barnett et al. 2021, §2.3",
    "epochs": 50,
    "epoch_images": 15000,          # 5000 augmented images per class
    "batch": "75 + 10",
    "a1_steps_per_epoch": 200,
    "a1_steps": 50 * 200,
}
"""What the paper's text states about the schedule (the rest it leaves to the code)."""

_ROWS = (("epochs", "epochs"), ("epoch_images", "images per epoch"), ("batch", "A1 batch (lesion + fine)"),
         ("warm_epochs", "warm-up epochs"), ("a1_steps_per_epoch", "A1 steps per epoch"),
         ("a1_steps", "A1 steps in all"), ("pushes", "pushes (A2)"),
         ("a3_steps_per_push", "A3 steps per push"), ("lr_decays", "learning-rate decays (×0.1)"),
         ("lr_decay_every_steps", "steps between decays"))


def schedule_table(preset: Preset, n_train: int) -> str:
    """Markdown: steps per stage of ``preset`` on ``n_train`` images vs the paper vs the authors' code."""
    ours = steps_per_stage(preset, n_train)
    lines = [f"| | ours ({preset.name}, {n_train} training images) | paper (text) | authors' code |",
             "|---|---|---|---|"]
    for key, label in _ROWS:
        lines.append(f"| {label} | {ours.get(key, '—')} | {PAPER_TEXT.get(key, 'not stated')} | "
                     f"{AUTHORS_CODE.get(key, '—')} |")
    return "\n".join(lines)
