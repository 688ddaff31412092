"""The splits a training run reads: the prepared dataset's train split, and the val split it
validates and selects on (its own, or another data set's holding the same cases)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Preset
from ..errors import InputError

__all__ = ["load_splits"]


def load_splits(data: str | Path, preset: Preset, device: torch.device, val_data: str | Path | None = None):
    """The prepared dataset's train and val splits as TensorSets on ``device`` (resized to the
    preset's image size), with the train rows' ids and dataset indices.

    ``val_data``: another prepared dataset whose val split is used instead of ``data``'s, for
    validation and model selection only (training never sees it). It must hold the same cases: the
    same ids in the same order with the same margin labels (e.g. the same synthetic seed without the
    confounder's marker, prepared with the same ``--split``); anything else is refused."""
    from ..data.dataset import check_classes, load_prepared, to_tensors

    ds = load_prepared(data, size=preset.model.image_size)        # a missing folder: says how to make one
    check_classes(ds, splits=("train", "val"))
    train_rows = np.flatnonzero(ds.split == "train")
    val_rows = np.flatnonzero(ds.split == "val")
    train_set = to_tensors(ds.select(train_rows), device)
    val_ds = ds.select(val_rows)
    if val_data is not None:
        other = load_prepared(val_data, size=preset.model.image_size)
        other_val = other.select(np.flatnonzero(other.split == "val"))
        same_ids = [str(i) for i in other_val.ids] == [str(i) for i in val_ds.ids]
        if not same_ids or not np.array_equal(np.asarray(other_val.labels), np.asarray(val_ds.labels)):
            raise InputError(
                f"--val-data {val_data}: its val split ({len(other_val.ids)} rows) does not hold the same "
                f"cases as the val split of {data} ({len(val_ds.ids)} rows) with the same margin labels; "
                "prepare it from the same cases with the same --split")
        val_ds = other_val
    val_set = to_tensors(val_ds, device)
    return train_set, val_set, [ds.ids[i] for i in train_rows], train_rows
