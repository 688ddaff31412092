"""``make_synthetic``: plan, render and write a whole CBIS-DDSM-shaped tree, and its summary.

Random streams are split by purpose, so that each decision depends only on what it should:
``[seed, 0]`` the plan (patients, labels, quirks), ``[seed, 1, patient, side]`` the pixels of one
breast, ``[seed, 2]`` one confounder draw per row, ``[seed, 3, patient, side, view, abnormality]``
one marker, ``[seed, 4]`` the UIDs, ``[seed, 5, ...]`` one crop window. Changing ``confounder``
therefore changes nothing but the markers, and breasts can be rendered in any order (two threads).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_json
from ..cbis_format import CSV_NAMES, main_name, resolve_class
from .markers import place_markers
from .plan import Breast, RoiRow, assign_labels, plan_breasts, plan_files
from .scene import render_breast
from .tree import DETECTOR_HEIGHT_MM, TreeWriter, to_stored, write_csvs, write_metadata
from ...errors import InputError

__all__ = ["MIN_SIZE", "make_synthetic"]

MIN_SIZE = 128


def _write_breast(writer: TreeWriter, seed: int, breast: Breast, H: int, W: int,
                  image_of: dict, rows_of: dict) -> dict[int, dict[str, str]]:
    """Render both views of one breast, burn in its confounder markers, write its DICOM files.
    -> CSV path cells of its rows, keyed by id(row)."""
    cells = {}
    side = int(breast.side == "RIGHT")
    for view, rendered in render_breast(seed, breast, H, W, DETECTOR_HEIGHT_MM / H).items():
        key = (breast.number, breast.side, view)
        view_rows = rows_of[key]

        def rng_for(i, view=view, view_rows=view_rows):
            return np.random.default_rng([seed, 3, breast.number, side, int(view == "MLO"),
                                          view_rows[i].lesion.abn_id])

        boxes = place_markers(rng_for, rendered.image, rendered.lesion_masks, rendered.footprints,
                              [r.confounder for r in view_rows], mirrored=bool(side))
        for row, box in zip(view_rows, boxes):
            row.placed = box is not None
            if box is not None and side:          # the written image is mirrored
                y0, x0, y1, x1 = box
                box = (y0, W - x1, y1, W - x0)
            row.marker_box = box
        flip = (lambda a: a[:, ::-1]) if side else (lambda a: a)
        stored = np.ascontiguousarray(flip(to_stored(rendered.image, image_of[key])))
        writer.full_image(image_of[key], stored)
        for i, row in enumerate(view_rows):
            cells[id(row)] = writer.roi(row, stored, flip(rendered.lesion_masks[i]),
                                        flip(rendered.fine_masks[i]))
    return cells


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; replace a previous synthetic tree there (finished or interrupted: both carry
    ``synthetic.json``), refuse to touch anything else: a folder that holds mass CSVs, a
    ``CBIS-DDSM`` tree or ``metadata.csv`` without ``synthetic.json`` is someone's data (e.g. the
    real download). Then mark the tree as in progress (``"complete": false``) until its end."""
    out.mkdir(parents=True, exist_ok=True)
    ours = (out / "synthetic.json").exists()
    foreign = [n for n in (*CSV_NAMES.values(), "CBIS-DDSM", "metadata.csv") if (out / n).exists()]
    if foreign and not ours:
        raise FileExistsError(f"{out} holds {', '.join(foreign)} but no synthetic.json, so it was not "
                              "written by `iaiabl synth` (it may be a real CBIS-DDSM download); "
                              "refusing to overwrite it. Choose a new or empty --out folder")
    for name in CSV_NAMES.values():
        (out / name).unlink(missing_ok=True)
    if (out / "CBIS-DDSM").exists():
        shutil.rmtree(out / "CBIS-DDSM")
    atomic_write_json(out / "synthetic.json", {"complete": False})


def make_synthetic(out_dir, patients: int = 260, size: int = 512, seed: int = 0,
                   confounder: float = 0.0, confounder_class: str = "indistinct",
                   test_fraction: float = 0.3, progress: bool = False) -> dict:
    """Generate a CBIS-DDSM-shaped tree of procedural mammograms under ``out_dir``.

    Args:
        out_dir: target folder (created; a previous synthetic tree there is replaced).
        patients: number of patients (about 15% have masses in both breasts, 12% of breasts two).
        size: full-mammogram height in px (width 0.8 x size; PixelSpacing 240 mm / size); >= 128.
        seed: everything (pixels, labels, UIDs) is a function of the seed and the arguments.
        confounder: probability that a train ROI of ``confounder_class`` gets a burned-in marker.
        confounder_class: "circumscribed" | "indistinct" | "spiculated" (or the CBIS-DDSM name).
        test_fraction: fraction of patients in the test CSV.
        progress: print progress to stderr.

    Returns:
        summary dict: rows / counts per split and margin (ours and raw CSV strings), malignant and
        fine-annotation counts, number of DICOM files, confounder {probability, class, eligible,
        placed}, reader disagreement counts, ``rois`` (one entry per CSV row: csv, row, margin
        drawn, second reader, marker box), seconds. Also written to ``out_dir/synthetic.json``
        (without the seconds).
    """
    t0 = time.perf_counter()
    if int(size) != size or size < MIN_SIZE:
        raise InputError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if int(patients) != patients or patients < 2:
        raise InputError(f"patients must be an integer >= 2 (one train and one test patient), "
                         f"got {patients!r}")
    if not 0.0 <= confounder <= 1.0:
        raise InputError(f"confounder is a probability in [0, 1], got {confounder!r}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    target = resolve_class(confounder_class)
    out = Path(out_dir)
    _prepare_out_dir(out)
    H, W = int(size), 2 * int(round(0.4 * size))

    plan_rng = np.random.default_rng([seed, 0])
    breasts = plan_breasts(plan_rng, int(patients), test_fraction)
    assign_labels(plan_rng, breasts)
    images, rows = plan_files(plan_rng, np.random.default_rng([seed, 4]), breasts)
    draws = np.random.default_rng([seed, 2]).random(len(rows))          # one per row, always
    for row, draw in zip(rows, draws):
        row.confounder = bool(row.split == "train" and row.margin == target
                              and draw < confounder)

    rows_of: dict[tuple[int, str, str], list[RoiRow]] = {}
    for row in rows:
        b = row.image.breast
        rows_of.setdefault((b.number, b.side, row.image.view), []).append(row)
    image_of = {(im.breast.number, im.breast.side, im.view): im for im in images}
    ordered = sorted(breasts, key=lambda b: (b.number, b.side))

    def work(breast: Breast) -> tuple[TreeWriter, dict[int, dict[str, str]]]:
        writer = TreeWriter(out, seed, H)
        return writer, _write_breast(writer, seed, breast, H, W, image_of, rows_of)

    # Breasts are independent (own random streams, own files): two threads overlap numpy/scipy
    # work (which releases the GIL) with DICOM writing; results are merged in breast order, so
    # the output does not depend on the number of threads.
    workers = min(2, os.cpu_count() or 1) if len(ordered) >= 8 else 1
    metadata: list[dict] = []
    cells: dict[int, dict[str, str]] = {}
    n_files = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, (writer, breast_cells) in enumerate(pool.map(work, ordered)):
            metadata += writer.metadata
            n_files += writer.n_files
            cells.update(breast_cells)
            if progress and ((k + 1) % 20 == 0 or k + 1 == len(ordered)):
                print(f"synth: {k + 1}/{len(ordered)} breasts, "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    write_csvs(out, rows, cells)
    write_metadata(out, metadata)
    summary = _summary(rows, n_files, seed, int(patients), int(size), confounder, target)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    # written last, atomically: a tree is complete when synthetic.json says so
    atomic_write_json(out / "synthetic.json",
                      {"complete": True, **{k: v for k, v in summary.items() if k != "seconds"}})
    return summary


def _summary(rows: list[RoiRow], n_files: int, seed: int, patients: int, size: int,
             confounder: float, target: str) -> dict:
    """The summary make_synthetic returns (see its docstring)."""
    counts = {s: {"circumscribed": 0, "indistinct": 0, "spiculated": 0, "other": 0, "total": 0}
              for s in ("train", "test")}
    margins = {s: Counter() for s in ("train", "test")}
    malignant = Counter()
    fine = Counter()
    second = Counter()
    rois = []
    number = Counter()
    for r in rows:
        counts[r.split][main_name(r.margin)] += 1
        counts[r.split]["total"] += 1
        margins[r.split][r.margin or "<empty>"] += 1
        malignant[r.split] += r.lesion.pathology == "MALIGNANT"
        fine[r.split] += r.fine
        number[r.split] += 1
        disagrees = bool(r.lesion.partner) and r.margin == r.lesion.partner
        second[r.split] += disagrees
        rois.append({
            "csv": CSV_NAMES[r.split], "row": number[r.split],
            "patient_id": r.image.breast.patient_id, "side": r.image.breast.side,
            "view": r.view, "abnormality_id": r.lesion.abn_id,
            "margin": r.margin, "margin_drawn": r.lesion.margin,
            "borderline_with": r.lesion.partner or None,
            "blend": round(r.lesion.blend, 3) if r.lesion.partner else None,
            "second_reader": disagrees,
            "marker_box": list(r.marker_box) if r.marker_box is not None else None,
        })
    return {
        "seed": seed, "patients": patients, "size": size,
        "pixel_spacing_mm": DETECTOR_HEIGHT_MM / size,
        "rows": {s: counts[s]["total"] for s in counts},
        "counts": counts,
        "margins": {s: dict(sorted(m.items())) for s, m in margins.items()},
        "malignant": {s: malignant[s] for s in ("train", "test")},
        "fine": {s: fine[s] for s in ("train", "test")},
        "dicom_files": n_files,
        "confounder": {"probability": confounder, "class": main_name(target),
                       "eligible": int(sum(r.confounder for r in rows)),
                       "placed": int(sum(r.placed for r in rows))},
        "second_reader": {s: second[s] for s in ("train", "test")},
        "rois": rois,
    }
