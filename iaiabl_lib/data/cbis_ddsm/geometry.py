"""The crop of a region of interest (docs/INTERFACES.md §1): a square twice the lesion's size,
centred on it, zero where it leaves the image; the same crop for the image and its masks."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from iaiabl_lib.data.dataset import resize_images, resize_masks

__all__ = ["MIN_CROP", "crop_geometry", "crop_padded", "crop_and_resize"]


MIN_CROP = 64                                  # px, smallest crop side


def crop_geometry(mask: np.ndarray, min_side: int = MIN_CROP) -> tuple[tuple[int, int, int, int], tuple[int, int, int]]:
    """``(bbox, box)`` of a non-empty lesion mask (H, W): ``bbox = (y0, x0, y1, x1)`` (ends
    exclusive) and the square crop ``box = (top, left, side)`` centred on the bbox centre,
    ``side = max(min_side, 2 * max(bbox_h, bbox_w))`` (INTERFACES.md §1)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(min_side, 2 * max(y1 - y0, x1 - x0))
    top = int(np.floor((y0 + y1) / 2 - side / 2))
    left = int(np.floor((x0 + x1) / 2 - side / 2))
    return (y0, x0, y1, x1), (top, left, side)


def crop_padded(array: np.ndarray, box: tuple[int, int, int], transform: Callable | None = None) -> np.ndarray:
    """(H, W) -> (side, side), zero where the box leaves the image; ``transform`` (e.g. the
    windowing) is applied to the part inside the image only."""
    top, left, side = box
    h, w = array.shape
    y0, y1 = min(max(top, 0), h), max(min(top + side, h), 0)
    x0, x1 = min(max(left, 0), w), max(min(left + side, w), 0)
    region = array[y0:y1, x0:x1]
    region = transform(region) if transform is not None else region
    out = np.zeros((side, side), dtype=region.dtype)
    out[y0 - top:y1 - top, x0 - left:x1 - left] = region
    return out


def crop_and_resize(image: np.ndarray, masks: Iterable[np.ndarray], box: tuple[int, int, int],
                    size: int, image_transform: Callable | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The identical square crop and resize for an image (H, W) and its masks (bool or {0,1}
    (H, W)) -> uint8 (size, size) and uint8 {0,1} (size, size) each. ``image_transform`` maps the
    image's in-frame part to uint8 (the windowing); without it ``image`` must be uint8 already."""
    out_image = resize_images(crop_padded(image, box, image_transform)[None], size)[0]
    out_masks = [resize_masks(crop_padded(np.asarray(m, dtype=np.uint8), box)[None], size)[0] for m in masks]
    return out_image, out_masks
