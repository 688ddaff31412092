"""The case in its clinical context (issue 22, item 8; item 4's linked views): the whole mammogram
shrunk with the region of interest boxed and a scale bar in millimetres (``explain.context``,
drawn by ``plots.plot_whole_view``), the other views of the same lesion, the explorers sharing one
chosen case, and the part a prototype matches boxed on the case's own image."""
from __future__ import annotations

import copy
import io
import re
import types
from pathlib import Path

import numpy as np
import pytest

from iaiabl_lib import plots
from iaiabl_lib.explain import context as X


def _png_rgb(fig) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(plots.figure_png(fig, dpi=100))).convert("RGB")).astype(int)


def _view(spacing=(0.5, 0.5), shape=(400, 300), crop=(100, 150, 80), tag="PixelSpacing"):
    """A synthetic whole view: a bright 'breast' on the left half, dark background on the right."""
    h = X.WHOLE_PX
    w = round(shape[1] * h / shape[0])
    img = np.zeros((h, w), np.uint8)
    img[:, : w // 2] = 150
    return X.WholeView(img, shape, crop, spacing, tag if spacing else "", "left", "CC")


# ---------------------------------------------------------------------------------------------
# drawing (unit)
# ---------------------------------------------------------------------------------------------


def test_the_drawing_boxes_the_region_where_it_lies_and_the_bar_is_as_long_as_it_says():
    view = _view()
    fig = plots.plot_whole_view(view)
    rgb = _png_rgb(fig)
    assert rgb.shape[:2] == view.image.shape                  # one figure pixel per image pixel
    f = view.scale                                            # full-image pixels per shown pixel
    top, left, side = (v / f for v in view.crop_box)
    yellow = (np.abs(rgb - np.array([0xff, 0xd9, 0x2f])).sum(-1) < 90)
    ys, xs = np.nonzero(yellow)
    assert ys.size > 0, "no yellow box drawn"
    assert abs(ys.min() - top) <= 2 and abs(ys.max() - (top + side)) <= 2
    assert abs(xs.min() - left) <= 2 and abs(xs.max() - (left + side)) <= 2
    # the scale bar: white, on the dark (right) side, as long as bar / spacing full-image pixels
    bar = plots.scale_bar_mm(view)
    width_mm = view.full_shape[1] * view.spacing_mm[1]
    assert bar in plots.SCALE_BARS_MM and bar <= width_mm / 3 < 2.5 * bar
    white = (rgb.min(-1) > 235)
    rows = white.sum(1)
    y = int(np.argmax(rows))
    run = np.flatnonzero(white[y])
    assert run.min() > view.image.shape[1] // 2, "the bar is not on the darker side"
    assert abs((run.max() - run.min() + 1) - bar / view.spacing_mm[1] / f) <= 2


def test_no_spacing_no_bar_and_the_words_say_so():
    with_bar = _png_rgb(plots.plot_whole_view(_view()))
    no_bar = _png_rgb(plots.plot_whole_view(_view(spacing=None)))
    assert (with_bar.min(-1) > 235).sum() > (no_bar.min(-1) > 235).sum() + 20
    assert plots.scale_bar_mm(_view(spacing=None)) is None
    alt = X.whole_view_alt(_view(spacing=None), "Test case 3")
    assert alt.startswith("Test case 3, left breast, CC view: the whole mammogram")
    assert "no scale bar" in alt and " mm" not in alt
    html = X.whole_view_html(_view(spacing=None))
    assert "No scale bar: the file records no pixel spacing" in html
    detector = X.whole_view_html(_view(tag="ImagerPixelSpacing"))
    assert "ImagerPixelSpacing" in detector


def test_alt_text_says_what_the_picture_shows():
    view = _view()
    alt = X.whole_view_alt(view, "Test case 3")
    assert "Test case 3, left breast, CC view" in alt
    assert f"{view.image.shape[1]} × {view.image.shape[0]} pixels from 300 × 400" in alt
    assert "the region of interest (40 mm square) boxed in yellow" in alt          # 80 px × 0.5 mm
    assert f"scale bar is {plots.scale_bar_mm(view):g} mm, from the DICOM PixelSpacing" in alt
    html = X.whole_view_html(view, "Test case 3")
    assert re.search(r"<img src='data:image/png;base64,[^']+' alt='Test case 3, left breast", html)
    assert "shrunk" in alt and "mm per pixel of the full image" in alt and ", shrunk;" in html
    # an image no larger than the drawing is shown as it is, and the words do not say "shrunk"
    small = X.WholeView(view.image, view.image.shape, (10, 10, 20), (0.5, 0.5), "PixelSpacing", "left", "CC")
    assert small.scale == 1.0
    alt_small, html_small = X.whole_view_alt(small), X.whole_view_html(small)
    assert "shrunk" not in alt_small and "shrunk" not in html_small
    assert f"the whole mammogram, {view.image.shape[1]} × {view.image.shape[0]} pixels" in alt_small


def test_a_missing_image_is_said_in_words_and_drawn_as_words():
    view = X.WholeView(None, missing="The whole mammogram cannot be shown: because.")
    assert X.whole_view_alt(view, "Test case 3") == view.missing
    html = X.whole_view_html(view)
    assert "<img" not in html and "cannot be shown: because." in html
    fig = plots.plot_whole_view(view)                        # no failure: a figure that says why
    assert "because" in " ".join(t.get_text() for t in fig.texts)


# ---------------------------------------------------------------------------------------------
# the other views of a lesion (unit)
# ---------------------------------------------------------------------------------------------


def test_other_views_are_the_same_patient_breast_and_abnormality():
    rows = [
        {"patient_id": "P_00001", "side": "LEFT", "view": "CC", "abnormality_id": "1"},
        {"patient_id": " p_00001", "side": "LEFT", "view": "MLO", "abnormality_id": "1"},   # same lesion
        {"patient_id": "P_00001", "side": "RIGHT", "view": "MLO", "abnormality_id": "1"},  # other breast
        {"patient_id": "P_00001", "side": "LEFT", "view": "MLO", "abnormality_id": "2"},   # other mass
        {"patient_id": "P_00002", "side": "LEFT", "view": "MLO", "abnormality_id": "1"},   # other patient
        {"patient_id": "P_00001", "side": "LEFT", "view": "CC", "abnormality_id": "1"},    # same view again
        {"patient_id": "P_00003", "side": "", "view": "CC", "abnormality_id": "1"},        # side unknown
        {"patient_id": "P_00003", "side": "", "view": "MLO", "abnormality_id": "1"},
    ]
    ds = types.SimpleNamespace(manifest=rows)
    assert X.other_views(ds, 0) == [1]
    assert X.other_views(ds, 1) == [0, 5]
    assert X.other_views(ds, 2) == [] and X.other_views(ds, 3) == []
    assert X.other_views(ds, 6) == []                        # the manifest does not say: no link
    assert X.other_views(types.SimpleNamespace(manifest=[]), 0) == []


# ---------------------------------------------------------------------------------------------
# on a prepared data set (integration: the synthetic tree)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(prepared):
    from iaiabl_lib.data.dataset import load_prepared

    return load_prepared(prepared)


def test_whole_view_of_a_prepared_case_is_its_dicom(data, synth_tree):
    from iaiabl_lib.data.dicom import read_dicom

    i = int(np.flatnonzero(data.split == "test")[0])
    row = data.manifest[i]
    view = X.whole_view(data, i)
    assert not view.missing and view.image is not None
    pixels, info = read_dicom(Path(synth_tree) / row["image_path"])
    assert view.full_shape == pixels.shape
    assert view.image.shape[0] == min(X.WHOLE_PX, pixels.shape[0])
    assert view.crop_box == tuple(int(v) for v in row["crop_box"].split())
    assert view.spacing_mm == tuple(float(v) for v in info["PixelSpacing"]) and view.spacing_tag == "PixelSpacing"
    assert (view.side, view.view) == (row["side"].lower(), row["view"])
    # the region of interest, cut from the shown whole image, is the prepared crop, shrunk alike
    f = view.scale
    top, left, side = (round(v / f) for v in view.crop_box)
    inside = view.image[max(top, 0):top + side, max(left, 0):left + side].astype(float)
    outside = np.delete(view.image, np.s_[max(top, 0):top + side], axis=0).astype(float)
    assert inside.size and abs(inside.mean() - data.images[i].mean()) < abs(outside.mean() - data.images[i].mean()) + 40


def test_whole_view_says_why_when_the_image_is_not_at_hand(data, tmp_path):
    i = int(np.flatnonzero(data.split == "test")[0])
    moved = copy.copy(data)
    moved.summary = dict(data.summary, source=str(tmp_path / "gone"))
    view = X.whole_view(moved, i)
    assert view.image is None and "file was not found at " + str(tmp_path / "gone") in view.missing
    crops = copy.copy(data)
    crops.manifest = [dict(r, crop_box="", image_path="") for r in data.manifest]
    view = X.whole_view(crops, i)
    assert view.image is None and "records only the cropped region of interest" in view.missing
    broken = tmp_path / "broken"
    (broken / Path(data.manifest[i]["image_path"]).parent).mkdir(parents=True)
    (broken / data.manifest[i]["image_path"]).write_bytes(b"not a dicom file")
    damaged = copy.copy(data)
    damaged.summary = dict(data.summary, source=str(broken))
    view = X.whole_view(damaged, i)
    assert view.image is None and "could not be read" in view.missing


def test_the_synthetic_tree_links_cc_and_mlo_of_each_lesion(data):
    linked = 0
    for i in range(len(data)):
        for j in X.other_views(data, i):
            a, b = data.manifest[i], data.manifest[j]
            assert (a["patient_id"], a["side"], a["abnormality_id"]) == (b["patient_id"], b["side"], b["abnormality_id"])
            assert {a["view"], b["view"]} == {"CC", "MLO"} and data.split[i] == data.split[j]
            assert i in X.other_views(data, j)
            linked += 1
    assert linked >= len(data) // 2
