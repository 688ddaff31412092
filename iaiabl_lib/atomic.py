"""Write aside, then rename: the one place where the library writes a file that a reader may open.

Every output file (run files, metrics, reports, prepared data) is written to a temporary file in
the same directory and moved into place with ``os.replace``, which is atomic on POSIX and Windows:
a reader sees the old file or the new one, never half of one, and a crash leaves no file that
looks complete. Temporary names start with a dot and end in ``.tmp-<pid>`` and are removed when the
write fails.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tmp_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_savez"]


def tmp_path(path: Path) -> Path:
    """The temporary sibling of ``path`` that a write goes to first."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory, fsync,
    os.replace); the temporary file is removed if anything fails."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
