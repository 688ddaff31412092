"""Real CBIS-DDSM in one command, from the NCI Imaging Data Commons: ``iaiabl download cbis-ddsm``.

The Imaging Data Commons (IDC) hosts CBIS-DDSM as public DICOM in open cloud buckets (collection
``cbis_ddsm``, CC BY 3.0). Its Python client ``idc-index`` ships the whole index of series as a
Parquet file (the ``idc-index-data`` wheel) and downloads selections with ``s5cmd``. This module
uses the index to select exactly the series that the two CBIS-DDSM mass CSVs reference (shipped in
``iaiabl_lib/data/cbis_ddsm_csv/``), reports their count and size offline, checks the free disk
space, lets ``IDCClient.download_from_selection`` fetch them (with its progress bar and its
``s5cmd sync``, so that an interrupted download resumes), verifies every series' file count and
byte count against the index and every file's DICOM header (``dicom.check_header``: a damaged file
is named with the reader's reason, never an exception), and only then writes the two CSVs and
``iaiabl_download.json`` beside the images. A download that failed or stopped therefore never
looks complete: without the CSVs ``iaiabl prepare`` refuses the folder. Rerunning the same command
resumes it: series that are complete are kept, the others are synced again (a damaged file once
it is deleted: ``s5cmd sync`` compares sizes and times, so it may keep a damaged file of the right
size).

Layout written (the library's default ``dirTemplate``, :data:`DIR_TEMPLATE`; files are named after
IDC's ``crdc_instance_uuid``)::

    OUT/mass_case_description_train_set.csv      (after verification)
    OUT/mass_case_description_test_set.csv       (after verification)
    OUT/iaiabl_download.json                     (after verification: what was checked)
    OUT/cbis_ddsm/<PatientID>/<StudyInstanceUID>/MG_<SeriesInstanceUID>/<uuid>.dcm

``iaiabl prepare --cbis OUT`` reads it as it is (``iaiabl_lib.data.locate`` finds each CSV row's
series by its UIDs). ``idc-index`` is an optional dependency: ``pip install 'iaiabl_lib[real]'``.
Nothing here writes HTTP or S3 code: selection reads the index file the ``idc-index-data`` wheel
ships (with DuckDB, as ``idc-index`` does), downloads go through ``IDCClient``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from iaiabl_lib.atomic import atomic_write_bytes
from iaiabl_lib.data.cbis_ddsm import CSV_NAMES, read_mass_csv
from iaiabl_lib.data.cbis_format import DOWNLOAD_MARKER
from iaiabl_lib.errors import UserError
from iaiabl_lib.data.locate import SeriesIndex, cell_uids

__all__ = [
    "COLLECTION", "DIR_TEMPLATE", "PIP_SPEC", "INSTALL_HINT", "CSV_DIR", "MARKER", "HEADROOM_BYTES",
    "DownloadError", "MissingDependency", "IndexSeries", "Selection", "SeriesState",
    "available", "load_index", "index_version", "select_series", "series_folder", "check_tree", "damaged_file",
    "download_cbis_ddsm", "rois_only_refusal", "format_bytes", "add_cli", "run_cli",
]

COLLECTION = "cbis_ddsm"
#: ``IDCClient.DOWNLOAD_HIERARCHY_DEFAULT`` of idc-index 0.13.4 (a test pins the two together).
DIR_TEMPLATE = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
#: What ``pip install 'iaiabl_lib[real]'`` installs (pyproject's ``real`` extra; a test pins them).
PIP_SPEC = "idc-index==0.13.4"
INSTALL_HINT = (f"install it with: pip install 'iaiabl_lib[real]'  (or: pip install {PIP_SPEC}); "
                "in a notebook: %pip install " + PIP_SPEC)
CSV_DIR = Path(__file__).with_name("cbis_ddsm_csv")
MARKER = DOWNLOAD_MARKER
#: Free space required beyond the download itself (the prepared dataset, s5cmd's temporary files).
HEADROOM_BYTES = 1_000_000_000
_CSV_COLUMNS = (("image_path", "full"), ("crop_path", "roi"), ("mask_path", "roi"), ("fine_path", "fine"))
_TEMPLATE_ATTRIBUTES = {"collection_id": "collection_id", "PatientID": "patient_id",
                        "StudyInstanceUID": "study_uid", "Modality": "modality",
                        "SeriesInstanceUID": "series_uid"}


class DownloadError(UserError):
    """The download cannot start or did not complete; the message names the series or path and
    what to do."""


class MissingDependency(UserError):
    """``idc-index`` (or its index wheel) is not installed; the message says how to install it."""


def available() -> bool:
    """True when ``idc-index`` and its index can be imported (the ``real`` extra is installed)."""
    try:
        import duckdb  # noqa: F401
        import idc_index  # noqa: F401
        import idc_index_data  # noqa: F401
    except ImportError:
        return False
    return True


def _require(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"iaiabl download needs idc-index, which is not installed ({exc}); "
                                f"{INSTALL_HINT}") from None


def format_bytes(n: float) -> str:
    """Decimal units as the index counts them (``series_size_MB`` is bytes / 10**6): '82.5 GB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


# --- the index -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexSeries:
    """One series as the IDC index lists it. ``bytes`` = ``series_size_MB`` * 10**6 (exact:
    the index sums the instance sizes and divides by 10**6)."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    description: str
    instances: int
    bytes: int
    collection_id: str = COLLECTION


def index_version() -> str:
    """The ``idc-index-data`` version whose index is used (e.g. '25.0.5', IDC release v25)."""
    return str(_require("idc_index_data").__version__)


def load_index(collection: str = COLLECTION) -> dict[str, IndexSeries]:
    """Series UID -> :class:`IndexSeries` for every series of ``collection`` in the index that
    ``idc-index-data`` ships (read offline with DuckDB; about 1 s and 0.2 GB)."""
    duckdb = _require("duckdb")
    path = _require("idc_index_data").IDC_INDEX_PARQUET_FILEPATH
    if path is None or not Path(path).is_file():
        raise MissingDependency(f"the idc-index-data wheel has no index file ({path}); reinstall it: {INSTALL_HINT}")
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT SeriesInstanceUID, StudyInstanceUID, PatientID, Modality, SeriesDescription, "
            "instanceCount, series_size_MB, collection_id FROM read_parquet(?) WHERE collection_id = ?",
            [str(path), collection]).fetchall()
    finally:
        con.close()
    return {r[0]: IndexSeries(r[0], r[1], r[2], r[3], r[4] or "", int(r[5]), int(round(float(r[6]) * 1e6)), r[7])
            for r in rows}


# --- selection -----------------------------------------------------------------------------------

@dataclass
class Selection:
    """The series the mass CSVs reference, found in the index. ``kinds`` maps a series UID to
    what the CSVs use it for ('full', 'roi': crop and/or ROI mask, 'fine'); ``unresolved`` lists
    each CSV cell that names no series of the index (csv, row, column, cell, reason)."""

    series: list[IndexSeries]
    kinds: dict[str, set[str]]
    n_rows: int
    unresolved: list[dict] = field(default_factory=list)
    source: str = ""

    def of_kind(self, kind: str) -> list[IndexSeries]:
        return [s for s in self.series if kind in self.kinds[s.series_uid]]

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.series)

    @property
    def unresolved_rows(self) -> set[tuple[str, int]]:
        return {(u["csv"], u["row"]) for u in self.unresolved}

    def describe(self) -> str:
        """Count and size, in total and for full mammograms vs crops and ROI masks."""
        full, roi = self.of_kind("full"), [s for s in self.series if "full" not in self.kinds[s.series_uid]]
        lines = [f"CBIS-DDSM mass subset ({self.source}): {len(self.series)} series, "
                 f"{sum(s.instances for s in self.series)} DICOM files, {format_bytes(self.total_bytes)} "
                 f"({self.total_bytes / 2**30:.1f} GiB)",
                 f"  {'full mammograms':25s} {len(full):5d} series, {format_bytes(sum(s.bytes for s in full))}",
                 f"  {'crops, ROI and fine masks' if self.of_kind('fine') else 'crops and ROI masks':25s} "
                 f"{len(roi):5d} series, {format_bytes(sum(s.bytes for s in roi))}",
                 f"  CSV rows: {self.n_rows}, of which {self.n_rows - len(self.unresolved_rows)} have all their "
                 "series in the index"]
        for u in self.unresolved[:5]:
            lines.append(f"  not in the index: {u['csv']} row {u['row']} {u['column']}: {u['reason']} ({u['cell']!r})")
        if len(self.unresolved) > 5:
            lines.append(f"  ... and {len(self.unresolved) - 5} more cells")
        return "\n".join(lines)


def select_series(csv_dir: str | Path = CSV_DIR, index: dict[str, IndexSeries] | None = None) -> Selection:
    """The series that the two mass CSVs in ``csv_dir`` reference (full mammogram, cropped image,
    ROI mask and, in synthetic trees, fine annotation), looked up by series UID in ``index``
    (default: :func:`load_index`). A cell resolves when its series is in the index and belongs to
    the study the cell names."""
    source = "test index"
    if index is None:
        index, source = load_index(), f"IDC index of idc-index-data {index_version()}"
    csv_dir = Path(csv_dir)
    kinds: dict[str, set[str]] = {}
    unresolved: list[dict] = []
    n_rows = 0
    for name in CSV_NAMES.values():
        for row in read_mass_csv(csv_dir / name):
            n_rows += 1
            for column, kind in _CSV_COLUMNS:
                cell = getattr(row, column)
                if not cell and column == "fine_path":
                    continue
                uids = cell_uids(cell)
                reason = ("the path has no '<study uid>/<series uid>/' part" if uids is None
                          else "series not in the index" if uids[1] not in index
                          else "the index puts the series in another study" if index[uids[1]].study_uid != uids[0]
                          else "")
                if reason:
                    unresolved.append({"csv": row.csv, "row": row.row, "column": column, "cell": cell,
                                       "reason": reason})
                else:
                    kinds.setdefault(uids[1], set()).add(kind)
    series = sorted((index[u] for u in kinds), key=lambda s: (s.patient_id, s.series_uid))
    return Selection(series, kinds, n_rows, unresolved, source)


# --- the local tree ------------------------------------------------------------------------------

def series_folder(out: str | Path, series: IndexSeries, template: str = DIR_TEMPLATE) -> Path:
    """Where ``IDCClient.download_from_selection(downloadDir=out, dirTemplate=template)`` puts
    ``series``: the template's ``%Attribute`` references replaced by the series' values, joined to
    ``out`` (the library builds the same string in SQL, ``CONCAT(out/, ...)``)."""
    import re

    pattern = "%(" + "|".join(_TEMPLATE_ATTRIBUTES) + ")"
    tokens = re.split(pattern, template)
    text = "".join(getattr(series, _TEMPLATE_ATTRIBUTES[t]) if i % 2 else t for i, t in enumerate(tokens))
    return Path(out) / text


@dataclass
class SeriesState:
    """A selected series on disk: its folder (None when not found), its ``*.dcm`` files and bytes,
    and ``problem`` ('' when files and bytes match the index)."""

    series: IndexSeries
    folder: Path | None
    files: int
    bytes: int
    problem: str

    @property
    def complete(self) -> bool:
        return not self.problem


def damaged_file(files: Sequence[Path]) -> str:
    """'' when the DICOM header of every file reads (``dicom.check_header``: parsed, every element
    the importer uses decoded, a known transfer syntax; the pixel data is not read), else what is
    wrong with the first that does not, naming it and what to do. A file of the right size can
    still be damaged, and ``s5cmd sync`` may keep it (it compares sizes and times): the user
    deletes it first."""
    from iaiabl_lib.data.dicom import DicomError, check_header

    for path in files:
        try:
            check_header(path)
        except DicomError as err:
            text = str(err)
            words = text[len(err.path) + 2:] if text.startswith(f"{err.path}: ") else text
            return (f"file {path.name} is damaged ({err.reason}: {words[:160]}); delete it, then rerun to "
                    "fetch it again")
    return ""


def check_tree(out: str | Path, selection: Selection, headers: bool = False) -> list[SeriesState]:
    """Compare every selected series with what lies under ``out``: the folder whose name carries
    its UID (:class:`~iaiabl_lib.data.locate.SeriesIndex`, the importer's lookup), its number of
    ``*.dcm`` files against the index's ``instanceCount`` and their bytes against
    ``series_size_MB``; ``headers``: also every file's DICOM header (:func:`damaged_file`; a few
    milliseconds a file)."""
    index = SeriesIndex(out)
    states = []
    for s in selection.series:
        folder = index.find(s.study_uid, s.series_uid)
        if folder is None:
            where = index.ambiguous.get(s.series_uid)
            problem = (f"in {len(where)} folders ({', '.join(map(str, where))}); keep one" if where
                       else "missing")
            states.append(SeriesState(s, None, 0, 0, problem))
            continue
        n = len(folder.files)
        size = sum(f.stat().st_size for f in folder.files)
        problem = ("" if n == s.instances and size == s.bytes
                   else f"{n} of {s.instances} files" if n != s.instances
                   else f"{size} of {s.bytes} bytes (a file is truncated or differs)")
        if not problem and headers:
            problem = damaged_file(folder.files)
        states.append(SeriesState(s, folder.path, n, size, problem))
    return states


def _free_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


# --- downloading ---------------------------------------------------------------------------------

def _idc_download(out: Path, series: Sequence[IndexSeries], progress: bool) -> None:
    """Fetch ``series`` into ``out`` with ``IDCClient.download_from_selection``: the default
    directory template, ``s5cmd sync`` (files already present and unchanged are skipped) and the
    library's progress bar. The caller verifies the result."""
    index_module = _require("idc_index.index")
    client = index_module.IDCClient()
    try:
        client.download_from_selection(
            downloadDir=str(out), seriesInstanceUID=[s.series_uid for s in series],
            dirTemplate=DIR_TEMPLATE, use_s5cmd_sync=True, show_progress_bar=progress, quiet=True)
    except getattr(index_module, "IDCClientInsufficientDiskSpaceError", ()) as exc:
        raise DownloadError(f"{out}: {exc}; free space or choose another --out, then rerun to resume") from None


def rois_only_refusal(selection: Selection) -> str:
    """Why ``--rois-only`` is refused, with the sizes of both selections."""
    roi = [s for s in selection.series if "full" not in selection.kinds[s.series_uid]]
    return (
        "--rois-only is not supported: `iaiabl prepare` needs the full mammograms. It computes the "
        "intensity window on the whole mammogram and crops a square twice the lesion's bounding box "
        "out of it (the paper's input). From CBIS-DDSM's cropped images and ROI masks alone an "
        "import would lose (1) the context: the cropped image is CBIS-DDSM's own cut around the "
        "lesion, not the 2x square, so the tissue around the margin that the paper's crop shows is "
        "missing, and its position in the mammogram is not recorded, so crop and mask could not be "
        "aligned without guessing; (2) the window of the whole breast: it would be computed on the "
        "lesion's own pixels, changing the contrast between cases. "
        f"Crops and ROI masks alone: {len(roi)} series, {format_bytes(sum(s.bytes for s in roi))}; "
        f"with the full mammograms: {len(selection.series)} series, {format_bytes(selection.total_bytes)}. "
        "Run without --rois-only.")


def _packaged_csvs(csv_dir: Path) -> dict[str, bytes]:
    out = {}
    for name in CSV_NAMES.values():
        path = csv_dir / name
        if not path.is_file():
            raise DownloadError(f"{path}: mass CSV not found (the package is incomplete); reinstall iaiabl_lib")
        out[name] = path.read_bytes()
    return out


def _clear_completion(out: Path, csvs: dict[str, bytes]) -> None:
    """Remove what marks ``out`` as complete (the CSVs and the marker of an earlier download), so
    that this run, should it stop, leaves nothing that looks complete. CSVs that differ from the
    ones this download writes are not ours: refuse rather than delete them."""
    for name, data in csvs.items():
        path = out / name
        if path.exists() and (not path.is_file() or path.read_bytes() != data):
            raise DownloadError(f"{path} exists and differs from the CBIS-DDSM mass CSV this command writes; "
                                "choose another --out (or move that file away)")
    for name in (MARKER, *csvs):
        (out / name).unlink(missing_ok=True)


def download_cbis_ddsm(out: str | Path, *, dry_run: bool = False, rois_only: bool = False,
                       csv_dir: str | Path = CSV_DIR, index: dict[str, IndexSeries] | None = None,
                       downloader: Callable[[Path, Sequence[IndexSeries], bool], None] | None = None,
                       progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Download the CBIS-DDSM mass series from IDC into ``out`` (see the module docstring).

    Prints the selection's count and size first, then what is already complete under ``out`` and
    the free disk space. ``dry_run``: stop there, writing nothing. Otherwise checks the space,
    downloads the incomplete series (``downloader``, default ``IDCClient`` with ``s5cmd sync``),
    verifies every series against the index and writes the CSVs and :data:`MARKER`. Raises
    :class:`DownloadError` naming the series or path (nothing then looks complete) and
    :class:`MissingDependency` when ``idc-index`` is not installed. Returns the report that
    :data:`MARKER` holds (for a dry run: the same figures, ``"dry_run": True``).
    """
    out = Path(out)
    csv_dir = Path(csv_dir)
    selection = select_series(csv_dir, index)
    echo(selection.describe())
    if rois_only:
        raise DownloadError(rois_only_refusal(selection))
    if not selection.series:
        raise DownloadError(f"none of the series the CSVs in {csv_dir} reference is in the index")
    states = check_tree(out, selection) if out.is_dir() else \
        [SeriesState(s, None, 0, 0, "missing") for s in selection.series]
    todo = [st for st in states if not st.complete]
    need = sum(st.series.bytes for st in todo)
    free, probe = _free_bytes(out)
    echo(f"already complete in {out}: {len(states) - len(todo)} of {len(states)} series; "
         f"to download: {len(todo)} series, {format_bytes(need)}; free on {probe}: {format_bytes(free)}")
    report = {"collection": COLLECTION, "source": selection.source, "dir_template": DIR_TEMPLATE,
              "n_series": len(selection.series), "n_files": sum(s.instances for s in selection.series),
              "bytes": selection.total_bytes, "n_csv_rows": selection.n_rows,
              "unresolved": selection.unresolved}
    if dry_run:
        fits = free >= need + HEADROOM_BYTES
        echo(f"dry run: nothing downloaded or written; the download {'fits' if fits else 'does NOT fit'} "
             f"(needs {format_bytes(need)} + {format_bytes(HEADROOM_BYTES)} headroom)")
        return {**report, "dry_run": True, "to_download": len(todo), "bytes_to_download": need, "free": free}
    if todo and free < need + HEADROOM_BYTES:
        raise DownloadError(f"not enough free disk space on {probe}: the {len(todo)} series still to download "
                            f"need {format_bytes(need)} plus {format_bytes(HEADROOM_BYTES)} headroom, "
                            f"{format_bytes(free)} are free; free space or choose another --out")
    csvs = _packaged_csvs(csv_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_completion(out, csvs)
    if todo:
        (downloader or _idc_download)(out, [st.series for st in todo], progress)
    states = check_tree(out, selection, headers=True)
    bad = [st for st in states if not st.complete]
    if bad:
        lines = [f"  {st.series.patient_id} series {st.series.series_uid}: {st.problem} "
                 f"(expected at {st.folder or series_folder(out, st.series)})" for st in bad[:10]]
        more = [f"  ... and {len(bad) - 10} more"] if len(bad) > 10 else []
        raise DownloadError("\n".join([f"{len(bad)} of {len(states)} series are incomplete in {out} "
                                       "(files and bytes checked against the index):", *lines, *more,
                                       "Rerun the same command to resume: complete series are kept, the rest "
                                       "are synced again (a damaged file is fetched again once it is deleted). "
                                       "The CSVs are written only when every series is complete."]))
    for name, data in csvs.items():
        atomic_write_bytes(out / name, data)
    report.update({"verified": "every series: number of files and bytes, against the index; every file: "
                               "its DICOM header",
                   "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    atomic_write_bytes(out / MARKER, (json.dumps(report, indent=1) + "\n").encode())
    echo(f"complete: {len(states)} series verified in {out}; next: iaiabl prepare --cbis {out} --out DATA --size 224")
    return report


# --- command line --------------------------------------------------------------------------------

def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``download cbis-ddsm --out DIR [--rois-only] [--dry-run]``."""
    p = subparsers.add_parser(
        "download", help="download real data (CBIS-DDSM masses from the NCI Imaging Data Commons)",
        description="Download a public data set into a folder that `iaiabl prepare` reads.")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True
    c = sub.add_parser(
        "cbis-ddsm", help="the DICOM series the CBIS-DDSM mass CSVs reference, from IDC",
        description="Select the series that the two CBIS-DDSM mass CSVs reference in the IDC index "
                    "(offline), print their count and size, check the free disk space, download them "
                    "with idc-index (resumable: rerun to continue), verify every series against the index "
                    "and write the CSVs beside the images. Needs: pip install 'iaiabl_lib[real]'.")
    c.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="download folder (then: iaiabl prepare --cbis DIR)")
    c.add_argument("--dry-run", action="store_true", help="print the count, size and free space; download nothing")
    c.add_argument("--rois-only", action="store_true",
                   help="crops and ROI masks only: refused, with the reason (prepare needs the full mammograms)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``iaiabl download cbis-ddsm``; errors surface through ``iaiabl_lib.cli.main``
    (exit status 2 with the message)."""
    download_cbis_ddsm(args.out, dry_run=args.dry_run, rois_only=args.rois_only, progress=not args.quiet)
    return 0
