"""The cases an explorer shows, and how it names them.

* A case is named by a **case number** within its split ("test case 12", "training case 87"), in
  every list, button and caption. The data set's own case ID appears only in a small-print line,
  labelled "data set ID" (``explain.text.dataset_id_words``, the one wording, which
  ``explain.case_text`` uses too): CBIS-DDSM's de-identified code ``P_00001_LEFT_CC_1`` (an
  anonymous patient number given by the data set, the breast, the view, the abnormality number;
  synthetic data make up codes of the same form). Nothing that identifies a person (a name, a birth
  date, a hospital's patient ID, anything else in a DICOM header) is read into the prepared data,
  so none is ever shown. The data set ID is shown by default for synthetic data only; a page made
  from real data leaves even the anonymous number out unless the caller asks (``show_dataset_ids``).
* The record (the recorded margin and pathology, the annotated lesion and margin) is, for synthetic
  data, what the data generator drew, not a radiologist's reading: :func:`record_source` says
  which, wherever the record is shown.
* What a reader may see at once: the view and the laterality. What the reader sees only on request
  (an HTML ``<details>``, closed): the recorded margin and the pathology, so that they do not bias
  the reading of the model's answer.
* The other views of the same lesion (``explain.other_views``: CC and MLO of one mass) are named
  under the header; one that the explorer shows is a button that chooses it
  (:func:`other_views_html`).
* The annotated region a view compares with (the fine annotation where there is one, else the
  lesion), the prototypes' health (``explain.prototype_health``, computed once per run and
  dataset), and the note that says what kind of model and data the reader is looking at.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import MARGINS
from ..errors import InputError

__all__ = ["MAX_CASES", "dataset", "pick_cases", "case_number", "is_synthetic", "show_ids",
           "case_header", "other_views_html", "truth_reveal", "record_source", "dataset_id_line",
           "agreement_sentence", "source_row", "source_caption", "relevant", "health", "demo_note"]

MAX_CASES = 8
"""At most this many cases per explorer (static views are embedded in the page)."""

_SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def dataset(run, data):
    """The prepared dataset at the run's image size (``explain.dataset_for``)."""
    from .. import explain

    return explain.dataset_for(run, data)


def pick_cases(ds, split: str | None = "test", max_cases: int = MAX_CASES,
               prefer_fine: bool = False, cases: Sequence[int | str] | None = None) -> list[int]:
    """Row indices of up to ``max_cases`` cases of ``split``, taking the margin classes in turn
    (so every class is shown); ``prefer_fine``: only cases with a fine annotation when there are
    any. ``cases``: explicit indices or dataset ids instead."""
    if cases is not None:
        out = [ds.ids.index(c) if isinstance(c, str) else int(c) for c in cases]
        return out[:max_cases]
    rows = np.arange(len(ds)) if split is None else np.flatnonzero(ds.split == split)
    if len(rows) == 0:
        raise InputError(f"no cases in split {split!r}")
    if prefer_fine and ds.has_fine[rows].any():
        rows = rows[ds.has_fine[rows]]
    by_class = [list(rows[ds.labels[rows] == c]) for c in range(len(MARGINS))]
    out: list[int] = []
    while len(out) < max_cases and any(by_class):
        for group in by_class:
            if group and len(out) < max_cases:
                out.append(int(group.pop(0)))
    return out


def case_number(ds, i: int) -> str:
    """"test case 12": the case's 1-based position among the cases of its split (stable for a
    dataset, the same in every explorer, and not a patient ID)."""
    split = str(ds.split[i])
    k = int(np.searchsorted(np.flatnonzero(ds.split == split), i)) + 1
    return f"{_SPLIT_WORDS.get(split, split)} case {k}"


def is_synthetic(ds) -> bool:
    """Whether ``ds`` was prepared from a synthetic tree (``iaiabl synth`` writes synthetic.json at
    its root; the prepared summary names that root)."""
    source = (getattr(ds, "summary", None) or {}).get("source")
    return bool(source) and (Path(source) / "synthetic.json").is_file()


def show_ids(ds, show_dataset_ids: bool | None) -> bool:
    """Data set IDs are shown when asked (True), never when refused (False), and by default only for
    synthetic data (a real case's ID holds CBIS-DDSM's anonymous patient number: de-identified, but
    a page made from real data leaves it out unless asked)."""
    return is_synthetic(ds) if show_dataset_ids is None else bool(show_dataset_ids)


def dataset_id_line(ds, i: int, whose: str = "") -> str:
    """The small-print line naming case ``i`` by its data set ID (``whose``: e.g. "its training
    case's "), saying where the ID comes from."""
    from ..explain.text import dataset_id_words

    kind = ("synthetic data, made up in CBIS-DDSM's de-identified form" if is_synthetic(ds)
            else "CBIS-DDSM's de-identified code")
    words = dataset_id_words(ds.ids[i])
    return (f"<div class='iaiabl-details'>{html.escape(whose + words if whose else words[0].upper() + words[1:])} "
            f"({kind}; no patient's identity is shown)</div>")


def record_source(ds) -> str:
    """Where the record (recorded margin, pathology, annotated lesion and margin) comes from, as a
    clause: the data generator for synthetic data, the data set's radiologists otherwise."""
    if is_synthetic(ds):
        return "on this synthetic data, the record is what the data generator drew, not a radiologist's reading"
    return "the record is the data set's (CBIS-DDSM: written by its radiologists)"


def _side_view(row: dict) -> str:
    side = str(row.get("side", "")).strip().lower()
    view = str(row.get("view", "")).strip().upper()
    return ", ".join(p for p in (f"{side} breast" if side else "", f"{view} view" if view else "") if p)


def agreement_sentence(call: int, recorded: int) -> str:
    """One plain sentence on the model's margin call against the recorded margin (whose record it
    is, :func:`record_source`, is said beside it)."""
    if int(call) == int(recorded):
        return f"The model's call agrees with the record: {MARGINS[int(call)]}."
    return (f"The model reads this margin as {MARGINS[int(call)]}; the record says "
            f"{MARGINS[int(recorded)]}.")


def truth_reveal(ds, i: int, call: int | None = None) -> str:
    """The recorded margin and pathology, hidden until the reader opens them; with the model's margin
    ``call``, a sentence saying whether it agrees with the record (a disagreement stands out)."""
    pathology = "malignant" if int(ds.malignant[i]) else "benign"
    recorded = int(ds.labels[i])
    said = ""
    if call is not None:
        agrees = int(call) == recorded
        said = (f"<div class='iaiabl-agreement{'' if agrees else ' iaiabl-flag'}' data-agrees='{int(agrees)}'>"
                f"{'' if agrees else '⚠ '}{html.escape(agreement_sentence(call, recorded))}</div>")
    source = record_source(ds)
    return ("<details class='iaiabl-truth'><summary>Show the recorded margin and pathology</summary>"
            f"<div class='iaiabl-truth-body'>Recorded margin: <b>{html.escape(MARGINS[recorded])}</b>; "
            f"pathology: <b>{pathology}</b> <span class='iaiabl-record-source'>({html.escape(source)})</span>."
            f"{said}</div></details>")


def case_header(ds, i: int, show_dataset_ids: bool | None = None, truth: bool = True,
                call: int | None = None) -> str:
    """The case's number, view and laterality; the data set ID in a details line (see
    :func:`show_ids`); the ground truth behind a click (``truth``), with whether the model's margin
    ``call`` agrees with it; the hook that shares the case with the explorers of its page
    (``access.shown_hook``: in a static page, after ``frame.share_case``)."""
    from . import access as A

    facts = _side_view(ds.manifest[i]) if getattr(ds, "manifest", None) else ""
    details = dataset_id_line(ds, i) if show_ids(ds, show_dataset_ids) else ""
    return (A.shown_hook(case_number(ds, i).capitalize())
            + f"<div class='iaiabl-case' data-row='{int(i)}' data-number='{html.escape(case_number(ds, i), quote=True)}'>"
            f"<b>{html.escape(case_number(ds, i).capitalize())}</b>"
            + (f" · {html.escape(facts)}" if facts else "") + "</div>" + details
            + (truth_reveal(ds, i, call) if truth else ""))


def other_views_html(ds, i: int, shown: Sequence[int] | None = None) -> str:
    """The other views of case ``i``'s lesion (``explain.other_views``), one line: each that is
    among ``shown`` (the rows the explorer offers) a button that chooses it in the case list
    (``access.case_button``), each other named with where it is; "" when there is none."""
    from ..explain.context import other_views
    from . import access as A

    parts, others = [], other_views(ds, i)
    for j in others:
        view = str(ds.manifest[j].get("view", "") or "").strip().upper() or "other"
        name = case_number(ds, j).capitalize()
        if shown is not None and j in shown:
            parts.append(f"the {html.escape(view)} view is " + A.case_button(name, f"{name} ({view} view)"))
        else:
            parts.append(f"the {html.escape(view)} view is {html.escape(case_number(ds, j))}, not among the "
                         "cases of this explorer")
    if not parts:
        return ""
    rows = " ".join(str(j) for j in others)
    return (f"<div class='iaiabl-views' data-rows='{rows}'>The same lesion in another view (same patient, "
            f"breast and abnormality number): {'; '.join(parts)}.</div>")


def source_row(ds, source_id: str | None, source_index: int | None) -> int | None:
    """The row of ``ds`` holding a prototype's source case (by its id; by its index when the id
    matches), or None when ``ds`` does not hold it."""
    if source_id is not None and source_id in ds.ids:
        return ds.ids.index(source_id)
    if source_index is not None and 0 <= int(source_index) < len(ds) and source_id in (None, ds.ids[int(source_index)]):
        return int(source_index)
    return None


def source_caption(ds, row: int | None) -> str:
    """A prototype's source case for a caption: its number, view, laterality and outcome (a
    training case: its recorded margin and pathology are part of what the prototype means)."""
    if row is None:
        return "its source case is not in this dataset"
    pathology = "malignant" if int(ds.malignant[row]) else "benign"
    facts = _side_view(ds.manifest[row]) if getattr(ds, "manifest", None) else ""
    return (f"{html.escape(case_number(ds, row))}" + (f", {html.escape(facts)}" if facts else "")
            + f"; recorded margin {html.escape(MARGINS[int(ds.labels[row])])}, {pathology}")


def relevant(ds, i: int) -> tuple[np.ndarray, str]:
    """The annotated region of case i: its fine annotation when it has one, else the lesion."""
    if bool(ds.has_fine[i]) and ds.fine_masks[i].any():
        return ds.fine_masks[i], "the annotated margin-relevant region"
    return ds.lesion_masks[i], "the annotated lesion (this case has no finer annotation)"


_HEALTH: dict[tuple[int, int], tuple[object, object, list]] = {}


def health(run, ds) -> list:
    """``explain.prototype_health(run, ds)`` (training split), computed once per run and dataset
    object and shared by the explorers."""
    from .. import explain

    key = (id(run), id(ds))
    hit = _HEALTH.get(key)
    if hit is None or hit[0] is not run or hit[1] is not ds:
        _HEALTH.clear()
        hit = (run, ds, explain.prototype_health(run, ds))
        _HEALTH[key] = hit
    return hit[2]


def demo_note(run, ds) -> str:
    """One visible line on what the reader is looking at: a small demonstration model, synthetic
    data, or both; in every case not a medical device."""
    preset = str((getattr(run, "config", None) or {}).get("preset_name", "")) or "?"
    size = int(run.preset.model.image_size)
    m = int(run.model.num_prototypes)
    small = preset in ("tiny",) or size < 224
    synthetic = is_synthetic(ds)
    if small or synthetic:
        what = []
        if small:
            what.append(f"a small demonstration model (preset “{html.escape(preset)}”, {size} × {size}-pixel "
                        f"regions of interest, {m} prototypes)")
        else:
            what.append(f"a model of preset “{html.escape(preset)}” ({m} prototypes)")
        what.append("trained on synthetic mammograms" if synthetic else "trained on the data set it was given")
        text = ("This build shows " + " ".join(what) + ". It illustrates how the method reasons; "
                "its readings are not medical findings."
                + (" Its record (recorded margins and pathology, annotated lesions and margins) is what "
                   "the data generator drew, not a radiologist's reading." if synthetic else ""))
    else:
        text = (f"A research model (preset “{html.escape(preset)}”, {m} prototypes); its readings are "
                "not medical findings and it is not a medical device.")
    return f"<div class='iaiabl-note iaiabl-demo'>{text}</div>"
