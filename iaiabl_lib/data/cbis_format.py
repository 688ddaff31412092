"""The CBIS-DDSM download format: CSV header, file names, series descriptions, UIDs, NBIA manifest.

Everything here is a property of the real TCIA NBIA download of the CBIS-DDSM mass subset
(Sawyer-Lee et al. 2016, doi:10.7937/K9/TCIA.2016.7O02S9CY), which the generator
(``iaiabl_lib.data.synthetic``) imitates and the importer (``iaiabl_lib.data.cbis_ddsm``) reads:
the one place both take these names from. Torch-free. docs/INTERFACES.md §1 is the contract.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["CSV_HEADER", "FINE_COLUMN", "CSV_NAMES", "DOWNLOAD_MARKER", "FOLDER_PREFIX", "SERIES_DESCRIPTIONS",
           "METADATA_COLUMNS", "UID_ROOT", "SOP_CLASS_DM_PRESENTATION", "MARGIN_NAMES", "MAIN_MARGINS",
           "main_name", "resolve_class", "csv_path_to_file"]

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
#: The file ``iaiabl download cbis-ddsm`` writes last into a tree it verified (``data.idc``); the
#: importer reads its presence to advise on refused files.
DOWNLOAD_MARKER = "iaiabl_download.json"
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


def main_name(margin: str) -> str:
    """CBIS-DDSM margin cell -> our class name, "other" for everything else."""
    inverse = {v: k for k, v in MARGIN_NAMES.items()}
    return inverse.get(margin, "other")


def resolve_class(name: str) -> str:
    """Our margin name or a CBIS-DDSM one -> the CBIS-DDSM string."""
    key = name.strip()
    if key.lower() in MARGIN_NAMES:
        return MARGIN_NAMES[key.lower()]
    if key.upper() in MAIN_MARGINS:
        return key.upper()
    raise InputError(f"unknown confounder class {name!r}; use one of {list(MARGIN_NAMES)}")


def csv_path_to_file(root: str | Path, cell: str) -> Path:
    """Map a CSV path cell (``.../000000.dcm``, possibly ending in a newline) to the NBIA file
    ``root/CBIS-DDSM/.../1-1.dcm`` (000001.dcm -> 1-2.dcm)."""
    rel = cell.strip()
    head, name = rel.rsplit("/", 1)
    index = int(name.split(".")[0])
    return Path(root) / "CBIS-DDSM" / head / f"1-{index + 1}.dcm"
