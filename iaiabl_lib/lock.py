"""One writer at a time: an exclusive lock on a run directory while it trains, and on a
prepared-data output while ``prepare`` writes it.

Without it, two ``iaiabl train --out RUN`` processes both exit 0 and the last to finish owns the
folder, with files of the other mixed in. The lock is ``fcntl.flock`` on a small lock file: the
operating system releases it when the process ends, however it ends (a crash or SIGKILL leaves no
stale lock to clear by hand), and a second writer is refused at once with the holder's process id.
The lock file holds the holder's pid and start time for that message, and is removed when the
lock is released (while still held, so that a process that opened the old file notices, by its
inode, that it locked a file no longer in place, and tries again).

Where ``fcntl`` does not exist (Windows) the lock is skipped.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import LockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "exclusive_lock", "sibling_lock"]

LOCK_NAME = ".lock"
"""The lock file inside a run directory."""


def sibling_lock(path: Path) -> Path:
    """The lock file of a folder that is replaced as a whole (a prepared dataset): next to it,
    ``.<name>.lock``, because a lock inside would be renamed away with the old folder."""
    return path.parent / f".{path.name}.lock"


@contextmanager
def exclusive_lock(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``lock_file`` (created if needed) for the ``with``
    block. ``what`` names the thing being written, for the message. Raises :class:`LockedError`
    naming the holder's pid when another process holds it."""
    lock_file = Path(lock_file)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split() or ["?"]
            os.close(fd)
            since = f", since {' '.join(holder[1:3])}" if len(holder) >= 3 else ""
            raise LockedError(
                f"{what} is being written by another process (pid {holder[0]}{since}); wait for it "
                f"to finish or stop it, or write to another folder (lock file {lock_file})") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_file):
            break
        os.close(fd)                    # the holder removed it as we opened it: open the new one
    else:  # pragma: no cover - ten lost races in a row
        raise LockedError(f"{what}: could not take the lock {lock_file}; try again")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        try:
            lock_file.unlink(missing_ok=True)   # still held: nobody else can have it now
        finally:
            os.close(fd)                        # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)
