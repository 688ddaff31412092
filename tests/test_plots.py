"""Every figure function returns a matplotlib Figure with the expected number of axes (and renders)."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from iaiabl_lib import plots
from iaiabl_lib.data.dataset import load_prepared, to_tensors


@pytest.fixture(scope="module")
def run(tiny_run):
    from iaiabl_lib.train import load_run

    return load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def test_set(prepared):
    ds = load_prepared(prepared, size=64).subset("test")
    return ds, to_tensors(ds)


def renders(fig: Figure) -> None:
    png = plots.figure_png(fig, dpi=40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_case_explanation(run):
    from iaiabl_lib.explain import explain_case

    e = explain_case(run, 0, top=3)
    fig = plots.plot_case_explanation(e)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 5 + 2                                   # 5 per prototype + 2 colour bars
    renders(fig)
    assert len(plots.plot_case_explanation(e, max_rows=2).axes) == 2 * 5 + 2
    # each row says whether its points count for or against the explained margin, by their sign
    from iaiabl_lib.words import for_against

    assert (for_against(0.2), for_against(0.0), for_against(-1e-6)) == ("for", "for", "against")
    for cls in range(3):
        ex = explain_case(run, 0, top=3, explained_class=cls)
        rows = plots.plot_case_explanation(ex).axes[4:15:5]
        for p, ax in zip(ex.prototypes, rows):
            said = [t.get_text() for t in ax.texts if t.get_text().startswith("evidence")]
            want = "against" if p.contribution < 0 else "for"
            assert said == [f"evidence {want} {ex.explained_margin}"], (cls, p.index, p.contribution, said)


def test_prototype_gallery(run):
    from iaiabl_lib.explain import prototype_gallery

    pclass = run.model.prototype_class.tolist()
    first_of_each_class = [pclass.index(c) for c in range(3)]           # pruning may renumber
    gallery = prototype_gallery(run, n_nearest=2, prototypes=first_of_each_class)
    fig = plots.plot_prototype_gallery(gallery)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * (1 + 2) + 1          # + colour bar
    renders(fig)


def test_cam_comparison(run, tiny_blackbox, test_set):
    from iaiabl_lib.baselines import load_blackbox

    ds, ts = test_set
    bb = load_blackbox(tiny_blackbox, device="cpu")
    fig = plots.plot_cam_comparison(run, bb, ts.images[:3], masks=ts.lesion_masks[:3])
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 4 + 1
    renders(fig)
    fig = plots.plot_cam_comparison(run, bb.model, ds.images[:2], target_class=1)  # grey crops
    assert len(fig.axes) == 2 * 4 + 1


def test_activation_precision(test_set):
    ds, _ = test_set
    yy, xx = np.mgrid[:64, :64]
    amap = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 50.0)
    mask = np.zeros((64, 64))
    mask[20:44, 20:44] = 1
    fig = plots.plot_activation_precision(amap, mask, tau=0.95, image=ds.images[0])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 + 1
    assert "activation precision = 1.00" in fig.axes[1].get_title()
    renders(fig)
    assert len(plots.plot_activation_precision(amap, mask).axes) == 3
    with pytest.raises(ValueError, match="differ in size"):
        plots.plot_activation_precision(amap, mask[:10])


def test_fine_vs_nofine(run, test_set):
    _, ts = test_set
    fig = plots.plot_fine_vs_nofine(run, run, ts.images[:2], ts.fine_masks[:2])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3 + 1
    renders(fig)
    texts = lambda f: [a.get_title() for a in f.axes] + [a.get_xlabel() for a in f.axes] + [f._suptitle.get_text()]  # noqa: E731
    assert "image, relevant region" in texts(fig) and any(t.startswith("prototype") and ", AP " in t for t in texts(fig))
    # what the outline is, said in the figure: chapter 7 outlines the marker, and a fraction on the
    # marker is no activation precision
    marker = plots.plot_fine_vs_nofine(run, run, ts.images[:1], ts.fine_masks[:1], region="marker")
    words = " ".join(texts(marker))
    assert "image, marker" in words and ", on marker " in words
    assert "relevant region" not in words and ", AP " not in words and "activation precision" not in words


def test_roc(run, test_set):
    from iaiabl_lib.train import predict

    ds, ts = test_set
    out = predict(run.model, ts, batch_size=64, device="cpu")
    fig = plots.plot_roc(ds.labels, out["margin_prob"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("spiculated: AUC") for t in labels)
    renders(fig)
    fig = plots.plot_roc(ds.malignant, out["malignancy_prob"])
    assert len(fig.axes) == 1
    assert any("malignant" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_history(run, tiny_run, tiny_blackbox):
    for history in (run.history, tiny_run, tiny_blackbox):
        fig = plots.plot_history(history)
        assert isinstance(fig, Figure) and len(fig.axes) == 2
        renders(fig)


def _heat_images(fig: Figure) -> list:
    """The RGBA layers drawn over images (``plots.draw_heat``)."""
    return [im for ax in fig.axes for im in ax.get_images() if np.asarray(im.get_array()).ndim == 3
            and np.asarray(im.get_array()).shape[-1] == 4]


def _colourbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_every_activation_figure_has_a_colour_bar_of_its_fitted_scale(run, tiny_blackbox, test_set):
    """Case explanation, gallery, activation precision, the fine-annotation comparison and the CAM
    comparison draw their maps as opaque layers in the colours of one scale fitted to the figure's
    maps, under one colour bar whose numbers are that scale's (issue 22, item 3)."""
    from iaiabl_lib.baselines import load_blackbox
    from iaiabl_lib.explain import explain_case, prototype_gallery

    _, ts = test_set
    e = explain_case(run, 0, top=2)
    bb = load_blackbox(tiny_blackbox, device="cpu")
    figs = {"case": (plots.plot_case_explanation(e), plots.fit_heat_scale(*(p.activation for p in e.prototypes))),
            "precision": (plots.plot_activation_precision(e.prototypes[0].activation, e.lesion_mask, image=e.image),
                          plots.fit_heat_scale(e.prototypes[0].activation)),
            "gallery": (plots.plot_prototype_gallery(prototype_gallery(run, n_nearest=1, prototypes=[0])), None),
            "fine": (plots.plot_fine_vs_nofine(run, run, ts.images[:1], ts.fine_masks[:1]), None),
            "cam": (plots.plot_cam_comparison(run, bb, ts.images[:1]), plots.HeatScale(0.0, plots.HEAT_FLOOR, 1.0))}
    for name, (fig, scale) in figs.items():
        layers = _heat_images(fig)
        assert layers, f"{name}: no heat map drawn"
        bars = _colourbars(fig)
        assert len(bars) == (2 if name == "case" else 1), f"{name}: {len(bars)} colour bars"
        bar = bars[0]
        label = bar.get_xlabel() + bar.get_ylabel()
        assert "no colour below" in label, (name, label)
        limits = bar.get_ylim() if bar.get_ylabel() else bar.get_xlim()
        if scale is not None:
            assert limits == pytest.approx((scale.start, scale.high)), (name, limits, scale)
        for im in layers:
            a = np.asarray(im.get_array())
            assert set(np.unique(a[..., 3])) <= {0, 255}, name      # opaque or absent: the bar's colours
            colours = a[a[..., 3] == 255][:, :3].astype(int)
            lo, hi = limits
            ramp = plots.similarity_rgb(np.linspace(lo, hi, 512), plots.HeatScale(lo, lo, hi)).astype(int)
            if len(colours):
                assert np.abs(colours[:, None] - ramp[None]).sum(-1).min(1).max() <= 6, name
        renders(fig)


def test_similarity_rgb_is_the_colour_map():
    import matplotlib

    scale = plots.HeatScale(-2.0, 0.0, 2.0)
    values = np.array([-1.0, 0.0, 1.5, 2.0, 9.0])
    rgb = plots.similarity_rgb(values, scale)
    cmap = matplotlib.colormaps[plots.SIMILARITY_CMAP]
    expect = np.rint(np.array(cmap(np.clip(values / 2, 0, 1)))[:, :3] * 255)
    np.testing.assert_array_equal(rgb, expect.astype(np.uint8))
    assert (rgb[0] == rgb[1]).all() and (rgb[3] == rgb[4]).all()      # clipped at both ends
    rgba = plots.heat_rgba(values, scale)
    assert list(rgba[:, 3]) == [0, 255, 255, 255, 255]                 # no colour below the start


def test_roc_draws_the_curves_sklearn_computes():
    """What plot_roc draws: per class, the curve sklearn's roc_curve gives (x, y data), its AUC in
    the legend, and the chance diagonal; on cases of known scores."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from iaiabl_lib.config import MARGINS

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    p = rng.dirichlet(np.ones(3), size=60)
    p[np.arange(60), y] += 0.5                                      # informative scores
    fig = plots.plot_roc(y, p)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert np.array_equal(lines["chance"].get_xydata(), [[0, 0], [1, 1]])
    for c, name in enumerate(MARGINS):
        fpr, tpr, _ = roc_curve(y == c, p[:, c])
        label = f"{name}: AUC {roc_auc_score(y == c, p[:, c]):.3f}"
        assert label in lines, (label, list(lines))
        assert np.allclose(lines[label].get_xdata(), fpr) and np.allclose(lines[label].get_ydata(), tpr)


def test_history_draws_the_logged_values():
    """What plot_history draws: the loss per logged row, a push line at each push row, and the
    validation AUROC points at the rows that have one."""
    rows = [{"epoch": 1, "stage": "warm", "loss": 2.0, "ce": 1.0, "val_auroc": 0.6},
            {"epoch": 2, "stage": "joint", "loss": 1.5, "ce": 0.9, "val_auroc": 0.7},
            {"epoch": 2, "stage": "push", "loss": None, "val_auroc": 0.72},
            {"epoch": 3, "stage": "joint", "loss": 1.1, "ce": 0.8, "val_auroc": 0.8}]
    fig = plots.plot_history(rows)
    ax_loss, ax_auc = fig.axes
    loss = next(ln for ln in ax_loss.get_lines() if ln.get_label() == "loss")
    assert np.allclose(loss.get_xdata(), [1, 2, 3, 4])
    assert np.allclose(loss.get_ydata(), [2.0, 1.5, np.nan, 1.1], equal_nan=True)
    pushes = [ln for ln in ax_loss.get_lines() if ln.get_label() == "push (A2)"]
    assert len(pushes) == 1 and np.allclose(pushes[0].get_xdata(), [3, 3])
    drawn = [(tuple(ln.get_xdata()), tuple(ln.get_ydata())) for ln in ax_auc.get_lines()
             if len(ln.get_xdata()) == 4]
    assert ((1, 2, 3, 4), (0.6, 0.7, 0.72, 0.8)) in drawn
