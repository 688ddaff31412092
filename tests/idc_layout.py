"""Test helpers: re-lay an NBIA-shaped CBIS-DDSM tree exactly as ``idc-index`` lays out a download,
and a stand-in for its downloader (tests never touch the network).

How idc-index 0.13.4 lays out ``download_from_selection(downloadDir=OUT)`` (read from
``idc_index/index.py``): each series is one s5cmd command ``cp s3://<bucket>/<crdc_series_uuid>/*
<path>``, where ``<path>`` is ``OUT/`` + the default ``dirTemplate``
``%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID`` filled in from the
index (whose values come from the DICOM headers); the bucket's objects are
``<crdc_series_uuid>/<crdc_instance_uuid>.dcm``, so the files land as ``<path>/<uuid>.dcm``.
``iaiabl_lib.data.idc.series_folder`` builds ``<path>``; a test checks it against the library's
own SQL. Here the instance UUID is derived from the SOPInstanceUID (uuid5), so that the layout is
deterministic.
"""
from __future__ import annotations

import csv
import os
import shutil
import uuid
from pathlib import Path

import pydicom

from iaiabl_lib.data import idc
from iaiabl_lib.data.cbis_ddsm import CSV_NAMES


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def relay_as_idc(nbia_dir: Path, out: Path, collection: str = idc.COLLECTION) -> dict[str, idc.IndexSeries]:
    """Copy ``nbia_dir`` (CSVs + ``CBIS-DDSM/<folder>/<study>/<series>/1-1.dcm``) to ``out`` in
    IDC's download layout and return the index entries of its series, as ``idc.load_index``
    would list them (instance count, exact bytes). PatientID, the study and series UIDs and
    Modality come from each file's header, as IDC's index does (from the NBIA folders where a
    test file lacks them)."""
    nbia_dir, out = Path(nbia_dir), Path(out)
    grouped: dict[str, dict] = {}
    for path in sorted((nbia_dir / "CBIS-DDSM").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        folder, study, series = path.relative_to(nbia_dir / "CBIS-DDSM").parts[:3]
        entry = grouped.setdefault(ds.get("SeriesInstanceUID", series), {
            "study": ds.get("StudyInstanceUID", study), "patient": ds.get("PatientID", folder),
            "modality": ds.get("Modality", "MG"), "description": ds.get("SeriesDescription", ""), "files": []})
        entry["files"].append((path, ds.get("SOPInstanceUID", str(path))))
    index = {}
    for series_uid, e in grouped.items():
        record = idc.IndexSeries(series_uid, e["study"], e["patient"], e["modality"], e["description"],
                                 len(e["files"]), sum(p.stat().st_size for p, _ in e["files"]), collection)
        target = idc.series_folder(out, record)
        for path, sop in e["files"]:
            _link_or_copy(path, target / f"{uuid.uuid5(uuid.NAMESPACE_OID, sop)}.dcm")
        index[series_uid] = record
    for name in CSV_NAMES.values():
        shutil.copyfile(nbia_dir / name, out / name)
    return index


def subset_csvs(src: Path, dst: Path, rows: int) -> Path:
    """The first ``rows`` data rows of each mass CSV in ``src``, written to ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in CSV_NAMES.values():
        with open(src / name, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        with open(dst / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(table[:rows + 1])
    return dst


class BucketDownloader:
    """Stands in for ``IDCClient.download_from_selection``: copies each requested series from
    ``bucket`` (an IDC-layout tree) to where the library would put it. ``skip``: series never
    delivered; ``short``: series delivered without their last file; ``truncate``: series whose
    first file arrives 100 bytes short; ``damage``: series whose first file arrives with the same
    size but a flipped VR byte in Rows (issue 24). ``calls`` records the series UIDs of each call.
    Like ``s5cmd sync``, a file already there with the right size is kept."""

    def __init__(self, bucket: Path, skip=(), short=(), truncate=(), damage=()):
        self.bucket, self.skip, self.short, self.truncate = Path(bucket), set(skip), set(short), set(truncate)
        self.damage = set(damage)
        self.calls: list[list[str]] = []

    def __call__(self, out: Path, series, progress: bool) -> None:
        self.calls.append([s.series_uid for s in series])
        for s in series:
            if s.series_uid in self.skip:
                continue
            files = sorted(idc.series_folder(self.bucket, s).glob("*.dcm"))
            if s.series_uid in self.short:
                files = files[:-1]
            target = idc.series_folder(out, s)
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                if not ((target / f.name).is_file() and (target / f.name).stat().st_size == f.stat().st_size):
                    shutil.copyfile(f, target / f.name)
            if s.series_uid in self.truncate and files:
                first = target / files[0].name
                first.write_bytes(first.read_bytes()[:-100])
            if s.series_uid in self.damage and files:
                from dicom_mutations import with_vr

                first = target / files[0].name
                first.write_bytes(with_vr(first.read_bytes()))
