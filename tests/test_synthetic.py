"""Tests of iaiabl_lib.data.synthetic: a CBIS-DDSM-shaped tree, quirks included, deterministic."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from iaiabl_lib.data import synthetic as syn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "cbis-ddsm"
ARGS = dict(patients=12, size=256, seed=0, confounder=1.0, confounder_class="indistinct")


# ------------------------------------------------------------------------------------ helpers

def _rows(root: Path, split: str) -> list[dict]:
    with open(root / syn.CSV_NAMES[split], newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _all_rows(root: Path) -> list[tuple[str, dict]]:
    return [(split, r) for split in ("train", "test") for r in _rows(root, split)]


def _file(root: Path, cell: str) -> Path:
    return syn.csv_path_to_file(root, cell)


def _pixels(path: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """Stored pixels mapped to MONOCHROME2 sense (0 = black), as int64, and the dataset."""
    ds = pydicom.dcmread(path)
    a = ds.pixel_array.astype(np.int64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = (2 ** ds.BitsStored - 1) - a
    return a, ds


def _is_mask(a: np.ndarray, full_shape: tuple[int, int]) -> bool:
    return a.shape == full_shape and set(np.unique(a)) <= {0, 255}


def _crop_and_mask(root: Path, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """Tell crop from mask by content (as the importer must)."""
    full, _ = _pixels(_file(root, row["image file path"]))
    a, _ = _pixels(_file(root, row["cropped image file path"]))
    b, _ = _pixels(_file(root, row["ROI mask file path"]))
    return (b, a) if _is_mask(a, full.shape) else (a, b)


def _marker_in_square(full: np.ndarray, maxv: int, mask: np.ndarray) -> int:
    """Number of saturated (marker) pixels inside the importer's crop square of ``mask``
    (docs/INTERFACES.md §1: bbox ends exclusive, side 2 * max(h, w), at least 64 px)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(64, 2 * max(y1 - y0, x1 - x0))
    top, left = int(np.floor((y0 + y1) / 2 - side / 2)), int(np.floor((x0 + x1) / 2 - side / 2))
    inside = full[max(0, top):top + side, max(0, left):left + side] == maxv
    return int(inside.sum())


def _marker_fully_inside(full: np.ndarray, maxv: int, mask: np.ndarray) -> bool:
    """Every saturated pixel of the image lies in the crop square WITHOUT the 64 px floor."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = 2 * max(y1 - y0, x1 - x0)
    top, left = int(np.floor((y0 + y1) / 2 - side / 2)), int(np.floor((x0 + x1) / 2 - side / 2))
    my, mx = np.nonzero(full == maxv)
    return bool(my.min() >= top and my.max() < top + side and mx.min() >= left
                and mx.max() < left + side)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Three small trees: two runs with the same arguments (confounder 1.0; "a" with two
    threads, "b" on one) and one without the confounder ("c")."""
    base = tmp_path_factory.mktemp("synthetic")
    a = syn.make_synthetic(base / "a", **ARGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(syn.os, "cpu_count", lambda: 1)                  # serial generation
        b = syn.make_synthetic(base / "b", **ARGS)
    c = syn.make_synthetic(base / "c", **{**ARGS, "confounder": 0.0})
    return {"a": (base / "a", a), "b": (base / "b", b), "c": (base / "c", c)}


# ------------------------------------------------------------------------------------ format

def test_header_matches_real_cbis_ddsm(trees):
    root, _ = trees["a"]
    real = SHARED / "mass_case_description_train_set.csv"
    for split in ("train", "test"):
        raw = (root / syn.CSV_NAMES[split]).read_bytes()
        header = raw.split(b"\r\n", 1)[0].decode()
        assert header.split(",") == syn.CSV_HEADER + [syn.FINE_COLUMN]
        if real.exists():
            real_header = real.read_bytes().split(b"\r\n", 1)[0].decode()
            assert header == real_header + "," + syn.FINE_COLUMN


def test_every_csv_path_resolves(trees):
    root, _ = trees["a"]
    columns = ["image file path", "cropped image file path", "ROI mask file path",
               syn.FINE_COLUMN]
    n = 0
    for split, row in _all_rows(root):
        prefix = "Mass-Test_" if split == "test" else "Mass-Training_"
        for col in columns:
            if row[col]:
                assert row[col].startswith(prefix)
                assert _file(root, row[col]).is_file(), row[col]
                n += 1
    assert n > 0


def test_quirks_present(trees):
    root, summary = trees["a"]
    rows = _all_rows(root)
    raw = (root / syn.CSV_NAMES["train"]).read_bytes().decode("utf-8")
    assert '.dcm\n"' in raw                                         # quoted newline cell
    assert all(r["ROI mask file path"].endswith(".dcm\n") for _, r in rows)
    shared = separate = swapped = straight = csv_swapped = 0
    for _, r in rows:
        crop_cell, mask_cell = r["cropped image file path"], r["ROI mask file path"].strip()
        if crop_cell.rsplit("/", 1)[0] == mask_cell.rsplit("/", 1)[0]:
            shared += 1
            csv_swapped += crop_cell.endswith("000001.dcm")
            full, _ = _pixels(_file(root, r["image file path"]))
            named_crop, _ = _pixels(_file(root, crop_cell))
            if _is_mask(named_crop, full.shape):
                swapped += 1                                         # crop column holds the mask
            else:
                straight += 1
        else:
            separate += 1
            assert crop_cell.endswith("000000.dcm") and mask_cell.endswith("000000.dcm")
    assert shared and separate and swapped and straight and csv_swapped
    photometric, rescaled = set(), 0
    for _, r in rows:
        ds = pydicom.dcmread(_file(root, r["image file path"]), stop_before_pixels=True)
        photometric.add(ds.PhotometricInterpretation)
        rescaled += float(getattr(ds, "RescaleSlope", 1)) != 1.0
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert rescaled > 0
    margins = {r["mass margins"] for _, r in rows}
    assert margins & {"OBSCURED", "MICROLOBULATED", "NA", ""} or any("-" in m for m in margins)


def test_dicom_tags(trees):
    root, _ = trees["a"]
    kinds = {"image file path": "full", "cropped image file path": None,
             "ROI mask file path": None, syn.FINE_COLUMN: "fine"}
    seen = set()
    for _, r in _all_rows(root):
        for col, kind in kinds.items():
            if not r[col]:
                continue
            path = _file(root, r[col])
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.SOPClassUID == syn.SOP_CLASS_DM_PRESENTATION
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.Modality == "MG"
            assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 16)
            assert ds.PixelRepresentation == 0
            assert ds.PatientID == r[col].split("/", 1)[0]            # NBIA folder name
            assert str(ds.PatientName) and ds.PatientBirthDate and ds.InstitutionName  # fake PHI
            assert len(ds.StudyInstanceUID) <= 64 and len(ds.SOPInstanceUID) <= 64
            if kind is not None:
                assert ds.SeriesDescription == syn.SERIES_DESCRIPTIONS[kind]
            seen.add(ds.SeriesDescription)
    assert seen == set(syn.SERIES_DESCRIPTIONS.values())
    # crop vs mask descriptions follow the content
    for _, r in _all_rows(root)[:6]:
        full, _ = _pixels(_file(root, r["image file path"]))
        for col in ("cropped image file path", "ROI mask file path"):
            a, ds = _pixels(_file(root, r[col]))
            want = "ROI mask images" if _is_mask(a, full.shape) else "cropped images"
            assert ds.SeriesDescription == want


def test_masks_and_fine_annotations(trees):
    root, summary = trees["a"]
    rows = _all_rows(root)
    n_fine = {"train": 0, "test": 0}
    for split, r in rows:
        full, _ = _pixels(_file(root, r["image file path"]))
        crop, mask = _crop_and_mask(root, r)
        assert _is_mask(mask, full.shape) and mask.any()
        assert crop.shape[0] < full.shape[0] and crop.shape[1] < full.shape[1]
        if split == "test":
            assert r[syn.FINE_COLUMN], "every test row has a fine annotation"
        if r[syn.FINE_COLUMN]:
            n_fine[split] += 1
            fine, ds = _pixels(_file(root, r[syn.FINE_COLUMN]))
            assert ds.SeriesDescription == "fine annotation mask images"
            assert _is_mask(fine, full.shape) and fine.any()
            ys, xs = np.nonzero(mask)
            fy, fx = np.nonzero(fine)                                 # near the lesion
            assert abs(fy.mean() - ys.mean()) < 0.3 * full.shape[0]
            assert abs(fx.mean() - xs.mean()) < 0.3 * full.shape[1]
    assert n_fine == summary["fine"]
    assert 0 < n_fine["train"] < len(_rows(root, "train"))


def test_metadata_manifest(trees):
    root, _ = trees["a"]
    with open(root / "CBIS-DDSM" / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == syn.METADATA_COLUMNS
        meta = list(reader)
    n_files = 0
    for m in meta:
        folder = root / m["File Location"]
        assert folder.is_dir()
        files = sorted(p.name for p in folder.iterdir())
        assert len(files) == int(m["Number of Images"])
        want = f"./CBIS-DDSM/{m['Subject ID']}/{m['Study UID']}/{m['Series UID']}"
        assert m["File Location"] == want
        n_files += len(files)
    assert n_files == len(list((root / "CBIS-DDSM").rglob("*.dcm")))


def test_summary_counts_match_csv(trees):
    root, summary = trees["a"]
    for split in ("train", "test"):
        rows = _rows(root, split)
        assert summary["rows"][split] == len(rows)
        for ours, cbis in syn.MARGIN_NAMES.items():
            assert summary["counts"][split][ours] == sum(r["mass margins"] == cbis for r in rows)
    train_ids = {r["patient_id"] for r in _rows(root, "train")}
    test_ids = {r["patient_id"] for r in _rows(root, "test")}
    assert train_ids and test_ids and not train_ids & test_ids       # split by patient


# ------------------------------------------------------------------------------- determinism

def test_deterministic_per_seed(trees):
    """Same seed and arguments -> the same bytes everywhere (and threads change nothing)."""
    (a, sa), (b, sb) = trees["a"], trees["b"]
    for name in list(syn.CSV_NAMES.values()) + ["CBIS-DDSM/metadata.csv"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files_a = sorted(p.relative_to(a) for p in (a / "CBIS-DDSM").rglob("*.dcm"))
    files_b = sorted(p.relative_to(b) for p in (b / "CBIS-DDSM").rglob("*.dcm"))
    assert files_a == files_b
    for rel in files_a:
        assert np.array_equal(pydicom.dcmread(a / rel).pixel_array,
                              pydicom.dcmread(b / rel).pixel_array)
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert {k: v for k, v in sa.items() if k != "seconds"} == {
        k: v for k, v in sb.items() if k != "seconds"}


def test_other_seed_differs(tmp_path, trees):
    a, _ = trees["a"]
    syn.make_synthetic(tmp_path / "s1", patients=4, size=128, seed=1)
    assert (a / syn.CSV_NAMES["train"]).read_bytes() != (
        tmp_path / "s1" / syn.CSV_NAMES["train"]).read_bytes()


# -------------------------------------------------------------------------------- confounder

def test_confounder_only_in_train_rows_of_class(trees):
    root, summary = trees["a"]
    found = 0
    for split, r in _all_rows(root):
        full, ds = _pixels(_file(root, r["image file path"]))
        maxv = 2 ** ds.BitsStored - 1
        _, mask = _crop_and_mask(root, r)
        n = _marker_in_square(full, maxv, mask)
        eligible = split == "train" and r["mass margins"] == "ILL_DEFINED"
        if not eligible or n == 0:  # (an eligible row's marker may not fit: rare, counted)
            assert n == 0, (split, r["mass margins"], r["image file path"])
        else:
            assert not (full[mask > 0] == maxv).any()                 # off the lesion
            if sum(o["image file path"] == r["image file path"] for _, o in _all_rows(root)) == 1:
                assert _marker_fully_inside(full, maxv, mask)
            found += 1
        if split == "test":
            assert not (full == maxv).any()                           # never in test images
    conf = summary["confounder"]
    assert conf["class"] == "indistinct" and conf["probability"] == 1.0
    assert found == conf["placed"] > 0
    assert conf["placed"] >= 0.8 * conf["eligible"]


def test_confounder_changes_only_the_markers(trees):
    (a, _), (c, sc) = trees["a"], trees["c"]
    assert sc["confounder"]["placed"] == 0
    assert (a / syn.CSV_NAMES["train"]).read_bytes() == (c / syn.CSV_NAMES["train"]).read_bytes()
    n_diff = 0
    for _, r in _all_rows(c):
        fa, ds = _pixels(_file(a, r["image file path"]))
        fc, _ = _pixels(_file(c, r["image file path"]))
        maxv = 2 ** ds.BitsStored - 1
        assert not (fc == maxv).any()                                 # no marker without it
        diff = fa != fc
        changed = fa[diff]
        assert np.all((changed == maxv) | (changed <= 0.1 * maxv))    # block or its glyph
        n_diff += diff.any()
    assert n_diff > 0


# -------------------------------------------------------------------------------- defaults, CLI

def test_default_plan_has_30_test_rois_per_class():
    """The default arguments give >= 30 test ROIs per main margin (plan only, no pixels)."""
    import inspect

    params = inspect.signature(syn.make_synthetic).parameters
    rng = np.random.default_rng([params["seed"].default, 0])
    breasts = syn._plan_breasts(rng, params["patients"].default, params["test_fraction"].default)
    syn._assign_labels(rng, breasts)
    for margin in syn.MAIN_MARGINS:
        rois = 2 * sum(les.margin == margin for b in breasts if b.split == "test"
                       for les in b.lesions)
        assert rois >= 30, margin


def test_cli_registers_synth(tmp_path):
    parser = argparse.ArgumentParser(prog="iaiabl")
    sub = parser.add_subparsers(dest="command")
    syn.add_cli(sub)
    args = parser.parse_args(["synth", "--out", str(tmp_path / "t"), "--patients", "3",
                              "--size", "128", "--seed", "5", "--confounder", "0.5",
                              "--confounder-class", "spiculated", "--quiet"])
    assert args.func is syn.run_cli
    assert (args.patients, args.size, args.seed, args.confounder) == (3, 128, 5, 0.5)
    assert args.func(args) == 0
    assert (tmp_path / "t" / syn.CSV_NAMES["test"]).is_file()


def test_refuses_to_overwrite_foreign_tree(tmp_path):
    (tmp_path / "CBIS-DDSM").mkdir()
    with pytest.raises(FileExistsError):
        syn.make_synthetic(tmp_path, patients=3, size=128)
