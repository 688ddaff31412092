"""Write aside, then rename: the one place where the library writes a file that a reader may open.

Every output file (run files, metrics, reports, prepared data) is written to a temporary file in
the same directory and moved into place with ``os.replace``, which is atomic on POSIX and Windows:
a reader sees the old file or the new one, never half of one, and a crash leaves no file that
looks complete. Temporary names start with a dot and end in ``.tmp-<pid>`` and are removed when the
write fails; a process killed outright (SIGKILL, power loss) cannot clean up, so writers of a
directory call :func:`remove_stale_tmp` before they start, which removes the temporary files of
processes that no longer run. A failed write raises the ``OSError`` with the destination's name
(not the temporary one), so that "no space left" or "read-only" messages name the file the user
asked for.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tmp_path", "pid_alive", "abandoned", "TMP_NAMES", "remove_stale_tmp", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_savez"]


def tmp_path(path: Path) -> Path:
    """The temporary sibling of ``path`` that a write goes to first."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # it runs, as another user
        return True
    return True


def abandoned(directory: str | Path, names: str, kind: str = "file") -> list[tuple[Path, re.Match]]:
    """The entries of ``directory`` that a process which no longer runs left behind: those whose
    name fully matches the regular expression ``names`` (its group ``pid`` is the owner's process
    id), of ``kind`` "file" or "dir", never a symlink, never this process's own. The one rule by
    which every writer of the library finds what a killed run left (temporary files,
    :func:`remove_stale_tmp`; the book cache's build folders; ``prepare``'s folders). Returns
    (path, match) pairs, sorted by path."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = re.compile(names)
    found = []
    for entry in sorted(directory.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink():
            continue
        if not (entry.is_file() if kind == "file" else entry.is_dir()):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not pid_alive(pid):
            found.append((entry, match))
    return found


TMP_NAMES = r"\..+\.tmp-(?P<pid>\d+)(\..*)?"
"""Names of :func:`tmp_path` temporary files (``.<name>.tmp-<pid>``, also with a suffix)."""


def remove_stale_tmp(directory: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.tmp-<pid>``, :func:`tmp_path`) left in ``directory``
    by processes that no longer run; returns what was removed. Files of running processes and
    anything not named like our temporary files are never touched."""
    removed = []
    for entry, _ in abandoned(directory, TMP_NAMES, "file"):
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory, fsync,
    os.replace); the temporary file is removed if anything fails, and an ``OSError`` names
    ``path``."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def atomic_savez(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> None:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path``, atomically."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
