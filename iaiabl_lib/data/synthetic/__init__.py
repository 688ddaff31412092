"""Procedural full-field mammograms written as a CBIS-DDSM-shaped tree.

The generator draws patients, breasts, masses and their CBIS-DDSM labels, renders each breast in
its CC and MLO views, and writes exactly what a TCIA NBIA download of the CBIS-DDSM mass subset
looks like (the two mass CSVs with the real header and quirks, the NBIA folder tree of DICOM files,
the NBIA ``metadata.csv`` manifest), plus one extra that CBIS-DDSM lacks: binary fine-annotation
masks of the margin-relevant region, referenced by an extra last CSV column.

One idea per module:

==================  =============================================================================
(the download's format, shared with the importer: ``iaiabl_lib.data.cbis_format``)
``labels``          the label sampler: the real tables' joint counts, reader disagreement
``plan``            patients, breasts, abnormalities, files, storage quirks, UIDs
``anatomy``         the breast: outline, thickness, 1/f^3 parenchyma, ducts/vessels/ligaments,
                    skin, nipple, pectoral muscle, detector blur, quantum noise
``lesions``         a mass from its labels: size, contrast by subtlety, shape, margin; masks
``scene``           both views of one breast: placement, masses superimposed on the anatomy
``markers``         the optional confounder marker (and ``marker_masks``: where it lies on prepared crops)
``tree``            DICOM files, the NBIA manifest and the CSVs
``generate``        ``make_synthetic``: all of it, in two threads, and the summary
``realism``         measurements from the files: background spectrum (beta), lesion contrast
``cli``             ``iaiabl synth``
==================  =============================================================================

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
  ``ILL_DEFINED-SPICULATED``, missing as ``NA`` or -- a quirk beyond the real tables -- as an
  empty cell) in the real tables' proportions (about a third of the rows);
* the two views of one mass sometimes carry different margins or subtleties (reader
  disagreement, as in the real tables: see :mod:`.labels`);
* fake PHI (PatientName, PatientBirthDate, InstitutionName, ...) in every DICOM file.

A hidden confounder can be injected (``confounder=P``): with probability P, each train-split ROI of
``confounder_class`` gets a bright burned-in label block in the full image, inside the importer's
crop square (centred on the lesion bounding box, side ``2 * max(bbox_h, bbox_w)``) but away from
the lesion. The CSVs never mention it; ``synthetic.json`` counts the markers and records each
one's box (``rois[i].marker_box``, full-image pixels ``[y0, x0, y1, x1]``, ends exclusive). Random
streams are split so that changing ``confounder`` changes nothing but the markers: the same seed
with and without a confounder gives paired data sets.

Intensity model (float image in [0, 1], 0 = black background, MONOCHROME2 sense): tissue and
masses are clipped to ``TISSUE_MAX`` (0.92); only confounder markers reach 1.0, i.e. the maximum
stored value.
"""

from __future__ import annotations

import os  # noqa: F401  (tests patch os.cpu_count through this module)

from ..cbis_format import (CSV_HEADER, CSV_NAMES, FINE_COLUMN, MAIN_MARGINS, MARGIN_NAMES,
                          METADATA_COLUMNS, SERIES_DESCRIPTIONS, SOP_CLASS_DM_PRESENTATION,
                          csv_path_to_file)
from .cli import add_cli, run_cli
from .generate import make_synthetic
from .labels import MALIGNANT_FRACTION
from .markers import crop_square, marker_masks
from .scene import TISSUE_MAX, render_example

__all__ = [
    "make_synthetic",
    "add_cli",
    "run_cli",
    "render_example",
    "CSV_HEADER",
    "FINE_COLUMN",
    "CSV_NAMES",
    "MARGIN_NAMES",
    "SERIES_DESCRIPTIONS",
    "csv_path_to_file",
    "crop_square",
    "marker_masks",
    "METADATA_COLUMNS",
    "MAIN_MARGINS",
    "MALIGNANT_FRACTION",
    "SOP_CLASS_DM_PRESENTATION",
    "TISSUE_MAX",
]
