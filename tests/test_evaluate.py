"""Tests of iaiabl_lib.evaluate: metrics.json schema on the tiny run, clear errors (missing files,
class and image-size mismatches, missing data), black-box runs, compare tables and the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iaiabl_lib.config import MARGINS
from iaiabl_lib.evaluate import (METRIC_KEYS, Predictions, compare_runs, evaluate_run,
                                 metrics_from_predictions, predicted_class_pam, true_class_pams)
from iaiabl_lib.metrics import activation_precision
from iaiabl_lib.model import activation_map

SUMMARY_KEYS = {"value", "ci_low", "ci_high"}
TOP_KEYS = {"run", "preset", "kind", "split", "data", "n_test", "n_fine", "margin_auroc", "kappa",
            "activation_precision", "activation_precision_ceiling", "malignancy_auroc", "settings",
            "model_sha256"}
N_BOOT = 300


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the session's tiny run (evaluation writes into the run directory)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def edit_config(run: Path, **changes) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(changes)
    (run / "config.json").write_text(json.dumps(cfg))


def summaries(metrics: dict):
    """Every {value, ci_low, ci_high} in a metrics dict, with its path."""
    for key, value in metrics.items():
        if isinstance(value, dict) and set(value) == SUMMARY_KEYS:
            yield key, value
        elif isinstance(value, dict) and key != "settings":
            for sub, s in summaries(value):
                yield f"{key}.{sub}", s


def check_summary(path: str, s: dict) -> None:
    assert set(s) == SUMMARY_KEYS, path
    lo, hi = (-1.0, 1.0) if path == "kappa" else (0.0, 1.0)
    assert lo <= s["ci_low"] <= s["value"] <= s["ci_high"] <= hi, (path, s)


# --- evaluate on the tiny run -------------------------------------------------------------------


def test_evaluate_writes_the_metrics_schema(run_copy, prepared):
    result = evaluate_run(run_copy, n_boot=N_BOOT, device="cpu")
    assert set(result) == TOP_KEYS and set(METRIC_KEYS) <= set(result)   # docs/DESIGN.md §5 keys
    assert list(result["margin_auroc"]) == [*MARGINS, "average", "macro"]
    assert set(result["activation_precision"]) == {"lesion", "fine"}
    assert (result["kind"], result["preset"], result["split"]) == ("iaiabl", "tiny", "test")
    manifest = (prepared / "manifest.csv").read_text().splitlines()
    header = manifest[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in manifest[1:]]
    test_rows = [r for r in rows if r["split"] == "test"]
    assert result["n_test"] == len(test_rows)
    assert result["n_fine"] == sum(r["has_fine"] == "1" for r in test_rows)
    found = dict(summaries(result))
    assert {"margin_auroc.average", "kappa", "activation_precision.lesion",
            "activation_precision.fine", "malignancy_auroc"} <= set(found)
    for path, s in found.items():
        check_summary(path, s)
    # files: metrics.json (the same dict), metrics.md, predictions.npz, no temporary leftovers
    assert json.loads((run_copy / "metrics.json").read_text()) == result
    md = (run_copy / "metrics.md").read_text()
    assert "| margin AUROC, average (weighted by test counts, the paper's) |" in md
    assert "| margin AUROC, macro (unweighted mean) |" in md and "| malignancy AUROC |" in md
    with np.load(run_copy / "predictions.npz") as z:
        assert z["margin_prob"].shape == (result["n_test"], 3)
        ap, pairs = z["ap_activation_precision_lesion"], z["pairs_activation_precision_lesion"]
        # the mean over (case, prototype-of-its-true-class) pairs
        pclass = np.asarray(json.loads((run_copy / "config.json").read_text())["prototype_class"])
        assert pairs.tolist() == [int((pclass == y).sum()) for y in z["labels"]]
        assert (ap * pairs).sum() / pairs.sum() == pytest.approx(result["activation_precision"]["lesion"]["value"])
    assert not [p for p in run_copy.iterdir() if ".tmp-" in p.name]


def test_evaluate_other_split_and_data_override(run_copy, prepared):
    result = evaluate_run(run_copy, data_dir=prepared, split="val", n_boot=50, device="cpu")
    assert result["split"] == "val"
    assert (run_copy / "metrics_val.json").is_file() and not (run_copy / "metrics.json").exists()


def test_cli_evaluate_then_compare(run_copy, tmp_path, capsys):
    from iaiabl_lib.cli import main

    other = Path(shutil.copytree(run_copy, tmp_path / "run2"))
    for run in (run_copy, other):
        assert main(["evaluate", "--run", str(run), "--bootstrap", "100", "--device", "cpu"]) == 0
    assert "margin AUROC, average" in capsys.readouterr().out
    out = tmp_path / "tables" / "compare.md"
    assert main(["compare", str(run_copy), str(other), "--names", "IAIA-BL", "copy",
                 "--out", str(out)]) == 0
    text = out.read_text()
    for needle in ("Table 1", "Table 2", "Table 3", "| IAIA-BL |", "| copy |", "average AUROC",
                   "activation precision (fine)", "malignancy AUROC", "Cohen's κ",
                   "Paired DeLong tests", "| IAIA-BL vs copy | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |"):
        assert needle in text, needle
    table1 = text.split("\n\n")[1].splitlines()
    assert table1[0].startswith("| model | circumscribed | indistinct | spiculated | "
                                "average AUROC (weighted, the paper's) | macro AUROC |")
    assert len(table1) == 2 + 2                           # header, rule, two runs


# --- clear errors -------------------------------------------------------------------------------


def test_errors_name_the_missing_file(tmp_path, run_copy):
    from iaiabl_lib.cli import main

    with pytest.raises(FileNotFoundError, match="does not exist.*iaiabl train"):
        evaluate_run(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json.*iaiabl train"):
        evaluate_run(empty)
    (run_copy / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no model.pt.*iaiabl train"):
        evaluate_run(run_copy)
    assert main(["evaluate", "--run", str(run_copy)]) == 2     # the CLI prints the message


def test_unfinished_run(run_copy):
    edit_config(run_copy, complete=False)
    with pytest.raises(FileNotFoundError, match="not finished"):
        evaluate_run(run_copy)


def test_missing_data_dir_suggests_data_option(run_copy, prepared, tmp_path):
    edit_config(run_copy, data=str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match="--data"):
        evaluate_run(run_copy)
    with pytest.raises(FileNotFoundError, match="iaiabl prepare"):
        evaluate_run(run_copy, data_dir=tmp_path / "also-missing")
    assert evaluate_run(run_copy, data_dir=prepared, n_boot=20, device="cpu")["n_test"] > 0


def test_class_list_mismatch(run_copy):
    edit_config(run_copy, classes=["benign", "malignant", "other"])
    with pytest.raises(ValueError, match="class mismatch.*benign.*circumscribed"):
        evaluate_run(run_copy, device="cpu")


def test_image_size_mismatch(run_copy, prepared, tmp_path):
    from iaiabl_lib.data.dataset import resize_images, resize_masks

    small = Path(shutil.copytree(prepared, tmp_path / "small"))
    np.save(small / "images.npy", resize_images(np.load(prepared / "images.npy"), 32))
    for name in ("lesion_masks.npy", "fine_masks.npy"):
        np.save(small / name, resize_masks(np.load(prepared / name), 32))
    with pytest.raises(ValueError, match=r"image size mismatch.*32-px.*64-px.*--size 64"):
        evaluate_run(run_copy, data_dir=small, device="cpu")


def test_compare_needs_evaluated_runs(run_copy):
    with pytest.raises(FileNotFoundError, match="iaiabl evaluate --run"):
        compare_runs([run_copy])


# --- black-box runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def malignancy_blackbox(prepared, tmp_path_factory) -> Path:
    """A one-epoch tiny end-to-end malignancy black box (the margin one is conftest's
    ``tiny_blackbox``)."""
    from iaiabl_lib.baselines import train_blackbox

    out = tmp_path_factory.mktemp("blackbox") / "malignancy"
    return Path(train_blackbox(prepared, "tiny", out, task="malignancy", epochs=1, seed=0,
                               device="cpu", progress=False))


def test_blackbox_margin_run_has_gradcam_and_gradcampp(tiny_blackbox, tmp_path):
    run = Path(shutil.copytree(tiny_blackbox, tmp_path / "bb"))
    result = evaluate_run(run, n_boot=N_BOOT, device="cpu")
    assert set(result) == TOP_KEYS | {"activation_precision_gradcampp", "task"}
    assert (result["kind"], result["task"]) == ("blackbox", "margin")
    assert result["malignancy_auroc"] == {"value": None, "ci_low": None, "ci_high": None}
    for path, s in summaries(result):
        if s["value"] is not None:
            check_summary(path, s)
    assert result["activation_precision_gradcampp"]["lesion"]["value"] is not None
    text = compare_runs([run], names=["VGG"])
    assert "| VGG + GradCAM |" in text and "| VGG + GradCAM++ |" in text


def test_blackbox_malignancy_run(malignancy_blackbox, tmp_path):
    run = Path(shutil.copytree(malignancy_blackbox, tmp_path / "bbm"))
    result = evaluate_run(run, n_boot=50, device="cpu")
    assert result["task"] == "malignancy"
    assert result["margin_auroc"]["average"]["value"] is None
    assert result["kappa"]["value"] is None
    check_summary("malignancy_auroc", result["malignancy_auroc"])
    tables = compare_runs([run], names=["VGG-mal"]).split("Table ")
    assert "| VGG-mal |" not in tables[1] and "| VGG-mal |" not in tables[3]   # no margin output
    assert "| VGG-mal | " in tables[2]                                          # malignancy only


# --- the pure parts -----------------------------------------------------------------------------


def test_predicted_class_pam_picks_the_most_activated_prototype_of_the_class():
    # 4 prototypes: classes 0, 0, 1, 2; maps 2 x 2 with one hot cell each
    maps = np.zeros((2, 4, 2, 2), dtype=np.float32)
    maps[:, 0, 0, 0] = maps[:, 1, 1, 1] = maps[:, 2, 0, 1] = maps[:, 3, 1, 0] = 5.0
    sim = np.array([[1.0, 2.0, 9.0, 0.0],        # case 0, class 0: prototype 1 (not 2, class 1)
                    [3.0, 2.0, 9.0, 0.0]])       # case 1, class 2: prototype 3
    pam = predicted_class_pam(sim, maps, torch.tensor([0, 0, 1, 2]), np.array([0, 2]), size=8)
    assert pam.shape == (2, 8, 8)
    assert np.unravel_index(pam[0].argmax(), (8, 8)) >= (4, 4)          # bottom-right cell
    r, c = np.unravel_index(pam[1].argmax(), (8, 8))
    assert r >= 4 and c < 4                                              # bottom-left cell


def test_eq9_paper_protocol_every_true_class_prototype_mean_over_pairs():
    """The paper's protocol against a plain loop over (case, prototype of the true class) pairs,
    with classes of unequal size (after pruning: 2, 1 and 3 prototypes) and one class without any."""
    rng = np.random.default_rng(3)
    n, m, h, size = 12, 6, 4, 16
    pclass = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([0, 1, 2] * 4)
    maps = rng.random((n, m, h, h)).astype(np.float32)
    lesion = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    pams, valid = true_class_pams(maps, torch.as_tensor(pclass), labels, size)
    assert pams.shape == (n, 3, size, size) and valid.sum(axis=1).tolist() == [2, 1, 3] * 4
    pairs = [activation_precision(activation_map(torch.from_numpy(maps[i, j][None, None]), size)[0, 0].numpy(),
                                  lesion[i]) for i in range(n) for j in range(m) if pclass[j] == labels[i]]
    preds = Predictions(rng.dirichlet(np.ones(3), n), None, {"activation_precision": pams}, "pairs",
                        {"activation_precision": valid})
    out, per_case = metrics_from_predictions(labels, labels % 2, np.zeros(n, bool), lesion, lesion,
                                             preds, n_boot=200)
    assert len(pairs) == 24
    assert out["activation_precision"]["lesion"]["value"] == pytest.approx(np.mean(pairs), abs=1e-12)
    # per case: the mean over its own pairs; the total weights cases by their number of pairs
    assert per_case["ap_activation_precision_lesion"][2] == pytest.approx(np.mean(pairs[3:6]), abs=1e-12)
    assert np.mean(per_case["ap_activation_precision_lesion"]) != pytest.approx(np.mean(pairs), abs=1e-6)
    low, high = out["activation_precision"]["lesion"]["ci_low"], out["activation_precision"]["lesion"]["ci_high"]
    assert low < np.mean(pairs) < high
    # a class left without prototypes: its cases have no valid pair and are left out
    _, valid2 = true_class_pams(maps[:, :3], torch.as_tensor(pclass[:3]), labels, size)
    assert not valid2[labels == 2].any()


def test_metrics_from_predictions_without_fine_annotations():
    rng = np.random.default_rng(0)
    n, s = 30, 16
    labels = np.arange(n) % 3
    prob = rng.dirichlet(np.ones(3), n)
    maps = rng.random((n, s, s))
    lesion = np.zeros((n, s, s))
    lesion[:, 4:12, 4:12] = 1
    preds = Predictions(prob, rng.random(n), {"activation_precision": maps}, "test maps")
    out, per_case = metrics_from_predictions(labels, np.arange(n) % 2, np.zeros(n, bool), lesion,
                                             np.zeros((n, s, s)), preds, n_boot=100)
    assert out["activation_precision"]["fine"] == {"value": None, "ci_low": None, "ci_high": None}
    assert out["n_fine"] == 0
    assert np.isnan(per_case["ap_activation_precision_fine"]).all()
    with pytest.raises(ValueError, match="expected \\(30, 3\\)"):
        metrics_from_predictions(labels, labels % 2, np.zeros(n, bool), lesion, lesion,
                                 Predictions(prob[:, :2], None, {}, ""), n_boot=10)


def test_single_cell_ceiling_is_the_best_one_hot_cell_map():
    """The grid's own limit of Eq. 9: per case, the best of the grid's one-hot cell maps (checked
    against every cell by brute force), 1 for a mask that covers the image, NaN for an empty one,
    and never lower for a mask that contains another."""
    from iaiabl_lib.evaluate import single_cell_ceiling

    grid, size = 4, 32
    masks = np.zeros((3, size, size), dtype=np.uint8)
    masks[0] = 1
    masks[1, 4:14, 6:18] = 1
    masks[2, 2:20, 2:24] = 1                                   # contains case 1's mask
    got = single_cell_ceiling(np.concatenate([masks, np.zeros((1, size, size), np.uint8)]), grid)
    cells = torch.eye(grid * grid).reshape(grid * grid, 1, grid, grid)
    cell_maps = activation_map(cells, size)[:, 0].numpy()
    for i in range(3):
        brute = max(activation_precision(cell_maps[c], masks[i]) for c in range(grid * grid))
        assert got[i] == pytest.approx(brute)
    assert got[0] == pytest.approx(1.0)
    assert 0 < got[1] < 1 and got[2] >= got[1]
    assert np.isnan(got[3])


def test_single_cell_ceiling_when_the_top_five_percent_outnumber_a_cell():
    """A 16 x 16 grid at 64 px: a cell's bilinear footprint (8 x 8 px) is smaller than the top 5 %
    (205 px), so the one-hot map's zeros reach Eq. 9's threshold. The ceiling must still be the
    best peaked map's (the footprint and its nearest pixels), not every pixel: a 24 x 24 lesion
    holds the 205 pixels nearest to a cell at its centre, so the ceiling is 1, not the lesion's
    share of the image (0.14)."""
    from iaiabl_lib.evaluate import single_cell_ceiling

    size, grid = 64, 16
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, 20:44, 20:44] = 1
    assert single_cell_ceiling(mask, grid)[0] == pytest.approx(1.0)
    off = np.zeros_like(mask)
    off[0, :6, :6] = 1                                        # a corner lesion smaller than the top 5 %
    assert 0.1 < single_cell_ceiling(off, grid)[0] < 0.3      # 36 of the ~205 nearest pixels at best


def _marked_copy(prepared: Path, dest: Path, label: int = 1, k: int = 3) -> tuple[Path, list[int]]:
    """A copy of ``prepared`` whose first ``k`` validation cases of ``label`` carry a white block in a
    corner (a burned-in marker), everything else the same; returns (path, the marked rows)."""
    from iaiabl_lib.data.dataset import load_prepared

    shutil.copytree(prepared, dest)
    ds = load_prepared(prepared)
    rows = [i for i in np.flatnonzero((ds.split == "val") & (ds.labels == label))][:k]
    images = np.load(dest / "images.npy")
    images[rows, :8, :8] = 255
    np.save(dest / "images.npy", images)
    return dest, rows


def test_marker_reliance_sees_the_marker_and_nothing_else(tiny_run, prepared, tmp_path):
    from iaiabl_lib.evaluate import marker_reliance

    same = marker_reliance(tiny_run, prepared, prepared, device="cpu")
    assert same["n_marked"] == 0 and same["marker_class"] is None and same["probability_drop"] is None
    assert same["auroc_drop"] == pytest.approx(0.0, abs=1e-12)
    marked, rows = _marked_copy(prepared, tmp_path / "marked")
    assert len(rows) >= 1
    r = marker_reliance(tiny_run, marked, prepared, device="cpu")
    assert r["n_marked"] == len(rows) and r["marker_class"] == MARGINS[1] and r["split"] == "val"
    assert r["n"] == same["n"]
    # the figures are the evaluation's own: the marked set's val AUROC is evaluate_run's on it
    m = evaluate_run(tiny_run, data_dir=marked, split="val", n_boot=10, device="cpu", write=False)
    assert r["auroc_with_marker"]["value"] == pytest.approx(m["margin_auroc"]["average"]["value"])
    assert r["auroc_without_marker"]["value"] == pytest.approx(same["auroc_with_marker"]["value"])
    assert r["auroc_drop"] == pytest.approx(r["auroc_with_marker"]["value"] - r["auroc_without_marker"]["value"])
    assert 0.0 <= r["p_value"] <= 1.0 and r["marker_class_share"] == 1.0
    # the drop is the marked cases' own-class probability with the marker minus without, computed here
    # from the two sets' predictions through the run's own loader
    from iaiabl_lib.data.dataset import load_prepared
    from iaiabl_lib.evaluate.loaders import LOADERS
    from iaiabl_lib.rundir import check_run

    model = LOADERS["iaiabl"](tiny_run, check_run(tiny_run), "cpu")
    cases = [load_prepared(d, size=model.image_size).subset("val") for d in (marked, prepared)]
    prob = [np.asarray(model.predict(c).margin_prob) for c in cases]
    lab = np.asarray(cases[0].labels)
    own = [p[np.arange(len(lab)), lab] for p in prob]
    is_marked = np.isin(np.arange(len(lab)), [list(cases[0].ids).index(load_prepared(prepared).ids[i]) for i in rows])
    assert r["probability_drop"] == pytest.approx(float((own[0] - own[1])[is_marked].mean()))
    if abs(r["probability_drop"]) > 1e-6:                      # not averaged over every case either
        assert r["probability_drop"] != pytest.approx(float((own[0] - own[1]).mean()))


def test_marker_reliance_refuses_data_that_are_not_twins(tiny_run, prepared, tmp_path):
    import csv

    from iaiabl_lib.errors import InputError
    from iaiabl_lib.evaluate import marker_reliance

    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    with open(other / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["split"] == "val")          # one validation case, another margin
    new = (int(row["margin_index"]) + 1) % len(MARGINS)
    row["margin_index"], row["margin"] = str(new), MARGINS[new]
    with open(other / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError, match="same cases"):
        marker_reliance(tiny_run, prepared, other, device="cpu")
