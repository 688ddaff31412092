"""Marker reliance: does a trained run read the confounder's marker? The same cases, predicted with
the marker and without it.

Activation precision (Eq. 9) says *where* a prototype's strongest activation lies; it cannot say
what the latent patch there encodes. A latent patch is computed from every pixel of its receptive
field: 38 px of the tiny backbone's 64 px crop (four 3 x 3 convolutions, three 2 x 2 max-pools),
196 px of VGG-16's 224 (conv5_3, the features the paper's prototypes compare: the last max-pool is
dropped, ``model.vgg16_features``). Both reach the marker that the book's confounded data set burns in
beside the mass (inside the crop, off the lesion: ``data.synthetic.markers``). A model can thus
put its activation on the lesion, as Eq. 7 asks, and still read the marker through the lesion's
latent patch. Eq. 7 only sees the activation maps, so it cannot forbid that.

The confounded data set and its "unmarked" twin (``bookcache``: the same generator seed, the same
images, the markers left out, prepared with the same split) let this be measured directly: predict
the same validation cases (the validation split carries the marker, as the training split does)
once with the marker and once without it. A model that ignores the marker predicts the same; one
that reads it loses AUROC where the marker goes. The test split has no marker, so the gap between
the two is part of what a model that reads the marker loses on the test split. The validation split
is also the one the model was selected on, so both of its AUROCs are somewhat optimistic; their
difference is what the marker adds.

    marker_reliance(RUN, CONFOUNDED_DATA, UNMARKED_DATA)  ->  dict (below)

Any run kind that ``evaluate`` loads (IAIA-BL, ProtoPNet, the black box) can be measured.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import MARGINS
from ..errors import InputError
from ..metrics import margin_auroc, margin_auroc_test
from ..rundir import check_run
from .loaders import LOADERS, run_kind, split_cases

__all__ = ["marker_reliance"]


def marker_reliance(run_dir: str | Path, marked_data: str | Path, unmarked_data: str | Path,
                    split: str = "val", device=None) -> dict:
    """Predict the ``split`` cases of ``marked_data`` and of ``unmarked_data`` (the same cases, the
    marker left out: ``bookcache.ensure_data("unmarked")``) with one run, and compare.

    Returns a dict:
      ``auroc_with_marker``, ``auroc_without_marker``: the paper's average margin AUROC (weighted by
        the class counts; ``metrics.margin_auroc``) on the split, ``{value, ci_low, ci_high}``;
      ``auroc_drop``: with minus without (positive: the model scores better with the marker);
      ``p_value``: the paired DeLong test of the two averages (``metrics.margin_auroc_test``);
      ``n``: cases; ``n_marked``: cases whose image carries a marker (it differs from its unmarked
        twin anywhere: the two data sets differ by nothing but the markers);
      ``marker_class``: the margin class most marked cases have, ``marker_class_share`` the share
        of the marked cases that have it (None when no case is marked);
      ``probability_drop``: over the marked cases (every case whose image differs from its twin,
        whatever its class), the mean probability of the case's own margin class with the marker
        minus without it (None when no case is marked);
      ``run``, ``kind``, ``split``.

    The two data sets must hold the same cases in ``split``, in the same order, with the same labels;
    anything else is refused with a message that names the data set, as is a run that gives no
    margin probabilities (a black box trained for malignancy).
    """
    run_dir = Path(run_dir)
    cfg = check_run(run_dir)
    kind = run_kind(cfg)
    from ..fastpath import pick_device
    device = pick_device(device)
    model = LOADERS[kind](run_dir, cfg, device)
    if model.task != "margin":
        raise InputError(f"{run_dir}: a {model.task} run gives no margin probabilities, so its reliance on "
                         "a marker cannot be measured; use a margin run")
    marked, unmarked = (split_cases(model, cfg, run_dir, Path(d), split)[0] for d in (marked_data, unmarked_data))
    if list(marked.ids) != list(unmarked.ids) or not np.array_equal(marked.labels, unmarked.labels):
        raise InputError(f"{unmarked_data}: its {split!r} split does not hold the same cases as {marked_data}'s "
                         "(same ids, order and labels); prepare the unmarked twin from the same generator seed "
                         "with the same --split")
    prob = [np.asarray(model.predict(c).margin_prob, dtype=np.float64) for c in (marked, unmarked)]  # 2 x (N, C)
    labels = np.asarray(marked.labels)
    n = len(labels)
    # a case is marked where its image differs from its twin's: the two sets differ only by the markers
    is_marked = (np.asarray(marked.images) != np.asarray(unmarked.images)).reshape(n, -1).any(axis=1)   # (N,)
    with_m, without = (margin_auroc(labels, p) for p in prob)
    own = [p[np.arange(n), labels] for p in prob]                                          # 2 x (N,)
    counts = np.bincount(labels[is_marked], minlength=len(MARGINS))
    return {
        "run": str(run_dir), "kind": kind, "split": split,
        "auroc_with_marker": with_m["average"], "auroc_without_marker": without["average"],
        "auroc_drop": (None if with_m["average"]["value"] is None or without["average"]["value"] is None
                       else with_m["average"]["value"] - without["average"]["value"]),
        "p_value": margin_auroc_test(labels, prob[0], prob[1])["average"],
        "n": n, "n_marked": int(is_marked.sum()),
        "marker_class": MARGINS[int(counts.argmax())] if is_marked.any() else None,
        "marker_class_share": float(counts.max() / counts.sum()) if is_marked.any() else None,
        "probability_drop": float((own[0] - own[1])[is_marked].mean()) if is_marked.any() else None,
    }
