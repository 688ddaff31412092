"""Tests of iaiabl_lib.data.synthetic: a CBIS-DDSM-shaped tree, quirks included, deterministic;
labels from the real tables' joint counts; anatomy and masses measured as the realism benchmark
measures them."""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from iaiabl_lib.data import synthetic as syn
from iaiabl_lib.data.synthetic import anatomy, labels, lesions, plan, realism

REPO_ROOT = Path(__file__).resolve().parents[1]
# the real CBIS-DDSM mass CSVs, shipped with the library (byte for byte those of ../shared/cbis-ddsm)
from iaiabl_lib.data.idc import CSV_DIR as SHARED  # noqa: E402
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


def test_other_seed_differs(tmp_path):
    """Same arguments, seeds 0 and 1: different tables (the seed is used, not only the sizes)."""
    for seed in (0, 1):
        syn.make_synthetic(tmp_path / f"s{seed}", patients=4, size=128, seed=seed)
    assert (tmp_path / "s0" / syn.CSV_NAMES["train"]).read_bytes() != (
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
    """The default arguments give >= 30 test-CSV ROIs per main margin (plan only, no pixels)."""
    import inspect

    params = inspect.signature(syn.make_synthetic).parameters
    rng = np.random.default_rng([params["seed"].default, 0])
    breasts = plan.plan_breasts(rng, params["patients"].default, params["test_fraction"].default)
    plan.assign_labels(rng, breasts)
    for margin in syn.MAIN_MARGINS:
        rois = sum(les.view_margin[v] == margin for b in breasts if b.split == "test"
                   for les in b.lesions for v in plan.VIEWS)
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


def test_never_deletes_real_csvs(tmp_path):
    """A folder holding the real mass CSVs (no synthetic.json) is refused, its files untouched."""
    real = tmp_path / "real"
    real.mkdir()
    for name in syn.CSV_NAMES.values():
        (real / name).write_bytes((SHARED / name).read_bytes())
    with pytest.raises(FileExistsError, match="no synthetic.json"):
        syn.make_synthetic(real, patients=3, size=128)
    for name in syn.CSV_NAMES.values():
        assert (real / name).read_bytes() == (SHARED / name).read_bytes()
    assert sorted(p.name for p in real.iterdir()) == sorted(syn.CSV_NAMES.values())


def test_interrupted_tree_is_marked_and_replaced(tmp_path, monkeypatch):
    """A run that dies before the end leaves synthetic.json saying complete: false and no CSVs
    (so `prepare` refuses it); the next run replaces it."""
    from iaiabl_lib.data.synthetic import generate

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(generate, "write_csvs", boom)
    with pytest.raises(RuntimeError, match="killed"):
        syn.make_synthetic(tmp_path / "t", patients=3, size=128)
    assert json.loads((tmp_path / "t" / "synthetic.json").read_text()) == {"complete": False}
    assert not any((tmp_path / "t" / n).exists() for n in syn.CSV_NAMES.values())
    monkeypatch.undo()
    syn.make_synthetic(tmp_path / "t", patients=3, size=128)
    assert json.loads((tmp_path / "t" / "synthetic.json").read_text())["complete"] is True


def test_bad_input_names_the_value(tmp_path):
    for kwargs, word in (({"size": 100}, r"size .*got 100$"), ({"patients": 1}, r"patients .*got 1$"),
                         ({"confounder": 1.5}, r"1\.5"), ({"test_fraction": 0.0}, r"test_fraction.*0\.0"),
                         ({"confounder_class": "round"}, "'round'")):
        with pytest.raises(ValueError, match=word):
            syn.make_synthetic(tmp_path / "bad", **{"patients": 3, "size": 128, **kwargs})


# ------------------------------------------------------------------------- labels (real counts)

def _real_rows(split: str) -> list[dict]:
    path = SHARED / syn.CSV_NAMES[split]
    if not path.exists():
        pytest.skip(f"{path} is not here (the real CBIS-DDSM tables, ../shared)")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_counts_table_is_built_from_the_real_csvs():
    """The shipped table is exactly what scripts/build_cbis_counts.py makes of the real CSVs."""
    import importlib.util

    _real_rows("train")
    spec = importlib.util.spec_from_file_location("build_cbis_counts",
                                                  REPO_ROOT / "scripts" / "build_cbis_counts.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert labels.COUNTS_FILE.read_text(encoding="utf-8") == builder.build(SHARED)
    text = labels.COUNTS_FILE.read_text(encoding="utf-8")
    assert "CC BY 3.0" in text and "10.7937/K9/TCIA.2016.7O02S9CY" in text


def test_counts_table_totals_match_the_real_tables():
    for split in ("train", "test"):
        real = _real_rows(split)
        table = labels.counts_table(split)
        assert table.total == len(real)
        for margin in ("CIRCUMSCRIBED", "ILL_DEFINED", "SPICULATED", "OBSCURED"):
            n = sum(int(r) for lab, r in zip(table.labels, table.rows) if lab.margin == margin)
            assert n == sum(row["mass margins"] == margin for row in real), (split, margin)


def test_systematic_draw_keeps_the_joint_distribution():
    """Drawing exactly as many label sets as the table has rows returns the table itself (up to
    one per combination: the draw is systematic), so margin x pathology x density x subtlety x
    assessment x shape keep their real frequencies."""
    table = labels.counts_table("train")
    drawn = labels.draw_labels(np.random.default_rng(3), table.total, "train")
    got = Counter(drawn)
    for lab, n in zip(table.labels, table.rows):
        assert abs(got[lab] - int(n)) <= 1
    # a small draw keeps the margin proportions up to rounding
    small = labels.draw_labels(np.random.default_rng(4), 60, "train")
    for margin in syn.MAIN_MARGINS:
        p = sum(int(r) for lab, r in zip(table.labels, table.rows) if lab.margin == margin)
        assert abs(sum(lab.margin == margin for lab in small) - 60 * p / table.total) <= 1.5


def test_malignancy_follows_margin_as_in_cbis_ddsm():
    f = syn.MALIGNANT_FRACTION
    assert f["SPICULATED"] > f["ILL_DEFINED"] > f["CIRCUMSCRIBED"]
    real = _real_rows("train")
    for margin in syn.MAIN_MARGINS:
        rows = [r for r in real if r["mass margins"] == margin]
        assert f[margin] == pytest.approx(np.mean([r["pathology"] == "MALIGNANT" for r in rows]))


def test_reader_disagreement(trees):
    """Second-reader labels appear only on borderline masses, name a real disagreeing pair, and
    are counted in the summary; all other rows carry the margin that was drawn."""
    _, summary = trees["a"]
    rng = np.random.default_rng([0, 0])
    breasts = plan.plan_breasts(rng, 400, 0.3)
    plan.assign_labels(rng, breasts)
    lesions_ = [les for b in breasts for les in b.lesions]
    pairs = labels.counts_table("train").pairs
    borderline = [les for les in lesions_ if les.partner]
    assert 0.05 < len(borderline) / len(lesions_) < 0.2
    n_second = 0
    for les in lesions_:
        for view in plan.VIEWS:
            if les.view_margin[view] not in (les.margin, ""):
                assert les.partner == les.view_margin[view]
                assert tuple(sorted((les.margin, les.partner))) in pairs
                n_second += 1
    assert 0 < n_second < 0.15 * 2 * len(lesions_)
    rois = summary["rois"]
    assert sum(r["second_reader"] for r in rois) == sum(summary["second_reader"].values())
    for r in rois:
        if not r["second_reader"] and r["margin"]:
            assert r["margin"] == r["margin_drawn"]


# ---------------------------------------------------------------------------- anatomy, masses

SPACING = 240.0 / 512


def _anatomy(seed: int, density: int, view: str = "CC"):
    rng = np.random.default_rng(seed)
    geom = anatomy.breast_geometry(rng, view, 512, 410)
    return anatomy.render_anatomy(rng, geom, density, 512, 410, SPACING)


def test_beta_estimator_recovers_a_known_exponent():
    """The spectrum fit of the realism benchmark, on fields of known exponent."""
    for beta in (2.0, 3.0):
        field = anatomy.power_law_field(np.random.default_rng(1), (512, 512), beta=beta)
        inside = np.ones(field.shape, bool)
        patches = realism.background_patches(field, inside, ~inside, margin=0)
        freqs, _ = realism.radial_power_spectrum(patches[0])
        mean = np.mean([realism.radial_power_spectrum(p)[1] for p in patches], axis=0)
        assert realism.fit_beta(freqs, mean) == pytest.approx(beta, abs=0.2)


def test_background_spectrum_is_power_law_with_beta_3():
    """Breast background (no masses) of every density: beta within the target [2.5, 3.5] over the
    band of record and over a lower and a higher band, and the three medians within 0.5 of each
    other, as a power law's would be (the earlier 0.5 px detector blur bent the spectrum: medians
    2.62, 3.04 and 3.29 on these views, a spread of 0.67)."""
    betas = {band: [] for band in realism.CHECK_BANDS}
    for seed in range(8):
        view = "CC" if seed % 2 == 0 else "MLO"
        an = _anatomy(seed, seed % 4 + 1, view)
        inside = realism.breast_mask(an.image)
        patches = realism.background_patches(an.image, inside, np.zeros_like(inside))
        assert len(patches) >= 4
        freqs, _ = realism.radial_power_spectrum(patches[0])
        mean = np.mean([realism.radial_power_spectrum(p)[1] for p in patches], axis=0)
        for band in realism.CHECK_BANDS:
            betas[band].append(realism.fit_beta(freqs, mean, band))
    for band, values in betas.items():
        print(f"beta per view, {band[0]:.3f}-{band[1]:.3f} cycles/px:", np.round(values, 2))
    assert realism.BAND in betas
    medians = {band: float(np.median(values)) for band, values in betas.items()}
    for band, median in medians.items():
        assert 2.5 <= median <= 3.5, (band, median)
    assert max(medians.values()) - min(medians.values()) <= 0.5, medians


def test_density_sets_glandular_fraction():
    """BI-RADS density 1-4: < 25 %, 25-50 %, 51-75 %, > 75 % glandular (mean over the breast)."""
    bins = {1: (0.0, 0.25), 2: (0.25, 0.5), 3: (0.5, 0.75), 4: (0.75, 1.0)}
    for density, (lo, hi) in bins.items():
        fraction = np.mean([(lambda a: a.glandular[a.inside].mean())(_anatomy(s, density))
                            for s in range(3)])
        print(f"density {density}: glandular fraction {fraction:.2f}")
        assert lo <= fraction <= hi
    with pytest.raises(ValueError, match="5"):
        _anatomy(0, 5)


def test_contrast_rises_with_subtlety():
    """Same breast, same mass, subtlety 1..5: the measured contrast (realism.lesion_contrast)
    rises with subtlety, and the peak added intensity is SUBTLETY_CNR x the local background
    standard deviation (times the calibration factor)."""
    contrasts = []
    for subtlety in range(1, 6):
        ex = syn.render_example("CIRCUMSCRIBED", subtlety, "OVAL", density=2, seed=5)
        assert ex["amplitude"] == pytest.approx(
            lesions.SUBTLETY_CNR[subtlety] * lesions.CONTRAST_SCALE * ex["sigma"])
        inside = np.ones(ex["roi"].shape, bool)
        contrasts.append(realism.lesion_contrast(ex["roi"], inside, ex["lesion"]))
    print("contrast by subtlety:", np.round(contrasts, 2))
    assert np.all(np.diff(contrasts) > 0)


@pytest.mark.parametrize("margin,shape", [("CIRCUMSCRIBED", "OVAL"), ("ILL_DEFINED", "IRREGULAR"),
                                          ("SPICULATED", "IRREGULAR"), ("OBSCURED", "OVAL"),
                                          ("MICROLOBULATED", "LOBULATED")])
def test_masks_are_true_to_what_was_drawn(margin, shape):
    ex = syn.render_example(margin, 5, shape, density=2, seed=7)
    mass, lesion, fine, amp = ex["mass"], ex["lesion"], ex["fine"], ex["amplitude"]
    assert lesion.any() and fine.any()
    # the outline holds the mass's bright body (an obscured mass: its overlying tissue is not it)
    if margin != "OBSCURED":
        assert lesion[mass >= 0.6 * amp].mean() > 0.9
    # ...and almost nothing where the mass adds nothing
    assert (lesion & (mass < 0.02 * amp)).sum() <= 0.05 * lesion.sum()
    if margin == "SPICULATED":      # the fine mask covers the spicules outside the body
        body = mass >= 0.5 * amp
        cy, cx = ndimage.center_of_mass(body)
        yy, xx = np.mgrid[0:mass.shape[0], 0:mass.shape[1]]
        far = np.hypot(yy - cy, xx - cx) > 1.5 * np.sqrt(body.sum() / np.pi)
        spicule = (mass > 0.2 * amp) & far
        assert spicule.sum() > 20 and fine[spicule].mean() > 0.9
    else:                           # a band along the border: where the intensity changes
        edge = ndimage.binary_dilation(lesion) & ~ndimage.binary_erosion(lesion)
        assert fine[edge].mean() > (0.3 if margin == "OBSCURED" else 0.6)


def test_ill_defined_border_is_wider_than_circumscribed():
    def band(margin, shape):
        ex = syn.render_example(margin, 5, shape, density=2, seed=11)
        return ex["fine"].sum() / np.sqrt(ex["lesion"].sum())
    assert band("ILL_DEFINED", "OVAL") > 2 * band("CIRCUMSCRIBED", "OVAL")


def test_marker_boxes_recorded(trees):
    """synthetic.json gives each placed marker's box: it holds the saturated pixels of the image."""
    root, summary = trees["a"]
    boxes = [r for r in summary["rois"] if r["marker_box"]]
    assert len(boxes) == summary["confounder"]["placed"] > 0
    on_disk = json.loads((root / "synthetic.json").read_text())
    assert on_disk["rois"] == summary["rois"]
    rows = {(split, i + 1): r for split in ("train", "test")
            for i, r in enumerate(_rows(root, split))}
    union: dict[str, np.ndarray] = {}
    for roi in boxes:
        row = rows[("train" if "train" in roi["csv"] else "test", roi["row"])]
        assert row["patient_id"] == roi["patient_id"] and row["image view"] == roi["view"]
        full, ds = _pixels(_file(root, row["image file path"]))
        maxv = 2 ** ds.BitsStored - 1
        y0, x0, y1, x1 = roi["marker_box"]
        assert (full[y0:y1, x0:x1] == maxv).mean() > 0.5              # the block, minus its letter
        mask = union.setdefault(row["image file path"], np.zeros(full.shape, bool))
        mask[y0:y1, x0:x1] = True
    for cell, mask in union.items():                                  # nothing saturated elsewhere
        full, ds = _pixels(_file(root, cell))
        assert not ((full == 2 ** ds.BitsStored - 1) & ~mask).any()


def test_marker_masks_on_prepared_crops(trees, tmp_path):
    """``marker_masks`` maps the recorded boxes onto the importer's crops: every saturated pixel of
    a crop lies inside its row's mask, the mask covers the block (saturated but for its letter), and
    rows without a marker get an empty mask; the same at another loaded size and on a subset."""
    from iaiabl_lib.data.cbis_ddsm import prepare
    from iaiabl_lib.data.dataset import load_prepared

    root, summary = trees["a"]
    prepare(root, tmp_path / "data", size=64, split="official", seed=0, verbose=False)
    ds = load_prepared(tmp_path / "data")
    masks = syn.marker_masks(ds).astype(bool)                              # (N, 64, 64)
    marked = masks.any(axis=(1, 2))
    assert 0 < marked.sum() <= summary["confounder"]["placed"]
    assert not ((ds.images == 255) & ~masks).any()                       # nothing saturated outside
    assert np.mean(ds.images[masks] == 255) > 0.5                         # the block, minus its letter
    assert not marked[ds.split == "test"].any()                           # markers: train rows only
    small = load_prepared(tmp_path / "data", size=32)
    assert np.array_equal(syn.marker_masks(small).any(axis=(1, 2)), marked)
    train = ds.subset("train")
    assert np.array_equal(syn.marker_masks(train), masks[ds.split == "train"])
    with pytest.raises(FileNotFoundError, match="synthetic.json"):
        syn.marker_masks(ds, tree=tmp_path)


def test_realism_reads_the_idc_layout(tmp_path):
    """measure_tree finds files as the importer does: the same tree re-laid out as an IDC download
    (``MG_<series uid>/<uuid>.dcm``) gives the same measurements."""
    from idc_layout import relay_as_idc

    syn.make_synthetic(tmp_path / "nbia", patients=4, size=256, seed=0)
    relay_as_idc(tmp_path / "nbia", tmp_path / "idc")
    nbia = realism.measure_tree(tmp_path / "nbia")
    other = realism.measure_tree(tmp_path / "idc")
    assert nbia.rows and len(other.rows) == len(nbia.rows) and len(other.betas) == len(nbia.betas)
    np.testing.assert_allclose(other.betas, nbia.betas)
    assert [r["contrast"] for r in other.rows] == pytest.approx([r["contrast"] for r in nbia.rows], nan_ok=True)
