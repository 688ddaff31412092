"""The ``iaiabl`` command's error policy (iaiabl_lib.errors, cli.main): user errors and faults the
user can fix in one line with exit 2, Ctrl-C exit 130, anything else with its traceback."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from iaiabl_lib import atomic
from iaiabl_lib.evaluate import cli as evaluate_cli
from iaiabl_lib.cli import main
from iaiabl_lib.errors import InputError, UserError
from iaiabl_lib.train import cli as train_cli


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("explanations")))


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"iaiabl {command}: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_ctrl_c_is_one_line_and_exit_130(run_copy, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_cli, "evaluate_run", interrupted)
    assert main(["evaluate", "--run", str(run_copy)]) == 130
    assert "interrupted (Ctrl-C)" in _one_line(capsys, "evaluate")
    monkeypatch.setattr(train_cli, "train", interrupted)
    assert main(["train", "--data", "DATA", "--out", str(run_copy)]) == 130
    assert "resume" in _one_line(capsys, "train")


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied")])
def test_full_disk_and_read_only_output_name_the_file(run_copy, monkeypatch, capsys, code, words):
    """A real write (evaluate's metrics.json) failing in the middle: one line naming the file the
    user asked for (not the temporary), exit 2, and no temporary file left behind."""
    def fail(fd):
        raise OSError(code, "simulated")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    assert main(["evaluate", "--run", str(run_copy), "--bootstrap", "20"]) == 2
    err = _one_line(capsys, "evaluate")
    assert words in err and str(run_copy / "metrics.json") in err and ".tmp-" not in err
    assert not list(run_copy.glob(".*.tmp-*")) and not (run_copy / "metrics.json").exists()


def test_gpu_out_of_memory_says_what_to_do(run_copy, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(train_cli, "train", oom)
    assert main(["train", "--data", "DATA", "--out", str(run_copy)]) == 2
    err = _one_line(capsys, "train")
    assert "GPU ran out of memory" in err and "--set train.batch_size=N" in err and "Tried to allocate" in err
    monkeypatch.setattr(evaluate_cli, "evaluate_run", oom)
    assert main(["evaluate", "--run", str(run_copy)]) == 2
    assert "--device cpu" in _one_line(capsys, "evaluate")


def test_unexpected_errors_keep_their_traceback(run_copy, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("an internal inconsistency")

    monkeypatch.setattr(evaluate_cli, "evaluate_run", bug)
    with pytest.raises(RuntimeError, match="internal inconsistency"):
        main(["evaluate", "--run", str(run_copy)])
    monkeypatch.setattr(evaluate_cli, "evaluate_run", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["evaluate", "--run", str(run_copy)])


def test_an_internal_value_error_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """Only the library's own user errors are one-line exits: a ValueError from inside (numpy, torch,
    a broken contract) is a bug and propagates; an InputError (a ValueError too) is the user's."""
    def bug(*args, **kwargs):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(evaluate_cli, "evaluate_run", bug)
    with pytest.raises(ValueError, match="could not be broadcast"):
        main(["evaluate", "--run", str(tmp_path)])

    def user(*args, **kwargs):
        raise InputError("--bootstrap must be at least 1 (got 0)")

    monkeypatch.setattr(evaluate_cli, "evaluate_run", user)
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert _one_line(capsys, "evaluate") == "iaiabl evaluate: error: --bootstrap must be at least 1 (got 0)"


def test_user_errors_are_still_the_exceptions_callers_catch():
    """InputError keeps both older contracts: ``except ValueError`` and ``except RuntimeError``."""
    from iaiabl_lib.config import get_preset
    from iaiabl_lib.data.cbis_ddsm import CbisError
    from iaiabl_lib.data.dataset import MissingClassError, PreparedDatasetError
    from iaiabl_lib.data.dicom import DicomError

    for cls in (InputError, CbisError, DicomError, PreparedDatasetError, MissingClassError):
        assert issubclass(cls, ValueError) and issubclass(cls, UserError), cls
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")


@pytest.mark.parametrize("value, words", [("train.batch_size=1.5", "expected a whole number"),
                                          ("train.epochs=[1]", "expected a whole number"),
                                          ("model.image_size=0", "model.image_size=0: must be a finite number ≥ 16"),
                                          ("train.amp_dtype=fp8", "choose one of auto, bf16, fp16"),
                                          ("train.augmentation=heavy", "choose one of authors, light, scale"),
                                          ("train.lr_joint_add_on=NaN", "expected a finite number"),
                                          ("model.num_classes=2", "the margin classes are")])
def test_bad_set_values_are_one_line_errors(prepared, tmp_path, capsys, value, words):
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--set", value]) == 2
    assert words in _one_line(capsys, "train")
    assert not (tmp_path / "r").exists()


def test_a_missing_gpu_is_a_user_error(prepared, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA is not available here" in _one_line(capsys, "train")
