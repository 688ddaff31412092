"""CBIS-DDSM tree writer: DICOM files of full images, crops, ROI masks and fine masks, the NBIA
``metadata.csv`` rows, and the two mass CSVs (exact header, CRLF lines, the ROI-mask cell ending in
a newline). The storage quirks (MONOCHROME1, rescale, bits stored, crop/mask order and separate
series) are decided in :mod:`.plan`; here they are carried out.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
# imported here, once, in the thread that imports this module: generate.py writes files from a
# thread pool, and a first import of pydicom racing in two threads can see it half initialised
# ("partially initialized module 'pydicom' has no attribute 'dcmwrite'", seen in a book build)
import pydicom  # noqa: F401  (Dataset.save_as looks up pydicom.dcmwrite)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from ...atomic import atomic_write_text
from ..cbis_format import (CSV_HEADER, CSV_NAMES, FINE_COLUMN, METADATA_COLUMNS,
                          SERIES_DESCRIPTIONS, SOP_CLASS_DM_PRESENTATION)
from .plan import Breast, FullImage, RoiRow

__all__ = ["DETECTOR_HEIGHT_MM", "to_stored", "TreeWriter", "write_csvs", "write_metadata"]

DETECTOR_HEIGHT_MM = 240.0  # a 24 cm tall detector: PixelSpacing = 240 / size


def to_stored(img01: np.ndarray, image: FullImage) -> np.ndarray:
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


def _bbox_crop(mask: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """A variable-size crop window around a lesion mask's bounding box."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = max(y1 - y0, x1 - x0)
    pad = (rng.uniform(0.1, 0.7, 4) * m).astype(int) + 2
    return (slice(max(0, y0 - pad[0]), min(H, y1 + pad[1])),
            slice(max(0, x0 - pad[2]), min(W, x1 + pad[3])))


class TreeWriter:
    """Writes the DICOM files of full images and ROI rows, and collects metadata.csv rows."""

    def __init__(self, out: Path, seed: int, height: int):
        self.root = out / "CBIS-DDSM"
        self.seed = seed
        self.spacing_mm = DETECTOR_HEIGHT_MM / height
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




def write_csvs(out: Path, rows: list[RoiRow], cells: dict[int, dict[str, str]]) -> None:
    """The two mass CSVs: real header + our fine-annotation column, CRLF line ends, minimal
    quoting (so the ROI-mask cell, which ends in a newline, is quoted): as the real files. Each is
    written aside and renamed (a reader never sees half a table)."""
    for split in ("train", "test"):
        fh = io.StringIO(newline="")
        w = csv.writer(fh)
        w.writerow(CSV_HEADER + [FINE_COLUMN])
        for row in rows:
            if row.split != split:
                continue
            les, im, c = row.lesion, row.image, cells[id(row)]
            w.writerow([im.breast.patient_id, im.breast.density, im.breast.side, im.view,
                        les.abn_id, "mass", les.shape, row.margin, les.assessment,
                        les.pathology, row.subtlety,
                        f"{im.folder}/{im.study_uid}/{im.series_uid}/000000.dcm",
                        c["crop"], c["mask"] + "\n", c["fine"]])
        atomic_write_text(out / CSV_NAMES[split], fh.getvalue())


def write_metadata(out: Path, metadata: list[dict]) -> None:
    """The NBIA manifest ``CBIS-DDSM/metadata.csv`` (one row per series), written aside and renamed."""
    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=METADATA_COLUMNS)
    w.writeheader()
    w.writerows(metadata)
    atomic_write_text(out / "CBIS-DDSM" / "metadata.csv", fh.getvalue())
