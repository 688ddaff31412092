"""The plan: patients, breasts, abnormalities, their labels, files, storage quirks and UIDs, decided
before any pixel is drawn.

Patients are numbered with gaps (like CBIS-DDSM's P_00001, P_00004, ...) and assigned to the train
or test table. About :data:`P_BOTH_SIDES` of them have masses in both breasts and
:data:`P_SECOND_MASS` of the breasts a second mass (CBIS-DDSM: 5% and 5%; higher here so that a
default set yields more regions of interest per rendered mammogram). Every breast is imaged in CC
and MLO view; every abnormality gives one CSV row per view. Labels come from
:mod:`.labels` (the real joint distribution); the storage quirks are listed in the package
docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cbis_format import FOLDER_PREFIX, UID_ROOT
from .labels import (P_BORDERLINE, P_SECOND_READER, SINGLE_MARGINS, LabelSet, draw_labels,
                     partner_margin, p_subtlety_differs)

__all__ = ["P_BOTH_SIDES", "P_SECOND_MASS", "P_SEPARATE_SERIES", "P_CSV_SWAPPED", "P_MONOCHROME1",
           "P_RESCALE", "P_FINE_TRAIN", "P_EMPTY_NA", "VIEWS", "Lesion", "Breast", "FullImage", "RoiRow",
           "flags", "plan_breasts", "assign_labels", "plan_files"]

P_BOTH_SIDES = 0.15        # patients with masses in both breasts
P_SECOND_MASS = 0.12       # breasts with a second mass (abnormality id 2)
P_SEPARATE_SERIES = 0.08   # crop and mask in separate studies/series (CBIS-DDSM: 7%)
P_CSV_SWAPPED = 0.05       # crop column names 000001.dcm, mask column 000000.dcm
P_MONOCHROME1 = 0.15       # full images stored inverted
P_RESCALE = 0.15           # full images with RescaleSlope/Intercept != 1/0
P_FINE_TRAIN = 0.30        # train rows with a fine annotation (test rows: all)
P_EMPTY_NA = 0.34          # missing margins written as an empty cell instead of "NA"
VIEWS = ("CC", "MLO")


@dataclass
class Lesion:
    """One abnormality of one breast (shared by its CC and MLO rows)."""

    abn_id: int
    labels: LabelSet | None = None      # the first reader's labels, drawn from the joint counts
    partner: str = ""                   # borderline: the second reader's margin ("" = none)
    blend: float = 0.0                  # drawn at this point between margin (0) and partner (1)
    view_margin: dict = field(default_factory=dict)     # view -> 'mass margins' cell
    view_subtlety: dict = field(default_factory=dict)   # view -> 'subtlety' cell

    @property
    def margin(self) -> str:
        """The first reader's margin (what the renderer draws, with ``partner`` and ``blend``)."""
        return self.labels.margin

    @property
    def shape(self) -> str:
        return self.labels.shape

    @property
    def pathology(self) -> str:
        return self.labels.pathology

    @property
    def assessment(self) -> int:
        return self.labels.assessment


@dataclass
class Breast:
    """One breast of one patient: both views are rendered from it."""

    number: int                   # patient number -> "P_%05d"
    split: str                    # "train" | "test"
    side: str                     # "LEFT" | "RIGHT"
    density: int = 0              # breast_density 1..4 (that of its first abnormality's labels)
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
    marker_box: tuple | None = None  # (y0, x0, y1, x1) of the marker in the written full image

    @property
    def split(self) -> str:
        return self.image.breast.split

    @property
    def view(self) -> str:
        return self.image.view

    @property
    def margin(self) -> str:
        """This row's 'mass margins' cell (the second reader's where it disagrees)."""
        return self.lesion.view_margin[self.image.view]

    @property
    def subtlety(self) -> int:
        return self.lesion.view_subtlety[self.image.view]


def _uid(rng: np.random.Generator) -> str:
    """A CBIS-DDSM-looking UID: the 9590 root + 37..39 digits, no leading zero (<= 64 chars)."""
    n = int(rng.integers(37, 40))
    digits = rng.integers(0, 10, size=n)
    digits[0] = rng.integers(1, 10)
    return UID_ROOT + "".join(map(str, digits))


def flags(rng: np.random.Generator, n: int, fraction: float, minimum: int = 1) -> np.ndarray:
    """A bool array of length n with about ``fraction`` True (at least ``minimum`` where n allows),
    at random positions. Used so that every quirk appears even in tiny data sets."""
    k = min(n, max(minimum, int(round(fraction * n)))) if n else 0
    out = np.zeros(n, bool)
    if k:
        out[rng.choice(n, size=k, replace=False)] = True
    return out


def plan_breasts(rng: np.random.Generator, patients: int, test_fraction: float) -> list[Breast]:
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
            n_lesions = 2 if rng.random() < P_SECOND_MASS else 1
            breast = Breast(int(number), "test" if test else "train", side)
            breast.lesions = [Lesion(i + 1) for i in range(n_lesions)]
            breasts.append(breast)
    return breasts


def assign_labels(rng: np.random.Generator, breasts: list[Breast]) -> None:
    """Per split: every lesion's labels from the real joint counts (:func:`labels.draw_labels`);
    the breast's density is its first lesion's; borderline masses and their second reader; the
    per-view CSV margin and subtlety cells."""
    p_sub = p_subtlety_differs()
    for split in ("train", "test"):
        lesions = [les for b in breasts if b.split == split for les in b.lesions]
        for lesion, labels in zip(lesions, draw_labels(rng, len(lesions), split)):
            lesion.labels = labels
        for lesion in lesions:
            if lesion.margin in SINGLE_MARGINS and rng.random() < P_BORDERLINE:
                lesion.partner = partner_margin(rng, lesion.margin)
                lesion.blend = float(rng.uniform(0.3, 0.7))
            second = rng.random(len(VIEWS)) < P_SECOND_READER
            for view, use_partner in zip(VIEWS, second):
                lesion.view_margin[view] = (lesion.partner if lesion.partner and use_partner
                                            else lesion.margin)
            base = lesion.labels.subtlety
            shift = int(rng.choice([-1, 1])) if rng.random() < p_sub else 0
            other = int(np.clip(base + shift, 1, 5)) if base > 0 else base
            changed = VIEWS[int(rng.integers(2))]
            for view in VIEWS:
                lesion.view_subtlety[view] = other if view == changed else base
        # the quirk of an empty 'mass margins' cell (missing written as "" instead of "NA")
        missing = [les for les in lesions if les.margin == "NA"]
        for lesion, empty in zip(missing, flags(rng, len(missing), P_EMPTY_NA)):
            if empty:
                lesion.view_margin = {view: "" for view in VIEWS}
    for breast in breasts:
        breast.density = breast.lesions[0].labels.density


def plan_files(rng: np.random.Generator, uid_rng: np.random.Generator,
               breasts: list[Breast]) -> tuple[list[FullImage], list[RoiRow]]:
    """Full images and CSV rows (sorted as CBIS-DDSM: patient, side, view, abnormality id),
    their storage quirks, fine-annotation flags and UIDs."""
    breasts = sorted(breasts, key=lambda b: (b.number, b.side))
    images: list[FullImage] = []
    rows: list[RoiRow] = []
    for breast in breasts:
        for view in VIEWS:
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
        for im, mono, resc in zip(imgs, flags(rng, len(imgs), P_MONOCHROME1),
                                  flags(rng, len(imgs), P_RESCALE)):
            im.monochrome1 = bool(mono)
            if resc:
                im.slope = float(rng.choice([0.5, 2.0, 4.0]))
                im.intercept = float(rng.choice([-1024.0, -100.0, 0.0, 50.0]))
        split_rows = [r for r in rows if r.split == split]
        separate = flags(rng, len(split_rows), P_SEPARATE_SERIES)
        for r, sep in zip(split_rows, separate):
            r.separate = bool(sep)
        shared = [r for r in split_rows if not r.separate]
        for r, sw in zip(shared, flags(rng, len(shared), P_CSV_SWAPPED)):
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
                by_margin.setdefault(r.margin, []).append(r)
            for margin in sorted(by_margin):
                group = by_margin[margin]
                for r, f in zip(group, flags(rng, len(group), P_FINE_TRAIN)):
                    r.fine = bool(f)
    for r in rows:  # UIDs in row order (deterministic)
        kinds = ["crop", "mask"] if r.separate else ["roi"]
        for kind in kinds + (["fine"] if r.fine else []):
            r.uids[kind] = {"study": _uid(uid_rng), "series": _uid(uid_rng)}
        r.uids["sop_crop"], r.uids["sop_mask"] = _uid(uid_rng), _uid(uid_rng)
        if r.fine:
            r.uids["sop_fine"] = _uid(uid_rng)
    return images, rows
