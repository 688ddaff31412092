"""Loading a run for evaluation: one loader per run kind (IAIA-BL/ProtoPNet, black box), each
reduced to an :class:`EvalModel` whose ``predict`` gives :class:`~.protocol.Predictions`; the
checks that the run and the data agree (classes, image size); and ``split_cases``, the cases of one
split that a run may be evaluated on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import MARGINS, Preset
from ..data.dataset import PreparedDataset, load_prepared, stored_image_size, to_tensors
from ..rundir import check_split, recorded_data_dir
from .protocol import GRADCAMPP_KEY, Predictions, true_class_pams
from ..errors import InputError

__all__ = ["EvalModel", "LOADERS", "run_kind", "resolve_data_dir", "check_compatible", "split_cases"]

@dataclass
class EvalModel:
    """A loaded run, reduced to what evaluation needs (one loader per run kind, ``LOADERS``)."""

    kind: str
    preset: str
    image_size: int
    num_classes: int
    predict: Callable[[PreparedDataset], Predictions]
    classes: tuple[str, ...] | None = None  # class names the run records, if it records them
    task: str = "margin"                    # black boxes: "margin" or "malignancy"


def run_kind(cfg: dict) -> str:
    """config.json's run kind (default ``iaiabl``), one that has a loader (:data:`LOADERS`)."""
    kind = cfg.get("kind", "iaiabl")
    if kind not in LOADERS:
        raise InputError(f"config.json: unknown run kind {kind!r}; expected one of {', '.join(LOADERS)}")
    return kind


def resolve_data_dir(run_dir: Path, cfg: dict, data_dir: str | Path | None) -> Path:
    """``--data`` if given, else the data path recorded in the run's config.json."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"prepared dataset {path} does not exist; create it with "
                                    "`iaiabl prepare --cbis DIR --out DATA` or pass another --data")
        return path
    recorded = recorded_data_dir(cfg)
    if recorded is None:
        raise InputError(f"{run_dir}/config.json records no data path; pass the prepared dataset "
                         "with --data DATA")
    path = Path(recorded)
    if not path.is_absolute() and not path.is_dir():
        path = run_dir / recorded                    # a path relative to the run
    if not path.is_dir():
        raise FileNotFoundError(f"the prepared dataset this run was trained on ({recorded}, from "
                                f"{run_dir}/config.json) does not exist any more; pass it with "
                                "--data DATA (or re-create it with `iaiabl prepare`)")
    return path


def _load_iaiabl(run_dir: Path, cfg: dict, device) -> EvalModel:
    """An IAIA-BL or ProtoPNet run (``rundir.load_run``), predicting with ``predict.predict``."""
    from ..predict import predict
    from ..rundir import load_run

    run = load_run(run_dir, device=device)
    preset: Preset = run.preset
    size = preset.model.image_size
    batch = preset.train.eval_batch_size

    def predict_cases(ds: PreparedDataset) -> Predictions:
        out = predict(run.model, to_tensors(ds, "cpu"), batch_size=batch, device=device)
        prob = np.asarray(out["margin_prob"], dtype=np.float64)
        pams, valid = true_class_pams(out["similarity_maps"], run.model.prototype_class, ds.labels, size)
        return Predictions(prob, np.asarray(out["malignancy_prob"], dtype=np.float64),
                           {"activation_precision": pams},
                           "PAMs of every prototype of the true class, mean over (case, prototype) pairs "
                           "(the paper's protocol)", {"activation_precision": valid},
                           grid=int(out["similarity_maps"].shape[-1]))

    return EvalModel("iaiabl", preset.name, size, preset.model.num_classes, predict_cases,
                     _recorded_classes(cfg))


def _load_blackbox(run_dir: Path, cfg: dict, device) -> EvalModel:
    """A black-box VGG-16 run (``baselines.load_blackbox``). Margin task: margin probabilities and
    the GradCAM / GradCAM++ maps of the true class (the paper's protocol); malignancy task (the end-to-end baseline of
    Table 2): the malignancy probability only."""
    from ..baselines import blackbox_predict, load_blackbox

    bb = load_blackbox(run_dir, device=device)
    size = int(bb.preset.model.image_size)
    margin_task = bb.task == "margin"
    batch = int(bb.preset.train.eval_batch_size)

    def predict_cases(ds: PreparedDataset) -> Predictions:
        out = blackbox_predict(bb.model, to_tensors(ds, "cpu"), batch_size=batch, device=device,
                               cams=margin_task, target_class=ds.labels if margin_task else None)
        if not margin_task:
            return Predictions(None, np.asarray(out["malignancy_prob"], dtype=np.float64), {},
                               "none (malignancy black box)")
        maps = {"activation_precision": np.asarray(out["gradcam"]),
                GRADCAMPP_KEY: np.asarray(out["gradcampp"])}
        return Predictions(np.asarray(out["margin_prob"], dtype=np.float64), None, maps,
                           "GradCAM and GradCAM++ maps of the true class (the paper's protocol)",
                           grid=grid)

    with torch.no_grad():      # Grad-CAM's layer is the backbone's output: the same grid as IAIA-BL's
        grid = int(bb.model.backbone(torch.zeros(1, 3, size, size, device=next(bb.model.parameters()).device)).shape[-1])

    # a malignancy black box has no margin classes to disagree with the data
    num_classes = bb.preset.model.num_classes if margin_task else len(MARGINS)
    classes = _recorded_classes(cfg) if margin_task else None
    return EvalModel("blackbox", bb.preset.name, size, num_classes, predict_cases, classes, task=bb.task)


LOADERS: dict[str, Callable[[Path, dict, object], EvalModel]] = {
    "iaiabl": _load_iaiabl,
    "blackbox": _load_blackbox,
}


def _recorded_classes(cfg: dict) -> tuple[str, ...] | None:
    for key in ("classes", "margins"):
        if isinstance(cfg.get(key), (list, tuple)):
            return tuple(str(c) for c in cfg[key])
    return None


def check_compatible(model: EvalModel, data_dir: Path, run_dir: Path, train_data: Path | None) -> None:
    """The run and the data must agree on the classes and on the image size.

    Classes: the run's class list (config.json "classes", else its number of classes) must be
    ``MARGINS``. Image size: the loader resizes crops to the run's size; upsampling blurs the
    margins, so data with smaller crops than the run's input is refused unless the run was trained
    on crops of that same size.
    """
    if model.num_classes != len(MARGINS) or (model.classes is not None and model.classes != MARGINS):
        run_classes = ", ".join(model.classes) if model.classes else f"{model.num_classes} classes"
        raise InputError(
            f"class mismatch: run {run_dir} predicts {run_classes}, the prepared dataset {data_dir} "
            f"has the margin classes {', '.join(MARGINS)}; evaluate with the data the run was trained "
            "on (--data), or retrain the run on this dataset")
    native = stored_image_size(data_dir)
    trained_on = stored_image_size(train_data) if train_data is not None else None
    if native is not None and native < model.image_size and native != trained_on:
        raise InputError(
            f"image size mismatch: {data_dir} holds {native}-px crops but run {run_dir} (preset "
            f"{model.preset}) takes {model.image_size}-px images"
            + (f" and was trained on {trained_on}-px crops" if trained_on else "")
            + f"; upsampling would blur the margins. Re-run `iaiabl prepare --size {model.image_size}` "
            "(or evaluate with the data the run was trained on)")


def split_cases(model: EvalModel, cfg: dict, run_dir: Path, data_dir: Path, split: str,
                allow_overlap: bool = False) -> tuple[PreparedDataset, list[str]]:
    """The cases of ``split`` in ``data_dir`` that ``model`` (loaded from ``run_dir``, whose
    config.json is ``cfg``) may be evaluated on: the data set checked against the run
    (``check_compatible``), loaded at the model's image size, the split refused when empty, and the
    patients the run trained on refused unless ``allow_overlap`` (``rundir.check_split``).
    Returns (the cases, the overlapping patients)."""
    check_compatible(model, data_dir, run_dir, recorded_data_dir(cfg))
    cases = load_prepared(data_dir, size=model.image_size).subset(split)
    if len(cases) == 0:
        raise InputError(f"{data_dir}: the {split!r} split is empty; prepare the data with enough "
                         "patients, or choose another --split")
    overlap = check_split(cfg, run_dir, [r.get("patient_id", "") for r in cases.manifest], split, data_dir,
                          allow_overlap)
    return cases, overlap
