"""The radiologists' estimate of Table 2: the BI-RADS assessment as a malignancy score."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from ..errors import InputError

from ..data.cbis_ddsm.tables import header_key     # the importer's header matching (case, spaces)

__all__ = ["read_assessments", "radiologist_auroc"]


def _csv_assessments(path: Path) -> dict[int, tuple[str, str]]:
    """{1-based data-row number: (patient_id, assessment)}, numbered like
    ``cbis_ddsm.read_mass_csv`` (blank rows count)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        where = {header_key(h): i for i, h in enumerate(header)}
        if "assessment" not in where or "patient_id" not in where:
            raise InputError(f"{path}: no 'assessment' column; the radiologists' estimate needs "
                             "CBIS-DDSM's BI-RADS assessment")
        ia, ip = where["assessment"], where["patient_id"]
        rows = {}
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            get = (lambda i: cells[i].strip() if i < len(cells) else "")
            rows[number] = (get(ip), get(ia))
    return rows


def read_assessments(data: str | Path, cbis_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """BI-RADS assessment (float, NaN where unknown) of every row of prepared dataset ``data``,
    and where it came from ("manifest" or the CSV path).

    The importer's manifest has no assessment column (INTERFACES.md §2), so unless a future
    manifest carries one, the values are read from the source CSVs through each row's
    ``source_csv`` (file name) and ``csv_row`` (1-based data row), in ``cbis_dir`` (default: the
    ``source`` of summary.json); the row's patient id is checked."""
    data = Path(data)
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    if manifest and "assessment" in manifest[0]:
        vals = np.array([float(r["assessment"]) if str(r["assessment"]).strip() else np.nan
                         for r in manifest])
        return vals, "manifest"
    if cbis_dir is None:
        summary = json.loads((data / "summary.json").read_text(encoding="utf-8")) \
            if (data / "summary.json").is_file() else {}
        cbis_dir = summary.get("source")
        if not cbis_dir:
            raise FileNotFoundError(f"{data}: summary.json names no source tree; pass cbis_dir")
    cbis_dir = Path(cbis_dir)
    tables: dict[str, dict] = {}
    vals = np.full(len(manifest), np.nan)
    for i, r in enumerate(manifest):
        name = r.get("source_csv", "")
        if name not in tables:
            path = cbis_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: source CSV not found; the radiologists' estimate "
                                        "reads BI-RADS assessments from the CBIS-DDSM CSVs (pass "
                                        "the download folder as cbis_dir)")
            tables[name] = _csv_assessments(path)
        found = tables[name].get(int(r["csv_row"]))
        if found is None or found[0] != r.get("patient_id"):
            raise InputError(f"{cbis_dir / name}: row {r['csv_row']} is not patient "
                             f"{r.get('patient_id')}; the CSV changed since `iaiabl prepare`")
        try:
            vals[i] = float(found[1])
        except ValueError:
            pass
    return vals, str(cbis_dir)


def radiologist_auroc(data: str | Path, split: str = "test", cbis_dir: str | Path | None = None,
                      alpha: float = 0.05) -> dict:
    """Malignancy AUROC (DeLong CI) of the radiologists' BI-RADS assessment on ``split``.

    Returns ``{"value", "ci_low", "ci_high", "n", "source", "split"}`` (value None when one
    pathology is missing)."""
    from ..metrics import malignancy_auroc

    data = Path(data)
    scores, source = read_assessments(data, cbis_dir)
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    keep = np.array([r["split"] == split for r in manifest]) & np.isfinite(scores)
    malignant = np.array([int(r["malignant"]) for r in manifest])[keep]
    result = dict(malignancy_auroc(malignant, scores[keep], alpha=alpha))
    result.update(n=int(keep.sum()), source=source, split=split)
    return result
