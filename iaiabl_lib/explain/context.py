"""A case in its clinical context: the whole mammogram around the region of interest, and the other
views of the same lesion.

* :func:`whole_view` (a prepared case) and :func:`whole_view_of` (a raw DICOM, ``iaiabl explain``)
  read the case's full mammogram (``data.dicom.read_dicom``), window it as the importer windows the
  crop (the file's VOI LUT or window, else the robust window of the whole mammogram) and shrink it
  to about ``WHOLE_PX`` pixels tall: a :class:`WholeView` with the crop square (in full-image
  pixels, the manifest's ``crop_box``) and the pixel spacing from the DICOM header (PixelSpacing,
  else ImagerPixelSpacing, said so). Where the full image cannot be had (a data set prepared from
  crops, a source folder no longer on this machine, an unreadable file) the view says why, in
  plain words, instead of failing.
* :func:`whole_view_html` draws it (``plots.plot_whole_view``, the one drawing: the ROI boxed, a
  scale bar in millimetres) as an ``<img>`` with an alt text that says what it shows, or the
  sentence that says why there is none. The case reader (``widgets.case_explorer``) and the report
  of ``iaiabl explain`` both show it.
* :func:`other_views` finds the other views (CC, MLO) of the same lesion: the same patient, the
  same breast and the same abnormality number in the CBIS-DDSM description (the number is given per
  breast, so two masses of one breast keep their numbers across its views).
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["WHOLE_PX", "WholeView", "whole_view", "whole_view_of", "whole_view_alt", "whole_view_html",
           "other_views", "view_words"]

WHOLE_PX = 180
"""Height in pixels of the shrunken whole mammogram (its PNG is a few kilobytes)."""


@dataclass(frozen=True)
class WholeView:
    """The whole mammogram of a case, shrunk, with where its region of interest lies.

    image       uint8 (h, w), about ``WHOLE_PX`` tall, 0 = black; None when not available
    full_shape  (H, W) of the full image, pixels
    crop_box    (top, left, side) of the region of interest in full-image pixels
    spacing_mm  (row, column) millimetres per full-image pixel, or None (no scale bar)
    spacing_tag the DICOM tag it came from ("PixelSpacing" or "ImagerPixelSpacing")
    side, view  "left"/"right" and "CC"/"MLO" where known ("" otherwise)
    missing     why there is no image, a sentence ("" when there is one)
    """

    image: np.ndarray | None
    full_shape: tuple[int, int] = (0, 0)
    crop_box: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float] | None = None
    spacing_tag: str = ""
    side: str = ""
    view: str = ""
    missing: str = ""

    @property
    def scale(self) -> float:
        """Full-image pixels per shrunken pixel."""
        return self.full_shape[0] / self.image.shape[0] if self.image is not None else 1.0

    @property
    def roi_mm(self) -> float | None:
        """The side of the region of interest in millimetres (None without a spacing)."""
        if self.crop_box is None or self.spacing_mm is None:
            return None
        return float(self.crop_box[2]) * float(np.mean(self.spacing_mm))


def _spacing(info: dict) -> tuple[tuple[float, float] | None, str]:
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = info.get(tag)
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value, value]
        try:
            row, col = (float(v) for v in values[:2])
        except (TypeError, ValueError):
            continue
        if np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0:
            return (row, col), tag
    return None, ""


def _shrink(image: np.ndarray, px: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape
    if h <= px:
        return image
    size = (max(1, round(w * px / h)), px)
    return np.asarray(Image.fromarray(image, mode="L").resize(size, Image.Resampling.BOX))


def whole_view_of(pixels: np.ndarray, info: dict, crop_box: Sequence[int] | None, side: str = "",
                  view: str = "", px: int = WHOLE_PX) -> WholeView:
    """The whole view of a mammogram read by ``read_dicom`` (``pixels``, ``info``), with the
    region of interest ``crop_box`` (top, left, side) in its pixels."""
    from ..data.dicom import window_to_uint8

    shown = _shrink(window_to_uint8(pixels, info), int(px))
    spacing, tag = _spacing(info)
    side = side or str(info.get("ImageLaterality") or info.get("Laterality") or "")
    side = {"L": "left", "R": "right"}.get(side.strip().upper()[:1], "")
    view = (view or str(info.get("ViewPosition") or "")).strip().upper()
    box = tuple(int(v) for v in crop_box) if crop_box is not None else None
    return WholeView(shown, tuple(int(v) for v in pixels.shape), box, spacing, tag, side, view)


def _missing(why: str, row: dict | None = None) -> WholeView:
    row = row or {}
    side = {"L": "left", "R": "right"}.get(str(row.get("side", "")).strip().upper()[:1], "")
    return WholeView(None, side=side, view=str(row.get("view", "")).strip().upper(), missing=why)


def whole_view(ds, i: int, px: int = WHOLE_PX) -> WholeView:
    """The whole view of case ``i`` of a prepared dataset: its manifest's ``image_path`` under the
    tree it was prepared from (summary.json ``source``), its ``crop_box``. Never raises for a file
    that is missing or unreadable: the view's ``missing`` says what is missing."""
    from ..data.dicom import read_dicom
    from ..errors import InputError

    row = ds.manifest[i] if getattr(ds, "manifest", None) else {}
    rel, box_text = str(row.get("image_path", "") or ""), str(row.get("crop_box", "") or "")
    if not rel or not box_text.strip():
        return _missing("The whole mammogram cannot be shown: this data set records only the "
                        "cropped region of interest, not where it lies in its mammogram.", row)
    source = (getattr(ds, "summary", None) or {}).get("source")
    path = Path(rel) if Path(rel).is_absolute() else (Path(source) / rel if source else None)
    if path is None or not path.is_file():
        where = f" at {path}" if path is not None else ""
        return _missing(f"The whole mammogram cannot be shown: its file was not found{where}; "
                        "the region of interest alone is shown.", row)
    try:
        box = [int(v) for v in box_text.split()]
        if len(box) != 3:
            raise ValueError(box_text)
        pixels, info = read_dicom(path)
    except (InputError, OSError, ValueError) as err:
        return _missing(f"The whole mammogram cannot be shown: its file could not be read ({err}).", row)
    return whole_view_of(pixels, info, box, str(row.get("side", "")), str(row.get("view", "")), px)


def view_words(view: WholeView) -> str:
    """"left breast, CC view" (what is known of it)."""
    parts = [f"{view.side} breast" if view.side else "", f"{view.view} view" if view.view else ""]
    return ", ".join(p for p in parts if p)


def whole_view_alt(view: WholeView, what: str = "") -> str:
    """The alt text of a whole view: what it shows (``what``, e.g. "Test case 3"), its size, the
    region of interest boxed, the scale bar's length and where the spacing comes from."""
    from ..plots import scale_bar_mm

    if view.image is None:
        return view.missing
    head = ", ".join(p for p in (what, view_words(view)) if p)
    h, w = view.image.shape
    text = f"{head + ': ' if head else ''}the whole mammogram"
    text += (f", shrunk to {w} × {h} pixels from {view.full_shape[1]} × {view.full_shape[0]}"
             if view.scale > 1 else f", {w} × {h} pixels")
    if view.crop_box is not None:
        size = f" ({view.roi_mm:.0f} mm square)" if view.roi_mm is not None else ""
        text += f", the region of interest{size} boxed in yellow"
    if view.spacing_mm is not None:
        text += (f"; the white scale bar is {scale_bar_mm(view):g} mm, from the DICOM {view.spacing_tag} "
                 f"({view.spacing_mm[0]:.3g} mm per pixel of the full image)")
    else:
        text += "; no scale bar: the file records no pixel spacing"
    return text


def whole_view_html(view: WholeView, what: str = "", cls: str = "iaiabl-whole") -> str:
    """The whole view as HTML: a ``<figure>`` with the drawing of ``plots.plot_whole_view`` (a PNG
    data URI, its alt text :func:`whole_view_alt`) and a caption, or, without an image, a
    paragraph saying why."""
    esc = html.escape
    if view.image is None:
        return f"<p class='{cls} {cls}-missing'>{esc(view.missing)}</p>"
    from ..plots import figure_png, plot_whole_view

    fig = plot_whole_view(view)
    data = base64.b64encode(figure_png(fig, dpi=100)).decode("ascii")
    caption = ("The whole mammogram" + (f" ({esc(view_words(view))})" if view_words(view) else "")
               + (", shrunk" if view.scale > 1 else "") + "; the yellow box is the region of interest shown large.")
    if view.spacing_mm is None:
        caption += " No scale bar: the file records no pixel spacing."
    elif view.spacing_tag != "PixelSpacing":
        caption += (f" The scale bar comes from the detector's spacing ({esc(view.spacing_tag)}), "
                    "slightly larger than the breast's own.")
    return (f"<figure class='{cls}'><img src='data:image/png;base64,{data}' "
            f"alt='{esc(whole_view_alt(view, what), quote=True)}'><figcaption>{caption}</figcaption></figure>")


def other_views(ds, i: int) -> list[int]:
    """Rows of ``ds`` that show the same lesion as row ``i`` in another view: the same patient
    (``normalise_patient_id``), breast and abnormality number, another view. Empty when the
    manifest does not say (no patient, side or abnormality)."""
    from ..data.dataset import normalise_patient_id

    rows = getattr(ds, "manifest", None) or []
    if not rows:
        return []

    def key(r: dict) -> tuple[str, str, str] | None:
        parts = (normalise_patient_id(r.get("patient_id", "") or ""), str(r.get("side", "") or "").strip().upper(),
                 str(r.get("abnormality_id", "") or "").strip())
        return parts if all(parts) else None

    mine = key(rows[i])
    view = str(rows[i].get("view", "") or "").strip().upper()
    if mine is None:
        return []
    return [j for j, r in enumerate(rows) if j != i and key(r) == mine
            and str(r.get("view", "") or "").strip().upper() != view]
