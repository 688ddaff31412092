"""What an explanation starts from: the dataset of a run, an ROI crop as the model sees it, a
prototype's push record."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import MARGINS
from ..errors import InputError

__all__ = ["dataset_for", "prepare_image", "prototype_record"]


def dataset_for(run, data):
    """A PreparedDataset at the run's image size: ``data`` (a PreparedDataset, or a path, loaded
    now) or, when None, the run's own (``Run.dataset()``: loaded once per Run object). No module
    keeps a dataset: to explain many cases of another dataset, load it once and pass it."""
    from ..data.dataset import load_prepared

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

        from ..data.dataset import resize_images, resize_masks

        data = copy.copy(data)
        data.images = resize_images(data.images, size)
        data.lesion_masks = resize_masks(data.lesion_masks, size)
        data.fine_masks = resize_masks(data.fine_masks, size)
    return data


def prepare_image(image, size: int) -> tuple[np.ndarray, Tensor]:
    """A grey ROI crop -> (grey uint8 (size, size), normalised tensor (1, 3, size, size)).

    ``image``: uint8 (S, S) (the prepared dataset's convention), float (S, S) in [0, 1], or an
    already normalised tensor (3, S, S) / (1, 3, S, S). Resized like ``dataset.load_prepared``."""
    from ..data.dataset import normalise, resize_images
    from ..push import grey_uint8

    if isinstance(image, Tensor) and image.ndim in (3, 4) and image.shape[-3] == 3:
        x = image[None] if image.ndim == 3 else image
        if x.shape[0] != 1:
            raise InputError(f"one case at a time: got images of shape {tuple(image.shape)}")
        x = x.float().cpu()
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return grey_uint8(x)[0], x
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    arr = np.squeeze(arr)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise InputError(f"expected a square grey ROI crop (S, S), got shape {np.shape(image)}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 1:
            raise InputError("a float ROI crop must lie in [0, 1] (or pass uint8 0-255)")
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
