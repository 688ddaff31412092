"""The run directory: what ``iaiabl train`` writes, and the one reader every command uses.

    RUN/config.json       the preset, the data path, the seed, the schedule's results (run_config)
    RUN/model.pt          the state dict of the final (pushed, pruned) model: weights only
    RUN/push.json         one record per prototype: where it was projected from (push.py)
    RUN/push.npz          the prototypes' source images and self-activation maps
    RUN/prune.json        which prototypes were merged (prune.py)
    RUN/malignancy.json   stage B: the malignancy head h2 (Eq. 10)
    RUN/history.csv       one row per epoch and stage (``HISTORY_COLUMNS``)
    RUN/resume.pt         only while training runs: the state to resume from

Checkpoints are state dicts (tensors, numbers, strings, lists, dicts) written with ``torch.save``
and read with ``torch.load(weights_only=True)``: a file that carries a pickled Python object is
refused (:class:`CheckpointError`). Every file is written aside and renamed (``atomic``).
docs/INTERFACES.md §5 lists the fields.
"""
from __future__ import annotations

import csv
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .config import Preset
from .fastpath import pick_device
from .model import IAIABL, build_model

__all__ = ["HISTORY_COLUMNS", "RESUME_FILE", "RUN_FILES", "CheckpointError", "save_state", "load_state",
           "write_history", "read_history", "Run", "load_run"]

HISTORY_COLUMNS = ("epoch", "stage", "ce", "clst", "sep", "l1", "fine", "loss",
                   "train_auroc", "val_auroc", "val_lesion_ap", "distinct_prototypes", "push_lesion_ap",
                   "lr", "seconds")
"""history.csv columns; ``stage`` is one of warm, joint, push, last_layer, prune.

Diagnostics of where the prototypes look (issue: prototypes that leave the lesion or merge):
``val_lesion_ap`` is Eq. 9 on the validation split with the paper's protocol (every prototype of
the true class against the lesion mask, mean over pairs), after every warm/joint epoch and push;
at push rows, ``distinct_prototypes`` counts the distinct training patches the prototypes were
projected onto (fewer than m: some merged) and ``push_lesion_ap`` is the mean Eq. 9 of each
prototype's self-activation map on its source image's lesion mask (where the pushed patches are)."""

RESUME_FILE = "resume.pt"
RUN_FILES = ("config.json", "model.pt", "push.json", "push.npz", "prune.json", "malignancy.json",
             "history.csv")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely (e.g. it carries a pickled Python object)."""


def save_state(obj: dict, path: Path) -> None:
    """torch.save of a state dict (tensors, numbers, strings, lists, dicts only), atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    """torch.load(path, weights_only=True). A file that carries a pickled Python object (not a
    plain state dict) is refused with a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refusing to load it: it carries a pickled Python object, not a plain state dict "
            f"(torch.load(weights_only=True) said: {str(err).splitlines()[0]}). Only load "
            "checkpoints you trust; re-create it with torch.save(model.state_dict(), ...) or retrain "
            "with `iaiabl train`."
        ) from None


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                    for k in HISTORY_COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_history(path: str | Path) -> list[dict]:
    """history.csv as a list of dicts (numbers as int/float, empty cells as None)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in row.items():
                if v == "" or v is None:
                    out[k] = None
                elif k == "stage":
                    out[k] = v
                elif k == "epoch":
                    out[k] = int(v)
                else:
                    out[k] = float(v)
            rows.append(out)
    return rows


@dataclass
class Run:
    """A finished run, as ``load_run`` reads it back."""

    model: IAIABL
    preset: Preset
    dir: Path
    push: list[dict] = field(default_factory=list)
    push_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    malignancy: dict = field(default_factory=dict)
    prune: dict = field(default_factory=dict)
    data_dir: Path | None = None
    config: dict = field(default_factory=dict)


def load_run(run_dir: str | Path, device=None) -> Run:
    """Read a run directory written by :func:`train`: the model (eval mode, on ``device``), its
    preset, push records and arrays, history, malignancy and pruning reports."""
    d = Path(run_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d}: not a run directory (no config.json); train one with "
                                "`iaiabl train --data DATA --preset tiny --out RUN`")
    if not (d / "model.pt").is_file():
        hint = " (training was interrupted: re-run the same `iaiabl train` command to resume)" \
            if (d / RESUME_FILE).is_file() else ""
        raise FileNotFoundError(f"{d}: no model.pt{hint}")
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    preset = Preset.from_dict(config["preset"])
    model = build_model(preset, config.get("prototype_class"), pretrained=False)
    state = load_state(d / "model.pt")
    model.load_state_dict(state)
    model.to(pick_device(device)).eval()

    def read_json(name):
        p = d / name
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    push = read_json("push.json")
    arrays = {}
    if (d / "push.npz").is_file():
        with np.load(d / "push.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    history = read_history(d / "history.csv") if (d / "history.csv").is_file() else []
    data_dir = Path(config["data"]) if config.get("data") else None
    return Run(model=model, preset=preset, dir=d, push=push if isinstance(push, list) else [],
               push_arrays=arrays, history=history, malignancy=read_json("malignancy.json"),
               prune=read_json("prune.json"), data_dir=data_dir, config=config)
