"""The two mass CSVs: rows, margins (kept, excluded, combined, missing) and pathology."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


from iaiabl_lib.data.cbis_format import CSV_NAMES, FINE_COLUMN, MARGIN_NAMES
from iaiabl_lib.errors import InputError

__all__ = ["header_key", "COLUMNS", "MARGIN_CODES", "EXCLUDED_MARGINS", "MISSING_MARGIN_CELLS", "SPELLINGS", "CbisError", "SkipRow", "MassRow", "read_mass_csv", "classify_margin", "classify_pathology"]


COLUMNS = {  # MassRow field -> CSV header (matched case- and whitespace-insensitively)
    "patient_id": "patient_id", "side": "left or right breast", "view": "image view",
    "abnormality_id": "abnormality id", "margin_raw": "mass margins", "pathology_raw": "pathology",
    "image_path": "image file path", "crop_path": "cropped image file path",
    "mask_path": "ROI mask file path",
}
MARGIN_CODES = {code: name for name, code in MARGIN_NAMES.items()}   # CBIS-DDSM string -> our class name
EXCLUDED_MARGINS = {"OBSCURED": "margin obscured", "MICROLOBULATED": "margin microlobulated"}
MISSING_MARGIN_CELLS = {"", "NA", "N/A", "NAN", "NONE", "NULL"}
SPELLINGS = {"ILL-DEFINED": "ILL_DEFINED", "ILL DEFINED": "ILL_DEFINED"}   # one margin, not a combination


class CbisError(InputError):
    """The CBIS-DDSM directory or its CSVs cannot be used at all (not a per-row problem)."""


class SkipRow(Exception):
    """One CSV row that cannot be imported: ``reason`` (counted), ``file``, ``detail``."""

    def __init__(self, reason: str, file: str | Path = "", detail: str = ""):
        super().__init__(f"{reason}: {detail or file}")
        self.reason, self.file, self.detail = reason, str(file), detail


@dataclass
class MassRow:
    """One row of a mass CSV, cells stripped. ``row`` is the 1-based data-row number."""

    csv: str
    row: int
    patient_id: str
    side: str
    view: str
    abnormality_id: str
    margin_raw: str
    pathology_raw: str
    image_path: str
    crop_path: str
    mask_path: str
    fine_path: str = ""
    missing_column: str = ""      # a required column the row has no cell for (a short row)


def header_key(name: str) -> str:
    """A CSV header as matched: case and runs of whitespace ignored ("Mass  Margins" is "mass margins")."""
    return " ".join(name.strip().lower().split())


def _text_error(path: Path, err: Exception) -> CbisError:
    """A CSV that is not UTF-8 text (or holds NUL bytes), as a CbisError naming the file."""
    if isinstance(err, UnicodeDecodeError):
        byte = err.object[err.start:err.start + 1].hex().upper() if err.object else "?"
        what = (f"is not UTF-8 text (byte 0x{byte}; Latin-1 or another encoding?); convert it, e.g. "
                f"`iconv -f latin1 -t utf-8 {path.name} > fixed.csv`, or download it again")
    else:
        what = f"cannot be read as CSV ({err}); download it again"
    return CbisError(f"{path}: the file {what}")


def read_mass_csv(path: str | Path) -> list[MassRow]:
    """Rows of a CBIS-DDSM mass CSV, columns found by header name (order free; the optional
    'fine annotation file path' column is read when present). Raises :class:`CbisError` naming
    the CSV and the column when a required column is missing, or the CSV when it is not UTF-8
    text. A row without a cell for a required column has ``missing_column`` set."""
    path = Path(path)
    if not path.is_file():
        raise CbisError(f"{path}: CSV not found; --cbis must be the folder that holds "
                        f"{CSV_NAMES['train']} and {CSV_NAMES['test']}")
    try:
        return _read_mass_rows(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise _text_error(path, err) from None


def _read_mass_rows(path: Path) -> list[MassRow]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise CbisError(f"{path}: the CSV is empty; download it again")
        where = {header_key(h): i for i, h in enumerate(header)}
        missing = [col for col in COLUMNS.values() if header_key(col) not in where]
        if missing:
            raise CbisError(f"{path}: missing column {missing[0]!r} (header: {', '.join(h.strip() for h in header)}); "
                            "this is not a CBIS-DDSM mass description CSV or it was edited")
        index = {field: where[header_key(col)] for field, col in COLUMNS.items()}
        fine_index = where.get(header_key(FINE_COLUMN))
        rows = []
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue

            def cell(i: int | None) -> str:
                return cells[i].strip() if i is not None and i < len(cells) else ""

            short = [COLUMNS[field] for field, i in index.items() if i >= len(cells)]
            rows.append(MassRow(csv=path.name, row=number, fine_path=cell(fine_index),
                                missing_column=short[0] if short else "",
                                **{field: cell(i) for field, i in index.items()}))
    return rows


def classify_margin(cell: str) -> tuple[str | None, str | None]:
    """``(margin, None)`` for a usable margin (a MARGINS name), else ``(None, reason)``:
    'margin obscured', 'margin microlobulated', 'margin combined', 'margin missing', or
    "margin unknown 'X'" for a string CBIS-DDSM does not use. ``ILL-DEFINED`` is a spelling of
    ILL_DEFINED (indistinct), not a combination."""
    code = " ".join(cell.strip().upper().split())
    for spelling, canonical in SPELLINGS.items():
        code = code.replace(spelling, canonical)
    if code in MISSING_MARGIN_CELLS:
        return None, "margin missing"
    if "-" in code:
        return None, "margin combined"
    if code in MARGIN_CODES:
        return MARGIN_CODES[code], None
    if code in EXCLUDED_MARGINS:
        return None, EXCLUDED_MARGINS[code]
    return None, f"margin unknown {cell.strip()!r}"


def classify_pathology(cell: str) -> int | None:
    """1 for MALIGNANT, 0 for BENIGN and BENIGN_WITHOUT_CALLBACK, None otherwise."""
    code = cell.strip().upper()
    return 1 if code == "MALIGNANT" else 0 if code in ("BENIGN", "BENIGN_WITHOUT_CALLBACK") else None
