"""The library's error policy: which failures are the user's to fix, and how the ``iaiabl`` command
reports each kind (``cli.main``).

* A **user error** (a wrong path, a damaged or foreign file, a run that is not finished, a setting
  out of range) is raised on purpose with a message that names the file, row or value and says
  what to do. :class:`UserError` and its subclasses (:class:`InputError` for a bad value, file or
  table the user gave, with ``CbisError``, ``DicomError``, ``PreparedDatasetError``...),
  ``FileNotFoundError`` and ``FileExistsError`` (an output that must not be overwritten) are user
  errors (:data:`USER_ERRORS`): the command prints the message on one line and exits with
  :data:`EXIT_USER`. A plain ``ValueError`` is *not* one: raised by the library it marks a broken
  internal contract (a tensor of the wrong shape), raised by numpy or torch a bug.
* **Faults of the machine** the user can fix without reading code: a full disk (ENOSPC, EDQUOT), an
  output folder that is read-only or not ours to write (EACCES, EPERM, EROFS), the GPU running out
  of memory. One line naming the file (or device) and what to do, exit :data:`EXIT_USER`.
* **Ctrl-C**: one line, exit :data:`EXIT_INTERRUPTED` (128 + SIGINT, what a shell reports).
* Anything else is a bug: the traceback is kept (Python's default), exit 1.

:class:`UserError` derives from ``RuntimeError`` so that code written against the older
``RuntimeError`` contract keeps catching what it caught; :class:`InputError` derives from
``ValueError`` as well, so that callers written against the older ``ValueError`` contract do too.
"""
from __future__ import annotations

import errno

__all__ = ["UserError", "InputError", "LockedError", "USER_ERRORS", "EXIT_USER", "EXIT_INTERRUPTED",
           "DISK_FULL_ERRNOS", "NOT_WRITABLE_ERRNOS", "describe_os_error"]

EXIT_USER = 2
EXIT_INTERRUPTED = 130

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class UserError(RuntimeError):
    """A failure the user can fix; its message says how (printed without a traceback)."""


class InputError(UserError, ValueError):
    """A value, file or table the user gave that the library cannot use (an unknown option, a
    setting out of range, a damaged or foreign file); its message names it and says what to do."""


USER_ERRORS = (UserError, FileNotFoundError, FileExistsError)
"""What ``cli.main`` reports in one line (exit :data:`EXIT_USER`): the library's own user errors
and the two ``OSError`` kinds it raises on purpose for a missing input or an existing output."""


class LockedError(UserError):
    """Another process holds the exclusive lock on a run directory or a prepared-data output."""


def describe_os_error(err: OSError) -> str | None:
    """A one-line message for a full disk or a folder we may not write, else None (a bug)."""
    where = err.filename or "the output"
    if err.errno in DISK_FULL_ERRNOS:
        return (f"no space left on the device while writing {where} ({err.strerror}); nothing "
                "half-written was kept: free some space or write to another folder, then run the "
                "same command again")
    if err.errno == errno.EROFS:
        return (f"cannot write {where}: the file system is read-only; write to another folder "
                "(--out) and run the same command again")
    if err.errno in NOT_WRITABLE_ERRNOS:
        return (f"permission denied for {where}; choose a folder you can write to (--out), or fix "
                "the permissions, and run the same command again")
    return None
