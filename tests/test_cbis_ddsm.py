"""iaiabl_lib.data.cbis_ddsm: real CSVs, NBIA layouts, content-based masks, crops, splits, skips."""
from __future__ import annotations

import argparse
import csv
import json
import os
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cbis_fixtures import (CSV_NAMES, DEFECTS, FINE_COLUMN, PHI_BIRTH, PHI_INSTITUTION, PHI_NAME, REAL_CBIS,
                           REPO_ROOT, Case, build_tree, case_key, make_row, real_rows,
                           require_real_csvs, write_dicom)
from iaiabl_lib.config import MARGINS
from iaiabl_lib.data import cbis_ddsm
from iaiabl_lib.data.cbis_ddsm import (CbisError, assign_splits, classify_margin, classify_pathology, crop_geometry, prepare,
                                       read_mass_csv)
from iaiabl_lib.data.dataset import PREPARED_MARKER, PreparedDatasetError, load_prepared

KEPT = ("CIRCUMSCRIBED", "ILL_DEFINED", "SPICULATED")


def _prepare(root, out, **kwargs):
    kwargs.setdefault("size", 32)
    return prepare(root, out, verbose=False, **kwargs)


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_accounted(summary):
    assert summary["n_included"] + len(summary["skipped"]) == summary["n_csv_rows"]
    assert sum(summary["excluded"].values()) == len(summary["skipped"])


# --- the real CSVs -------------------------------------------------------------------------------

@pytest.mark.parametrize("which, expected", [
    ("train", {"circumscribed": 305, "indistinct": 278, "spiculated": 281, "margin obscured": 197,
               "margin microlobulated": 108, "margin missing": 43, "margin combined": 106}),
    ("test", {"circumscribed": 87, "indistinct": 92, "spiculated": 82, "margin obscured": 50,
              "margin microlobulated": 21, "margin missing": 17, "margin combined": 29}),
])
def test_real_csv_margin_counts(which, expected):
    require_real_csvs()
    rows = read_mass_csv(REAL_CBIS / CSV_NAMES[which])
    counts = Counter(margin or reason for margin, reason in (classify_margin(r.margin_raw) for r in rows))
    assert dict(counts) == expected
    assert all(classify_pathology(r.pathology_raw) is not None for r in rows)
    assert all(r.mask_path.endswith(".dcm") and r.mask_path == r.mask_path.strip() for r in rows)


def test_margin_and_pathology_vocabulary():
    assert classify_margin(" ILL_DEFINED ") == ("indistinct", None)
    assert classify_margin("SPICULATED-ILL_DEFINED") == (None, "margin combined")
    assert classify_margin("") == (None, "margin missing")
    assert classify_margin("WAVY") == (None, "margin unknown 'WAVY'")
    assert classify_pathology("BENIGN_WITHOUT_CALLBACK") == 0 and classify_pathology("MALIGNANT") == 1
    assert classify_pathology("UNKNOWN") is None


def test_csv_columns_by_name_and_missing_column(tmp_path):
    rows = [make_row("P_00001", "SPICULATED")]
    header = list(reversed(rows[0]))                      # any column order
    path = tmp_path / CSV_NAMES["train"]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, [rows[0][h] for h in header]])
    parsed = read_mass_csv(path)
    assert parsed[0].patient_id == "P_00001" and parsed[0].margin_raw == "SPICULATED"
    assert not parsed[0].mask_path.endswith("\n") and parsed[0].row == 1
    header.remove("mass margins")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, [rows[0][h] for h in header]])
    with pytest.raises(CbisError, match=r"mass_case_description_train_set\.csv.*'mass margins'"):
        read_mass_csv(path)


# --- a sample of real rows -----------------------------------------------------------------------

def _real_sample() -> tuple[list[Case], list[Case], int]:
    """Real rows: 2 of each kept margin (same series), 1 separate-series row, 3 excluded margins
    (train); 1 of each kept margin (test). Every other case has crop and mask swapped."""
    def same_series(r):
        return r["cropped image file path"].rsplit("/", 1)[0] == r["ROI mask file path"].strip().rsplit("/", 1)[0]

    train_rows, test_rows = real_rows("train"), real_rows("test")
    picked = [r for m in KEPT for r in [r for r in train_rows if r["mass margins"] == m and same_series(r)][:2]]
    picked.append(next(r for r in train_rows if r["mass margins"] in KEPT and not same_series(r)))
    for margin in ("OBSCURED", "NA", "ILL_DEFINED-SPICULATED"):
        picked.append(next(r for r in train_rows if r["mass margins"] == margin))
    test_picked = [next(r for r in test_rows if r["mass margins"] == m) for m in KEPT]
    train = [Case(dict(r), swap=i % 2 == 1) for i, r in enumerate(picked)]
    test = [Case(dict(r), swap=i % 2 == 0) for i, r in enumerate(test_picked)]
    return train, test, 7 + 3


@pytest.mark.parametrize("layout", [
    {},                                                   # UID folders, 1-1/1-2.dcm, no metadata.csv
    {"metadata": True, "nbia_names": True},               # NBIA display names + manifest
    {"nbia_names": True},                                 # NBIA display names, no manifest
    {"named_files": True},                                # files named as the CSV says
])
def test_real_rows_import(tmp_path, layout):
    train, test, n_kept = _real_sample()
    assert any(r.row["ROI mask file path"].endswith("\n") for r in train)  # the newline quirk is present
    geometry = build_tree(tmp_path / "cbis", train, test, **layout)
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    _assert_accounted(summary)
    assert summary["n_included"] == n_kept, summary["skipped"]
    assert summary["excluded"] == {"margin obscured": 1, "margin missing": 1, "margin combined": 1}
    ds = load_prepared(tmp_path / "data")
    by_key = {case_key(c.row): c.row for c in train + test}
    for i, row in enumerate(ds.manifest):
        csv_row = by_key[row["id"]]
        assert row["margin"] == classify_margin(csv_row["mass margins"])[0]
        assert ds.labels[i] == MARGINS.index(row["margin"])
        assert row["malignant"] == str(int(csv_row["pathology"] == "MALIGNANT"))
        y0, x0, y1, x1 = map(int, row["bbox"].split())
        c, r = geometry[row["id"]]["center"], geometry[row["id"]]["radius"]
        assert (y0, x0, y1, x1) == (c[0] - r, c[1] - r, c[0] + r + 1, c[1] + r + 1)
        assert ds.lesion_masks[i].any()
    assert summary["notes"] == []


# --- geometry and alignment ----------------------------------------------------------------------

def test_crop_geometry_rule():
    mask = np.zeros((300, 200), bool)
    mask[100:141, 50:71] = True                           # bbox 41 x 21
    bbox, box = crop_geometry(mask)
    assert bbox == (100, 50, 141, 71) and box[2] == 82
    assert box[0] + box[2] / 2 == pytest.approx(120.5, abs=0.5) and box[1] + box[2] / 2 == pytest.approx(60.5, abs=0.5)
    small = np.zeros((300, 200), bool)
    small[10:15, 10:15] = True
    assert crop_geometry(small)[1][2] == 64               # at least 64 px


@pytest.mark.parametrize("center, radius", [((80, 40), 10), ((14, 8), 12)])  # inside; off the corner
def test_prepared_mask_covers_the_bright_lesion(tmp_path, center, radius):
    cases = [Case(make_row("P_00001", "SPICULATED"), center=center, radius=radius, fine=True, swap=True)]
    build_tree(tmp_path / "cbis", cases, [])
    _prepare(tmp_path / "cbis", tmp_path / "data", size=64)
    ds = load_prepared(tmp_path / "data")
    image, mask, fine = ds.images[0], ds.lesion_masks[0].astype(bool), ds.fine_masks[0].astype(bool)
    bright = image > 200                                  # the disc saturates the robust window
    assert bright.sum() > 50
    assert (bright & mask).sum() / (bright | mask).sum() > 0.85           # same disc
    assert (bright & ~mask).sum() <= 0.05 * bright.sum()
    ys, xs = np.nonzero(mask)                              # centred crop: the disc in the middle
    assert abs(ys.mean() - 31.5) < 1.5 and abs(xs.mean() - 31.5) < 1.5
    assert ds.has_fine[0] and fine.any()                  # the ring sits on the disc's edge
    dist = np.hypot(*(np.mgrid[:64, :64] - np.array([ys.mean(), xs.mean()])[:, None, None]))
    assert np.all(np.abs(dist[fine] - np.sqrt(mask.sum() / np.pi)) < 4)


# --- splits --------------------------------------------------------------------------------------

def _many_patients(tmp_path, n=24, test_share=0):
    train = [Case(make_row(f"P_{i:05d}", KEPT[i % 3], view=v))
             for i in range(n - test_share) for v in ("CC", "MLO")]
    test = [Case(make_row(f"P_{i:05d}", KEPT[i % 3], source="test")) for i in range(n - test_share, n)]
    build_tree(tmp_path / "cbis", train, test, shape=(96, 80))
    return tmp_path / "cbis"


def _owners(manifest):
    owners = {}
    for row in manifest:
        owners.setdefault(row["patient_id"], set()).add(row["split"])
    return owners


def test_paper_split_patient_level_stratified_and_seeded(tmp_path):
    root = _many_patients(tmp_path, n=18)
    summary = _prepare(root, tmp_path / "a", seed=0)
    manifest = _manifest(tmp_path / "a")
    assert all(len(s) == 1 for s in _owners(manifest).values())
    for split in ("train", "val", "test"):                # every class in every split
        assert all(summary["counts"][split][m] > 0 for m in MARGINS), summary["counts"]
    assert summary["counts"]["train"]["total"] > summary["counts"]["test"]["total"]
    samples = [{"patient_id": r["patient_id"], "label": int(r["margin_index"]), "source": "train"}
               for r in manifest]
    assert assign_splits(samples, "paper", 0)[0] == {r["patient_id"]: r["split"] for r in manifest}
    assert assign_splits(samples, "paper", 1)[0] != assign_splits(samples, "paper", 0)[0]


def test_split_fractions_on_many_patients():
    rng = np.random.default_rng(0)
    samples = [{"patient_id": f"P_{i:05d}", "label": int(rng.integers(3)), "source": "train"}
               for i in range(600) for _ in range(2)]
    assignment, _ = assign_splits(samples, "paper", 0)
    shares = Counter(assignment.values())
    assert abs(shares["train"] / 600 - 0.73) < 0.02 and abs(shares["val"] / 600 - 0.12) < 0.02
    assert abs(shares["test"] / 600 - 0.15) < 0.02
    samples += [{"patient_id": "P_09999", "label": 0, "source": "test"}]
    official, _ = assign_splits(samples, "official", 0)
    assert official["P_09999"] == "test" and abs(Counter(official.values())["val"] / 600 - 0.15) < 0.02


def test_official_split_keeps_the_test_csv(tmp_path):
    root = _many_patients(tmp_path, n=15, test_share=3)
    summary = _prepare(root, tmp_path / "data", split="official")
    manifest = _manifest(tmp_path / "data")
    assert all(len(s) == 1 for s in _owners(manifest).values())
    for row in manifest:
        assert (row["split"] == "test") == (row["source_csv"] == CSV_NAMES["test"])
    assert summary["counts"]["val"]["total"] > 0 and summary["split_mode"] == "official"


# --- bad inputs ----------------------------------------------------------------------------------

def test_each_bad_input_is_a_counted_named_skip(tmp_path):
    good = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(3)]
    bad = {defect: Case(make_row(f"P_{100 + k:05d}", "SPICULATED"), defect=defect) for k, defect in enumerate(DEFECTS)}
    bad["unknown margin"] = Case(make_row("P_00200", "WAVY"))
    bad["pathology"] = Case(make_row("P_00201", "SPICULATED", pathology="MAYBE"))
    build_tree(tmp_path / "cbis", good + list(bad.values()), [])
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    _assert_accounted(summary)
    assert summary["n_included"] == 3
    reasons = {s["patient_id"]: s for s in summary["skipped"]}
    expected = {"missing_full": "file missing", "missing_roi": "file missing",
                "truncated": "dicom corrupt or truncated", "not_dicom": "not a DICOM file",
                "modality": "modality not MG", "compressed": "compressed pixels without handler",
                "empty_mask": "mask empty", "mask_size": "mask size mismatch", "nan": "pixels not finite",
                "unknown margin": "margin unknown 'WAVY'", "pathology": "pathology unknown 'MAYBE'"}
    for key, case in bad.items():
        entry = reasons[case.row["patient_id"]]
        assert entry["reason"] == expected[key], (key, entry)
        assert entry["csv"] == CSV_NAMES["train"] and entry["row"] >= 4
        if key not in ("unknown margin", "pathology"):
            assert entry["file"].endswith(".dcm") and not entry["file"].startswith("/"), entry
    assert "'CT'" in reasons[bad["modality"].row["patient_id"]]["detail"]
    assert "pip install pylibjpeg" in reasons[bad["compressed"].row["patient_id"]]["detail"]
    saved = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert saved["excluded"] == summary["excluded"] and len(saved["skipped"]) == 11


def test_failures_leave_no_dataset(tmp_path, monkeypatch):
    root = _many_patients(tmp_path, n=3)
    # 1. an unusable CSV: nothing written
    csv_path = root / CSV_NAMES["test"]
    good_csv = csv_path.read_text()
    csv_path.write_text("patient_id,pathology\nP_1,BENIGN\n")
    with pytest.raises(CbisError, match="missing column"):
        _prepare(root, tmp_path / "data")
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob("data.tmp-*"))
    csv_path.write_text(good_csv)
    # 2. a crash while writing: the previous dataset survives untouched, no temporary left
    _prepare(root, tmp_path / "data")
    before = (tmp_path / "data" / "manifest.csv").read_bytes()

    def crash(path, *args, **kwargs):
        (Path(path) / "images.npy").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cbis_ddsm.importer, "save_prepared", crash)
    with pytest.raises(OSError, match="disk full"):
        _prepare(root, tmp_path / "data", size=48)
    assert (tmp_path / "data" / "manifest.csv").read_bytes() == before
    assert load_prepared(tmp_path / "data").size == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cbis", "data"]
    monkeypatch.undo()
    # 3. no usable row at all, and 4. an unrelated folder as --out
    for case in (Case(make_row("P_00009", "OBSCURED")),):
        build_tree(tmp_path / "empty", [case], [])
    with pytest.raises(CbisError, match="no usable rows"):
        _prepare(tmp_path / "empty", tmp_path / "other")
    assert not (tmp_path / "other").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(PreparedDatasetError, match="not a prepared dataset"):
        _prepare(root, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_no_phi_in_prepared_files(tmp_path):
    build_tree(tmp_path / "cbis", [Case(make_row("P_00001", "CIRCUMSCRIBED"), fine=True)], [])
    _prepare(tmp_path / "cbis", tmp_path / "data")
    for path in (tmp_path / "data").iterdir():
        blob = path.read_bytes()
        for secret in (PHI_NAME, PHI_BIRTH, PHI_INSTITUTION, "Doe", "ACC123456", "Main Street"):
            assert secret.encode() not in blob, (path.name, secret)
    assert {r["patient_id"] for r in _manifest(tmp_path / "data")} == {"P_00001"}
    assert _manifest(tmp_path / "data")[0]["fine_mask_path"] != ""


# --- entry points --------------------------------------------------------------------------------

def test_cli_and_data_script(tmp_path, monkeypatch, capsys):
    root = _many_patients(tmp_path, n=3)
    parser = argparse.ArgumentParser(prog="iaiabl")
    cbis_ddsm.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "--cbis", str(root), "--out", str(tmp_path / "d1"), "--size", "40",
                              "--split", "official", "--seed", "3"])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "d1" / "summary.json").read_text())
    assert (summary["size"], summary["split_mode"], summary["seed"]) == (40, "official", 3)
    assert "circumscribed" in capsys.readouterr().out     # the split x class table
    monkeypatch.setattr(sys, "argv", ["prepare_cbis_ddsm.py", "--cbis", str(root), "--out", str(tmp_path / "d2")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO_ROOT / "data_scripts" / "prepare_cbis_ddsm.py"), run_name="__main__")
    assert done.value.code == 0 and (tmp_path / "d2" / "images.npy").is_file()
    bad = parser.parse_args(["prepare", "--cbis", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d3")])
    with pytest.raises(CbisError, match="CSV not found"):
        bad.func(bad)
    capsys.readouterr()
    from iaiabl_lib.cli import main   # the command reports it on one line, exit 2 (errors.py)
    assert main(["prepare", "--cbis", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d3")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iaiabl prepare: error: ") and "CSV not found" in err and "\n" not in err


def test_synthetic_tree_round_trip(tmp_path):
    synthetic = pytest.importorskip("iaiabl_lib.data.synthetic")
    synthetic.make_synthetic(tmp_path / "synth", patients=12, size=256, seed=0)
    summary = _prepare(tmp_path / "synth", tmp_path / "data", size=64)
    _assert_accounted(summary)
    ds = load_prepared(tmp_path / "data")
    assert len(ds) == summary["n_included"] > 0
    assert all(len(s) == 1 for s in _owners(ds.manifest).values())
    assert ds.lesion_masks.reshape(len(ds), -1).any(axis=1).all()
    assert ds.fine_masks[ds.has_fine].reshape(int(ds.has_fine.sum()), -1).any(axis=1).all()
    assert not ds.fine_masks[~ds.has_fine].any()
    with open(tmp_path / "synth" / CSV_NAMES["train"], newline="") as f:
        assert FINE_COLUMN in next(csv.reader(f))


# --- hostile input and faults (issue 16) ---------------------------------------------------------

def _dead_pid() -> int:
    """The id of a process that has ended (a killed prepare)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _rewrite_csv(root: Path, which: str, edit) -> None:
    """Apply ``edit(rows)`` (lists of cells, header first) to one CSV of the tree."""
    path = root / CSV_NAMES[which]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _series_file(root: Path, cell: str, name: str) -> Path:
    """Where build_tree (default layout) wrote the file of CSV path ``cell``."""
    return root / "CBIS-DDSM" / Path(*cell.strip().split("/")[:3]) / name


def test_prepare_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    from iaiabl_lib.cli import main

    root = _many_patients(tmp_path, n=3)
    p = tmp_path / "p"                                   # the reproducer
    (p / "results").mkdir(parents=True)
    (p / "manifest.csv").write_text("a,b\n")
    (p / "results" / "thesis.tex").write_text("x\n")
    with pytest.raises(PreparedDatasetError, match=r"not a prepared dataset.*results/.*never deletes your files"):
        _prepare(root, p)
    assert main(["prepare", "--cbis", str(root), "--out", str(p)]) == 2
    assert "results/" in capsys.readouterr().err
    assert (p / "results" / "thesis.tex").read_text() == "x\n" and (p / "manifest.csv").read_text() == "a,b\n"
    # its own output is replaced; once a user file is added to it, it is not
    d = tmp_path / "d"
    _prepare(root, d)
    assert json.loads((d / PREPARED_MARKER).read_text())["format"] == 1
    _prepare(root, d, size=40)
    assert load_prepared(d).size == 40
    (d / "notes.txt").write_text("mine")
    with pytest.raises(PreparedDatasetError, match=r"notes\.txt"):
        _prepare(root, d, size=48)
    assert (d / "notes.txt").read_text() == "mine" and load_prepared(d).size == 40
    (d / "notes.txt").unlink()
    (d / PREPARED_MARKER).unlink()                       # a dataset of an older version: no marker
    with pytest.raises(PreparedDatasetError, match="older version"):
        _prepare(root, d, size=48)
    (tmp_path / "f").write_text("a file")
    (tmp_path / "link").symlink_to(d, target_is_directory=True)
    for out, message in ((tmp_path / "f", "is a file"), (tmp_path / "link", "symbolic link")):
        with pytest.raises(PreparedDatasetError, match=message):
            _prepare(root, out)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cbis", "d", "f", "link", "p"]   # no lock, no temporaries


def test_killed_prepare_leftovers_are_restored_or_removed(tmp_path):
    root = _many_patients(tmp_path, n=3)
    d, dead = tmp_path / "d", _dead_pid()
    _prepare(root, d)
    d.rename(tmp_path / f"d.old-{dead}")                 # killed between its two renames: no d
    half = tmp_path / f"d.tmp-{dead}"                    # and a half-written new one
    half.mkdir()
    (half / "images.npy").write_bytes(b"partial")
    foreign = tmp_path / f"d.tmp-{dead + 1 if dead + 1 != os.getpid() else dead + 2}"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")      # a look-alike holding another file: untouched
    build_tree(tmp_path / "unusable", [Case(make_row("P_00009", "OBSCURED"))], [])
    with pytest.raises(CbisError, match="no usable rows"):
        _prepare(tmp_path / "unusable", d)              # fails, after the clean-up
    assert load_prepared(d).size == 32                   # the previous dataset is back
    assert not (tmp_path / f"d.old-{dead}").exists() and not half.exists()
    assert (foreign / "keep.txt").read_text() == "not ours"


def test_prepare_output_is_locked_while_written(tmp_path, capsys):
    from iaiabl_lib.cli import main
    from iaiabl_lib.errors import LockedError
    from iaiabl_lib.lock import exclusive_lock, sibling_lock

    root = _many_patients(tmp_path, n=3)
    with exclusive_lock(sibling_lock(tmp_path / "d"), "test"):
        with pytest.raises(LockedError, match=rf"prepared dataset .*d is being written by another process \(pid {os.getpid()}"):
            _prepare(root, tmp_path / "d")
        assert main(["prepare", "--cbis", str(root), "--out", str(tmp_path / "d")]) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    _prepare(root, tmp_path / "d")                       # released: the next prepare runs
    assert not sibling_lock(tmp_path / "d").exists()


def test_csv_paths_outside_the_dataset_are_skipped_unopened(tmp_path, monkeypatch):
    cases = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(7)]
    build_tree(tmp_path / "cbis", cases, [])
    root = tmp_path / "cbis"
    outside = tmp_path / "outside"
    outside.mkdir()
    full_cell = cases[0].row["image file path"]
    secret = outside / "secret.dcm"                      # a real DICOM outside the download
    secret.write_bytes(_series_file(root, full_cell, "1-1.dcm").read_bytes())
    (root / "CBIS-DDSM" / "link").symlink_to(outside, target_is_directory=True)
    cells = {"P_00001": ("image file path", "../../outside/secret.dcm"),      # exists
             "P_00002": ("image file path", "../../outside/nothing-here.dcm"),  # does not
             "P_00003": ("image file path", "link/secret.dcm"),               # a symlink out
             "P_00004": ("ROI mask file path", "Mass/../../../outside/secret.dcm")}

    def edit(rows):
        header = rows[0]
        for r in rows[1:]:
            if r[0] in cells:
                column, value = cells[r[0]]
                r[header.index(column)] = value
    _rewrite_csv(root, "train", edit)
    opened = []
    real_read = cbis_ddsm.files.read_dicom
    monkeypatch.setattr(cbis_ddsm.files, "read_dicom", lambda path, **kw: opened.append(Path(path)) or real_read(path, **kw))
    summary = _prepare(root, tmp_path / "data")
    _assert_accounted(summary)
    skipped = {s["patient_id"]: s for s in summary["skipped"]}
    assert set(skipped) == set(cells) and summary["n_included"] == 3
    for pid, (column, cell) in cells.items():
        entry = skipped[pid]
        assert entry["reason"] == "path outside the dataset" and entry["file"] == cell, entry
        assert "was not opened" in entry["detail"]
    # the same words whether the outside file exists or not: nothing is revealed
    assert skipped["P_00001"]["detail"].replace("secret", "X") == skipped["P_00002"]["detail"].replace("nothing-here", "X")
    base = root.resolve()
    assert opened and all(base in p.resolve().parents for p in opened), opened
    assert "outside" not in (tmp_path / "data" / "manifest.csv").read_text()
    assert cbis_ddsm.resolve_inside(root, "a/../b") == (root / "b").resolve()
    assert cbis_ddsm.resolve_inside(root, "../cbis2/x") is None and cbis_ddsm.resolve_inside(root, "/etc/passwd") is None


def test_metadata_locations_outside_the_dataset_are_ignored(tmp_path):
    root = tmp_path / "cbis" / "CBIS-DDSM"
    (tmp_path / "elsewhere" / "series").mkdir(parents=True)
    root.mkdir(parents=True)
    (root / "metadata.csv").write_text("Series UID,File Location\n1.2.3,../../elsewhere/series\n")
    assert cbis_ddsm.DicomLocator(tmp_path / "cbis").series_from_metadata == {}


def test_oversized_dicom_rows_are_skipped_by_the_pixel_budget(tmp_path, capsys):
    from hostile_files import rle_bomb
    from iaiabl_lib.cli import main

    cases = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(4)]
    build_tree(tmp_path / "cbis", cases, [])
    rle_bomb(_series_file(tmp_path / "cbis", cases[0].row["image file path"], "1-1.dcm"), 30000, 30000)
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    entry = next(s for s in summary["skipped"] if s["patient_id"] == "P_00000")
    assert entry["reason"] == "image too large" and "900 megapixels" in entry["detail"]
    assert summary["n_included"] == 3 and summary["max_pixels"] == 100_000_000
    # --max-megapixels: the test images are 160 x 128 = 0.02 MP
    assert main(["prepare", "--cbis", str(tmp_path / "cbis"), "--out", str(tmp_path / "d2"),
                 "--max-megapixels", "0.02"]) == 2
    assert "image too large" in capsys.readouterr().err


def test_patient_ids_are_normalised_before_splitting(tmp_path):
    train = [Case(make_row(f"P_{i:05d}", KEPT[i % 3], view=v)) for i in range(12) for v in ("CC", "MLO")]
    train += [Case(make_row("p_00012", "SPICULATED", view="CC")), Case(make_row(" P_00012 ", "SPICULATED", view="MLO")),
              Case(make_row("P_ 00012", "SPICULATED", side="RIGHT"))]
    build_tree(tmp_path / "cbis", train, [], shape=(96, 80))
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    rows = [r for r in _manifest(tmp_path / "data") if r["patient_id"].upper().replace(" ", "") == "P_00012"]
    assert len(rows) == 3 and {r["patient_id"] for r in rows} == {"P_00012"}
    assert len({r["split"] for r in rows}) == 1
    assert {r["id"] for r in rows} == {"P_00012_LEFT_CC_1", "P_00012_LEFT_MLO_1", "P_00012_RIGHT_CC_1"}
    assert summary["patients"]["train"] + summary["patients"]["val"] + summary["patients"]["test"] == 13


def test_mask_specks_are_removed_and_recorded(tmp_path):
    case = Case(make_row("P_00001", "SPICULATED"), center=(80, 40), radius=10)
    others = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(2, 5)]
    build_tree(tmp_path / "cbis", [case] + others, [])
    _prepare(tmp_path / "cbis", tmp_path / "clean")
    mask_file = _series_file(tmp_path / "cbis", case.row["ROI mask file path"], "1-2.dcm")
    mask = pydicom.dcmread(mask_file).pixel_array.copy()
    mask[2, 120] = mask.max()                            # one stray pixel in the far corner
    write_dicom(mask_file, mask, description="ROI mask images")
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    clean, specked = (_manifest(tmp_path / name)[0] for name in ("clean", "data"))
    assert specked["id"] == "P_00001_LEFT_CC_1" and specked["crop_box"] == clean["crop_box"]   # crop not stretched
    assert specked["bbox"] == clean["bbox"]
    (entry,) = summary["cleaned"]
    assert entry["id"] == specked["id"] and entry["components"] == 2 and entry["removed_pixels"] == 1
    assert entry["reason"] == "mask specks removed" and entry["file"].endswith("1-2.dcm")
    assert any("connected component" in note for note in summary["notes"])


def test_skip_reasons_full_mask_short_row_and_ill_defined_spelling(tmp_path):
    cases = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(3)]
    full = Case(make_row("P_00100", "SPICULATED"))
    short = Case(make_row("P_00101", "SPICULATED"))
    hyphen = Case(make_row("P_00102", "ILL-DEFINED"))
    build_tree(tmp_path / "cbis", cases + [full, short, hyphen], [])
    mask_file = _series_file(tmp_path / "cbis", full.row["ROI mask file path"], "1-2.dcm")
    ones = np.full(pydicom.dcmread(mask_file).pixel_array.shape, 255, np.uint8)
    write_dicom(mask_file, ones, description="ROI mask images")

    def cut(rows):
        for r in rows[1:]:
            if r[0] == "P_00101":
                del r[9:]                                 # the line ends after 'assessment'
    _rewrite_csv(tmp_path / "cbis", "train", cut)
    summary = _prepare(tmp_path / "cbis", tmp_path / "data")
    reasons = {s["patient_id"]: s for s in summary["skipped"]}
    assert reasons["P_00100"]["reason"] == "mask full"
    assert reasons["P_00101"]["reason"] == "row too short" and "'pathology'" in reasons["P_00101"]["detail"]
    hyphen_row = next(r for r in _manifest(tmp_path / "data") if r["patient_id"] == "P_00102")
    assert hyphen_row["margin"] == "indistinct"
    assert classify_margin("ILL-DEFINED") == ("indistinct", None)
    assert classify_margin("SPICULATED-ILL-DEFINED") == (None, "margin combined")
    assert classify_margin("ILL_DEFINED-SPICULATED") == (None, "margin combined")


def test_latin1_csv_error_names_the_file(tmp_path):
    root = _many_patients(tmp_path, n=3)
    path = root / CSV_NAMES["train"]
    path.write_bytes(path.read_bytes().replace(b"OVAL", "OVALé".encode("latin-1"), 1))
    with pytest.raises(CbisError, match=rf"{CSV_NAMES['train']}: the file is not UTF-8 text \(byte 0xE9"):
        _prepare(root, tmp_path / "data")


def test_relative_cbis_path_as_typed_on_the_command_line(tmp_path, monkeypatch):
    _many_patients(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    summary = _prepare(Path("cbis"), Path("data"))
    assert summary["n_included"] == 6, summary["skipped"]
    assert all(r["image_path"].startswith("CBIS-DDSM/") for r in _manifest(tmp_path / "data"))


# --- damaged DICOM files (issue 24) ---------------------------------------------------------------

def _damages():
    """Five ways a full image is damaged, with the reason each must be skipped with: the two
    errors of issue 24 (they stopped the whole import) and three more."""
    from dicom_mutations import rewrite_field, with_syntax_byte, with_vr

    return [
        (with_vr, "dicom corrupt or truncated"),                                  # Rows' VR: '0x55 0x20'
        (lambda d: with_syntax_byte(d, 5), "transfer syntax unknown"),            # 1.2.890.10008.1.2.1
        (lambda d: d[:len(d) * 2 // 3], "dicom corrupt or truncated"),
        (lambda d: rewrite_field(d, "RescaleSlope", "DS", b"NaN "), "rescale slope invalid"),
        (lambda d: rewrite_field(d, "BitsAllocated", "US", 0), "dicom corrupt or truncated"),
    ]


def test_thirty_damaged_full_images_are_listed_skipped_and_prepare_exits_0(tmp_path, capsys):
    """A synthetic tree with 30 damaged full mammograms: `iaiabl prepare` exits 0, names each file
    with its reason in its output and in summary.json (counted by reason, with the rows skipped for
    it, and what to do), and none of their rows is in the prepared dataset."""
    from iaiabl_lib.cli import main
    from iaiabl_lib.data.synthetic import make_synthetic

    root = tmp_path / "cbis"
    make_synthetic(root, patients=30, size=128, seed=0)
    locator = cbis_ddsm.DicomLocator(root)
    usable = [r for name in CSV_NAMES.values() for r in read_mass_csv(root / name)
              if classify_margin(r.margin_raw)[0] and classify_pathology(r.pathology_raw) is not None]
    fulls = sorted({cbis_ddsm.one_file(locator, r.image_path, "full mammogram") for r in usable})
    assert len(fulls) >= 30
    expected = {}
    for i, path in enumerate(fulls[:30]):
        damage, reason = _damages()[i % 5]
        path.write_bytes(damage(path.read_bytes()))
        expected[locator.relative(path)] = reason
    assert main(["prepare", "--cbis", str(root), "--out", str(tmp_path / "data"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    _assert_accounted(summary)
    assert {e["file"]: e["reason"] for e in summary["refused"]} == expected
    assert summary["refused_files"] == dict(Counter(expected.values()))
    assert "DICOM files refused by the reader: 30" in out and "To recover them: generate the tree again" in out
    for e in summary["refused"]:
        assert f"{e['file']}: {e['reason']}: " in out and e["rows"] and not e["detail"].startswith("/")
    assert "Rows (0028,0010)" in next(e["detail"] for e in summary["refused"]
                                      if "Unknown Value Representation" in e["detail"])
    skipped_for = [s for s in summary["skipped"] if s["file"] in expected]
    assert len(skipped_for) == sum(len(e["rows"]) for e in summary["refused"])
    assert all(s["reason"] == expected[s["file"]] for s in skipped_for)
    assert not {m["image_path"] for m in _manifest(tmp_path / "data")} & set(expected)
    assert summary["n_included"] == len(usable) - len(skipped_for) > 0


def test_a_damaged_crop_or_roi_mask_skips_its_row_by_name(tmp_path):
    """The cropped image and the ROI mask are read like the full image: damaged, the row is
    skipped naming the file and its reason, and the import goes on."""
    cases = [Case(make_row(f"P_{i:05d}", KEPT[i % 3])) for i in range(4)]
    build_tree(tmp_path / "cbis", cases, [])
    root = tmp_path / "cbis"
    crop = _series_file(root, cases[0].row["cropped image file path"], "1-1.dcm")
    mask = _series_file(root, cases[1].row["ROI mask file path"], "1-2.dcm")
    crop.write_bytes(_damages()[0][0](crop.read_bytes()))
    mask.write_bytes(_damages()[1][0](mask.read_bytes()))
    summary = _prepare(root, tmp_path / "data")
    _assert_accounted(summary)
    assert summary["n_included"] == 2
    reasons = {s["patient_id"]: (s["reason"], s["file"]) for s in summary["skipped"]}
    assert reasons["P_00000"] == ("dicom corrupt or truncated", locator_relative(root, crop))
    assert reasons["P_00001"] == ("transfer syntax unknown", locator_relative(root, mask))
    assert summary["refused_files"] == {"dicom corrupt or truncated": 1, "transfer syntax unknown": 1}
    assert "refused_advice" in summary and "download those series again" in summary["refused_advice"]


def locator_relative(root: Path, path: Path) -> str:
    return cbis_ddsm.DicomLocator(root).relative(path.resolve())
