"""Burned-in labels: the film's view label, and the hidden confounder (a bright label block near
some masses of one class).

Every full image carries a **view label** in the corner opposite the chest wall, as the DDSM's
scanned films do (laterality and view, e.g. "LCC", on a bright plate): intensity
:data:`LABEL_VALUE`, above every tissue value and below the confounder's. It covers about 1.5 % of
the image, so that the importer's robust window (0.5-99.5 % of the image's values) ends on the
label rather than inside the brightest masses, and masses keep their borders after windowing.

With ``confounder=P`` each train-split ROI of the confounder class gets, with probability P, a block
at the maximum intensity (1.0, above every tissue value) with a dark letter in it, like a
vendor's burned-in laterality label, inside the importer's crop square of its lesion (a square
centred on the lesion's bounding box, side ``2 * max(bbox_h, bbox_w)``: docs/INTERFACES.md §1) but
off the mass itself and out of every other lesion's crop. The CSVs never mention it; its box is
recorded per ROI in ``synthetic.json`` (``rois[i].marker_box``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...errors import InputError

__all__ = ["MARKER_VALUE", "GLYPH_VALUE", "LABEL_VALUE", "LABEL_AREA", "draw_view_label", "crop_square",
           "draw_marker", "place_markers", "marker_masks"]

MARKER_VALUE = 1.0         # the confounder block (tissue is clipped below it)
GLYPH_VALUE = 0.08         # the letter inside a block or plate
LABEL_VALUE = 0.97         # the view label's plate
LABEL_AREA = 0.015         # fraction of the image the view label covers

_LETTERS = {  # 5 x 3 letter bitmaps
    "R": [[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]],
    "L": [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]],
    "A": [[0, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 0, 1]],
    "C": [[0, 1, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1]],
    "M": [[1, 0, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 0, 1]],
    "O": [[0, 1, 0], [1, 0, 1], [1, 0, 1], [1, 0, 1], [0, 1, 0]],
}
_GLYPHS = [np.array(_LETTERS[c]) for c in "RLA"]   # the confounder marker's letters


def draw_view_label(img: np.ndarray, text: str, mirrored: bool = False) -> tuple[int, int, int, int]:
    """Burn the film's view label (e.g. "LCC") into the top corner opposite the chest wall of
    ``img`` (H, W), LEFT orientation: a plate of :data:`LABEL_VALUE` covering :data:`LABEL_AREA` of
    the image, dark letters on it (drawn flipped when the image will be ``mirrored``).
    -> the plate's (y0, x0, y1, x1)."""
    H, W = img.shape
    h = max(8, int(round(np.sqrt(LABEL_AREA * H * W / 2.2))))
    w = min(W // 3, int(round(2.2 * h)))
    y0, x0 = max(1, H // 100), W - w - max(1, W // 100)
    plate = np.full((h, w), LABEL_VALUE, np.float32)
    glyphs = [np.array(_LETTERS[c]) for c in text]
    k = max(1, min((h - 4) // 5, (w - 4) // (4 * len(glyphs) - 1)))
    if mirrored:
        glyphs = [g[:, ::-1] for g in glyphs[::-1]]
    x = (w - (4 * len(glyphs) - 1) * k) // 2
    for g in glyphs:
        big = np.kron(g, np.ones((k, k)))
        gy = (h - big.shape[0]) // 2
        if x >= 0 and x + big.shape[1] <= w:
            plate[gy:gy + big.shape[0], x:x + big.shape[1]][big > 0] = GLYPH_VALUE
        x += 4 * k
    img[y0:y0 + h, x0:x0 + w] = plate
    return y0, x0, y0 + h, x0 + w


def crop_square(mask: np.ndarray, floor: int = 0) -> tuple[int, int, int]:
    """The importer's crop square of a lesion mask, ``(top, left, side)``: the importer's own
    ``cbis_ddsm.crop_geometry`` (one definition; docs/INTERFACES.md §1) with ``floor`` as its
    smallest side, and a clear error for an empty mask."""
    from ..cbis_ddsm import crop_geometry

    if not np.any(mask):
        raise ValueError("crop_square: the lesion mask is empty")
    return crop_geometry(mask, min_side=floor)[1]


def draw_marker(rng: np.random.Generator, img: np.ndarray, lesion_mask: np.ndarray,
                forbidden: np.ndarray, mirrored: bool = False) -> tuple[int, int, int, int] | None:
    """Burn a bright label block (a dark letter inside when large enough) into ``img`` (H, W)
    inside the crop square of ``lesion_mask`` (2 px in, so that rounding and mirroring never push
    it out) and off ``forbidden`` (H, W) bool. ``mirrored``: the image will be flipped left-right
    (RIGHT breasts), so the letter is drawn flipped to read correctly.
    -> the block's (y0, x0, y1, x1) (ends exclusive) in ``img``, or None where it did not fit."""
    H, W = img.shape
    top, left, side = crop_square(lesion_mask)
    y_lo, y_hi = max(0, top + 2), min(H, top + side - 2)               # allowed rows [lo, hi)
    x_lo, x_hi = max(0, left + 2), min(W, left + side - 2)
    for attempt in range(80):
        scale = rng.uniform(0.25, 0.35) if attempt < 40 else rng.uniform(0.15, 0.25)
        h = max(4, int(round(side / 2 * scale)))
        w = max(4, int(round(h * rng.uniform(1.2, 1.7))))
        if y_hi - h < y_lo or x_hi - w < x_lo:
            continue
        y = int(rng.integers(y_lo, y_hi - h + 1))
        x = int(rng.integers(x_lo, x_hi - w + 1))
        if forbidden[y:y + h, x:x + w].any():
            continue
        block = np.full((h, w), MARKER_VALUE, np.float32)
        glyph = _GLYPHS[int(rng.integers(len(_GLYPHS)))]
        glyph = glyph[:, ::-1] if mirrored else glyph
        k = (h - 2) // 5
        if k >= 1 and 3 * k <= w - 2:
            big = np.kron(glyph, np.ones((k, k)))
            gy, gx = (h - big.shape[0]) // 2, (w - big.shape[1]) // 2
            block[gy:gy + big.shape[0], gx:gx + big.shape[1]][big > 0] = GLYPH_VALUE
        img[y:y + h, x:x + w] = block
        return y, x, y + h, x + w
    return None


def place_markers(rng_for, image: np.ndarray, lesion_masks: list[np.ndarray],
                  footprints: list[np.ndarray], wanted: list[bool],
                  mirrored: bool) -> list[tuple[int, int, int, int] | None]:
    """Draw the markers of one view: for each lesion i with ``wanted[i]``, a block in its crop
    square, off its dilated footprint and out of the other lesions' crops (importer floor of
    64 px, + 2 px). ``rng_for(i)`` gives lesion i's own random stream. -> per lesion its box in
    LEFT orientation, or None."""
    H, W = image.shape
    boxes: list[tuple[int, int, int, int] | None] = []
    for i, want in enumerate(wanted):
        if not want:
            boxes.append(None)
            continue
        forbidden = np.zeros((H, W), bool)
        for j, mask in enumerate(lesion_masks):
            if j == i:
                radius = max(2, int(round(0.15 * np.sqrt(mask.sum() / np.pi))))
                forbidden |= ndimage.binary_dilation(footprints[j] | mask, iterations=radius)
            else:
                top, left, side = crop_square(mask, floor=64)
                forbidden[max(0, top - 2):max(0, top + side + 2),
                          max(0, left - 2):max(0, left + side + 2)] = True
        boxes.append(draw_marker(rng_for(i), image, lesion_masks[i], forbidden, mirrored))
    return boxes


def marker_masks(dataset, tree=None) -> np.ndarray:
    """Where the confounder markers are on the crops of a prepared synthetic data set: (N, S, S)
    uint8 {0,1}, one per row of ``dataset`` (a ``PreparedDataset``, any subset or size), all zero
    for rows without a marker.

    From the boxes the generator recorded, not from the pixels: each row's ``marker_box``
    (``synthetic.json`` ``rois[i]``, full-image pixels ``[y0, x0, y1, x1]``) is mapped through the
    row's crop (manifest ``crop_box``, ``top left side``) and resized as the importer resizes masks
    (``dataset.resize_masks``: to the prepared size, then to the loaded size). Rows are matched by
    CSV and row number, and checked by patient, side, view and abnormality.

    ``tree``: the synthetic tree (default: the one the data were prepared from, summary.json
    ``source``)."""
    import json
    from pathlib import Path

    from ..dataset import resize_masks

    tree = Path(tree if tree is not None else dataset.summary.get("source", ""))
    record = tree / "synthetic.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: marker masks need the synthetic tree the data were "
                                "prepared from (pass tree=DIR)")
    rois = json.loads(record.read_text()).get("rois")
    if rois is None:
        raise InputError(f"{record} records no ROIs (made by an older version): remake the tree with "
                         "`iaiabl synth` and prepare it again")
    by_row = {(r["csv"], int(r["row"])): r for r in rois}
    native = int(dataset.summary.get("size", dataset.size))
    out = np.zeros((len(dataset), dataset.size, dataset.size), np.uint8)
    for i, row in enumerate(dataset.manifest):
        roi = by_row.get((row["source_csv"], int(row["csv_row"])))
        same = roi is not None and (roi["patient_id"], roi["side"], roi["view"], int(roi["abnormality_id"])) == \
            (row["patient_id"], row["side"], row["view"], int(row["abnormality_id"]))
        if not same:
            raise InputError(f"{record}: no ROI matches {row['id']} ({row['source_csv']} row {row['csv_row']}); "
                             "were the data prepared from another tree? pass tree=DIR")
        if roi["marker_box"] is None:
            continue
        top, left, side = (int(v) for v in str(row["crop_box"]).split())
        y0, x0, y1, x1 = roi["marker_box"]
        crop = np.zeros((1, side, side), np.uint8)
        crop[0, max(0, y0 - top):max(0, y1 - top), max(0, x0 - left):max(0, x1 - left)] = 1
        mask = resize_masks(crop, native)
        out[i] = resize_masks(mask, dataset.size)[0] if native != dataset.size else mask[0]
    return out
