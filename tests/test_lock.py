"""iaiabl_lib.lock and the clean-up half of iaiabl_lib.atomic (issue 16)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from iaiabl_lib import atomic
from iaiabl_lib.errors import LockedError
from iaiabl_lib.lock import exclusive_lock


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with exclusive_lock(lock, "run directory X"):
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(LockedError, match=rf"run directory X is being written by another process \(pid {os.getpid()}, since "):
            with exclusive_lock(lock, "run directory X"):
                pass
        # another process sees the same
        code = ("import sys; from iaiabl_lib.lock import exclusive_lock\n"
                "try:\n    exclusive_lock(sys.argv[1], 'R').__enter__()\nexcept Exception as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout
        assert f"pid {os.getpid()}" in out
    assert not lock.exists()                      # released and removed
    with exclusive_lock(lock, "run directory X"):  # and free again
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path):
    lock = tmp_path / ".lock"
    code = ("import os, sys; from iaiabl_lib.lock import exclusive_lock\n"
            "held = exclusive_lock(sys.argv[1], 'R'); held.__enter__(); os._exit(9)")   # killed while holding it
    subprocess.run([sys.executable, "-c", code, str(lock)], env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert lock.exists()                          # the file stays, the lock does not
    with exclusive_lock(lock, "R"):
        pass


def test_failed_atomic_write_leaves_nothing_and_names_the_destination(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic.atomic_write_text(target, "new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_remove_stale_tmp_only_touches_temporaries_of_dead_processes(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".model.pt.tmp-{dead}"
    live = tmp_path / f".push.npz.tmp-{os.getpid()}"
    other = tmp_path / f"notes.tmp-{dead}"       # not one of our names (no leading dot)
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert atomic.remove_stale_tmp(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
