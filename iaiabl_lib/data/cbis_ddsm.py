"""CBIS-DDSM (or the synthetic look-alike) -> prepared dataset: ROI crops, lesion masks, fine masks.

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
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from iaiabl_lib.config import MARGINS
from iaiabl_lib.data.cbis_format import CSV_NAMES, FINE_COLUMN, MARGIN_NAMES
from iaiabl_lib.data.dataset import SPLITS, normalise_patient_id, resize_images, resize_masks, save_prepared
from iaiabl_lib.data.dicom import DEFAULT_MAX_PIXELS, DicomError, read_dicom, robust_window, window_to_uint8
from iaiabl_lib.data.locate import SeriesIndex, cell_uids
from iaiabl_lib.data.prepared_dir import check_replaceable, recover, remove_ours, swap_in
from iaiabl_lib.lock import exclusive_lock, sibling_lock

__all__ = [
    "CbisError", "MassRow", "read_mass_csv", "classify_margin", "classify_pathology",
    "DicomLocator", "crop_geometry", "crop_and_resize", "assign_splits", "prepare",
    "format_table", "add_cli", "run_cli", "CSV_NAMES", "COLUMNS", "MIN_CROP", "resolve_inside", "crop_padded",
    "largest_component", "OUTSIDE",
]

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
OUTSIDE = "path outside the dataset"
MIN_CROP = 64                                  # px, smallest crop side
PAPER_FRACTIONS = (0.73, 0.12, 0.15)           # train, val, test (patients)
OFFICIAL_VAL_FRACTION = 0.15


class CbisError(ValueError):
    """The CBIS-DDSM directory or its CSVs cannot be used at all (not a per-row problem)."""


class SkipRow(Exception):
    """One CSV row that cannot be imported: ``reason`` (counted), ``file``, ``detail``."""

    def __init__(self, reason: str, file: str | Path = "", detail: str = ""):
        super().__init__(f"{reason}: {detail or file}")
        self.reason, self.file, self.detail = reason, str(file), detail


# --- CSV -----------------------------------------------------------------------------------------

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


def _norm(name: str) -> str:
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
        where = {_norm(h): i for i, h in enumerate(header)}
        missing = [col for col in COLUMNS.values() if _norm(col) not in where]
        if missing:
            raise CbisError(f"{path}: missing column {missing[0]!r} (header: {', '.join(h.strip() for h in header)}); "
                            "this is not a CBIS-DDSM mass description CSV or it was edited")
        index = {field: where[_norm(col)] for field, col in COLUMNS.items()}
        fine_index = where.get(_norm(FINE_COLUMN))
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


# --- locating files ------------------------------------------------------------------------------

def _parts(cell: str) -> list[str]:
    return [p for p in cell.strip().replace("\\", "/").split("/") if p not in ("", ".")]


def resolve_inside(root: str | Path, path: str | Path) -> Path | None:
    """``path`` (a relative path is taken from ``root``, not from the working directory) with
    symbolic links and ``..`` resolved,
    or None when it leads outside ``root``. Only path names are examined (no file is opened, and
    the answer is the same whether an outside file exists or not), so a CSV cell like
    ``../../etc/passwd`` can neither be read nor probed."""
    base = Path(root).resolve()
    target = (base / path).resolve()
    return target if target == base or base in target.parents else None


class DicomLocator:
    """Resolve CSV paths (``folder/study/series/000000.dcm``) to files in an NBIA download.

    Series folder: ``ROOT/folder/study/series`` when it exists; else the folder that
    ``metadata.csv`` ('Series UID' -> 'File Location') names; else the one folder anywhere under
    ``cbis_dir`` whose name carries the series UID (``MG_<uid>`` in an IDC download; a
    :class:`~iaiabl_lib.data.locate.SeriesIndex`, built once); else a folder under ``ROOT/folder``
    named after the series UID or ending in ``-<its last 5 digits>`` (NBIA naming). Files: the
    named file when it exists, else every ``*.dcm`` in the series folder (``1-1.dcm``, ``1-2.dcm``).
    ``ROOT`` is ``cbis_dir/CBIS-DDSM`` (or ``cbis_dir`` itself when that has no CBIS-DDSM folder).
    """

    def __init__(self, cbis_dir: str | Path):
        self.cbis_dir = Path(cbis_dir).absolute()     # absolute: resolve_inside joins relative paths to it
        self.root = self.cbis_dir / "CBIS-DDSM" if (self.cbis_dir / "CBIS-DDSM").is_dir() else self.cbis_dir
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self.series_from_metadata = self._read_metadata()
        self.uid_index = SeriesIndex(self.cbis_dir)

    def _read_metadata(self) -> dict[str, Path]:
        candidates = [self.root / "metadata.csv", self.cbis_dir / "metadata.csv"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return {}
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = {_norm(h): h for h in reader.fieldnames or []}
            uid_col, loc_col = names.get("series uid"), names.get("file location")
            if uid_col is None or loc_col is None:
                self.notes.append(f"{path} has no 'Series UID'/'File Location' columns; "
                                  "series folders were searched by name")
                return {}
            table = {}
            try:
                for row in reader:
                    location = Path(*_parts(row.get(loc_col) or ""))
                    for base in (path.parent, path.parent.parent, self.cbis_dir):
                        inside = resolve_inside(self.cbis_dir, base / location)
                        if inside is not None and inside.is_dir():
                            table[(row.get(uid_col) or "").strip()] = inside
                            break
            except (UnicodeDecodeError, csv.Error) as err:
                raise _text_error(path, err) from None
        return table

    def series_dir(self, cell: str) -> Path | None:
        """The folder that holds the series of CSV path ``cell``, or None."""
        parts = _parts(cell)
        if len(parts) < 2:
            return None
        folder, series = parts[0], parts[-2]
        direct = resolve_inside(self.cbis_dir, self.root.joinpath(*parts[:-1]))
        if direct is not None and direct.is_dir():
            return direct
        if series in self.series_from_metadata:
            return self.series_from_metadata[series]
        uids = cell_uids(cell)
        if uids is not None:
            found = self.uid_index.find(*uids)
            if found is not None:
                return found.path
            if series in self.uid_index.ambiguous and series not in self._noted:
                self._noted.add(series)
                self.notes.append(f"series {series} is in {len(self.uid_index.ambiguous[series])} folders "
                                  f"({', '.join(self.relative(d) for d in self.uid_index.ambiguous[series])}); "
                                  "its rows were skipped: keep one copy")
        top = resolve_inside(self.cbis_dir, self.root / folder)
        if top is None or not top.is_dir():
            return None
        suffixes = {"-" + series[-5:], "-" + (series[-5:].lstrip("0") or "0")}
        leaves = [d for d in top.rglob("*") if resolve_inside(self.cbis_dir, d) is not None
                  and d.is_dir() and any(d.glob("*.dcm"))]
        exact = [d for d in leaves if d.name == series]
        chosen = exact or [d for d in leaves if any(d.name.endswith(s) for s in suffixes)]
        return chosen[0] if len(chosen) == 1 else None  # never guess between two folders

    def files(self, cell: str) -> list[Path]:
        """DICOM files CSV path ``cell`` may denote ([] when nothing is found). Raises
        ``SkipRow(OUTSIDE)`` when the path leads outside ``--cbis``, before anything is opened."""
        if not _parts(cell) or resolve_inside(self.cbis_dir, self.root.joinpath(*_parts(cell))) is None:
            if _parts(cell):
                raise SkipRow(OUTSIDE, cell, f"CSV path {cell!r} leads outside {self.cbis_dir} (through "
                              "'..' or a symbolic link); the file was not opened. "
                              "Fix the CSV cell, or copy the file into the download")
            return []
        directory = self.series_dir(cell)
        if directory is None:
            return []
        named = resolve_inside(self.cbis_dir, directory / _parts(cell)[-1])
        if named is not None and named.is_file():
            return [named]
        return sorted(p for p in directory.iterdir() if p.suffix.lower() == ".dcm"
                      and resolve_inside(self.cbis_dir, p) is not None and p.is_file())

    def relative(self, path: Path) -> str:
        """``path`` relative to ``--cbis`` (found paths are resolved: relative to its real path)."""
        for base in (self.cbis_dir.resolve(), self.cbis_dir):
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
        return str(path)


# --- reading one ROI -----------------------------------------------------------------------------

class _Reader:
    """read_dicom with a small cache (rows of one mammogram share its full image), errors cached
    too; ``max_pixels``: the pixel budget of every file (``dicom.read_dicom``)."""

    def __init__(self, capacity: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.cache: OrderedDict[Path, tuple] = OrderedDict()
        self.capacity = capacity
        self.max_pixels = max_pixels

    def __call__(self, path: Path) -> tuple[np.ndarray, dict]:
        if path not in self.cache:
            try:
                self.cache[path] = (read_dicom(path, max_pixels=self.max_pixels), None)
            except DicomError as exc:
                self.cache[path] = (None, exc)
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        self.cache.move_to_end(path)
        result, error = self.cache[path]
        if error is not None:
            raise SkipRow(error.reason, path, str(error))
        return result


def _binary(pixels: np.ndarray) -> np.ndarray | None:
    """bool (H, W) foreground of a two-valued image; a constant image is all False when it is 0
    and all True otherwise (an all-ones mask is full, not empty); None when the image has more
    than two values (a photograph, not a mask)."""
    low, high = pixels.min(), pixels.max()
    if not np.all((pixels == low) | (pixels == high)):
        return None
    return pixels == high if high > low else np.full(pixels.shape, bool(high != 0))


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(mask, components, removed_pixels)``: the largest 8-connected component of a non-empty
    bool mask (H, W), how many components there were, and how many pixels were dropped. One stray
    pixel far from the lesion would otherwise stretch the bounding box and the crop around it
    (INTERFACES.md §1), shrinking the lesion in the ROI."""
    from scipy import ndimage

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    labels, count = ndimage.label(mask[y0:y1, x0:x1], structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask, count, 0
    sizes = np.bincount(labels.ravel())[1:]                    # pixels per component 1..count
    keep = np.zeros_like(mask)
    keep[y0:y1, x0:x1] = labels == (int(np.argmax(sizes)) + 1)
    return keep, count, int(sizes.sum() - sizes.max())


def _one_file(locator: DicomLocator, cell: str, what: str) -> Path:
    files = locator.files(cell)
    if not files:
        raise SkipRow("file missing", cell, f"{what} {cell!r} not found under {locator.root}")
    if len(files) > 1:
        raise SkipRow("ambiguous series", files[0].parent,
                      f"{what} {cell!r}: {len(files)} files in {files[0].parent} and none named as in the CSV")
    return files[0]


def _find_mask(locator: DicomLocator, row: MassRow, read: _Reader, shape: tuple[int, int]) -> tuple[np.ndarray, Path]:
    """The lesion mask among the crop and mask files (in either order, one series or two): the
    single binary file of the full image's ``shape``. Every file must read cleanly."""
    candidates: list[Path] = []
    for what, cell in (("cropped image", row.crop_path), ("ROI mask", row.mask_path)):
        found = locator.files(cell)
        if not found:
            raise SkipRow("file missing", cell, f"{what} {cell!r} not found under {locator.root}")
        candidates += [p for p in found if p not in candidates]
    binaries = []
    for path in candidates:
        mask = _binary(read(path)[0])
        if mask is not None:
            binaries.append((path, mask))
    full_size = [(p, m) for p, m in binaries if m.shape == shape]
    if len(full_size) > 1:
        raise SkipRow("ambiguous ROI files", full_size[0][0],
                      f"{len(full_size)} binary full-size images among {[p.name for p, _ in full_size]}")
    if not full_size:
        if binaries:
            path, mask = binaries[0]
            raise SkipRow("mask size mismatch", path, f"ROI mask {mask.shape[0]}x{mask.shape[1]} px, "
                          f"full image {shape[0]}x{shape[1]} px")
        raise SkipRow("no ROI mask found", candidates[0].parent,
                      f"none of {[p.name for p in candidates]} is a binary image (an ROI mask)")
    path, mask = full_size[0]
    if not mask.any():
        raise SkipRow("mask empty", path, "the ROI mask has no lesion pixels")
    if mask.all():
        raise SkipRow("mask full", path, "the ROI mask marks every pixel of the image as lesion; "
                      "it outlines nothing: check the file (download it again)")
    return mask, path


def _fine_mask(locator: DicomLocator, row: MassRow, read: _Reader, shape: tuple[int, int]) -> tuple[np.ndarray, Path]:
    path = _one_file(locator, row.fine_path, "fine annotation")
    mask = _binary(read(path)[0])
    if mask is None:
        raise SkipRow("fine mask not binary", path, "the fine annotation file is not a binary mask")
    if mask.shape != shape:
        raise SkipRow("fine mask size mismatch", path, f"fine mask {mask.shape[0]}x{mask.shape[1]} px, "
                      f"full image {shape[0]}x{shape[1]} px")
    if not mask.any():
        raise SkipRow("fine mask empty", path, "the fine annotation mask has no pixels")
    return mask, path


# --- geometry ------------------------------------------------------------------------------------

def crop_geometry(mask: np.ndarray, min_side: int = MIN_CROP) -> tuple[tuple[int, int, int, int], tuple[int, int, int]]:
    """``(bbox, box)`` of a non-empty lesion mask (H, W): ``bbox = (y0, x0, y1, x1)`` (ends
    exclusive) and the square crop ``box = (top, left, side)`` centred on the bbox centre,
    ``side = max(min_side, 2 * max(bbox_h, bbox_w))`` (INTERFACES.md §1)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(min_side, 2 * max(y1 - y0, x1 - x0))
    top = int(np.floor((y0 + y1) / 2 - side / 2))
    left = int(np.floor((x0 + x1) / 2 - side / 2))
    return (y0, x0, y1, x1), (top, left, side)


def crop_padded(array: np.ndarray, box: tuple[int, int, int], transform: Callable | None = None) -> np.ndarray:
    """(H, W) -> (side, side), zero where the box leaves the image; ``transform`` (e.g. the
    windowing) is applied to the part inside the image only."""
    top, left, side = box
    h, w = array.shape
    y0, y1 = min(max(top, 0), h), max(min(top + side, h), 0)
    x0, x1 = min(max(left, 0), w), max(min(left + side, w), 0)
    region = array[y0:y1, x0:x1]
    region = transform(region) if transform is not None else region
    out = np.zeros((side, side), dtype=region.dtype)
    out[y0 - top:y1 - top, x0 - left:x1 - left] = region
    return out


def crop_and_resize(image: np.ndarray, masks: Iterable[np.ndarray], box: tuple[int, int, int],
                    size: int, image_transform: Callable | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The identical square crop and resize for an image (H, W) and its masks (bool or {0,1}
    (H, W)) -> uint8 (size, size) and uint8 {0,1} (size, size) each. ``image_transform`` maps the
    image's in-frame part to uint8 (the windowing); without it ``image`` must be uint8 already."""
    out_image = resize_images(crop_padded(image, box, image_transform)[None], size)[0]
    out_masks = [resize_masks(crop_padded(np.asarray(m, dtype=np.uint8), box)[None], size)[0] for m in masks]
    return out_image, out_masks


# --- splits --------------------------------------------------------------------------------------

def _majority(labels: list[int]) -> int:
    counts = Counter(labels)
    return min(counts, key=lambda c: (-counts[c], c))  # most frequent, ties -> lowest index


def _stratified(patients: dict[str, list[int]], fractions: dict[str, float], rng: np.random.Generator,
                default: str) -> dict[str, str]:
    """Patients -> split, stratified by majority margin. Per stratum of n patients each non-default
    split gets round(fraction * n) patients, at least 1 while the default split keeps >= 1."""
    assignment: dict[str, str] = {}
    for cls in range(len(MARGINS)):
        stratum = sorted(p for p, labels in patients.items() if _majority(labels) == cls)
        stratum = [stratum[i] for i in rng.permutation(len(stratum))]
        start = 0
        for split, fraction in fractions.items():
            room = len(stratum) - start - 1          # keep one for the default split
            take = min(room, max(1, int(round(fraction * len(stratum))))) if room > 0 else 0
            for p in stratum[start:start + take]:
                assignment[p] = split
            start += take
        for p in stratum[start:]:
            assignment[p] = default
    return assignment


def assign_splits(samples: list[dict], mode: str = "paper", seed: int = 0) -> tuple[dict[str, str], int]:
    """Patient -> split for ``samples`` (dicts with 'patient_id', 'label', 'source'
    ('train'|'test' CSV)). ``paper``: patient-level 73/12/15, stratified by majority margin;
    ``official``: the test CSV's patients -> test, ~15 % of the others -> val. Returns
    ``(assignment, moved)``; ``moved``: official-mode patients in both CSVs, all sent to test."""
    rng = np.random.default_rng(seed)
    patients: dict[str, list[int]] = {}
    for s in samples:
        patients.setdefault(s["patient_id"], []).append(s["label"])
    if mode == "paper":
        train, val, test = PAPER_FRACTIONS
        return _stratified(patients, {"test": test, "val": val}, rng, default="train"), 0
    if mode != "official":
        raise ValueError(f"unknown split mode {mode!r}; use 'paper' or 'official'")
    in_test = {s["patient_id"] for s in samples if s["source"] == "test"}
    in_train = {s["patient_id"] for s in samples if s["source"] == "train"}
    rest = {p: labels for p, labels in patients.items() if p not in in_test}
    assignment = _stratified(rest, {"val": OFFICIAL_VAL_FRACTION}, rng, default="train")
    assignment.update({p: "test" for p in in_test})
    return assignment, len(in_test & in_train)


# --- prepare -------------------------------------------------------------------------------------

def _load_row(row: MassRow, locator: DicomLocator, read: _Reader, size: int) -> dict:
    """Import one usable row -> arrays and manifest fields; raises SkipRow."""
    full_path = _one_file(locator, row.image_path, "full mammogram")
    pixels, info = read(full_path)
    shape = pixels.shape
    lesion, mask_path = _find_mask(locator, row, read, shape)
    lesion, components, removed = largest_component(lesion)
    fine, fine_path = (None, None)
    if row.fine_path:
        fine, fine_path = _fine_mask(locator, row, read, shape)
    bbox, box = crop_geometry(lesion)
    masks = [lesion] + ([fine] if fine is not None else [])
    window = robust_window(pixels) if info.get("voi") is None else None   # of the whole mammogram
    image, out_masks = crop_and_resize(pixels, masks, box, size,
                                       image_transform=lambda part: window_to_uint8(part, info, window=window))
    if not out_masks[0].any():
        raise SkipRow("mask empty", mask_path, f"the lesion vanished when resized to {size} px")
    return {
        "image": image, "lesion": out_masks[0],
        "fine": out_masks[1] if fine is not None else np.zeros((size, size), np.uint8),
        "image_path": locator.relative(full_path), "mask_path": locator.relative(mask_path),
        "fine_mask_path": locator.relative(fine_path) if fine_path else "",
        "bbox": " ".join(map(str, bbox)), "crop_box": " ".join(map(str, box)),
        "mask_components": components, "mask_removed_pixels": removed,
    }


def _skip(row: MassRow, reason: str, file: str = "", detail: str = "") -> dict:
    return {"csv": row.csv, "row": row.row, "patient_id": row.patient_id, "reason": reason,
            "file": file, "detail": detail}


def _summary(cbis_dir: Path, size: int, split: str, seed: int, n_rows: int,
             manifest: list[dict], skipped: list[dict]) -> dict:
    counts = {s: {**{m: 0 for m in MARGINS}, "total": 0} for s in SPLITS}
    malignant, fine = {s: 0 for s in SPLITS}, {s: 0 for s in SPLITS}
    seen: dict[str, set] = {s: set() for s in SPLITS}
    for r in manifest:
        s = r["split"]
        counts[s][r["margin"]] += 1
        counts[s]["total"] += 1
        malignant[s] += int(r["malignant"])
        fine[s] += int(r["has_fine"])
        seen[s].add(r["patient_id"])
    return {"source": str(cbis_dir), "size": size, "split_mode": split, "seed": seed,
            "n_csv_rows": n_rows, "n_included": len(manifest), "counts": counts,
            "malignant": malignant, "fine": fine, "patients": {s: len(seen[s]) for s in SPLITS},
            "excluded": dict(sorted(Counter(s["reason"] for s in skipped).items())),
            "skipped": skipped}


def prepare(cbis_dir: str | Path, out_dir: str | Path, size: int = 224, split: str = "paper",
            seed: int = 0, progress: bool = False, verbose: bool = True,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Import a CBIS-DDSM-shaped tree into a prepared dataset at ``out_dir``; returns the summary.

    Holds an exclusive lock on ``out_dir`` (``lock.sibling_lock``) throughout, writes
    ``out_dir.tmp-<pid>`` and renames it into place only when complete (an existing dataset is
    replaced only then, and only when it is one: ``prepared_dir.check_replaceable``). Raises
    :class:`CbisError` when nothing usable is found, ``PreparedDatasetError`` when ``out_dir``
    is not ours to replace;
    per-row problems are skipped and listed in the summary. ``max_pixels``: the pixel budget
    of each DICOM file (``dicom.read_dicom``).
    """
    cbis_dir, out = Path(cbis_dir), Path(out_dir)
    if split not in ("paper", "official"):
        raise CbisError(f"unknown --split {split!r}; use 'paper' or 'official'")
    if size < 8:
        raise CbisError(f"--size {size} is too small; use at least 8 px (the paper uses 224)")
    if max_pixels < 1:
        raise CbisError(f"the pixel budget must be positive (got {max_pixels} pixels)")
    check_replaceable(out)
    rows = [(source, r) for source, name in CSV_NAMES.items() for r in read_mass_csv(cbis_dir / name)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(sibling_lock(out), f"prepared dataset {out}"):
        recover(out)
        check_replaceable(out)
        summary = _import(cbis_dir, out, rows, size, split, seed, progress, max_pixels)
    if verbose:
        print(format_table(summary))
    return summary


def _import(cbis_dir: Path, out: Path, rows: list[tuple[str, MassRow]], size: int, split: str, seed: int,
            progress: bool, max_pixels: int) -> dict:
    """The body of :func:`prepare` (under its lock): rows -> samples -> splits -> files."""
    locator, read = DicomLocator(cbis_dir), _Reader(max_pixels=max_pixels)
    iterator = rows
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(rows, desc="prepare", unit="row")
    samples, skipped = [], []
    for source, row in iterator:
        margin, reason = classify_margin(row.margin_raw)
        malignant = classify_pathology(row.pathology_raw)
        patient = normalise_patient_id(row.patient_id)
        if row.missing_column:
            skipped.append(_skip(row, "row too short", detail=f"the row has no cell for the column "
                                 f"{row.missing_column!r}; the CSV line is cut short: repair it or "
                                 "download the CSV again"))
        elif not patient:
            skipped.append(_skip(row, "patient id missing", detail="the patient_id cell is empty"))
        elif margin is None:
            skipped.append(_skip(row, reason, detail=f"mass margins = {row.margin_raw!r}"))
        elif malignant is None:
            skipped.append(_skip(row, f"pathology unknown {row.pathology_raw!r}",
                                 detail="expected MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK"))
        else:
            try:
                loaded = _load_row(row, locator, read, size)
            except SkipRow as exc:
                file = locator.relative(Path(exc.file)) if Path(exc.file).is_absolute() else exc.file
                skipped.append(_skip(row, exc.reason, file, exc.detail))
                continue
            samples.append({"row": row, "source": source, "patient_id": patient,
                            "label": MARGINS.index(margin), "margin": margin,
                            "malignant": malignant, **loaded})
    if not samples:
        reasons = Counter(s["reason"] for s in skipped).most_common(3)
        raise CbisError(f"{cbis_dir}: no usable rows among {len(rows)} (most common reasons: {reasons}); "
                        "check that --cbis points at the download (CSVs + CBIS-DDSM folder)")
    assignment, moved = assign_splits(samples, split, seed)
    manifest, used_ids, cleaned = [], Counter(), []
    for s in samples:
        r: MassRow = s["row"]
        base = f"{s['patient_id']}_{r.side}_{r.view}_{r.abnormality_id}"
        used_ids[base] += 1
        manifest.append({
            "id": base if used_ids[base] == 1 else f"{base}-{used_ids[base]}",
            "patient_id": s["patient_id"], "split": assignment[s["patient_id"]], "margin": s["margin"],
            "margin_index": s["label"], "pathology": "MALIGNANT" if s["malignant"] else "BENIGN",
            "malignant": s["malignant"], "has_fine": int(s["fine_mask_path"] != ""),
            "side": r.side, "view": r.view, "abnormality_id": r.abnormality_id, "source_csv": r.csv,
            "csv_row": r.row, **{k: s[k] for k in ("image_path", "mask_path", "fine_mask_path", "bbox", "crop_box")}})
        if s["mask_components"] > 1:
            cleaned.append({"csv": r.csv, "row": r.row, "id": manifest[-1]["id"], "reason": "mask specks removed",
                            "file": s["mask_path"], "components": s["mask_components"],
                            "removed_pixels": s["mask_removed_pixels"],
                            "detail": f"the ROI mask has {s['mask_components']} separate regions; kept the "
                                      f"largest, dropped {s['mask_removed_pixels']} px elsewhere (they "
                                      "would have stretched the crop)"})
    owners: dict[str, set] = {}
    for m in manifest:
        owners.setdefault(m["patient_id"], set()).add(m["split"])
    leaking = sorted(p for p, splits in owners.items() if len(splits) > 1)
    if leaking:  # a bug guard, never expected
        raise RuntimeError(f"patients in two splits: {leaking[:5]}")
    summary = _summary(cbis_dir, size, split, seed, len(rows), manifest, skipped)
    summary["max_pixels"] = int(max_pixels)
    summary["cleaned"] = cleaned
    summary["notes"] = locator.notes + ([f"{moved} patients in both CSVs sent to test"] if moved else []) \
        + ([f"{len(cleaned)} ROI masks had more than one connected component: kept the largest "
            "(see 'cleaned')"] if cleaned else [])
    assert summary["n_included"] + len(skipped) == summary["n_csv_rows"]

    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        remove_ours(tmp)
    tmp.mkdir()
    try:
        arrays = [np.stack([s[key] for s in samples]).astype(np.uint8)  # (N, S, S) each
                  for key in ("image", "lesion", "fine")]
        save_prepared(tmp, manifest, *arrays, summary)
        swap_in(tmp, out)
    except BaseException:
        if tmp.exists():
            remove_ours(tmp)
        raise
    return summary


def format_table(summary: dict) -> str:
    """Per-split x class counts (plus malignant, fine, patients) and the exclusion reasons."""
    head = ["split", *MARGINS, "total", "malignant", "fine", "patients"]
    lines = [" ".join(f"{h:>13}" for h in head)]
    for s in SPLITS:
        c = summary["counts"][s]
        cells = [s, *[c[m] for m in MARGINS], c["total"], summary["malignant"][s], summary["fine"][s],
                 summary.get("patients", {}).get(s, "")]
        lines.append(" ".join(f"{v:>13}" for v in cells))
    lines.append(f"{summary['n_included']} of {summary['n_csv_rows']} CSV rows included; skipped:")
    lines += [f"  {n:5d}  {reason}" for reason, n in sorted(summary["excluded"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------

def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare --cbis DIR --out DATA [--size PX] [--split paper|official] [--seed S]``."""
    p = subparsers.add_parser(
        "prepare", help="import a CBIS-DDSM(-shaped) tree into a prepared dataset",
        description="Crop, window and mask every usable mass ROI of a CBIS-DDSM download (or of "
                    "`iaiabl synth` output) and write DATA/{manifest.csv,images.npy,...}.")
    p.add_argument("--cbis", required=True, type=Path, metavar="DIR",
                   help="folder with the two mass CSVs and the CBIS-DDSM/ DICOM tree")
    p.add_argument("--out", required=True, type=Path, metavar="DATA", help="prepared dataset folder to write")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="ROI side in pixels (default 224)")
    p.add_argument("--split", choices=("paper", "official"), default="paper",
                   help="paper: patient-level 73/12/15 stratified; official: CBIS-DDSM's test set")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="split seed (default 0)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                   help="refuse DICOM files declaring more than this many megapixels (Rows x Columns "
                        f"x frames), before decoding them (default {DEFAULT_MAX_PIXELS / 1e6:g}; a "
                        "mammogram has 10-40)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``iaiabl prepare``: 0 on success; errors (``CbisError``...) are reported by
    ``cli.main``'s error policy."""
    prepare(args.cbis, args.out, size=args.size, split=args.split, seed=args.seed,
            progress=sys.stderr.isatty(), max_pixels=int(args.max_megapixels * 1e6))
    return 0
