"""CBIS-DDSM (or the synthetic look-alike) -> prepared dataset: ROI crops, lesion masks, fine masks.

One file per idea: ``tables`` (the mass CSVs, margins, pathology), ``files`` (a row's DICOM files,
the ROI mask by content), ``geometry`` (the crop), ``splits`` (patients -> splits), ``importer``
(``prepare``: the import and its summary), ``cli`` (``iaiabl prepare``).

``prepare(cbis_dir, out_dir)`` reads the two mass CSVs, finds each row's DICOM files in the NBIA
or IDC download tree, windows the full mammogram, crops a square around the lesion and writes the
arrays and the manifest of docs/INTERFACES.md §2. Every CSV row is either included or listed in
``summary["skipped"]`` with a reason (``n_included + len(skipped) == n_csv_rows``).

The quirks of a real download it handles:

* the 'ROI mask file path' cell ends in a newline (every cell is stripped);
* CSV paths name ``000000.dcm`` / ``000001.dcm`` while NBIA writes ``1-1.dcm`` / ``1-2.dcm``, and
  newer NBIA downloads name folders ``07-20-2016-DDSM-74994/1.000000-full mammogram images-24515``
  instead of the UIDs (``CBIS-DDSM/metadata.csv`` maps series UIDs to folders; without it the
  folders are found by UID or by the UID's last five digits);
* an NCI Imaging Data Commons download (``iaiabl download cbis-ddsm``) lays series out as
  ``cbis_ddsm/<PatientID>/<study uid>/MG_<series uid>/<uuid>.dcm``: any folder whose name carries
  the series UID (below one carrying the study UID) is found, whatever the names around it
  (:mod:`iaiabl_lib.data.locate`);
* crop and ROI mask are sometimes swapped, in one series or two: the mask is recognised by its
  CONTENT (binary, the full image's size), never by file name or column;
* margins: CIRCUMSCRIBED, ILL_DEFINED (-> indistinct; also spelled ILL-DEFINED), SPICULATED are
  kept; OBSCURED, MICROLOBULATED, combinations ("SPICULATED-ILL_DEFINED") and missing ones are
  excluded and counted;
* patient ids are normalised (case, whitespace) before splitting: ``p_00012`` is ``P_00012``.

Hostile input (issue 16): every path from a CSV or metadata.csv is resolved (symbolic links,
``..``) and must stay inside ``--cbis`` (:func:`resolve_inside`), else the row is skipped as
``path outside the dataset`` without the file being opened; DICOM files are held to a pixel budget
(``max_pixels``, ``dicom.read_dicom``); an ROI mask with several connected components keeps the
largest (specks would stretch the crop), recorded in ``summary["cleaned"]``. The output folder is
locked while it is written and replaced only when it is a prepared dataset (its marker file and
nothing but its files): ``prepare`` never deletes what it did not write.

Damaged DICOM files (issue 24): whatever a file's bytes make the reader fail on is a
``DicomError``, so the row is skipped with its reason and the import goes on; ``summary["refused"]``
lists each refused file once (reason, the reader's words, the rows skipped for it),
``summary["refused_files"]`` counts them by reason, and ``prepare`` prints them with what to do.
"""
from __future__ import annotations

from iaiabl_lib.data.cbis_format import CSV_NAMES

from .cli import add_cli, run_cli
from .files import OUTSIDE, DicomLocator, binary_mask, largest_component, one_file, resolve_inside
from .geometry import MIN_CROP, crop_and_resize, crop_geometry, crop_padded
from .importer import format_table, prepare
from .splits import assign_splits
from .tables import COLUMNS, CbisError, MassRow, SkipRow, classify_margin, classify_pathology, read_mass_csv

__all__ = [
    "CbisError", "SkipRow", "MassRow", "read_mass_csv", "classify_margin", "classify_pathology",
    "DicomLocator", "crop_geometry", "crop_and_resize", "assign_splits", "prepare",
    "format_table", "add_cli", "run_cli", "CSV_NAMES", "COLUMNS", "MIN_CROP", "resolve_inside", "crop_padded",
    "largest_component", "OUTSIDE", "binary_mask", "one_file",
]
