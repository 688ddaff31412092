"""``prepare``: every CSV row included or skipped with a reason, the prepared dataset written
aside and swapped in."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from iaiabl_lib.config import MARGINS
from iaiabl_lib.data.cbis_format import CSV_NAMES, DOWNLOAD_MARKER
from iaiabl_lib.data.dataset import SPLITS, normalise_patient_id, save_prepared
from iaiabl_lib.data.dicom import DEFAULT_MAX_PIXELS, robust_window, window_to_uint8
from iaiabl_lib.data.prepared_dir import check_replaceable, recover, remove_ours, swap_in
from iaiabl_lib.lock import exclusive_lock, sibling_lock

from .files import DicomLocator, _Reader, _find_mask, _fine_mask, one_file, largest_component
from .geometry import crop_and_resize, crop_geometry
from .splits import assign_splits
from .tables import CbisError, MassRow, SkipRow, classify_margin, classify_pathology, read_mass_csv

__all__ = ["prepare", "format_table", "cut_roi"]


def cut_roi(pixels: np.ndarray, info: dict, lesion: np.ndarray, size: int,
            fine: np.ndarray | None = None) -> dict:
    """The region of interest of one mass, as ``iaiabl prepare`` cuts it and ``iaiabl explain``
    cuts a raw DICOM (one function for both): the lesion mask reduced to its largest connected
    component, the crop around it (``crop_geometry``), the mammogram windowed over the whole image
    (its VOI LUT, else the robust window of the whole mammogram) and resized to ``size`` with its
    masks (``crop_and_resize``).

    pixels (H, W) as ``read_dicom`` returns them, lesion (H, W) bool, fine (H, W) bool or None ->
    {"image": uint8 (size, size), "masks": [lesion, (fine)] uint8 (size, size), "bbox", "crop_box",
    "components", "removed"}."""
    lesion, components, removed = largest_component(lesion)
    bbox, box = crop_geometry(lesion)
    masks = [lesion] + ([fine] if fine is not None else [])
    window = robust_window(pixels) if info.get("voi") is None else None   # of the whole mammogram
    image, out_masks = crop_and_resize(pixels, masks, box, size,
                                       image_transform=lambda part: window_to_uint8(part, info, window=window))
    return {"image": image, "masks": out_masks, "bbox": bbox, "crop_box": box,
            "components": components, "removed": removed}


def _load_row(row: MassRow, locator: DicomLocator, read: _Reader, size: int) -> dict:
    """Import one usable row -> arrays and manifest fields; raises SkipRow."""
    full_path = one_file(locator, row.image_path, "full mammogram")
    pixels, info = read(full_path)
    shape = pixels.shape
    lesion, mask_path = _find_mask(locator, row, read, shape)
    fine, fine_path = (None, None)
    if row.fine_path:
        fine, fine_path = _fine_mask(locator, row, read, shape)
    roi = cut_roi(pixels, info, lesion, size, fine)
    image, out_masks, bbox, box = roi["image"], roi["masks"], roi["bbox"], roi["crop_box"]
    components, removed = roi["components"], roi["removed"]
    if not out_masks[0].any():
        raise SkipRow("mask empty", mask_path, f"the lesion vanished when resized to {size} px")
    return {
        "image": image, "lesion": out_masks[0],
        "fine": out_masks[1] if fine is not None else np.zeros((size, size), np.uint8),
        "image_path": locator.relative(full_path), "mask_path": locator.relative(mask_path),
        "fine_mask_path": locator.relative(fine_path) if fine_path else "",
        "bbox": " ".join(map(str, bbox)), "crop_box": " ".join(map(str, box)),
        "mask_components": components, "mask_removed_pixels": removed,
    }


def _skip(row: MassRow, reason: str, file: str = "", detail: str = "") -> dict:
    return {"csv": row.csv, "row": row.row, "patient_id": row.patient_id, "reason": reason,
            "file": file, "detail": detail}


def _refused_files(refused: dict, skipped: list[dict], locator: DicomLocator) -> list[dict]:
    """Each DICOM file the reader refused (damaged, truncated, unsupported...): ``file`` relative
    to --cbis, ``reason``, ``detail`` (the reader's message, without the file's absolute path) and
    the CSV ``rows`` skipped for it."""
    rows_of: dict[str, list[dict]] = {}
    for s in skipped:
        if s["file"]:
            rows_of.setdefault(s["file"], []).append({"csv": s["csv"], "row": s["row"]})
    out = []
    for path, err in refused.items():
        file, text = locator.relative(Path(path)), str(err)
        detail = text[len(err.path) + 2:] if text.startswith(f"{err.path}: ") else text
        out.append({"file": file, "reason": err.reason, "detail": detail, "rows": rows_of.get(file, [])})
    return sorted(out, key=lambda e: (e["reason"], e["file"]))


def _refused_advice(cbis_dir: Path) -> str:
    """What a user does about the refused files of this tree (an IDC download, a synthetic tree,
    another download)."""
    if (cbis_dir / DOWNLOAD_MARKER).is_file():
        again = (f"delete each listed file and run `iaiabl download cbis-ddsm --out {cbis_dir}` again (it "
                 "fetches the missing files and verifies them), then prepare again")
    elif (cbis_dir / "synthetic.json").is_file():
        again = "generate the tree again (`iaiabl synth` with the same seed), then prepare again"
    else:
        again = ("download those series again (NBIA Data Retriever, or `iaiabl download cbis-ddsm` into a "
                 "new folder), then prepare again")
    return f"To recover them: {again}; or leave those rows skipped (the rest of the dataset is complete)."


def _summary(cbis_dir: Path, size: int, split: str, seed: int, n_rows: int,
             manifest: list[dict], skipped: list[dict]) -> dict:
    counts = {s: {**{m: 0 for m in MARGINS}, "total": 0} for s in SPLITS}
    malignant, fine = {s: 0 for s in SPLITS}, {s: 0 for s in SPLITS}
    seen: dict[str, set] = {s: set() for s in SPLITS}
    for r in manifest:
        s = r["split"]
        counts[s][r["margin"]] += 1
        counts[s]["total"] += 1
        malignant[s] += int(r["malignant"])
        fine[s] += int(r["has_fine"])
        seen[s].add(r["patient_id"])
    return {"source": os.path.abspath(cbis_dir),   # absolute: readers may run from another folder
            "size": size, "split_mode": split, "seed": seed,
            "n_csv_rows": n_rows, "n_included": len(manifest), "counts": counts,
            "malignant": malignant, "fine": fine, "patients": {s: len(seen[s]) for s in SPLITS},
            "excluded": dict(sorted(Counter(s["reason"] for s in skipped).items())),
            "skipped": skipped}


def prepare(cbis_dir: str | Path, out_dir: str | Path, size: int = 224, split: str = "paper",
            seed: int = 0, progress: bool = False, verbose: bool = True,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Import a CBIS-DDSM-shaped tree into a prepared dataset at ``out_dir``; returns the summary.

    Holds an exclusive lock on ``out_dir`` (``lock.sibling_lock``) throughout, writes
    ``out_dir.tmp-<pid>`` and renames it into place only when complete (an existing dataset is
    replaced only then, and only when it is one: ``prepared_dir.check_replaceable``). Raises
    :class:`CbisError` when nothing usable is found, ``PreparedDatasetError`` when ``out_dir``
    is not ours to replace;
    per-row problems are skipped and listed in the summary. ``max_pixels``: the pixel budget
    of each DICOM file (``dicom.read_dicom``).
    """
    cbis_dir, out = Path(cbis_dir), Path(out_dir)
    if split not in ("paper", "official"):
        raise CbisError(f"unknown --split {split!r}; use 'paper' or 'official'")
    if size < 8:
        raise CbisError(f"--size {size} is too small; use at least 8 px (the paper uses 224)")
    if max_pixels < 1:
        raise CbisError(f"the pixel budget must be positive (got {max_pixels} pixels)")
    check_replaceable(out)
    rows = [(source, r) for source, name in CSV_NAMES.items() for r in read_mass_csv(cbis_dir / name)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(sibling_lock(out), f"prepared dataset {out}"):
        recover(out)
        check_replaceable(out)
        summary = _import(cbis_dir, out, rows, size, split, seed, progress, max_pixels)
    if verbose:
        print(format_table(summary))
    return summary


def _import(cbis_dir: Path, out: Path, rows: list[tuple[str, MassRow]], size: int, split: str, seed: int,
            progress: bool, max_pixels: int) -> dict:
    """The body of :func:`prepare` (under its lock): rows -> samples -> splits -> files."""
    locator, read = DicomLocator(cbis_dir), _Reader(max_pixels=max_pixels)
    iterator = rows
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(rows, desc="prepare", unit="row")
    samples, skipped = [], []
    for source, row in iterator:
        margin, reason = classify_margin(row.margin_raw)
        malignant = classify_pathology(row.pathology_raw)
        patient = normalise_patient_id(row.patient_id)
        if row.missing_column:
            skipped.append(_skip(row, "row too short", detail=f"the row has no cell for the column "
                                 f"{row.missing_column!r}; the CSV line is cut short: repair it or "
                                 "download the CSV again"))
        elif not patient:
            skipped.append(_skip(row, "patient id missing", detail="the patient_id cell is empty"))
        elif margin is None:
            skipped.append(_skip(row, reason, detail=f"mass margins = {row.margin_raw!r}"))
        elif malignant is None:
            skipped.append(_skip(row, f"pathology unknown {row.pathology_raw!r}",
                                 detail="expected MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK"))
        else:
            try:
                loaded = _load_row(row, locator, read, size)
            except SkipRow as exc:
                file = locator.relative(Path(exc.file)) if Path(exc.file).is_absolute() else exc.file
                skipped.append(_skip(row, exc.reason, file, exc.detail))
                continue
            samples.append({"row": row, "source": source, "patient_id": patient,
                            "label": MARGINS.index(margin), "margin": margin,
                            "malignant": malignant, **loaded})
    if not samples:
        reasons = Counter(s["reason"] for s in skipped).most_common(3)
        raise CbisError(f"{cbis_dir}: no usable rows among {len(rows)} (most common reasons: {reasons}); "
                        "check that --cbis points at the download (CSVs + CBIS-DDSM folder)")
    assignment, moved = assign_splits(samples, split, seed)
    manifest, used_ids, cleaned = [], Counter(), []
    for s in samples:
        r: MassRow = s["row"]
        base = f"{s['patient_id']}_{r.side}_{r.view}_{r.abnormality_id}"
        used_ids[base] += 1
        manifest.append({
            "id": base if used_ids[base] == 1 else f"{base}-{used_ids[base]}",
            "patient_id": s["patient_id"], "split": assignment[s["patient_id"]], "margin": s["margin"],
            "margin_index": s["label"], "pathology": "MALIGNANT" if s["malignant"] else "BENIGN",
            "malignant": s["malignant"], "has_fine": int(s["fine_mask_path"] != ""),
            "side": r.side, "view": r.view, "abnormality_id": r.abnormality_id, "source_csv": r.csv,
            "csv_row": r.row, **{k: s[k] for k in ("image_path", "mask_path", "fine_mask_path", "bbox", "crop_box")}})
        if s["mask_components"] > 1:
            cleaned.append({"csv": r.csv, "row": r.row, "id": manifest[-1]["id"], "reason": "mask specks removed",
                            "file": s["mask_path"], "components": s["mask_components"],
                            "removed_pixels": s["mask_removed_pixels"],
                            "detail": f"the ROI mask has {s['mask_components']} separate regions; kept the "
                                      f"largest, dropped {s['mask_removed_pixels']} px elsewhere (they "
                                      "would have stretched the crop)"})
    owners: dict[str, set] = {}
    for m in manifest:
        owners.setdefault(m["patient_id"], set()).add(m["split"])
    leaking = sorted(p for p, splits in owners.items() if len(splits) > 1)
    if leaking:  # a bug guard, never expected
        raise RuntimeError(f"patients in two splits: {leaking[:5]}")
    summary = _summary(cbis_dir, size, split, seed, len(rows), manifest, skipped)
    summary["max_pixels"] = int(max_pixels)
    summary["refused"] = _refused_files(read.refused, skipped, locator)
    summary["refused_files"] = dict(sorted(Counter(e["reason"] for e in summary["refused"]).items()))
    if summary["refused"]:
        summary["refused_advice"] = _refused_advice(cbis_dir)
    summary["cleaned"] = cleaned
    summary["notes"] = locator.notes + ([f"{moved} patients in both CSVs sent to test"] if moved else []) \
        + ([f"{len(cleaned)} ROI masks had more than one connected component: kept the largest "
            "(see 'cleaned')"] if cleaned else [])
    assert summary["n_included"] + len(skipped) == summary["n_csv_rows"]

    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        remove_ours(tmp)
    tmp.mkdir()
    try:
        arrays = [np.stack([s[key] for s in samples]).astype(np.uint8)  # (N, S, S) each
                  for key in ("image", "lesion", "fine")]
        save_prepared(tmp, manifest, *arrays, summary)
        swap_in(tmp, out)
    except BaseException:
        if tmp.exists():
            remove_ours(tmp)
        raise
    return summary


def format_table(summary: dict) -> str:
    """Per-split x class counts (plus malignant, fine, patients) and the exclusion reasons."""
    head = ["split", *MARGINS, "total", "malignant", "fine", "patients"]
    lines = [" ".join(f"{h:>13}" for h in head)]
    for s in SPLITS:
        c = summary["counts"][s]
        cells = [s, *[c[m] for m in MARGINS], c["total"], summary["malignant"][s], summary["fine"][s],
                 summary.get("patients", {}).get(s, "")]
        lines.append(" ".join(f"{v:>13}" for v in cells))
    lines.append(f"{summary['n_included']} of {summary['n_csv_rows']} CSV rows included; skipped:")
    lines += [f"  {n:5d}  {reason}" for reason, n in sorted(summary["excluded"].items(), key=lambda kv: -kv[1])]
    return "\n".join(lines + _refused_lines(summary))


SHOWN_REFUSED = 50
"""Refused DICOM files listed by :func:`format_table` (all of them are in summary.json)."""


def _refused_lines(summary: dict) -> list[str]:
    """The DICOM files the reader refused: counts by reason, one line per file (its reason and the
    reader's words, without the path), what to do."""
    refused = summary.get("refused") or []
    if not refused:
        return []
    n_rows = sum(len(e["rows"]) for e in refused)
    lines = [f"DICOM files refused by the reader: {len(refused)} ({n_rows} CSV rows skipped for them):"]
    lines += [f"  {n:5d}  {reason}" for reason, n in sorted(summary["refused_files"].items(), key=lambda kv: -kv[1])]
    for e in refused[:SHOWN_REFUSED]:
        words = e["detail"]
        lines.append(f"  {e['file']}: {e['reason']}: {words if len(words) <= 160 else words[:157] + '...'}")
    if len(refused) > SHOWN_REFUSED:
        lines.append(f"  ... and {len(refused) - SHOWN_REFUSED} more (all in summary.json, 'refused')")
    lines.append(summary.get("refused_advice", ""))
    return lines
