"""The prepared-dataset folder as ``prepare`` replaces it: recognised, recovered, swapped by renames.

``prepare`` writes a new dataset aside (``DATA.tmp-<pid>``) and swaps it in with two renames
(:func:`swap_in`); the old one is deleted afterwards, file by file, and only the files a prepared
dataset consists of (``dataset.PREPARED_FILES``) — a folder is never removed wholesale. An
existing ``DATA`` is replaced only when it is recognisably ours (:func:`check_replaceable`: the
marker written by ``save_prepared`` and nothing but our files), so pointing ``--out`` at a folder
of one's own files is refused instead of emptying it. :func:`recover` cleans up after a
``prepare`` that was killed between or before its renames. Callers hold the output's lock
(``lock.sibling_lock``) around all of this.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from iaiabl_lib.atomic import abandoned
from iaiabl_lib.data.dataset import PREPARED_FILES, PREPARED_MARKER, PreparedDatasetError, foreign_entries

__all__ = ["check_replaceable", "remove_ours", "recover", "swap_in"]


def check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that ``prepare`` may not replace: anything but a missing path, an empty
    folder or a prepared dataset (``dataset.foreign_entries``)."""
    if out.is_symlink():
        raise PreparedDatasetError(f"--out {out} is a symbolic link; pass the folder it points to "
                                   f"({out.resolve()}) or another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise PreparedDatasetError(f"--out {out} exists and is a file, not a prepared dataset; "
                                   "choose another --out")
    foreign = foreign_entries(out)
    if foreign is None:
        return
    if foreign == [PREPARED_MARKER]:
        why = (f"it has no {PREPARED_MARKER} (the marker `iaiabl prepare` writes; an older version "
               "did not): remove that folder yourself, or choose another --out")
    else:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        why = (f"it holds files `iaiabl prepare` did not write ({listed}); prepare only replaces its "
               "own output and never deletes your files: choose another --out (e.g. a new folder "
               "inside it), or move those files away")
    raise PreparedDatasetError(f"--out {out} exists and is not a prepared dataset: {why}")


def remove_ours(folder: Path) -> bool:
    """Delete the prepared-dataset files (``PREPARED_FILES``) in ``folder`` and the folder when
    that leaves it empty; anything else stays. True when the folder is gone."""
    for name in PREPARED_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def _leftovers(out: Path) -> list[tuple[Path, str]]:
    """``(folder, 'tmp'|'old')`` for the ``OUT.tmp-<pid>`` / ``OUT.old-<pid>`` folders of
    ``prepare`` processes that no longer run (killed before they could clean up)."""
    names = re.escape(out.name) + r"\.(?P<kind>tmp|old)-(?P<pid>\d+)"
    return [(entry, match["kind"]) for entry, match in abandoned(out.parent, names, "dir")]


def recover(out: Path) -> None:
    """Clean up after a killed ``prepare`` of the same ``out``: a previous dataset it had moved
    aside (``OUT.old-<pid>``) is put back when ``out`` is missing, else removed; half-written
    ``OUT.tmp-<pid>`` folders are removed. Only folders holding nothing but our files are touched."""
    for folder, kind in sorted(_leftovers(out), key=lambda item: item[1] == "tmp"):
        if any(e.name not in PREPARED_FILES for e in folder.iterdir()):
            continue
        if kind == "old" and not out.exists() and foreign_entries(folder) is None:
            folder.rename(out)
            print(f"prepare: restored {out} from {folder.name} (an earlier prepare was killed while "
                  "replacing it)", file=sys.stderr)
        else:
            remove_ours(folder)


def swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames only (the old dataset survives until the new one is
    in place), then delete the old one's files (``remove_ours``: nothing that is not ours)."""
    old = out.parent / f"{out.name}.old-{os.getpid()}"
    replaced = out.exists()
    if replaced:
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if replaced:
            old.rename(out)
        raise
    if replaced and not remove_ours(old):
        print(f"prepare: {old} kept: something other than a prepared dataset appeared in it",
              file=sys.stderr)
