"""The paper's baselines (Barnett et al. 2021, Table 1; Fig. 5).

One file per idea: ``blackbox`` (the network), ``gradcam`` (its saliency and predictions),
``training`` (train and load a black-box run), ``protopnet``, ``radiologists``, ``cli``.

* **ProtoPNet** (Chen et al. 2019): IAIA-BL's own training with the ``protopnet`` /
  ``tiny-protopnet`` preset (k = 1 max pooling, no fine-annotation loss, off-class weight −0.5).
  :func:`train_protopnet` only picks the preset and calls :func:`iaiabl_lib.train.train`.
* **Black-box VGG-16 margin classifier**: VGG-16's convolutional layers (the same backbone and
  pretrained handling as IAIA-BL, ``model.build_backbone``; the tiny backbone at tiny scale), global
  average pooling and two added fully connected layers → 3 margin logits (``task="margin"``).
* **End-to-end VGG-16 malignancy classifier**: the same network with one logit
  (``task="malignancy"``), trained on the pathology labels directly.
* **GradCAM** (Selvaraju et al. 2017) and **GradCAM++** (Chattopadhay et al. 2018) saliency maps of
  the black boxes, batched: :func:`gradcam`. The test suite checks them against the maintained
  ``pytorch_grad_cam`` package on the same model and inputs.
* **Radiologists' estimate**: the AUROC of the BI-RADS assessment (CBIS-DDSM's ``assessment``
  column, 0-5) as a malignancy score: :func:`radiologist_auroc`.

A black-box run directory mirrors an IAIA-BL run (the same helpers of ``train.py`` write it: one
atomic file at a time, config.json last, state dicts loaded with ``weights_only=True``)::

    RUN/config.json    {"kind": "blackbox", "task": "margin"|"malignancy", "preset_name": ...,
                        "preset": {model, loss, train}, "data": ..., "selected_epoch": ..., ...}
    RUN/model.pt       state dict only
    RUN/history.csv    train.py's columns; stage "blackbox"; ce = loss (CE or BCE)
"""
from __future__ import annotations

from .blackbox import TASKS, BlackBox, blackbox_preset, build_blackbox
from .cli import add_cli, run_cli
from .gradcam import blackbox_predict, gradcam, gradcam_both
from .protopnet import protopnet_preset, train_protopnet
from .radiologists import radiologist_auroc, read_assessments
from .training import BlackBoxRun, load_blackbox, train_blackbox

__all__ = [
    "TASKS", "BlackBox", "BlackBoxRun", "build_blackbox", "blackbox_preset", "train_blackbox", "load_blackbox",
    "blackbox_predict", "gradcam", "gradcam_both", "train_protopnet", "protopnet_preset",
    "radiologist_auroc", "read_assessments", "add_cli", "run_cli",
]
