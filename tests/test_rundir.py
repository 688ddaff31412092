"""iaiabl_lib.rundir (issue 16): every command that loads a run refuses an unfinished or
inconsistent one; a run records its split and is not evaluated on the patients it trained on;
one trainer per run directory; stale metrics are refused."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from iaiabl_lib.cli import main
from iaiabl_lib.data.dataset import load_prepared
from iaiabl_lib.errors import LockedError
from iaiabl_lib.evaluate import compare_runs, evaluate_run
from iaiabl_lib.lock import LOCK_NAME, exclusive_lock
from iaiabl_lib.explain.report import explain_to_html
from iaiabl_lib.rundir import RunError, check_run, file_digest, load_run, split_record
from iaiabl_lib.train import train

RUN_KW = dict(epochs=4, seed=0, device="cpu", progress=False,
              overrides={"train.warm_epochs": 1, "train.push_start": 2, "train.push_every": 2,
                         "train.last_layer_epochs": 3})   # the tiny_run fixture's (conftest.py)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("explanations")))


@pytest.fixture(scope="module")
def other_split(synth_tree, tmp_path_factory) -> Path:
    """The session's synthetic tree prepared again with another split seed."""
    from iaiabl_lib.data.cbis_ddsm import prepare

    out = tmp_path_factory.mktemp("other") / "data"
    prepare(synth_tree, out, size=64, split="paper", seed=1, verbose=False)
    return out


def _test_case(prepared: Path) -> str:
    return load_prepared(prepared).subset("test").ids[0]


def test_a_finished_run_records_model_digest_and_split(tiny_run, prepared):
    cfg = check_run(tiny_run)
    assert cfg["model_pt"] == file_digest(Path(tiny_run) / "model.pt")
    assert cfg["split"] == split_record(prepared)
    assert sorted(cfg["split"]["patients"]) == ["test", "train", "val"] and cfg["split"]["patients"]["test"]
    assert not (Path(tiny_run) / LOCK_NAME).exists()          # released when training ended


def test_a_killed_retrain_is_refused_by_every_command(run_copy, prepared, capsys):
    """The issue's case: retraining into a finished run, killed: config.json describes the new,
    unfinished run while the old model.pt is still there."""
    dead = run_copy / ".model.pt.tmp-999999999"               # a temporary of a killed process
    dead.write_bytes(b"partial")

    def kill(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared, "tiny", run_copy, callback=kill, **RUN_KW)
    assert (run_copy / "model.pt").is_file() and not dead.exists()
    with pytest.raises(FileNotFoundError, match="training has not finished.*resume"):
        load_run(run_copy)
    with pytest.raises(FileNotFoundError, match="training has not finished"):
        evaluate_run(run_copy, n_boot=20)
    with pytest.raises(FileNotFoundError, match="training has not finished"):
        explain_to_html(run_copy, _test_case(prepared))
    capsys.readouterr()
    assert main(["explain", "--run", str(run_copy), _test_case(prepared)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training has not finished" in err


def test_a_model_from_another_run_is_refused(run_copy, tiny_blackbox, prepared, tmp_path, capsys):
    shutil.copy(Path(tiny_blackbox) / "model.pt", run_copy / "model.pt")
    for load in (load_run, lambda d: evaluate_run(d, n_boot=20), lambda d: explain_to_html(d, _test_case(prepared))):
        with pytest.raises(RunError, match="model.pt is not the model.pt this run wrote"):
            load(run_copy)
    assert main(["evaluate", "--run", str(run_copy)]) == 2
    assert "not the model.pt this run wrote" in capsys.readouterr().err
    from iaiabl_lib.baselines import load_blackbox

    bb = Path(shutil.copytree(tiny_blackbox, tmp_path / "bb"))
    data = bytearray((bb / "model.pt").read_bytes())
    data[-100] ^= 0xFF                                           # one flipped byte
    (bb / "model.pt").write_bytes(bytes(data))
    with pytest.raises(RunError, match="SHA-256"):
        load_blackbox(bb)


def test_evaluate_refuses_another_split_of_the_same_patients(run_copy, prepared, other_split, capsys):
    cfg = check_run(run_copy)
    trained = set(cfg["split"]["patients"]["train"]) | set(cfg["split"]["patients"]["val"])
    other = load_prepared(other_split).subset("test")
    leaked = sorted(trained & {r["patient_id"] for r in other.manifest})
    assert leaked, "seed 1 should move some of the run's training patients into test"
    with pytest.raises(RunError, match=rf"{len(leaked)} patients of the 'test' split .* were in the .*split of run"):
        evaluate_run(run_copy, other_split, n_boot=20)
    assert not (run_copy / "metrics.json").exists()
    assert main(["evaluate", "--run", str(run_copy), "--data", str(other_split), "--bootstrap", "20"]) == 2
    assert "--allow-overlap" in capsys.readouterr().err
    result = evaluate_run(run_copy, other_split, n_boot=20, allow_overlap=True)
    assert result["overlap_patients"] == leaked
    assert "warning:" in capsys.readouterr().err
    assert "overlap_patients" not in evaluate_run(run_copy, prepared, n_boot=20)   # its own split: none


def test_explain_warns_about_a_case_the_run_trained_on(run_copy, other_split, capsys):
    cfg = check_run(run_copy)
    trained = set(cfg["split"]["patients"]["train"])
    other = load_prepared(other_split).subset("test")
    case = next(i for i, r in zip(other.ids, other.manifest) if r["patient_id"] in trained)
    path = explain_to_html(run_copy, case, data=other_split)
    assert "was in the run" in path.read_text() and "s train split (this data set was prepared" in path.read_text()
    assert "warning:" in capsys.readouterr().err


def test_one_trainer_per_run_directory(run_copy, prepared):
    before = (run_copy / "config.json").read_text()
    with exclusive_lock(run_copy / LOCK_NAME, "test"):
        with pytest.raises(LockedError, match=rf"run directory .* is being written by another process \(pid {os.getpid()}"):
            train(prepared, "tiny", run_copy, **RUN_KW)
    assert (run_copy / "config.json").read_text() == before
    check_run(run_copy)


def test_compare_refuses_metrics_of_an_earlier_model(run_copy):
    evaluate_run(run_copy, n_boot=20)
    assert "Table 1" in compare_runs([run_copy])
    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics["model_sha256"] = "0" * 64                           # computed from a model since replaced
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="metrics.json is stale"):
        compare_runs([run_copy])


def test_config_json_damaged(run_copy):
    (run_copy / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(run_copy)


def test_run_format_is_stamped_and_a_newer_one_refused(run_copy, tiny_blackbox):
    """One writer stamps config.json with the run format (IAIA-BL and black-box runs); a run from
    a newer layout is refused by name, not misread."""
    import json

    from iaiabl_lib.rundir import RUN_FORMAT

    for d in (run_copy, tiny_blackbox):
        assert json.loads((Path(d) / "config.json").read_text())["format"] == RUN_FORMAT
    cfg = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**cfg, "format": RUN_FORMAT + 1}))
    with pytest.raises(RunError, match=rf"run format {RUN_FORMAT + 1}.*reads format {RUN_FORMAT} at most"):
        load_run(run_copy)
