"""Finding and reading a row's DICOM files: paths kept inside --cbis, NBIA and IDC layouts, the ROI
mask recognised by its content, the fine annotation."""
from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path

import numpy as np

from iaiabl_lib.data.dicom import DEFAULT_MAX_PIXELS, DicomError, read_dicom
from iaiabl_lib.data.locate import SeriesIndex, cell_uids

from .tables import MassRow, SkipRow, header_key, _text_error

__all__ = ["OUTSIDE", "resolve_inside", "DicomLocator", "largest_component", "binary_mask", "one_file"]


OUTSIDE = "path outside the dataset"


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
            names = {header_key(h): h for h in reader.fieldnames or []}
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


class _Reader:
    """read_dicom with a small cache (rows of one mammogram share its full image), errors cached
    too; ``max_pixels``: the pixel budget of every file (``dicom.read_dicom``). ``refused``: every
    file the reader refused, with its DicomError (the summary lists them)."""

    def __init__(self, capacity: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.cache: OrderedDict[Path, tuple] = OrderedDict()
        self.capacity = capacity
        self.max_pixels = max_pixels
        self.refused: dict[Path, DicomError] = {}

    def __call__(self, path: Path) -> tuple[np.ndarray, dict]:
        if path not in self.cache:
            try:
                self.cache[path] = (read_dicom(path, max_pixels=self.max_pixels), None)
            except DicomError as exc:
                self.cache[path] = (None, exc)
                self.refused[path] = exc
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        self.cache.move_to_end(path)
        result, error = self.cache[path]
        if error is not None:
            raise SkipRow(error.reason, path, str(error))
        return result


def binary_mask(pixels: np.ndarray) -> np.ndarray | None:
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


def one_file(locator: DicomLocator, cell: str, what: str) -> Path:
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
        mask = binary_mask(read(path)[0])
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
    path = one_file(locator, row.fine_path, "fine annotation")
    mask = binary_mask(read(path)[0])
    if mask is None:
        raise SkipRow("fine mask not binary", path, "the fine annotation file is not a binary mask")
    if mask.shape != shape:
        raise SkipRow("fine mask size mismatch", path, f"fine mask {mask.shape[0]}x{mask.shape[1]} px, "
                      f"full image {shape[0]}x{shape[1]} px")
    if not mask.any():
        raise SkipRow("fine mask empty", path, "the fine annotation mask has no pixels")
    return mask, path
