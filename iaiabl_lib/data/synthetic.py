"""Procedural full-field mammograms written as a CBIS-DDSM-shaped tree.

The generator draws patients, breasts, masses and their CBIS-DDSM labels, renders each breast in
its CC and MLO views, and writes exactly what a TCIA NBIA download of the CBIS-DDSM mass subset
looks like (the two mass CSVs with the real header and quirks, the NBIA folder tree of DICOM files,
the NBIA ``metadata.csv`` manifest), plus one extra that CBIS-DDSM lacks: binary fine-annotation
masks of the margin-relevant region, referenced by an extra last CSV column.

Layout written under ``out_dir``::

    mass_case_description_train_set.csv
    mass_case_description_test_set.csv
    synthetic.json                     (the summary returned by make_synthetic)
    CBIS-DDSM/metadata.csv             (NBIA manifest, one row per series)
    CBIS-DDSM/<folder>/<study uid>/<series uid>/1-1.dcm   (1-2.dcm: second image of a series)

CSV cells name ``000000.dcm`` / ``000001.dcm``; on disk these are ``1-1.dcm`` / ``1-2.dcm``.

Quirks reproduced (an importer must cope with all of them):

* the ``ROI mask file path`` cell always ends in ``"\\n"`` (so the CSV quotes it); lines end in
  CRLF;
* the crop and the ROI mask usually share one series (``1-1.dcm`` + ``1-2.dcm``, in either order,
  so the file named by the crop column is the mask about half the time); in a few rows the CSV
  names ``000001.dcm`` in the crop column; in a few rows crop and mask sit in separate studies and
  series (each ``1-1.dcm``). Tell crop from mask by content: the mask is binary (0/255) and has the
  full image's size; the crop is smaller;
* some full images (and their crops) are MONOCHROME1, some carry RescaleSlope/RescaleIntercept
  other than 1/0, BitsStored is 12 or 16;
* margins outside the three studied classes (OBSCURED, MICROLOBULATED, combined like
  ``ILL_DEFINED-SPICULATED``, missing as ``NA`` or as an empty cell) make up about 20% of rows;
* fake PHI (PatientName, PatientBirthDate, InstitutionName, ...) in every DICOM file.

A hidden confounder can be injected (``confounder=P``): with probability P, each train-split ROI of
``confounder_class`` gets a bright burned-in label block in the full image, inside the importer's
crop square (centred on the lesion bounding box, side ``2 * max(bbox_h, bbox_w)``) but away from
the lesion. The marker is recorded nowhere in the CSVs; only its count is in the summary. Random
streams are split so that changing ``confounder`` changes nothing but the markers: the same seed
with and without a confounder gives paired data sets.

Intensity model (float image in [0, 1], 0 = black background, MONOCHROME2 sense): tissue and
masses are clipped to ``TISSUE_MAX`` (0.92); only confounder markers reach 1.0, i.e. the maximum
stored value.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "make_synthetic",
    "add_cli",
    "run_cli",
    "CSV_HEADER",
    "FINE_COLUMN",
    "CSV_NAMES",
    "MARGIN_NAMES",
    "SERIES_DESCRIPTIONS",
    "csv_path_to_file",
    "crop_square",
    "METADATA_COLUMNS",
    "MAIN_MARGINS",
    "SOP_CLASS_DM_PRESENTATION",
]

# ----------------------------------------------------------------------------------------------
# Constants: the CBIS-DDSM format
# ----------------------------------------------------------------------------------------------

#: The exact header of the real CBIS-DDSM mass CSVs (both train and test).
CSV_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]
#: Our extra last column (empty where a row has no fine annotation).
FINE_COLUMN = "fine annotation file path"
CSV_NAMES = {
    "train": "mass_case_description_train_set.csv",
    "test": "mass_case_description_test_set.csv",
}
FOLDER_PREFIX = {"train": "Mass-Training", "test": "Mass-Test"}
SERIES_DESCRIPTIONS = {
    "full": "full mammogram images",
    "crop": "cropped images",
    "mask": "ROI mask images",
    "fine": "fine annotation mask images",
}
METADATA_COLUMNS = [
    "Series UID", "Collection", "Subject ID", "Study UID", "Study Date", "Series Description",
    "Modality", "Number of Images", "File Location",
]
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."  # the root CBIS-DDSM's UIDs use
SOP_CLASS_DM_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography - For Presentation

#: Our margin names (the order used everywhere in the project) -> CBIS-DDSM margin strings.
MARGIN_NAMES = {"circumscribed": "CIRCUMSCRIBED", "indistinct": "ILL_DEFINED",
                "spiculated": "SPICULATED"}
MAIN_MARGINS = tuple(MARGIN_NAMES.values())
#: Fraction of malignant cases per margin (CBIS-DDSM train set for the three main classes).
MALIGNANT_FRACTION = {"CIRCUMSCRIBED": 0.10, "ILL_DEFINED": 0.63, "SPICULATED": 0.93,
                      "OBSCURED": 0.30, "MICROLOBULATED": 0.55, "COMBINED": 0.60, "NA": 0.40}
BENIGN_WITHOUT_CALLBACK_FRACTION = 0.15  # of benign cases
#: Fraction of abnormalities whose margin is not one of the three main classes.
MINOR_FRACTION = 0.20
#: Cycle of minority kinds (roughly CBIS-DDSM's proportions); "" is a missing (empty) cell.
MINOR_CYCLE = ["OBSCURED", "COMBINED", "MICROLOBULATED", "NA", "OBSCURED", "COMBINED",
               "OBSCURED", "MICROLOBULATED", "", "OBSCURED"]
COMBINED_MARGINS = [  # (string as spelled in CBIS-DDSM, weight)
    ("CIRCUMSCRIBED-ILL_DEFINED", 27), ("ILL_DEFINED-SPICULATED", 25),
    ("OBSCURED-ILL_DEFINED", 19), ("CIRCUMSCRIBED-OBSCURED", 19), ("OBSCURED-SPICULATED", 4),
    ("OBSCURED-ILL_DEFINED-SPICULATED", 4), ("MICROLOBULATED-ILL_DEFINED", 3),
    ("CIRCUMSCRIBED-MICROLOBULATED", 1),
]
SHAPES = {  # margin kind -> [(mass shape, weight)]
    "CIRCUMSCRIBED": [("OVAL", 5), ("ROUND", 3), ("LOBULATED", 2)],
    "ILL_DEFINED": [("IRREGULAR", 4), ("LOBULATED", 3), ("OVAL", 2), ("ROUND", 1)],
    "SPICULATED": [("IRREGULAR", 6), ("IRREGULAR-ARCHITECTURAL_DISTORTION", 3),
                   ("ARCHITECTURAL_DISTORTION", 1)],
    "OBSCURED": [("OVAL", 4), ("LOBULATED", 4), ("IRREGULAR", 2)],
    "MICROLOBULATED": [("LOBULATED", 5), ("OVAL", 3), ("IRREGULAR", 2)],
    "COMBINED": [("IRREGULAR", 5), ("LOBULATED", 4), ("OVAL", 1)],
    "NA": [("FOCAL_ASYMMETRIC_DENSITY", 3), ("ASYMMETRIC_BREAST_TISSUE", 3), ("LYMPH_NODE", 2),
           ("IRREGULAR", 1), ("NA", 1)],
}
DENSITY_WEIGHTS = [0.22, 0.44, 0.26, 0.08]  # breast_density 1..4

# Quirk proportions (per split, each at least once where the split has candidates)
P_BOTH_SIDES = 0.15        # patients with masses in both breasts
P_SECOND_MASS = 0.12       # breasts with a second mass (abnormality id 2)
P_SEPARATE_SERIES = 0.08   # crop and mask in separate studies/series (CBIS-DDSM: 7%)
P_CSV_SWAPPED = 0.05       # crop column names 000001.dcm, mask column 000000.dcm
P_MONOCHROME1 = 0.15       # full images stored inverted
P_RESCALE = 0.15           # full images with RescaleSlope/Intercept != 1/0
P_FINE_TRAIN = 0.30        # train rows with a fine annotation (test rows: all)

TISSUE_MAX = 0.92          # tissue + masses are clipped here; markers are 1.0
CONTRAST = (0.14, 0.30)    # range of the intensity a mass core adds (all margins alike)
MIN_SIZE = 128


# ----------------------------------------------------------------------------------------------
# The plan: who has what (labels, quirks, UIDs), before any pixel is drawn
# ----------------------------------------------------------------------------------------------

@dataclass
class Lesion:
    """One abnormality of one breast (shared by its CC and MLO rows)."""

    abn_id: int
    margin: str                   # CSV cell, e.g. "SPICULATED", "OBSCURED-ILL_DEFINED", "NA", ""
    shape: str                    # CSV 'mass shape'
    pathology: str                # MALIGNANT | BENIGN | BENIGN_WITHOUT_CALLBACK
    assessment: int               # BI-RADS 2..5
    subtlety: int                 # 1..5
    contrast: float               # peak added intensity of the mass core (float image units)

    @property
    def components(self) -> tuple[str, ...]:
        """Rendering components: the margin's parts, ('NA',) when missing."""
        return tuple(self.margin.split("-")) if self.margin not in ("", "NA") else ("NA",)


@dataclass
class Breast:
    """One breast of one patient: both views are rendered from it."""

    number: int                   # patient number -> "P_%05d"
    split: str                    # "train" | "test"
    side: str                     # "LEFT" | "RIGHT"
    density: int                  # breast_density 1..4
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        return f"P_{self.number:05d}"


@dataclass
class FullImage:
    """One full-field view: its NBIA location and how its pixels are stored."""

    breast: Breast
    view: str                     # "CC" | "MLO"
    folder: str                   # e.g. "Mass-Training_P_00001_LEFT_CC"
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str               # DICOM DA
    monochrome1: bool
    bits_stored: int              # 12 | 16
    slope: float
    intercept: float


@dataclass
class RoiRow:
    """One CSV row: one lesion in one view, with its crop / mask / fine-mask files."""

    image: FullImage
    lesion: Lesion
    folder: str                   # e.g. "Mass-Training_P_00001_LEFT_CC_1"
    separate: bool                # crop and mask in separate studies/series
    mask_first: bool              # shared series: 1-1.dcm is the mask, 1-2.dcm the crop
    csv_swapped: bool             # shared series: crop column names 000001.dcm
    fine: bool                    # has a fine annotation
    confounder: bool = False      # a marker is to be drawn (may still fail to fit)
    uids: dict = field(default_factory=dict)   # study/series/sop UIDs per file kind
    placed: bool = False          # the marker was drawn

    @property
    def split(self) -> str:
        return self.image.breast.split


def _uid(rng: np.random.Generator) -> str:
    """A CBIS-DDSM-looking UID: the 9590 root + 37..39 digits, no leading zero (<= 64 chars)."""
    n = int(rng.integers(37, 40))
    digits = rng.integers(0, 10, size=n)
    digits[0] = rng.integers(1, 10)
    return UID_ROOT + "".join(map(str, digits))


def _weighted(rng: np.random.Generator, options: list[tuple[str, float]]) -> str:
    names, weights = zip(*options)
    p = np.asarray(weights, float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _flags(rng: np.random.Generator, n: int, fraction: float, minimum: int = 1) -> np.ndarray:
    """A bool array of length n with about ``fraction`` True (at least ``minimum`` where n allows),
    at random positions. Used so that every quirk appears even in tiny data sets."""
    k = min(n, max(minimum, int(round(fraction * n)))) if n else 0
    out = np.zeros(n, bool)
    if k:
        out[rng.choice(n, size=k, replace=False)] = True
    return out


def _plan_breasts(rng: np.random.Generator, patients: int, test_fraction: float) -> list[Breast]:
    """Patients (numbered with gaps, like CBIS-DDSM), their split, breasts and abnormalities."""
    numbers = np.cumsum(rng.integers(1, 4, size=patients))
    n_test = int(round(test_fraction * patients))
    if patients >= 2:
        n_test = min(max(n_test, 1), patients - 1)
    is_test = np.zeros(patients, bool)
    is_test[rng.choice(patients, size=n_test, replace=False)] = True
    breasts = []
    for number, test in zip(numbers, is_test):
        if rng.random() < P_BOTH_SIDES:
            sides = ["LEFT", "RIGHT"]
        else:
            sides = [str(rng.choice(["LEFT", "RIGHT"]))]
        for side in sides:
            density = int(rng.choice(4, p=DENSITY_WEIGHTS)) + 1
            n_lesions = 2 if rng.random() < P_SECOND_MASS else 1
            breast = Breast(int(number), "test" if test else "train", side, density)
            breast.lesions = [Lesion(i + 1, "", "", "", 0, 0, 0.0) for i in range(n_lesions)]
            breasts.append(breast)
    return breasts


def _family(margin: str) -> str:
    """Margin cell -> key of SHAPES / MALIGNANT_FRACTION."""
    if margin in ("", "NA"):
        return "NA"
    return margin if margin in SHAPES else "COMBINED"


def _assign_labels(rng: np.random.Generator, breasts: list[Breast]) -> None:
    """Per split: margins (balanced over the three main classes, ~20% minority), malignancy
    (exactly CBIS-DDSM's fraction per margin, up to rounding), then shape, assessment, contrast
    and subtlety of every lesion."""
    for split in ("train", "test"):
        lesions = [les for b in breasts if b.split == split for les in b.lesions]
        n = len(lesions)
        n_minor = int(round(MINOR_FRACTION * n))
        main = [MAIN_MARGINS[i % 3] for i in rng.permutation(n - n_minor)]
        kinds = main + [MINOR_CYCLE[i % len(MINOR_CYCLE)] for i in range(n_minor)]
        for lesion, idx in zip(lesions, rng.permutation(n)):
            kind = kinds[idx]
            lesion.margin = _weighted(rng, COMBINED_MARGINS) if kind == "COMBINED" else kind
        groups: dict[str, list[Lesion]] = {}
        for lesion in lesions:
            groups.setdefault(_family(lesion.margin), []).append(lesion)
        for family in sorted(groups):
            group = groups[family]
            malignant = _flags(rng, len(group), MALIGNANT_FRACTION[family], minimum=0)
            for lesion, is_malignant in zip(group, malignant):
                lesion.shape = _weighted(rng, SHAPES[family])
                if is_malignant:
                    lesion.pathology = "MALIGNANT"
                    lesion.assessment = int(rng.choice([3, 4, 5], p=[0.1, 0.5, 0.4]))
                else:
                    lesion.pathology = ("BENIGN_WITHOUT_CALLBACK"
                                        if rng.random() < BENIGN_WITHOUT_CALLBACK_FRACTION
                                        else "BENIGN")
                    lesion.assessment = int(rng.choice([2, 3, 4], p=[0.2, 0.4, 0.4]))
                lesion.contrast = float(rng.uniform(CONTRAST[0], CONTRAST[1]))
                level = 1 + int(5 * (lesion.contrast - CONTRAST[0]) / (CONTRAST[1] - CONTRAST[0]))
                lesion.subtlety = int(np.clip(level + rng.integers(-1, 2), 1, 5))


def _plan_files(rng: np.random.Generator, uid_rng: np.random.Generator,
                breasts: list[Breast]) -> tuple[list[FullImage], list[RoiRow]]:
    """Full images and CSV rows (sorted as CBIS-DDSM: patient, side, view, abnormality id),
    their storage quirks, fine-annotation flags and UIDs."""
    breasts = sorted(breasts, key=lambda b: (b.number, b.side))
    images: list[FullImage] = []
    rows: list[RoiRow] = []
    for breast in breasts:
        for view in ("CC", "MLO"):
            folder = f"{FOLDER_PREFIX[breast.split]}_{breast.patient_id}_{breast.side}_{view}"
            year, month, day = rng.integers(1998, 2008), rng.integers(1, 13), rng.integers(1, 29)
            image = FullImage(breast, view, folder, _uid(uid_rng), _uid(uid_rng), _uid(uid_rng),
                              f"{year}{month:02d}{day:02d}", False, int(rng.choice([12, 16])),
                              1.0, 0.0)
            images.append(image)
            for lesion in breast.lesions:
                rows.append(RoiRow(image, lesion, f"{folder}_{lesion.abn_id}", False,
                                   bool(rng.random() < 0.5), False, False))
    for split in ("train", "test"):
        imgs = [im for im in images if im.breast.split == split]
        for im, mono, resc in zip(imgs, _flags(rng, len(imgs), P_MONOCHROME1),
                                  _flags(rng, len(imgs), P_RESCALE)):
            im.monochrome1 = bool(mono)
            if resc:
                im.slope = float(rng.choice([0.5, 2.0, 4.0]))
                im.intercept = float(rng.choice([-1024.0, -100.0, 0.0, 50.0]))
        split_rows = [r for r in rows if r.split == split]
        separate = _flags(rng, len(split_rows), P_SEPARATE_SERIES)
        for r, sep in zip(split_rows, separate):
            r.separate = bool(sep)
        shared = [r for r in split_rows if not r.separate]
        for r, sw in zip(shared, _flags(rng, len(shared), P_CSV_SWAPPED)):
            r.csv_swapped = bool(sw)
        # at least one row whose crop column names the mask file, and one the other way round
        if shared and not any(r.mask_first != r.csv_swapped for r in shared):
            shared[0].mask_first = not shared[0].csv_swapped
        if len(shared) > 1 and all(r.mask_first != r.csv_swapped for r in shared):
            shared[-1].mask_first = shared[-1].csv_swapped
        if split == "test":
            for r in split_rows:
                r.fine = True
        else:  # ~30% of train rows, stratified by margin
            by_margin: dict[str, list[RoiRow]] = {}
            for r in split_rows:
                by_margin.setdefault(r.lesion.margin, []).append(r)
            for margin in sorted(by_margin):
                group = by_margin[margin]
                for r, f in zip(group, _flags(rng, len(group), P_FINE_TRAIN)):
                    r.fine = bool(f)
    for r in rows:  # UIDs in row order (deterministic)
        kinds = ["crop", "mask"] if r.separate else ["roi"]
        for kind in kinds + (["fine"] if r.fine else []):
            r.uids[kind] = {"study": _uid(uid_rng), "series": _uid(uid_rng)}
        r.uids["sop_crop"], r.uids["sop_mask"] = _uid(uid_rng), _uid(uid_rng)
        if r.fine:
            r.uids["sop_fine"] = _uid(uid_rng)
    return images, rows


# ----------------------------------------------------------------------------------------------
# Rendering: breast tissue, masses, markers (all float32 images in [0, 1], LEFT orientation:
# chest wall at x = 0; RIGHT breasts are mirrored at the end)
# ----------------------------------------------------------------------------------------------

@dataclass
class BreastGeometry:
    """Half-ellipse breast outline of one view: centre row cy, vertical semi-axis ay, depth bx
    (from the chest wall at x = 0); MLO views add a pectoral triangle (pw wide, ph high)."""

    cy: float
    ay: float
    bx: float
    pw: float = 0.0
    ph: float = 0.0

    def rho(self, y, x):
        """Normalised elliptic radius: < 1 inside the breast."""
        return np.sqrt(((y - self.cy) / self.ay) ** 2 + (x / self.bx) ** 2)

    def in_pectoral(self, y, x, margin: float = 0.0):
        if self.pw <= 0:
            return np.zeros(np.broadcast(y, x).shape, bool)
        return x / (self.pw + margin) + y / (self.ph + margin) < 1.0

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        """(u depth fraction, v vertical fraction of the local half-height) -> (y, x) px."""
        return self.cy + v * self.ay * np.sqrt(max(1.0 - u * u, 1e-3)), u * self.bx


@dataclass
class MassSpec:
    """Physical parameters of one mass, shared by its CC and MLO views. Lengths in px."""

    radius: float                 # mean boundary radius along the major axis
    aspect: float                 # minor / major axis, (0, 1]
    orientation: float            # rad, major axis direction
    harmonics: np.ndarray         # (K, 3): frequency k, relative amplitude, phase
    contrast: float
    edge_width: float             # logistic scale of the boundary falloff
    edge_wobble: np.ndarray       # (K2, 3): angular modulation of edge_width
    spicules: np.ndarray          # (n, 4): angle, length beyond boundary, base width, intensity
    obscuring: float              # amplitude of an overlying tissue patch (OBSCURED), 0 = none
    obscure_angle: float
    ring_band: float              # half-width of the fine-mask boundary ring, 0 = no ring

    @property
    def extent(self) -> float:
        """Radius (px) of a disc that holds the mass, its falloff and its spicules."""
        boundary = self.radius * (1.0 + np.abs(self.harmonics[:, 1]).sum())
        spic = self.spicules[:, 1].max() if len(self.spicules) else 0.0
        return boundary + max(6.0 * self.edge_width, spic + 2.0, 0.6 * self.radius) + 3.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    """Unit-variance gaussian-filtered white noise (H, W) with correlation length ``sigma`` px
    (scalar or per axis), filtered at reduced resolution and bilinearly upsampled (fast)."""
    sigma = np.broadcast_to(np.asarray(sigma, float), (2,))
    factor = np.maximum(1, np.floor(sigma / 2.0)).astype(int)
    small_shape = tuple(int(np.ceil(s / f)) + 2 for s, f in zip(shape, factor))
    small = ndimage.gaussian_filter(rng.standard_normal(small_shape).astype(np.float32),
                                    sigma / factor, mode="wrap")
    small /= small.std() + 1e-8
    if np.all(factor == 1):
        return small[: shape[0], : shape[1]]
    big = ndimage.zoom(small, factor, order=1, grid_mode=False)
    return big[: shape[0], : shape[1]]


def _breast_geometry(rng: np.random.Generator, view: str, H: int, W: int) -> BreastGeometry:
    """A random breast outline for a CC or MLO view of an (H, W) image."""
    if view == "CC":
        return BreastGeometry(cy=H * rng.uniform(0.47, 0.53), ay=H * rng.uniform(0.37, 0.44),
                              bx=W * rng.uniform(0.72, 0.92))
    return BreastGeometry(cy=H * rng.uniform(0.50, 0.56), ay=H * rng.uniform(0.42, 0.47),
                          bx=W * rng.uniform(0.75, 0.95), pw=W * rng.uniform(0.22, 0.40),
                          ph=H * rng.uniform(0.32, 0.55))


def _upsample2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fast 2x bilinear upsampling of a (h, w) grid sampled at even pixels -> ``shape``."""
    h, w = a.shape
    rows = np.empty((2 * h - 1, w), a.dtype)
    rows[0::2] = a
    rows[1::2] = 0.5 * (a[:-1] + a[1:])
    out = np.empty((2 * h - 1, 2 * w - 1), a.dtype)
    out[:, 0::2] = rows
    out[:, 1::2] = 0.5 * (rows[:, :-1] + rows[:, 1:])
    return out[: shape[0], : shape[1]]


def _bilinear(field: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Bilinear sampling of field (h, w) at fractional indices iy, ix (any equal shapes),
    clamped at the borders."""
    h, w = field.shape
    iy = np.clip(iy, 0, h - 1.001)
    ix = np.clip(ix, 0, w - 1.001)
    y0, x0 = iy.astype(np.intp), ix.astype(np.intp)
    fy, fx = iy - y0, ix - x0
    flat = field.ravel()
    i00 = y0 * w + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bottom = flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx
    return top * (1 - fy) + bottom * fy


def _render_tissue(rng: np.random.Generator, geom: BreastGeometry, density: int,
                   H: int, W: int) -> np.ndarray:
    """Breast on black background: fat, glandular patches, fibrous strands converging to the
    nipple, thickness falloff, pectoral muscle (MLO), skin line, fine texture and quantum noise.
    Smooth fields are computed on every second pixel and upsampled. -> (H, W) float32."""
    # --- smooth fields on the half-resolution grid (pixels 0, 2, 4, ...) ---
    y = np.arange(0, H + 1, 2, dtype=np.float32)[:, None]               # (h, 1)
    x = np.arange(0, W + 1, 2, dtype=np.float32)[None, :]               # (1, w)
    u = np.clip(x / geom.bx, 0.0, 0.999)                                # depth fraction (1, w)
    v = np.clip((y - geom.cy) / (geom.ay * np.sqrt(1.0 - u * u)), -1.0, 1.0)   # (h, w)
    u = np.broadcast_to(u, v.shape)
    # fields in breast coordinates (rows: v, cols: u): strands converge to the nipple (u = 1)
    gland = _smooth_noise(rng, (96, 64), (5.0, 4.0))                    # (96, 64)
    strands = _smooth_noise(rng, (256, 48), (1.4, 7.0))                 # (256, 48) streaks along u
    iv = (v + 1) * 0.5
    gland_px = _bilinear(gland, iv * 95, u * 63)
    warp = _bilinear(gland, iv * 95, (1 - u) * 63)                      # wavy strands
    strand_px = _bilinear(strands, iv * 255 + 4.0 * warp, u * 47)
    glandular = [0.15, 0.30, 0.50, 0.70][density - 1]
    gland_w = 1.0 / (1.0 + np.exp(-(1.6 * gland_px + 3.0 * (glandular - 0.5))))  # (h, w) in (0, 1)
    gland_w *= np.clip(1.15 - u, 0.0, 1.0) ** 0.7                       # glands towards the chest
    tissue = 0.24 + 0.22 * glandular * gland_w + 0.02 * np.maximum(strand_px - 1.0, 0)
    rho = geom.rho(y, x)                                                # (h, w)
    tissue *= 0.55 + 0.45 * np.sqrt(np.clip(1.0 - rho ** 2, 0.0, 1.0)) ** 0.6   # thickness
    if geom.pw > 0:  # pectoral muscle, soft edge over ~2 px
        dist = (1.0 - x / geom.pw - y / geom.ph) / np.hypot(1 / geom.pw, 1 / geom.ph)
        pec = 1.0 / (1.0 + np.exp(-dist / 1.5))
        tissue = tissue * (1.0 - pec) + rng.uniform(0.42, 0.52) * pec
    tissue = _upsample2(tissue.astype(np.float32), (H, W))               # (H, W)
    # --- full resolution: outline, skin line, texture, noise ---
    yf = ((np.arange(H, dtype=np.float32) - geom.cy) / geom.ay)[:, None] ** 2
    xf = (np.arange(W, dtype=np.float32) / geom.bx)[None, :] ** 2
    edge = (1.0 - np.sqrt(yf + xf)) * min(geom.ay, geom.bx)            # ~px inside the outline
    skin = np.clip(1.0 - ((edge - 2.0) / 2.5) ** 2, 0.0, None)         # bump 2 px inside
    tissue += 0.06 * skin * skin                                        # skin line
    alpha = np.clip(edge / 1.5 + 0.5, 0.0, 1.0)                         # anti-aliased outline
    noise = rng.standard_normal((H, W), dtype=np.float32)
    texture = ndimage.gaussian_filter(noise, max(1.0, H / 400))
    tissue += 0.025 * texture - 0.02                                    # fine texture
    tissue *= alpha
    tissue += 0.02 + 0.006 * noise                                      # background, quantum noise
    return tissue


def _mass_spec(rng: np.random.Generator, lesion: Lesion, H: int, n_lesions: int = 1) -> MassSpec:
    """Geometry and appearance of a mass from its margin components and shape (radius 4-8% of
    the image height; 4-5.5% where the breast holds two masses, so that both fit apart)."""
    comps = lesion.components
    R = H * rng.uniform(0.04, 0.08 if n_lesions == 1 else 0.055)
    shape = lesion.shape
    if "ARCHITECTURAL_DISTORTION" == shape:
        R *= 0.7
    low, high = {"ROUND": (0.85, 1.0), "OVAL": (0.55, 0.8)}.get(shape.split("-")[0], (0.65, 1.0))
    aspect = rng.uniform(low, high)
    harm = [(2, 0.02, 0.0)]
    if "LOBULATED" in shape:
        harm.append((int(rng.integers(3, 6)), rng.uniform(0.06, 0.11), rng.uniform(0, 2 * np.pi)))
    if "IRREGULAR" in shape or "ASYMMETRIC" in shape or shape == "NA":
        for k in range(2, 7):
            harm.append((k, rng.uniform(0.015, 0.05), rng.uniform(0, 2 * np.pi)))
    if "MICROLOBULATED" in comps:
        harm.append((int(rng.integers(10, 17)), rng.uniform(0.04, 0.07), rng.uniform(0, 2 * np.pi)))
    # boundary sharpness: the main margin cue
    if comps == ("CIRCUMSCRIBED",) or comps == ("MICROLOBULATED",) or comps == (
            "CIRCUMSCRIBED", "MICROLOBULATED"):
        edge = max(0.45, R * rng.uniform(0.015, 0.035))
    elif "ILL_DEFINED" in comps and "CIRCUMSCRIBED" in comps:
        edge = R * rng.uniform(0.08, 0.15)
    elif "ILL_DEFINED" in comps:
        edge = R * rng.uniform(0.20, 0.35)
    elif "SPICULATED" in comps:
        edge = max(0.6, R * rng.uniform(0.04, 0.08))
    elif "OBSCURED" in comps:
        edge = R * rng.uniform(0.06, 0.15)
    else:  # NA
        edge = R * rng.uniform(0.05, 0.2)
    wobble = np.zeros((0, 3))
    if "ILL_DEFINED" in comps:
        wobble = np.array([(k, rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi))
                           for k in (2, 3, 5)])
    spicules = np.zeros((0, 4))
    if "SPICULATED" in comps:
        n = int(rng.integers(12, 23)) if comps == ("SPICULATED",) else int(rng.integers(6, 12))
        if "ARCHITECTURAL_DISTORTION" in shape:
            n += 4
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        spicules = np.stack([
            angles,
            R * rng.uniform(0.6, 1.05, n) * (1.3 if shape == "ARCHITECTURAL_DISTORTION" else 1.0),
            np.maximum(1.3, R * rng.uniform(0.06, 0.09, n)),
            np.maximum(0.10, lesion.contrast * rng.uniform(0.6, 0.95, n)),
        ], axis=1)
    obscuring = rng.uniform(0.6, 1.0) if "OBSCURED" in comps else 0.0
    if comps == ("SPICULATED",):
        ring = 0.0
    else:
        ring = max(1.5, 0.12 * R, 1.5 * edge)
    return MassSpec(R, aspect, rng.uniform(0, np.pi), np.array(harm, float), lesion.contrast, edge,
                    wobble, spicules, obscuring, rng.uniform(0, 2 * np.pi), ring)


def _angular(series: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k theta + phi_k) for series (K, 3) rows (k, a, phi); theta any shape."""
    out = np.zeros_like(theta)
    for k, a, phi in series:
        out += a * np.cos(k * theta + phi)
    return out


def _render_mass(rng: np.random.Generator, spec: MassSpec, cy: float, cx: float, rot: float,
                 H: int, W: int):
    """Render one mass in a window around (cy, cx).

    Returns (window slices, intensity (h, w) float32, lesion mask (h, w) bool, fine mask (h, w)
    bool, footprint (h, w) bool: where the mass adds at least a quarter of its contrast)."""
    e = spec.extent
    y0, y1 = max(0, int(cy - e)), min(H, int(cy + e) + 2)
    x0, x1 = max(0, int(cx - e)), min(W, int(cx + e) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)                  # (h, w)
    dy, dx = yy - cy, xx - cx
    phi = spec.orientation + rot
    c, s = np.cos(phi), np.sin(phi)
    xr = c * dx + s * dy                                                # along the major axis
    yr = (-s * dx + c * dy) / spec.aspect
    r = np.hypot(xr, yr)
    theta = np.arctan2(yr, xr)
    R_theta = spec.radius * (1.0 + _angular(spec.harmonics, theta))
    # signed distance to the boundary, px: (r - R_theta) / |grad r| (exact for an ellipse along
    # the normal, ignores the small angular slope of the harmonics; no singularity at the centre)
    rs = np.maximum(r, 1e-3)
    grad_r = np.hypot((xr * c - yr * s / spec.aspect) / rs, (xr * s + yr * c / spec.aspect) / rs)
    grad_r = np.clip(grad_r, 1.0, 1.0 / spec.aspect)                   # in [1, 1/aspect]
    d = (r - R_theta) / grad_r
    width = spec.edge_width * (1.0 + _angular(spec.edge_wobble, theta))
    body = 1.0 / (1.0 + np.exp(np.clip(d / width, -50, 50)))           # 1 inside, 0 outside
    dome = 0.75 + 0.25 * np.sqrt(np.clip(1.0 - (r / R_theta) ** 2, 0.0, 1.0))
    texture = 1.0 + 0.08 * _smooth_noise(rng, yy.shape, max(1.0, spec.radius / 5))
    intensity = spec.contrast * body * dome * texture
    lesion = d <= 0
    fine = np.abs(d) <= spec.ring_band if spec.ring_band > 0 else np.zeros_like(lesion)
    if len(spec.spicules):
        spic, spic_fine = _render_spicules(spec, phi, dx, dy)
        intensity = np.maximum(intensity, spic)
        fine |= spic_fine
    if spec.obscuring > 0:  # overlying dense tissue hides part of the boundary
        oy = cy + spec.radius * np.sin(spec.obscure_angle)
        ox = cx + spec.radius * np.cos(spec.obscure_angle)
        blob = np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * (0.7 * spec.radius) ** 2))
        patch = 1.0 + 0.5 * _smooth_noise(rng, yy.shape, max(1.0, spec.radius / 4))
        intensity = intensity + spec.obscuring * spec.contrast * blob * np.clip(patch, 0, None)
    footprint = intensity > 0.25 * spec.contrast                       # the visible mass
    # The lesion-scale annotation outlines the whole mass with its margin, as a radiologist's ROI
    # does: the core, the boundary band and the spicules. So the fine (margin-relevant) region lies
    # inside the lesion region, the hierarchy the fine-annotation loss and Eq. 9 assume.
    lesion = lesion | fine
    return (slice(y0, y1), slice(x0, x1)), intensity.astype(np.float32), lesion, fine, footprint


def _render_spicules(spec: MassSpec, phi: float, dx: np.ndarray, dy: np.ndarray):
    """Thin tapered bright lines radiating from the boundary, each computed in its own bounding
    box. dx, dy (h, w): pixel offsets from the mass centre. -> (intensity (h, w), fine (h, w))."""
    ang, length, base_w, amp = spec.spicules.T                          # (n,) each
    bend = 0.15 * np.sin(3.7 * ang + 1.3)                               # direction jitter
    Rb = spec.radius * (1.0 + _angular(spec.harmonics, ang))            # boundary radius at ang
    bx_, by_ = Rb * np.cos(ang), Rb * np.sin(ang) * spec.aspect         # mass frame
    c, s = np.cos(phi), np.sin(phi)
    px, py = c * bx_ - s * by_, s * bx_ + c * by_                       # image frame, (n,)
    out_ang = np.arctan2(py, px) + bend
    sx, sy = 0.8 * px, 0.8 * py                                         # start inside the core
    vx, vy = px + length * np.cos(out_ang) - sx, py + length * np.sin(out_ang) - sy
    band = max(1.0, 0.04 * spec.radius)                                 # fine-mask margin
    inten = np.zeros(dx.shape, np.float32)
    fine = np.zeros(dx.shape, bool)
    ox, oy = dx[0, 0], dy[0, 0]                                         # offsets of pixel (0, 0)
    h, w = dx.shape
    for i in range(len(ang)):
        pad = base_w[i] + band + 2
        c0 = int(max(0, np.floor(min(sx[i], sx[i] + vx[i]) - pad - ox)))
        c1 = int(min(w, np.ceil(max(sx[i], sx[i] + vx[i]) + pad - ox) + 1))
        r0 = int(max(0, np.floor(min(sy[i], sy[i] + vy[i]) - pad - oy)))
        r1 = int(min(h, np.ceil(max(sy[i], sy[i] + vy[i]) + pad - oy) + 1))
        if c1 <= c0 or r1 <= r0:
            continue
        qx, qy = dx[r0:r1, c0:c1] - sx[i], dy[r0:r1, c0:c1] - sy[i]     # (bh, bw)
        t = np.clip((qx * vx[i] + qy * vy[i]) / (vx[i] ** 2 + vy[i] ** 2), 0.0, 1.0)
        dist = np.hypot(qx - t * vx[i], qy - t * vy[i])
        half = 0.5 * base_w[i] * (1.0 - 0.6 * t)                        # tapering half-width
        line = amp[i] * (1.0 - 0.7 * t) * np.exp(-0.5 * (dist / (0.6 * half)) ** 2)
        np.maximum(inten[r0:r1, c0:c1], line, out=inten[r0:r1, c0:c1])
        fine[r0:r1, c0:c1] |= (dist <= half + band) & (t > 0.0)
    return inten, fine


_GLYPHS = [  # 5 x 3 letter bitmaps for the vendor-label-like marker
    np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]]),   # R
    np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]]),   # L
    np.array([[0, 1, 0], [1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 0, 1]]),   # A
]


def crop_square(mask: np.ndarray, floor: int = 0) -> tuple[int, int, int]:
    """The importer's crop square of a lesion mask (docs/INTERFACES.md §1): ``(top, left, side)``
    covering rows ``top .. top + side - 1``; bbox ends exclusive, ``side = max(floor, 2 *
    max(bbox_h, bbox_w))``, centred on the bbox centre (``top = floor(centre - side / 2)``)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(floor, 2 * max(y1 - y0, x1 - x0))
    return (int(np.floor((y0 + y1) / 2 - side / 2)), int(np.floor((x0 + x1) / 2 - side / 2)),
            int(side))


def _draw_marker(rng: np.random.Generator, img: np.ndarray, lesion_mask: np.ndarray,
                 forbidden: np.ndarray, mirrored: bool = False) -> bool:
    """Burn a bright label block (value 1.0, a dark letter inside when large enough) into ``img``
    inside the crop square of ``lesion_mask`` (2 px in, so that rounding and mirroring never push
    it out) and off ``forbidden`` (H, W) bool. ``mirrored``: the image will be flipped left-right
    (RIGHT breasts), so the letter is drawn flipped to read correctly. -> placed?"""
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
        block = np.ones((h, w), np.float32)
        glyph = _GLYPHS[int(rng.integers(len(_GLYPHS)))]
        glyph = glyph[:, ::-1] if mirrored else glyph
        k = (h - 2) // 5
        if k >= 1 and 3 * k <= w - 2:
            big = np.kron(glyph, np.ones((k, k)))
            gy, gx = (h - big.shape[0]) // 2, (w - big.shape[1]) // 2
            block[gy:gy + big.shape[0], gx:gx + big.shape[1]][big > 0] = 0.08
        img[y:y + h, x:x + w] = block
        return True
    return False


def _place_lesions(rng: np.random.Generator, geoms: dict[str, BreastGeometry],
                   specs: list[MassSpec]) -> dict[str, list[tuple[float, float]]]:
    """Centres (y, x) px of every mass in both views: inside the breast with room for the crop
    square, off the pectoral muscle, apart from each other; MLO position = CC position jittered."""

    def ok(geom, y, x, R, placed, relax):
        e = 2.0 * R * relax                 # crop-square half-side is about 2 R
        ys = np.array([y - e, y + e, y, y, y])
        xs = np.array([x, x, x - e, x + e, x])
        if (xs < 2).any() or (geom.rho(ys, xs) > 0.98).any():
            return False
        if geom.in_pectoral(np.array([y - e, y]), np.array([x, x - e]), margin=3.0).any():
            return False
        return all(max(abs(y - py), abs(x - px)) > 2.1 * relax * (R + pR) for py, px, pR in placed)

    out: dict[str, list[tuple[float, float]]] = {"CC": [], "MLO": []}
    placed: dict[str, list[tuple[float, float, float]]] = {"CC": [], "MLO": []}  # (y, x, R)
    for spec in specs:
        R = spec.radius * (1.0 + np.abs(spec.harmonics[:, 1]).sum())   # largest boundary radius
        for attempt in range(600):
            relax = 1.0 if attempt < 300 else 0.75
            u, v = rng.uniform(0.15, 0.75), rng.uniform(-0.7, 0.7)
            cc = geoms["CC"].to_pixel(u, v)
            um = float(np.clip(u + rng.normal(0, 0.07), 0.15, 0.75))
            vm = float(np.clip(v + rng.normal(0, 0.12), -0.7, 0.7))
            mlo = geoms["MLO"].to_pixel(um, vm)
            if (ok(geoms["CC"], *cc, R, placed["CC"], relax)
                    and ok(geoms["MLO"], *mlo, R, placed["MLO"], relax)):
                break
        # (after 600 tries the last candidate is kept: rare, only for extreme geometries)
        for view, pos in (("CC", cc), ("MLO", mlo)):
            out[view].append(pos)
            placed[view].append((pos[0], pos[1], R))
    return out


@dataclass
class RenderedView:
    """One rendered view. image (H, W) float32 in [0, 1]; per lesion (H, W) bool masks."""

    image: np.ndarray
    lesion_masks: list[np.ndarray]
    fine_masks: list[np.ndarray]
    footprints: list[np.ndarray]


def _render_breast(seed: int, breast: Breast, H: int, W: int) -> dict[str, RenderedView]:
    """Both views of one breast, in LEFT orientation (mirroring happens at write time)."""
    side_idx = 0 if breast.side == "LEFT" else 1
    rng = np.random.default_rng([seed, 1, breast.number, side_idx])
    geoms = {view: _breast_geometry(rng, view, H, W) for view in ("CC", "MLO")}
    specs = [_mass_spec(rng, les, H, len(breast.lesions)) for les in breast.lesions]
    positions = _place_lesions(rng, geoms, specs)
    views = {}
    for view in ("CC", "MLO"):
        img = _render_tissue(rng, geoms[view], breast.density, H, W)
        rot = 0.0 if view == "CC" else rng.uniform(-0.35, 0.35)
        lesions, fines, prints = [], [], []
        for spec, (cy, cx) in zip(specs, positions[view]):
            win, inten, les, fine, foot = _render_mass(rng, spec, cy, cx, rot, H, W)
            img[win] += inten
            for store, local in ((lesions, les), (fines, fine), (prints, foot)):
                full = np.zeros((H, W), bool)
                full[win] = local
                store.append(full)
        np.clip(img, 0.0, TISSUE_MAX, out=img)
        views[view] = RenderedView(img, lesions, fines, prints)
    return views


def _place_markers(seed: int, breast: Breast, view: str, rendered: RenderedView,
                   rows: list[RoiRow]) -> None:
    """Draw the confounder markers of this view's rows (row.confounder) and set row.placed."""
    H, W = rendered.image.shape
    for i, row in enumerate(rows):
        if not row.confounder:
            continue
        rng = np.random.default_rng([seed, 3, breast.number, int(breast.side == "RIGHT"),
                                     int(view == "MLO"), row.lesion.abn_id])
        forbidden = np.zeros((H, W), bool)
        for j, other in enumerate(rows):
            if j == i:
                radius = max(2, int(round(0.15 * np.sqrt(rendered.lesion_masks[j].sum() / np.pi))))
                forbidden |= ndimage.binary_dilation(rendered.footprints[j], iterations=radius)
            else:  # keep out of the other lesions' crops (importer floor of 64 px), +2 px
                top, left, side = crop_square(rendered.lesion_masks[j], floor=64)
                forbidden[max(0, top - 2):max(0, top + side + 2),
                          max(0, left - 2):max(0, left + side + 2)] = True
        row.placed = _draw_marker(rng, rendered.image, rendered.lesion_masks[i], forbidden,
                                  mirrored=breast.side == "RIGHT")


# ----------------------------------------------------------------------------------------------
# DICOM writing
# ----------------------------------------------------------------------------------------------

def _to_stored(img01: np.ndarray, image: FullImage) -> np.ndarray:
    """Float image in [0, 1] (MONOCHROME2 sense) -> stored uint16 values of this full image."""
    maxv = (1 << image.bits_stored) - 1
    stored = np.rint(np.clip(img01, 0.0, 1.0) * maxv).astype(np.uint16)
    if image.monochrome1:
        stored = (maxv - stored).astype(np.uint16)
    return stored


def _fake_phi(breast: Breast) -> dict:
    """Identifying-looking (but fake) attributes an importer must strip."""
    n = breast.number
    return {
        "PatientName": f"SYNTHETIC^JANE^{n:05d}",
        "PatientBirthDate": f"19{40 + n % 40:02d}{1 + n % 12:02d}{1 + n % 28:02d}",
        "PatientSex": "F",
        "PatientAge": f"{45 + n % 35:03d}Y",
        "PatientAddress": f"{n} Synthetic Lane, Nowhere",
        "OtherPatientIDs": f"MRN{n * 7919 % 1000000:06d}",
        "InstitutionName": "Synthetic General Hospital",
        "InstitutionAddress": "1 Procedural Road, Simulated City",
        "ReferringPhysicianName": "DOE^JOHN",
        "OperatorsName": "ROE^RICHARD",
        "AccessionNumber": f"A{n * 104729 % 10000000:07d}",
        "StationName": "SYNTH-MG-01",
    }


def _base_dataset(image: FullImage, spacing_mm: float):
    """The attributes every file derived from one full image shares (patient, fake PHI, dates,
    laterality, view, pixel geometry). Copied per file by :func:`_write_dicom`."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    breast = image.breast
    ds.SOPClassUID = SOP_CLASS_DM_PRESENTATION
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = image.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = "MG"
    ds.Manufacturer = "IAIA-BL synthetic"
    ds.StudyDescription = "MAMMOGRAM"
    for key, value in _fake_phi(breast).items():
        setattr(ds, key, value)
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = ds.Laterality = breast.side[0]
    ds.ViewPosition = image.view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SeriesNumber = 1
    ds.PixelSpacing = [f"{spacing_mm:.4f}"] * 2
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    return ds


def _write_dicom(path: Path, pixels: np.ndarray, base, *, image: FullImage, patient_id: str,
                 study_uid: str, series_uid: str, sop_uid: str, description: str,
                 instance: int, stored_like_image: bool) -> None:
    """Write one DICOM file (Explicit VR Little Endian, DM For Presentation). pixels (h, w)
    uint16, stored as they are; ``base`` from :func:`_base_dataset`. ``stored_like_image``:
    photometric / bits / rescale of ``image`` (full images and crops); else a MONOCHROME2 binary
    mask with BitsStored 16 and no rescale."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS_DM_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(dict(base.items()))                                    # shallow copy of base
    ds.file_meta = meta
    ds.SOPInstanceUID = sop_uid
    ds.SeriesDescription = description
    ds.PatientID = patient_id
    ds.ImageType = (["ORIGINAL", "PRIMARY"] if description == SERIES_DESCRIPTIONS["full"]
                    else ["DERIVED", "SECONDARY"])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_uid[-6:]
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if stored_like_image:
        ds.PhotometricInterpretation = "MONOCHROME1" if image.monochrome1 else "MONOCHROME2"
        ds.BitsStored = image.bits_stored
        if image.slope != 1.0 or image.intercept != 0.0:
            ds.RescaleSlope = f"{image.slope:g}"
            ds.RescaleIntercept = f"{image.intercept:g}"
            ds.RescaleType = "US"
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsStored = 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def csv_path_to_file(root: str | Path, cell: str) -> Path:
    """Map a CSV path cell (``.../000000.dcm``, possibly ending in a newline) to the NBIA file
    ``root/CBIS-DDSM/.../1-1.dcm`` (000001.dcm -> 1-2.dcm)."""
    rel = cell.strip()
    head, name = rel.rsplit("/", 1)
    index = int(name.split(".")[0])
    return Path(root) / "CBIS-DDSM" / head / f"1-{index + 1}.dcm"


def _bbox_crop(mask: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """A variable-size crop window around a lesion mask's bounding box."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = max(y1 - y0, x1 - x0)
    pad = (rng.uniform(0.1, 0.7, 4) * m).astype(int) + 2
    return (slice(max(0, y0 - pad[0]), min(H, y1 + pad[1])),
            slice(max(0, x0 - pad[2]), min(W, x1 + pad[3])))


class _TreeWriter:
    """Writes the DICOM files of full images and ROI rows, and collects metadata.csv rows."""

    def __init__(self, out: Path, seed: int, height: int):
        self.root = out / "CBIS-DDSM"
        self.seed = seed
        self.spacing_mm = 240.0 / height          # a 24 cm tall detector
        self.metadata: list[dict] = []
        self.n_files = 0
        self._base: tuple[FullImage, object] | None = None

    def _base_for(self, image: FullImage):
        """The shared attributes of ``image`` (built once per full image)."""
        if self._base is None or self._base[0] is not image:
            self._base = (image, _base_dataset(image, self.spacing_mm))
        return self._base[1]

    def _series(self, folder: str, study: str, series: str, description: str, n: int,
                date: str) -> Path:
        self.metadata.append({
            "Series UID": series, "Collection": "CBIS-DDSM", "Subject ID": folder,
            "Study UID": study, "Study Date": f"{date[4:6]}-{date[6:8]}-{date[0:4]}",
            "Series Description": description, "Modality": "MG", "Number of Images": n,
            "File Location": f"./CBIS-DDSM/{folder}/{study}/{series}",
        })
        return self.root / folder / study / series

    def full_image(self, image: FullImage, stored: np.ndarray) -> None:
        d = self._series(image.folder, image.study_uid, image.series_uid,
                         SERIES_DESCRIPTIONS["full"], 1, image.study_date)
        _write_dicom(d / "1-1.dcm", stored, self._base_for(image), image=image,
                     patient_id=image.folder,
                     study_uid=image.study_uid, series_uid=image.series_uid,
                     sop_uid=image.sop_uid, description=SERIES_DESCRIPTIONS["full"], instance=1,
                     stored_like_image=True)
        self.n_files += 1

    def roi(self, row: RoiRow, stored: np.ndarray, lesion_mask: np.ndarray,
            fine_mask: np.ndarray) -> dict[str, str]:
        """Write crop, ROI mask (and fine mask) of one row. -> CSV path cells."""
        image, u = row.image, row.uids
        rng = np.random.default_rng([self.seed, 5, image.breast.number,
                                     int(image.breast.side == "RIGHT"), int(image.view == "MLO"),
                                     row.lesion.abn_id])
        crop = stored[_bbox_crop(lesion_mask, rng)]
        mask = lesion_mask.astype(np.uint16) * 255
        common = dict(base=self._base_for(image), image=image, patient_id=row.folder)
        date = image.study_date
        if row.separate:
            cells = {}
            for kind, pixels, like in (("crop", crop, True), ("mask", mask, False)):
                desc = SERIES_DESCRIPTIONS[kind]
                st, se = u[kind]["study"], u[kind]["series"]
                d = self._series(row.folder, st, se, desc, 1, date)
                _write_dicom(d / "1-1.dcm", pixels, study_uid=st, series_uid=se,
                             sop_uid=u[f"sop_{kind}"], description=desc, instance=1,
                             stored_like_image=like, **common)
                cells[kind] = f"{row.folder}/{st}/{se}/000000.dcm"
            self.n_files += 2
        else:
            st, se = u["roi"]["study"], u["roi"]["series"]
            d = self._series(row.folder, st, se, SERIES_DESCRIPTIONS["mask"], 2, date)
            order = [("mask", mask, False), ("crop", crop, True)]
            if not row.mask_first:
                order.reverse()
            for i, (kind, pixels, like) in enumerate(order):
                _write_dicom(d / f"1-{i + 1}.dcm", pixels, study_uid=st, series_uid=se,
                             sop_uid=u[f"sop_{kind}"], description=SERIES_DESCRIPTIONS[kind],
                             instance=i + 1, stored_like_image=like, **common)
            a, b = ("000001.dcm", "000000.dcm") if row.csv_swapped else ("000000.dcm", "000001.dcm")
            cells = {"crop": f"{row.folder}/{st}/{se}/{a}", "mask": f"{row.folder}/{st}/{se}/{b}"}
            self.n_files += 2
        cells["fine"] = ""
        if row.fine:
            st, se = u["fine"]["study"], u["fine"]["series"]
            desc = SERIES_DESCRIPTIONS["fine"]
            d = self._series(row.folder, st, se, desc, 1, date)
            _write_dicom(d / "1-1.dcm", fine_mask.astype(np.uint16) * 255, study_uid=st,
                         series_uid=se, sop_uid=u["sop_fine"], description=desc, instance=1,
                         stored_like_image=False, **common)
            cells["fine"] = f"{row.folder}/{st}/{se}/000000.dcm"
            self.n_files += 1
        return cells


def _write_breast(writer: _TreeWriter, seed: int, breast: Breast, H: int, W: int,
                  image_of: dict, rows_of: dict) -> dict[int, dict[str, str]]:
    """Render both views of one breast, burn in its confounder markers, write its DICOM files.
    -> CSV path cells of its rows, keyed by id(row)."""
    cells = {}
    for view, rendered in _render_breast(seed, breast, H, W).items():
        key = (breast.number, breast.side, view)
        view_rows = rows_of[key]
        _place_markers(seed, breast, view, rendered, view_rows)
        flip = (lambda a: a[:, ::-1]) if breast.side == "RIGHT" else (lambda a: a)
        stored = np.ascontiguousarray(flip(_to_stored(rendered.image, image_of[key])))
        writer.full_image(image_of[key], stored)
        for i, row in enumerate(view_rows):
            cells[id(row)] = writer.roi(row, stored, flip(rendered.lesion_masks[i]),
                                        flip(rendered.fine_masks[i]))
    return cells


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; replace a previous synthetic tree there, refuse to touch anything else."""
    out.mkdir(parents=True, exist_ok=True)
    tree = out / "CBIS-DDSM"
    if tree.exists():
        if not (out / "synthetic.json").exists():
            raise FileExistsError(f"{tree} exists and is not a synthetic tree (no synthetic.json "
                                  f"beside it); refusing to overwrite")
        shutil.rmtree(tree)
    for name in list(CSV_NAMES.values()) + ["synthetic.json"]:
        (out / name).unlink(missing_ok=True)


def _main_name(margin: str) -> str:
    """CBIS-DDSM margin cell -> our class name, "other" for everything else."""
    inverse = {v: k for k, v in MARGIN_NAMES.items()}
    return inverse.get(margin, "other")


def _resolve_class(name: str) -> str:
    """Our margin name or a CBIS-DDSM one -> the CBIS-DDSM string."""
    key = name.strip()
    if key.lower() in MARGIN_NAMES:
        return MARGIN_NAMES[key.lower()]
    if key.upper() in MAIN_MARGINS:
        return key.upper()
    raise ValueError(f"unknown confounder class {name!r}; use one of {list(MARGIN_NAMES)}")


def make_synthetic(out_dir, patients: int = 180, size: int = 512, seed: int = 0,
                   confounder: float = 0.0, confounder_class: str = "indistinct",
                   test_fraction: float = 0.3, progress: bool = False) -> dict:
    """Generate a CBIS-DDSM-shaped tree of procedural mammograms under ``out_dir``.

    Args:
        out_dir: target folder (created; a previous synthetic tree there is replaced).
        patients: number of patients (about 15% have masses in both breasts, 12% of breasts two).
        size: full-mammogram height in px (width 0.8 x size); at least 128.
        seed: everything (pixels, labels, UIDs) is a function of the seed and the arguments.
        confounder: probability that a train ROI of ``confounder_class`` gets a burned-in marker.
        confounder_class: "circumscribed" | "indistinct" | "spiculated" (or the CBIS-DDSM name).
        test_fraction: fraction of patients in the test CSV.
        progress: print progress to stderr.

    Returns:
        summary dict: rows / counts per split and margin (ours and raw CSV strings), malignant and
        fine-annotation counts, number of DICOM files, confounder {probability, class, eligible,
        placed}, seconds. Also written to ``out_dir/synthetic.json``.
    """
    t0 = time.perf_counter()
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}")
    if patients < 2:
        raise ValueError("patients must be >= 2 (one train and one test patient)")
    if not 0.0 <= confounder <= 1.0:
        raise ValueError("confounder is a probability in [0, 1]")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    target = _resolve_class(confounder_class)
    out = Path(out_dir)
    _prepare_out_dir(out)
    H, W = int(size), 2 * int(round(0.4 * size))

    plan_rng = np.random.default_rng([seed, 0])
    breasts = _plan_breasts(plan_rng, patients, test_fraction)
    _assign_labels(plan_rng, breasts)
    images, rows = _plan_files(plan_rng, np.random.default_rng([seed, 4]), breasts)
    draws = np.random.default_rng([seed, 2]).random(len(rows))          # one per row, always
    for row, draw in zip(rows, draws):
        row.confounder = bool(row.split == "train" and row.lesion.margin == target
                              and draw < confounder)

    rows_of: dict[tuple[int, str, str], list[RoiRow]] = {}
    for row in rows:
        b = row.image.breast
        rows_of.setdefault((b.number, b.side, row.image.view), []).append(row)
    image_of = {(im.breast.number, im.breast.side, im.view): im for im in images}
    ordered = sorted(breasts, key=lambda b: (b.number, b.side))

    def work(breast: Breast) -> tuple[_TreeWriter, dict[int, dict[str, str]]]:
        writer = _TreeWriter(out, seed, H)
        return writer, _write_breast(writer, seed, breast, H, W, image_of, rows_of)

    # Breasts are independent (own random streams, own files): two threads overlap numpy/scipy
    # work (which releases the GIL) with DICOM writing; results are merged in breast order, so
    # the output does not depend on the number of threads.
    workers = min(2, os.cpu_count() or 1) if len(ordered) >= 8 else 1
    metadata: list[dict] = []
    cells: dict[int, dict[str, str]] = {}
    n_files = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, (writer, breast_cells) in enumerate(pool.map(work, ordered)):
            metadata += writer.metadata
            n_files += writer.n_files
            cells.update(breast_cells)
            if progress and ((k + 1) % 20 == 0 or k + 1 == len(ordered)):
                print(f"synth: {k + 1}/{len(ordered)} breasts, "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    for split in ("train", "test"):
        with open(out / CSV_NAMES[split], "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)  # CRLF line ends, minimal quoting: as the real files
            w.writerow(CSV_HEADER + [FINE_COLUMN])
            for row in rows:
                if row.split != split:
                    continue
                les, im, c = row.lesion, row.image, cells[id(row)]
                w.writerow([im.breast.patient_id, im.breast.density, im.breast.side, im.view,
                            les.abn_id, "mass", les.shape, les.margin, les.assessment,
                            les.pathology, les.subtlety,
                            f"{im.folder}/{im.study_uid}/{im.series_uid}/000000.dcm",
                            c["crop"], c["mask"] + "\n", c["fine"]])
    with open(out / "CBIS-DDSM" / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=METADATA_COLUMNS)
        w.writeheader()
        w.writerows(metadata)

    summary = _summary(rows, n_files, seed, patients, size, confounder, target)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    with open(out / "synthetic.json", "w", encoding="utf-8") as fh:
        json.dump({k: v for k, v in summary.items() if k != "seconds"}, fh, indent=1,
                  sort_keys=True)
    return summary


def _summary(rows: list[RoiRow], n_files: int, seed: int, patients: int, size: int,
             confounder: float, target: str) -> dict:
    """The summary make_synthetic returns (see its docstring)."""
    counts = {s: {"circumscribed": 0, "indistinct": 0, "spiculated": 0, "other": 0, "total": 0}
              for s in ("train", "test")}
    margins = {s: Counter() for s in ("train", "test")}
    malignant = Counter()
    fine = Counter()
    for r in rows:
        counts[r.split][_main_name(r.lesion.margin)] += 1
        counts[r.split]["total"] += 1
        margins[r.split][r.lesion.margin or "<empty>"] += 1
        malignant[r.split] += r.lesion.pathology == "MALIGNANT"
        fine[r.split] += r.fine
    return {
        "seed": seed, "patients": patients, "size": size,
        "rows": {s: counts[s]["total"] for s in counts},
        "counts": counts,
        "margins": {s: dict(sorted(m.items())) for s, m in margins.items()},
        "malignant": {s: malignant[s] for s in ("train", "test")},
        "fine": {s: fine[s] for s in ("train", "test")},
        "dicom_files": n_files,
        "confounder": {"probability": confounder, "class": _main_name(target),
                       "eligible": int(sum(r.confounder for r in rows)),
                       "placed": int(sum(r.placed for r in rows))},
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` on an argparse subparsers object (sets ``func=run_cli``)."""
    p = subparsers.add_parser(
        "synth", help="write a CBIS-DDSM-shaped tree of procedural mammograms",
        description="Procedural mammograms written exactly as a TCIA NBIA download of CBIS-DDSM "
                    "(mass CSVs, DICOM tree, metadata.csv), plus fine-annotation masks.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--patients", type=int, default=180, help="number of patients (default 180)")
    p.add_argument("--size", type=int, default=512,
                   help="full-mammogram height in px, width 0.8 x (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confounder", type=float, default=0.0,
                   help="probability of a burned-in marker per train ROI of --confounder-class")
    p.add_argument("--confounder-class", default="indistinct",
                   choices=list(MARGIN_NAMES) + list(MAIN_MARGINS))
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; prints a small table and the time taken."""
    summary = make_synthetic(args.out, patients=args.patients, size=args.size, seed=args.seed,
                             confounder=args.confounder, confounder_class=args.confounder_class,
                             test_fraction=args.test_fraction, progress=not args.quiet)
    print(f"{'split':<6} {'circ.':>6} {'indist.':>8} {'spic.':>6} {'other':>6} {'total':>6}")
    for split, c in summary["counts"].items():
        print(f"{split:<6} {c['circumscribed']:>6} {c['indistinct']:>8} {c['spiculated']:>6} "
              f"{c['other']:>6} {c['total']:>6}")
    conf = summary["confounder"]
    if conf["probability"] > 0:
        print(f"confounder markers placed: {conf['placed']} of {conf['eligible']} "
              f"({conf['class']}, p={conf['probability']})")
    print(f"wrote {summary['dicom_files']} DICOM files to {args.out} in {summary['seconds']:.1f} s")
    return 0
