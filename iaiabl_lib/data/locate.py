"""Find a DICOM series in a download tree by the UIDs that its folder names carry.

CBIS-DDSM's CSVs name each file as ``<folder>/<study uid>/<series uid>/000000.dcm``. Downloads lay
those series out differently:

* TCIA's NBIA Data Retriever (old): ``CBIS-DDSM/<folder>/<study uid>/<series uid>/1-1.dcm``;
* the NCI Imaging Data Commons (``idc-index``, default ``dirTemplate``
  ``%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID``):
  ``cbis_ddsm/<PatientID>/<study uid>/MG_<series uid>/<crdc_instance_uuid>.dcm``.

What they share is that the series' folder carries the series UID in its name, alone or joined to
other words by ``_`` or ``-``, and usually that a folder above it carries the study UID. A
:class:`SeriesIndex` walks a tree once, records every folder that holds ``*.dcm`` files under each
DICOM UID its name carries, and answers ``find(study_uid, series_uid)``; file names never matter
(the importer takes every ``*.dcm`` of the series and tells crop from mask by content).

The walk never follows symbolic links to folders, so every folder it returns lies inside the root.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["UID_PATTERN", "is_uid", "uid_tokens", "cell_uids", "SeriesIndex", "SeriesFolder"]

#: A DICOM UID (PS3.5 §9.1): digit groups separated by dots, at most 64 characters.
UID_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_SEPARATORS = re.compile(r"[_\-\s]+")


def is_uid(text: str) -> bool:
    """True for a string shaped like a DICOM UID (``1.3.6.1.4...``, at most 64 characters)."""
    return len(text) <= 64 and UID_PATTERN.fullmatch(text) is not None


def uid_tokens(name: str) -> set[str]:
    """The DICOM UIDs that a folder name carries: the whole name, or its parts split at ``_``,
    ``-`` and blanks (``MG_1.3.6...`` -> ``{'1.3.6...'}``)."""
    parts = {name, *_SEPARATORS.split(name)}
    return {p for p in parts if is_uid(p)}


def cell_uids(cell: str) -> tuple[str, str] | None:
    """``(study_uid, series_uid)`` named by a CBIS-DDSM CSV path cell
    (``<folder>/<study uid>/<series uid>/<file>``, surrounding blanks and newlines ignored), or
    None when the cell does not have that shape."""
    parts = [p for p in cell.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 3 or not is_uid(parts[-3]) or not is_uid(parts[-2]):
        return None
    return parts[-3], parts[-2]


@dataclass
class SeriesFolder:
    """One folder that holds ``*.dcm`` files: its path, the UIDs its ancestors' names carry (below
    the root), and its DICOM files (sorted)."""

    path: Path
    ancestor_uids: frozenset[str]
    files: list[Path] = field(default_factory=list)


class SeriesIndex:
    """Folders under ``root`` that hold ``*.dcm`` files, by the UIDs their names carry.

    Built lazily, once, by one ``os.walk`` (symbolic links to folders are not followed).
    ``find(study, series)`` returns the one folder whose name carries ``series``; when several do,
    those whose ancestors carry ``study`` are preferred; if still more than one remains the answer
    is None and :attr:`ambiguous` records the folders (the importer never guesses).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._by_uid: dict[str, list[SeriesFolder]] | None = None
        self.ambiguous: dict[str, list[Path]] = {}

    def _build(self) -> dict[str, list[SeriesFolder]]:
        by_uid: dict[str, list[SeriesFolder]] = {}
        if not self.root.is_dir():
            return by_uid
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames.sort()
            dcm = sorted(n for n in filenames if n.lower().endswith(".dcm"))
            if not dcm:
                continue
            path = Path(dirpath)
            tokens = uid_tokens(path.name)
            if not tokens:
                continue
            rel = path.relative_to(self.root).parts[:-1]
            ancestors = frozenset(t for part in rel for t in uid_tokens(part))
            folder = SeriesFolder(path, ancestors, [path / n for n in dcm])
            for uid in tokens:
                by_uid.setdefault(uid, []).append(folder)
        return by_uid

    @property
    def folders(self) -> dict[str, list[SeriesFolder]]:
        """UID -> the folders whose names carry it (the index, built on first use)."""
        if self._by_uid is None:
            self._by_uid = self._build()
        return self._by_uid

    def candidates(self, study_uid: str, series_uid: str) -> list[SeriesFolder]:
        """Every folder that may hold the series: named after ``series_uid``; narrowed to those
        below a folder named after ``study_uid`` when any is."""
        named = self.folders.get(series_uid, [])
        in_study = [f for f in named if study_uid in f.ancestor_uids]
        return in_study or named

    def find(self, study_uid: str, series_uid: str) -> SeriesFolder | None:
        """The folder of series ``series_uid`` (of study ``study_uid``), or None when no folder or
        more than one carries it (then :attr:`ambiguous` names them)."""
        found = self.candidates(study_uid, series_uid)
        if len(found) > 1:
            self.ambiguous[series_uid] = [f.path for f in found]
            return None
        return found[0] if found else None
