"""``iaiabl explain``: a one-file HTML report of the model's reasoning about one case.

    iaiabl explain --run RUN CASE [--data DATA] [--box y0,x0,y1,x1 | --mask MASK.dcm] [--out FILE]

CASE is either the id of a case in the run's prepared dataset (manifest.csv ``id``; ``--data``
names another prepared dataset), or a raw mammogram DICOM file. For a DICOM file the lesion must
be located by the user: ``--box`` in full-image pixel coordinates (rows y, columns x, ends
exclusive) or ``--mask``, a binary ROI-mask DICOM of the same size (as CBIS-DDSM's ROI masks). The
region of interest is then cut exactly as ``iaiabl prepare`` cuts it (``data.cbis_ddsm``:
``crop_geometry`` and ``crop_and_resize`` after ``dicom.read_dicom`` and ``window_to_uint8``), at
the prepared dataset's size, then resized to the model's as the loader does.

The report is a single self-contained HTML file (figures embedded as base64 PNG, inline CSS, no
scripts, no external links): margin probabilities, malignancy probability, the whole mammogram
with the region of interest boxed and a scale bar in millimetres (``context.whole_view_html``, as
in the case reader), the reasoning in words
(``explain.case_text``), the Fig. 3-style figure and the class activation map. Default output:
``RUN/explanations/<case>.html``, written atomically. It is a research tool, not a medical device,
and says so.
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import re
import sys
from pathlib import Path

import numpy as np

from ..config import MARGIN_WORDS, MARGINS
from ..words import pct
from ..errors import InputError

__all__ = ["parse_box", "crop_dicom_case", "crop_size_of", "render_html", "write_report", "explain_to_html",
           "add_cli", "run_cli", "DISCLAIMER"]

DISCLAIMER = ("This is not a medical device and it is not validated for clinical use: do not use "
              "it to diagnose, treat or manage any patient. The model was trained on a research "
              "dataset and can be wrong in ways its explanations do not reveal.")


# ---------------------------------------------------------------------------------------------
# A raw DICOM case: the importer's crop
# ---------------------------------------------------------------------------------------------


def parse_box(text: str) -> tuple[int, int, int, int]:
    """'y0,x0,y1,x1' -> ints (full-image pixels, ends exclusive)."""
    parts = [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
    try:
        values = tuple(int(float(p)) for p in parts)
        if any(float(p) != int(float(p)) for p in parts):
            raise ValueError
    except ValueError:
        raise InputError(f"--box {text!r}: expected four whole numbers y0,x0,y1,x1 (pixels)") from None
    if len(values) != 4:
        raise InputError(f"--box {text!r}: expected four numbers y0,x0,y1,x1, got {len(values)}")
    return values  # type: ignore[return-value]


def _check_box(box: tuple[int, int, int, int], shape: tuple[int, int], path: Path) -> None:
    y0, x0, y1, x1 = box
    h, w = shape
    problems = []
    if min(box) < 0:
        problems.append("coordinates must not be negative")
    if y1 <= y0 or x1 <= x0:
        problems.append("y1 must be greater than y0 and x1 greater than x0 (ends are exclusive)")
    if y1 > h or x1 > w:
        problems.append(f"the box leaves the image, which is {h} rows × {w} columns "
                        f"(y1 ≤ {h}, x1 ≤ {w})")
    if problems:
        raise InputError(f"--box {','.join(map(str, box))} does not fit {path.name}: "
                         + "; ".join(problems) + ". Give the lesion's bounding box in full-image "
                         "pixel coordinates as y0,x0,y1,x1 (row, column of the top-left corner, "
                         "then of the bottom-right corner plus one).")


def _binary_mask(pixels: np.ndarray) -> np.ndarray | None:
    """The importer's binary-mask test (``cbis_ddsm.binary_mask``)."""
    from ..data.cbis_ddsm import binary_mask

    return binary_mask(pixels)


def crop_dicom_case(dicom_path: str | Path, box=None, mask_path: str | Path | None = None,
                    size: int = 224, model_size: int | None = None) -> dict:
    """Cut the ROI of a raw mammogram exactly as ``iaiabl prepare`` does.

    read_dicom (rescale, MONOCHROME1 inverted, PHI stripped) → a lesion mask (the ``box``
    rectangle, or the binary ``mask_path`` DICOM, which must have the image's size) →
    ``cbis_ddsm.cut_roi``, the importer's own cut (largest component, crop, window of the whole
    mammogram, resize to ``size``, the prepared dataset's size) → resized to ``model_size`` like
    ``dataset.load_prepared``.

    Returns {"image": uint8 (S, S), "lesion_mask": uint8 (S, S), "bbox", "crop_box", "shape",
    "whole": the whole mammogram, shrunk, with the crop (``context.whole_view_of``)}.
    Raises ValueError with what to fix for a bad box, a mask of another size, an empty or
    non-binary mask, or neither/both of box and mask.
    """
    from ..data.cbis_ddsm.importer import cut_roi
    from ..data.dataset import resize_images, resize_masks
    from ..data.dicom import read_dicom
    from .context import whole_view_of

    path = Path(dicom_path)
    if (box is None) == (mask_path is None):
        raise InputError(f"{path.name} is a raw DICOM: locate the lesion with exactly one of "
                         "--box y0,x0,y1,x1 (full-image pixels) or --mask MASK.dcm (a binary "
                         "ROI mask of the same size)")
    pixels, info = read_dicom(path)
    shape = tuple(int(v) for v in pixels.shape)
    if box is not None:
        box = parse_box(box) if isinstance(box, str) else tuple(int(v) for v in box)
        _check_box(box, shape, path)
        lesion = np.zeros(shape, dtype=bool)
        y0, x0, y1, x1 = box
        lesion[y0:y1, x0:x1] = True
    else:
        mpath = Path(mask_path)
        mpixels, _ = read_dicom(mpath, modality=None)
        lesion = _binary_mask(mpixels)
        if lesion is None:
            raise InputError(f"--mask {mpath.name}: not a binary mask (it has more than two grey "
                             "values); pass the ROI mask file, not the cropped image")
        if lesion.shape != shape:
            raise InputError(f"--mask {mpath.name} is {lesion.shape[0]} × {lesion.shape[1]} px but "
                             f"the mammogram {path.name} is {shape[0]} × {shape[1]} px; the ROI "
                             "mask must have the full image's size (use the mask that belongs to "
                             "this image)")
        if not lesion.any():
            raise InputError(f"--mask {mpath.name}: the mask is empty (no lesion pixels)")
        if lesion.all():
            raise InputError(f"--mask {mpath.name}: the mask marks every pixel as lesion; it "
                             "outlines nothing: pass the ROI mask of this lesion")
    roi = cut_roi(pixels, info, lesion, size)
    image, (lesion_roi,), bbox, crop_box = roi["image"], roi["masks"], roi["bbox"], roi["crop_box"]
    if model_size is not None and model_size != size:
        image = resize_images(image[None], model_size)[0]
        lesion_roi = resize_masks(lesion_roi[None], model_size)[0]
    return {"image": image, "lesion_mask": lesion_roi, "bbox": bbox, "crop_box": crop_box,
            "shape": shape, "file": path.name, "whole": whole_view_of(pixels, info, crop_box)}


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.warn{background:#fff4e5;border:1px solid #f0a030;border-radius:6px;padding:10px 14px;margin:14px 0}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0} td,th{padding:4px 12px;border-bottom:1px solid #eee;text-align:left}
.bar{display:inline-block;height:10px;background:#4a78b5;border-radius:2px;vertical-align:middle}
.big{font-size:1.25em;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee}
.reason{background:#f7f9fc;border-left:4px solid #4a78b5;padding:10px 14px}
figure.whole{display:flex;gap:12px;align-items:flex-start;margin:8px 0} figure.whole img{max-width:none}
figure.whole figcaption{font-size:.9em;color:#444}
small{color:#666}
"""


def _png_tag(fig, alt: str) -> str:
    from ..plots import figure_png

    data = base64.b64encode(figure_png(fig)).decode("ascii")
    fig.clear()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _distrust_html(expl, health) -> str:
    """The shown prototypes that the library's one distrust rule (``explain.prototype_health``)
    flags, with its reasons; or why the check could not run."""
    esc = html.escape
    if health is None:
        return ("<h2>Prototypes to distrust</h2><p>Not checked: the health check needs the run's "
                "prepared training data (pass <code>--data DATA</code>).</p>")
    by_index = {h.index: h for h in health}
    shown = [p.index for p in expl.prototypes]
    flagged = [by_index[j] for j in shown if j in by_index and by_index[j].flagged]
    n_all = sum(h.flagged for h in health)
    head = (f"<h2>Prototypes to distrust</h2><p>The health check of every prototype of this model "
            f"(where it looks on its own class's training cases, and how the model weighs it) flags "
            f"{n_all} of {len(health)}.</p>")
    if not flagged:
        return head + "<p>None of the prototypes shown above is flagged.</p>"
    items = "".join(f"<li>prototype {h.index} ({esc(MARGINS[h.cls])}): {esc('; '.join(h.flags))}</li>"
                    for h in flagged)
    return head + f"<p>Shown above and flagged:</p><ul>{items}</ul>"


def render_html(expl, run, source: str, cam_png: str | None = None, extra: dict | None = None,
                health: list | None = None, whole=None) -> str:
    """The report for an explanation ``expl`` (``explain.explain_case``) as one HTML string;
    ``health``: ``explain.prototype_health(run)``, or None where the run's data is not at hand;
    ``whole``: the case's whole mammogram (``context.WholeView``), shown with the region boxed and
    a scale bar, or the sentence saying why it cannot be."""
    from .context import whole_view_html
    from . import case_text
    from ..plots import plot_case_explanation

    esc = html.escape
    title = expl.case_id or "case"
    rows = []
    for c, name in enumerate(MARGINS):
        p = float(expl.margin_prob[c])
        mark = " <b>← predicted</b>" if c == expl.predicted_class else ""
        rows.append(f"<tr><td>{esc(MARGIN_WORDS[name])}</td><td>{pct(p)}</td>"
                    f"<td><span class='bar' style='width:{max(1, int(200 * p))}px'></span></td>"
                    f"<td>{expl.evidence(c):+.2f}</td><td>{mark}</td></tr>")
    mal = ("<p class='big'>Estimated probability of malignancy: "
           f"{pct(expl.malignancy_prob)}</p>" if expl.malignancy_prob is not None else
           "<p>This run has no malignancy head.</p>")
    eq = expl.malignancy_equation.get("equation", "") if expl.malignancy_equation else ""
    eq_html = (f"<p><small>How it is computed (Eq. 10 of Barnett et al. 2021, a logistic "
               f"regression on the three margin scores): <code>{esc(eq.splitlines()[0])}</code>"
               "</small></p>") if eq else ""
    truth = ""
    if expl.true_margin is not None:
        truth = (f"<p class='meta'>Recorded in the dataset: margin {esc(MARGINS[expl.true_margin])}"
                 + (f", pathology {'malignant' if expl.true_malignant else 'benign'}"
                    if expl.true_malignant is not None else "") + ".</p>")
    fig_html = _png_tag(plot_case_explanation(expl), "the model's reasoning, prototype by prototype")
    cam_html = ""
    if cam_png:
        cam_html = ("<h2>Where the prototypes of the predicted margin match</h2>"
                    f"<p>The class activation map (Appendix A, Eq. 11): the prototype activation "
                    f"maps of the {esc(expl.predicted_margin)} prototypes, each weighted by how "
                    f"strongly it matched (its similarity score), scaled from 0 to 1.</p>{cam_png}")
    details = {"run": str(getattr(run, "dir", "")),
               "preset": getattr(getattr(run, "preset", None), "name", ""),
               "prototypes": int(len(expl.similarity)),
               "explanation time": f"{expl.seconds * 1000:.0f} ms"}
    details.update(extra or {})
    meta = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in details.items())
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    whole_html = ("" if whole is None else
                  "<h2>Where the region lies in the mammogram</h2>" + whole_view_html(whole, title, cls="whole"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>IAIA-BL explanation: {esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>IAIA-BL explanation: {esc(title)}</h1>
<p class="meta">Source: {esc(source)} · generated {esc(when)}</p>
<div class="warn"><b>Research tool — not for clinical use.</b> {esc(DISCLAIMER)}</div>
<h2>Mass margin</h2>
<table><tr><th>margin (BI-RADS)</th><th>probability</th><th></th><th>evidence (points)</th><th></th></tr>
{''.join(rows)}</table>
{mal}
{eq_html}
{truth}
{whole_html}
<h2>Reasoning</h2>
<p class="reason">{esc(case_text(expl))}</p>
<h2>This looks like that</h2>
<p>Each row is one of the prototypes that contributed most to the predicted margin. Left to right:
where in this mass the prototype is found (coloured map; yellow box: its strongest region; green
outline: the lesion), the prototype itself, the earlier training case it comes from (box), how the
prototype lights up its own case, and its points of evidence (similarity × weight).</p>
{fig_html}
{_distrust_html(expl, health)}
{cam_html}
<h2>Details</h2>
<table>{meta}</table>
<p><small>IAIA-BL: Barnett A.J. et al., "A case-based interpretable deep learning model for
classification of mass lesions in digital mammography", Nature Machine Intelligence 3, 1061–1070
(2021).</small></p>
</body></html>
"""


def _cam_figure_html(run, expl) -> str:
    from matplotlib.figure import Figure

    from . import class_activation_map
    from ..plots import ACTIVATION_CMAP, OVERLAY_ALPHA, STYLE
    from ..plots.style import _clean, _contour

    import matplotlib

    # Eq. 11 for the predicted margin (a new case has no recorded truth), from the maps
    # explain_case kept (its one forward pass); an explanation without them is run again
    cam = (expl.class_activation(expl.predicted_class) if expl.similarity_maps is not None
           else class_activation_map(run, expl.image, expl.predicted_class)[0])
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6, 3.2), layout="constrained")
        ax = fig.subplots(1, 2)
        ax[0].imshow(expl.image, cmap="gray", vmin=0, vmax=255)
        _contour(ax[0], expl.lesion_mask)
        _clean(ax[0], "region of interest")
        ax[1].imshow(expl.image, cmap="gray", vmin=0, vmax=255)
        im = ax[1].imshow(cam, cmap=ACTIVATION_CMAP, alpha=OVERLAY_ALPHA, vmin=0, vmax=1)
        _contour(ax[1], expl.lesion_mask)
        _clean(ax[1], f"class activation (Eq. 11): {expl.predicted_margin}")
        fig.colorbar(im, ax=ax[1], fraction=0.046, pad=0.04).set_label("activation, min-max normalised")
    return _png_tag(fig, f"Where the prototypes of the predicted margin ({expl.predicted_margin}) match this "
                         "region of interest: their activation maps weighted by similarity score, from 0 "
                         "(weakest) to 1 (strongest), paper Appendix A Eq. 11")


def write_report(path: str | Path, text: str) -> Path:
    """Write the HTML atomically (``atomic.atomic_write_bytes``)."""
    from ..atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _dicom_case_name(path: Path) -> str:
    """A readable name for a DICOM case: the file stem, prefixed by the nearest folder with a
    readable name when the stem is NBIA's generic '1-1' (e.g. 'Mass-Test_P_00016_LEFT_CC_1-1')."""
    stem = path.stem
    if not re.fullmatch(r"\d+-\d+|\d+", stem):
        return stem
    for parent in list(path.parents)[:4]:
        if re.search(r"[A-Za-z]", parent.name) and not re.fullmatch(r"[\d.\-]+", parent.name):
            return f"{parent.name}_{stem}"
    return stem


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def crop_size_of(run) -> int:
    """The side a raw DICOM's crop is resized to before the model's own resize: the size of the
    prepared crops the run was trained on (config.json ``data_size``), so that a new case goes
    through the pixels' path of the training cases; the model's input size for a run that predates
    that record. It depends on the run alone, never on a folder elsewhere."""
    recorded = run.config.get("data_size")
    return int(recorded) if recorded else int(run.preset.model.image_size)


def explain_to_html(run_dir: str | Path, case: str, data: str | Path | None = None,
                    box=None, mask: str | Path | None = None, out: str | Path | None = None,
                    top: int = 3, device=None) -> Path:
    """The whole ``iaiabl explain`` command as a function; returns the written HTML path."""
    from ..data.dataset import normalise_patient_id
    from . import dataset_for, explain_case
    from .context import whole_view
    from ..rundir import load_run, read_config, recorded_split_of

    run_dir = Path(run_dir)
    kind = read_config(run_dir).get("kind", "iaiabl")
    if kind != "iaiabl":
        raise InputError(f"{run_dir} is a {kind} run; `iaiabl explain` explains IAIA-BL and "
                         "ProtoPNet runs (a black box has no prototypes to show)")
    run = load_run(run_dir, device=device or "cpu")     # refuses an unfinished or mixed-up run
    size = int(run.preset.model.image_size)
    data_dir = Path(data) if data is not None else run.data_dir
    case_path = Path(case)
    is_dicom = case_path.suffix.lower() in (".dcm", ".dicom") or case_path.is_file()
    extra: dict = {}
    if is_dicom:
        if not case_path.is_file():
            raise FileNotFoundError(f"DICOM file {case_path} not found")
        prep_size = crop_size_of(run)
        roi = crop_dicom_case(case_path, box=box, mask_path=mask, size=prep_size, model_size=size)
        name = _dicom_case_name(case_path)
        expl = explain_case(run, roi["image"], case_id=name, lesion_mask=roi["lesion_mask"], top=top)
        whole = roi["whole"]
        source = f"DICOM file {case_path.name}"
        extra = {"lesion box (y0, x0, y1, x1)": roi["bbox"], "crop (top, left, side)": roi["crop_box"],
                 "image size": f"{roi['shape'][0]} × {roi['shape'][1]} px",
                 "crop resized to": f"{prep_size} px (the run's training crops), then {size} px (the model's input)"}
        print(f"{case_path.name}: crop {roi['crop_box'][2]} px square, resized to {prep_size} px, then {size} px")
    else:
        if box is not None or mask is not None:
            raise InputError("--box / --mask locate the lesion in a raw DICOM file; a prepared "
                             f"case ({case}) already has its crop")
        if data_dir is None or not Path(data_dir).is_dir():
            raise FileNotFoundError(f"the prepared dataset of {run_dir} ({data_dir}) is not available; "
                                    "pass --data DATA")
        ds = dataset_for(run, data)          # the run's own (Run.dataset) or --data, loaded once
        if case not in ds.ids:
            near = [i for i in ds.ids if case.lower() in i.lower()][:5]
            hint = f" Similar ids: {', '.join(near)}." if near else f" Ids look like {ds.ids[0]!r}."
            raise InputError(f"{case!r} is neither a DICOM file nor a case id of the prepared "
                             f"dataset {data_dir}.{hint}")
        expl = explain_case(run, case, data=ds, top=top)
        whole = whole_view(ds, ds.ids.index(case))
        name = case
        split = ds.split[ds.ids.index(case)]
        source = f"prepared dataset {Path(data_dir).name}, case {case} ({split} split)"
        patient = normalise_patient_id(ds.manifest[ds.ids.index(case)].get("patient_id", ""))
        trained_as = (recorded_split_of(run.config) or {}).get(patient)
        if split != "test":
            extra["note"] = (f"this case is in the {split} split: the model has seen it in "
                             "training (or used it for model selection)")
        elif trained_as in ("train", "val"):
            extra["note"] = (f"patient {patient} was in the run's {trained_as} split (this data set was "
                             "prepared with another split): the model has seen this case in training "
                             "(or used it for model selection)")
            print(f"warning: {case}: {extra['note']}", file=sys.stderr)
    health = None
    if data_dir is not None and Path(data_dir).is_dir():
        from . import prototype_health

        health = prototype_health(run, data)         # the library's one distrust rule
    text = render_html(expl, run, source, cam_png=_cam_figure_html(run, expl), extra=extra, health=health,
                       whole=whole)
    target = Path(out) if out is not None else run_dir / "explanations" / f"{_safe_name(name)}.html"
    return write_report(target, text)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``explain --run RUN CASE [--data DATA] [--box y0,x0,y1,x1 | --mask MASK.dcm]
    [--out report.html] [--top K]``."""
    p = subparsers.add_parser(
        "explain", help="write an HTML report of the model's reasoning about one case",
        description="Explain one case: a prepared case id, or a raw mammogram DICOM with the "
                    "lesion located by --box or --mask. Writes one self-contained HTML file "
                    "(research use only).")
    p.add_argument("--run", required=True, type=Path, metavar="RUN", help="trained run directory")
    p.add_argument("case", metavar="CASE", help="a case id of the prepared dataset, or a DICOM file")
    p.add_argument("--data", type=Path, metavar="DATA",
                   help="prepared dataset (default: the one the run was trained on)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--box", metavar="y0,x0,y1,x1",
                       help="DICOM only: the lesion's bounding box in full-image pixels (ends exclusive)")
    where.add_argument("--mask", type=Path, metavar="MASK.dcm",
                       help="DICOM only: a binary ROI-mask DICOM of the same size as the image")
    p.add_argument("--out", type=Path, metavar="FILE.html",
                   help="output file (default: RUN/explanations/<case>.html)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="prototypes to show (default 3)")
    p.add_argument("--device", default=None, metavar="D", help="cpu (default) or cuda")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    path = explain_to_html(args.run, args.case, data=args.data, box=args.box, mask=args.mask,
                           out=args.out, top=args.top, device=args.device)
    print(f"wrote {path}")
    return 0
