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
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tmp_path", "pid_alive", "tmp_owner", "remove_stale_tmp", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_savez"]


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


def tmp_owner(name: str) -> int | None:
    """The process id in a temporary name ``….tmp-<pid>`` (``….tmp-<pid>.<suffix>`` too), or None."""
    if ".tmp-" not in name:
        return None
    pid = name.rsplit(".tmp-", 1)[1].split(".")[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_tmp(directory: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.tmp-<pid>``, :func:`tmp_path`) left in ``directory``
    by processes that no longer run; returns what was removed. Files of running processes and
    anything not named like our temporary files are never touched."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.glob(".*.tmp-*"):
        pid = tmp_owner(entry.name)
        if pid is not None and pid != os.getpid() and entry.is_file() and not entry.is_symlink() \
                and not pid_alive(pid):
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
