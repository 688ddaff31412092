"""Build small CBIS-DDSM-shaped trees (CSV + NBIA DICOM folders) for tests, from given CSV rows.

Independent of ``iaiabl_lib.data.synthetic``: every file is written here with pydicom, so importer
tests control each quirk and defect exactly.

    rows = [make_row("P_00001", "SPICULATED")] + real_rows("train", 3)
    cases = [Case(r, swap=True) for r in rows]
    info = build_tree(tmp_path / "cbis", train=cases, test=[], metadata=True, nbia_names=True)

Each written full mammogram is ``shape`` px with a bright disc (the lesion) at a known place; the
ROI mask is that disc, the crop is the disc's neighbourhood, the optional fine mask a ring on the
disc's edge. ``info[case_key(row)]`` gives the geometry (centre, radius, shape) for assertions.
Files carry PHI-like tags (``PHI_NAME`` ...) so tests can check they never reach the output.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian,
                         JPEGLSLossless, generate_uid)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CBIS = Path(os.environ.get("IAIABL_SHARED", REPO_ROOT.parent / "shared")) / "cbis-ddsm"
HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
          "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
          "image file path", "cropped image file path", "ROI mask file path"]
FINE_COLUMN = "fine annotation file path"
CSV_NAMES = {"train": "mass_case_description_train_set.csv", "test": "mass_case_description_test_set.csv"}
PHI_NAME, PHI_BIRTH, PHI_INSTITUTION = "Doe^Jane", "19700101", "Saint Nowhere Hospital"
DEFECTS = ("missing_full", "missing_roi", "truncated", "not_dicom", "modality", "compressed",
           "empty_mask", "mask_size", "nan")


# --- DICOM files ---------------------------------------------------------------------------------

def write_dicom(path: Path, pixels: np.ndarray, *, modality: str = "MG", description: str = "",
                photometric: str = "MONOCHROME2", slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                patient_id: str = "P_00000", phi: bool = True, transfer_syntax: str | None = None,
                float_pixels: bool = False) -> Path:
    """Write one single-frame grayscale DICOM (uint8/uint16 ``pixels``; float32 with
    ``float_pixels``; fake JPEG-LS bytes with ``transfer_syntax=JPEGLSLossless``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesDescription, ds.PatientID = modality, description, patient_id
    if phi:
        ds.PatientName, ds.PatientBirthDate, ds.InstitutionName = PHI_NAME, PHI_BIRTH, PHI_INSTITUTION
        ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyDate = "Who^Doctor", "ACC123456", "20010203"
        ds.PatientAddress = "1 Main Street"
    if float_pixels:
        arr = np.asarray(pixels, dtype=np.float32)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated = 32
        ds.FloatPixelData = arr.tobytes()
    elif transfer_syntax == JPEGLSLossless:
        from pydicom.encaps import encapsulate
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        arr = np.asarray(pixels)
        ds.set_pixel_data(arr, photometric, 8 if arr.dtype == np.uint8 else 16)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.save_as(path, enforce_file_format=True)
    return path


def make_images(shape: tuple[int, int], center: tuple[int, int], radius: int, seed: int = 0) -> dict:
    """A toy mammogram (uint16 (H, W)) with a bright disc, its 0/255 mask, a crop and a fine ring."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    breast = ((yy - h / 2) / (h / 2)) ** 2 + (xx / (0.9 * w)) ** 2 < 1       # breast against the left edge
    full = np.where(breast, 800 + rng.integers(0, 400, shape), 0).astype(np.uint16)
    dist = np.hypot(yy - center[0], xx - center[1])
    disc = dist <= radius
    full[disc] = 3000 + rng.integers(0, 50, int(disc.sum()))
    mask = (disc * 255).astype(np.uint8)
    cy, cx = center
    crop = full[max(cy - 2 * radius, 0):cy + 2 * radius, max(cx - 2 * radius, 0):cx + 2 * radius].copy()
    fine = ((np.abs(dist - radius) <= 2) * 255).astype(np.uint8)
    return {"full": full, "mask": mask, "crop": crop, "fine": fine, "disc": disc}


# --- CSV rows ------------------------------------------------------------------------------------

def make_row(patient_id: str, margin: str, pathology: str = "MALIGNANT", side: str = "LEFT",
             view: str = "CC", abnormality: int = 1, source: str = "train",
             separate_series: bool = False) -> dict:
    """A CSV row in CBIS-DDSM's form (fresh UIDs; mask cell ends in a newline)."""
    prefix = "Mass-Training" if source == "train" else "Mass-Test"
    full_folder, roi_folder = f"{prefix}_{patient_id}_{side}_{view}", f"{prefix}_{patient_id}_{side}_{view}_{abnormality}"
    full = f"{full_folder}/{generate_uid()}/{generate_uid()}/000000.dcm"
    study, series = generate_uid(), generate_uid()
    crop = f"{roi_folder}/{study}/{series}/000000.dcm"
    mask = (f"{roi_folder}/{generate_uid()}/{generate_uid()}/000000.dcm" if separate_series
            else f"{roi_folder}/{study}/{series}/000001.dcm")
    values = [patient_id, "3", side, view, str(abnormality), "mass", "OVAL", margin, "4", pathology, "4",
              full, crop, mask + "\n"]
    return dict(zip(HEADER, values))


def real_rows(which: str = "train") -> list[dict]:
    """The real CBIS-DDSM rows (raw cells, newline included) of ``which`` CSV (skips the calling
    test when the CSVs are not there)."""
    require_real_csvs()
    with open(REAL_CBIS / CSV_NAMES[which], newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def require_real_csvs() -> None:
    """Skip the calling test, saying where the real CSVs were looked for, when they are absent."""
    if not all((REAL_CBIS / name).is_file() for name in CSV_NAMES.values()):
        import pytest
        pytest.skip(f"real CBIS-DDSM CSVs not found in {REAL_CBIS} (set IAIABL_SHARED to the folder "
                    "that holds cbis-ddsm/)")


def case_key(row: dict) -> str:
    """The id the importer gives this row."""
    return f"{row['patient_id'].strip()}_{row['left or right breast'].strip()}_{row['image view'].strip()}_{row['abnormality id'].strip()}"


@dataclass
class Case:
    """One CSV row to write, with how its files are laid out.

    swap: crop content goes where the CSV names the mask and vice versa (1-1/1-2 order swapped in
    a shared series); fine: write a fine annotation mask (extra CSV column); defect: one of DEFECTS;
    radius, center: the lesion disc (default: a seeded random place inside the breast)."""

    row: dict
    swap: bool = False
    fine: bool = False
    defect: str | None = None
    radius: int | None = None
    center: tuple[int, int] | None = None


# --- tree ----------------------------------------------------------------------------------------

def _parts(cell: str) -> list[str]:
    return cell.strip().split("/")


class _Layout:
    """Where CSV paths land on disk: UID folders (INTERFACES §1) or NBIA display names."""

    def __init__(self, root: Path, nbia_names: bool, named_files: bool):
        self.root, self.nbia, self.named = root, nbia_names, named_files
        self.series: dict[str, dict] = {}   # series uid -> metadata row

    def directory(self, cell: str, description: str, patient_id: str) -> Path:
        folder, study, series = _parts(cell)[:3]
        if self.nbia:
            d = self.root / "CBIS-DDSM" / folder / f"07-20-2016-DDSM-{study[-5:]}" / f"1.000000-{description}-{series[-5:]}"
        else:
            d = self.root / "CBIS-DDSM" / folder / study / series
        self.series[series] = {"Series UID": series, "Collection": "CBIS-DDSM", "Subject ID": folder,
                               "Study UID": study, "Series Description": description, "Modality": "MG",
                               "Number of Images": 0,
                               "File Location": "./" + d.relative_to(self.root).as_posix()}
        return d

    def file(self, cell: str, description: str, patient_id: str, nbia_name: str) -> Path:
        d = self.directory(cell, description, patient_id)
        self.series[_parts(cell)[2]]["Number of Images"] += 1
        return d / (_parts(cell)[3] if self.named else nbia_name)


def _write_case(layout: _Layout, case: Case, shape: tuple[int, int], seed: int) -> dict:
    row, rng = case.row, np.random.default_rng(seed)
    pid = row["patient_id"].strip()
    radius = case.radius or int(rng.integers(6, 12))
    center = case.center or (int(rng.integers(2 * radius, shape[0] - 2 * radius)),
                             int(rng.integers(radius + 2, shape[1] // 2)))
    img = make_images(shape, center, radius, seed)
    d = case.defect
    full_path = layout.file(row["image file path"], "full mammogram images", pid, "1-1.dcm")
    if d != "missing_full":
        kwargs = {"modality": "CT"} if d == "modality" else {}
        if d == "compressed":
            kwargs["transfer_syntax"] = JPEGLSLossless
        if d == "nan":
            pixels = img["full"].astype(np.float32)
            pixels[center] = np.nan
            write_dicom(full_path, pixels, float_pixels=True, patient_id=pid, description="full mammogram images")
        else:
            write_dicom(full_path, img["full"], patient_id=pid, description="full mammogram images", **kwargs)
        if d == "truncated":
            data = full_path.read_bytes()
            full_path.write_bytes(data[:len(data) - len(data) // 3])
        if d == "not_dicom":
            full_path.write_text("this is not a DICOM file\n")
    mask = img["mask"]
    if d == "empty_mask":
        mask = np.zeros_like(mask)
    if d == "mask_size":
        mask = np.pad(mask, ((0, 7), (0, 5)))
    crop_cell, mask_cell = row["cropped image file path"], row["ROI mask file path"]
    same_series = _parts(crop_cell)[:3] == _parts(mask_cell)[:3]
    names = ("1-1.dcm", "1-2.dcm") if same_series else ("1-1.dcm", "1-1.dcm")
    targets = [(crop_cell, img["crop"], "cropped images", names[0]),
               (mask_cell, mask, "ROI mask images", names[1])]
    if case.swap:  # the contents trade places (file name / CSV column say the opposite)
        targets = [(targets[0][0], targets[1][1], targets[1][2], targets[0][3]),
                   (targets[1][0], targets[0][1], targets[0][2], targets[1][3])]
    for cell, pixels, description, name in targets:
        path = layout.file(cell, "ROI mask images" if same_series else description, pid, name)
        if d != "missing_roi":
            write_dicom(path, pixels, patient_id=pid, description=description)
    if case.fine:
        write_dicom(layout.file(row[FINE_COLUMN], "fine annotation mask images", pid, "1-1.dcm"),
                    img["fine"], patient_id=pid, description="fine annotation mask images")
    return {"center": center, "radius": radius, "shape": shape, "disc": img["disc"]}


def build_tree(root: Path, train: list[Case] = (), test: list[Case] = (), *, metadata: bool = False,
               nbia_names: bool = False, named_files: bool = False, shape: tuple[int, int] = (160, 128),
               seed: int = 0) -> dict[str, dict]:
    """Write ``root/mass_case_description_{train,test}_set.csv`` and ``root/CBIS-DDSM/...``.

    metadata: also write ``CBIS-DDSM/metadata.csv`` (NBIA manifest); nbia_names: study/series
    folders named like a new NBIA download instead of by UID; named_files: files named as in the
    CSV (000000.dcm/000001.dcm) instead of 1-1.dcm/1-2.dcm. Returns geometry per case_key.
    """
    root = Path(root)
    layout = _Layout(root, nbia_names, named_files)
    geometry: dict[str, dict] = {}
    any_fine = any(c.fine for c in [*train, *test])
    for which, cases in (("train", train), ("test", test)):
        header = HEADER + ([FINE_COLUMN] if any_fine else [])
        for i, case in enumerate(cases):
            if case.fine:
                folder = _parts(case.row["ROI mask file path"])[0] + "_FINE"
                case.row[FINE_COLUMN] = f"{folder}/{generate_uid()}/{generate_uid()}/000000.dcm"
            geometry[case_key(case.row)] = _write_case(layout, case, shape, seed * 1000 + hash_row(case.row))
        root.mkdir(parents=True, exist_ok=True)
        with open(root / CSV_NAMES[which], "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for case in cases:
                writer.writerow([case.row.get(h, "") for h in header])
    if metadata:
        columns = ["Series UID", "Collection", "Subject ID", "Study UID", "Series Description",
                   "Modality", "Number of Images", "File Location"]
        with open(root / "CBIS-DDSM" / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(layout.series.values())
    return geometry


def hash_row(row: dict) -> int:
    """A stable small integer per row (seeds its geometry)."""
    return sum(map(ord, case_key(row))) % 997
