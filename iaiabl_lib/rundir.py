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

Every command that loads a run goes through :func:`check_run` first (``load_run``, the black-box
loader, ``evaluate``, ``explain``, the widgets): a run is used only when config.json says it is
complete and model.pt is the file that run wrote (size and SHA-256 recorded in config.json's
``model_pt`` when it finished), so a retrain that was killed half-way, or a model.pt copied in from
elsewhere, is refused instead of being explained with the wrong description. A run also records
its split (:func:`split_record`: the patients of each split and the manifest's SHA-256);
:func:`check_split` refuses to evaluate a run on cases whose patients it trained on.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_write_json
from .config import Preset
from .errors import InputError, UserError
from .fastpath import pick_device
from .model import IAIABL, build_model

__all__ = ["HISTORY_COLUMNS", "RESUME_FILE", "RUN_FILES", "CheckpointError", "RunError", "save_state", "base_config",
           "load_state", "file_digest", "read_config", "read_run_json", "write_config", "RUN_FORMAT", "recorded_data_dir", "check_run", "check_prototypes", "split_record", "recorded_split_of",
           "check_split",
           "LEAK_SPLITS", "write_history", "read_history", "Run", "load_run"]

HISTORY_COLUMNS = ("epoch", "stage", "ce", "clst", "sep", "l1", "fine", "remember", "loss",
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
RUN_FORMAT = 1
"""Version of the run directory's layout (config.json ``format``): bumped when a reader of the old
layout would misread the new one; :func:`read_config` refuses a newer one by name."""
RUN_FILES = ("config.json", "model.pt", "push.json", "push.npz", "prune.json", "malignancy.json",
             "history.csv")
"""The files of a finished IAIA-BL run directory (``train`` writes them, config.json last; black-box
runs hold config.json, model.pt and history.csv). The one list: docs/INTERFACES.md describes each."""


LEAK_SPLITS = {"test": ("train", "val"), "val": ("train",), "train": ()}
"""For each evaluated split, the run's splits whose patients must not appear in it."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely (e.g. it carries a pickled Python object)."""


class RunError(UserError):
    """A run directory that must not be used: unfinished, or config.json and model.pt disagree."""


def save_state(obj: dict, path: Path) -> dict:
    """torch.save of a state dict (tensors, numbers, strings, lists, dicts only), atomically.
    Returns the file's ``{"bytes", "sha256"}`` (config.json's ``model_pt``, :func:`check_run`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_digest(path: str | Path) -> dict:
    """``{"bytes", "sha256"}`` of a file, read in 1 MiB blocks."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return {"bytes": n, "sha256": h.hexdigest()}


def load_state(path: str | Path) -> dict:
    """torch.load(path, weights_only=True). A file that carries a pickled Python object (not a
    plain state dict), or that is damaged, is refused with a :class:`CheckpointError` naming the
    file (in our words: torch's own message suggests retrying with the unsafe loader)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = (f"it carries a pickled Python object (it references {found[1]})" if found else
                "it is a pickle that is not a plain torch state dict")
        raise CheckpointError(
            f"{path}: refusing to load it: {what}, and loading such a file could run code. Use "
            "checkpoints written by `iaiabl train` (or torch.save(model.state_dict(), ...)); if this "
            "is one, it was altered: retrain."
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}); the file is "
                              "damaged or truncated: retrain, or copy it again") from None


def read_config(run_dir: str | Path) -> dict:
    """RUN/config.json as a dict, with clear errors for a missing or damaged one. Only
    :func:`check_run` says whether the run may be used."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; train one with "
                                f"`iaiabl train --data DATA --preset tiny --out {run_dir}`")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json); train one with "
                                f"`iaiabl train --data DATA --preset tiny --out {run_dir}`")
    cfg = read_run_json(path)
    if not isinstance(cfg, dict):
        raise RunError(f"{path}: not a run configuration (a JSON object); the run is damaged: retrain it")
    version = cfg.get("format", 1)              # runs written before the field existed are format 1
    if not isinstance(version, int) or version > RUN_FORMAT:
        raise RunError(f"{path}: run format {version!r}, but this version of iaiabl_lib reads format "
                       f"{RUN_FORMAT} at most; update the library (pip install -U) or retrain the run")
    return cfg


def read_run_json(path: str | Path, default: Any = None) -> Any:
    """A JSON file of a run directory (``default`` when it is absent); a damaged one is a
    :class:`RunError` naming it."""
    path = Path(path)
    if default is not None and not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: not valid JSON ({err}); the run is damaged: retrain it") from None


def base_config(preset: Preset, data: str | Path, seed: int, overrides: dict | None, device,
                classes: list[str], n_train: int, n_val: int) -> dict:
    """The fields every run's config.json starts with, IAIA-BL and black box alike (the one place
    that names them; each trainer adds its own): the preset (name and every value), the prepared
    data's resolved path and split (``split_record``: manifest hash and patients per split, which
    ``evaluate`` and ``explain`` check for leaks), the seed, the overrides, the device, the classes,
    the split sizes and torch's version."""
    return {
        "preset_name": preset.name,
        "preset": preset.to_dict(),
        "data": str(Path(data).resolve()),
        "seed": int(seed),
        "overrides": dict(overrides or {}),
        "device": str(device),
        "classes": list(classes),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "torch": torch.__version__,
        "split": split_record(data),
    }


def write_config(run_dir: str | Path, config: dict) -> None:
    """Write RUN/config.json (aside, then renamed), stamped with ``format`` = :data:`RUN_FORMAT`:
    the one writer of the file, for IAIA-BL and black-box runs alike."""
    atomic_write_json(Path(run_dir) / "config.json", {**config, "format": RUN_FORMAT})


def recorded_data_dir(cfg: dict) -> Path | None:
    """The prepared dataset a run was trained on: config.json's ``"data"`` (an absolute path,
    written by ``train`` and ``baseline``; docs/INTERFACES.md), or None when it records none."""
    value = cfg.get("data")
    return Path(value) if isinstance(value, str) and value else None


def check_run(run_dir: str | Path, kind: str | None = None) -> dict:
    """config.json of a run that may be used, after checking that the run is finished and that
    model.pt is the file it wrote; raises :class:`RunError` (or FileNotFoundError) with what to
    do otherwise (FileNotFoundError for an unfinished run: its model does not exist yet).
    ``kind``: the run kind expected (config.json ``kind``, default ``iaiabl``)."""
    d = Path(run_dir)
    cfg = read_config(d)
    found = cfg.get("kind", "iaiabl")
    if kind is not None and found != kind:
        raise InputError(f"{d}: config.json kind is {found!r}, not {kind!r}"
                         + ("; load black-box runs with iaiabl_lib.baselines.load_blackbox" if found == "blackbox"
                            else "; load IAIA-BL and ProtoPNet runs with iaiabl_lib.rundir.load_run"))
    again = "re-run the same `iaiabl train` command to resume it" if (d / RESUME_FILE).is_file() \
        else "re-run the `iaiabl train` (or `iaiabl baseline`) command that made it"
    if cfg.get("complete") is not True:      # FileNotFoundError, as before: the finished model is not there
        raise FileNotFoundError(f"{d}: training has not finished (config.json says complete: "
                       f"{json.dumps(cfg.get('complete'))}); {again}. Any model.pt there belongs to an "
                       "earlier run and is not used")
    weights = d / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{d}: no model.pt, although config.json says the run finished; the "
                                f"weights were moved or deleted: {again}")
    recorded = cfg.get("model_pt")
    if isinstance(recorded, dict) and recorded.get("sha256"):
        size = weights.stat().st_size
        if size != recorded.get("bytes") or file_digest(weights)["sha256"] != recorded["sha256"]:
            raise RunError(f"{weights} is not the model.pt this run wrote (its size or SHA-256 differs "
                           "from config.json's model_pt): it was replaced, copied from another run or "
                           f"damaged. Restore the run's own model.pt, or {again}")
    return cfg


def check_prototypes(cfg: dict, state: dict, run_dir: Path, push: list | None = None) -> None:
    """config.json, model.pt and push.json must agree on the number of prototypes."""
    n_state = tuple(state["prototypes"].shape)[0] if "prototypes" in state else None
    counts = {"model.pt": n_state, "config.json num_prototypes": cfg.get("num_prototypes"),
              "config.json prototype_class": len(cfg["prototype_class"]) if isinstance(cfg.get("prototype_class"), list) else None,
              "push.json": len(push) if push else None}
    known = {k: v for k, v in counts.items() if v is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in known.items())
        raise RunError(f"{run_dir}: the run's files disagree on the number of prototypes ({listed}); "
                       "they come from different runs: retrain, or restore the run's own files")


# --- the split a run was trained on -----------------------------------------------------------

def split_record(data_dir: str | Path) -> dict:
    """The split of a prepared dataset as a run records it in config.json (``split``): the SHA-256
    of manifest.csv and the (normalised) patient ids of each split."""
    from .data.dataset import SPLITS, normalise_patient_id

    raw = (Path(data_dir) / "manifest.csv").read_bytes()
    patients: dict[str, set] = {s: set() for s in SPLITS}
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8"))):
        if row.get("split") in patients:
            patients[row["split"]].add(normalise_patient_id(row.get("patient_id", "")))
    return {"manifest_sha256": hashlib.sha256(raw).hexdigest(),
            "patients": {s: sorted(p) for s, p in patients.items()}}


def recorded_split_of(cfg: dict) -> dict[str, str] | None:
    """Normalised patient id -> the split the run had it in (config.json ``split``); None when
    the run recorded no split."""
    record = cfg.get("split")
    if not isinstance(record, dict) or not isinstance(record.get("patients"), dict):
        return None
    return {p: name for name, ids in record["patients"].items() if isinstance(ids, list) for p in ids}


def check_split(cfg: dict, run_dir: Path, patient_ids, split: str, data_dir: Path,
                allow_overlap: bool = False) -> list[str]:
    """Patients among ``patient_ids`` (the evaluated cases of ``split`` in ``data_dir``) that the
    run trained or selected its model on (``LEAK_SPLITS``). Raises :class:`RunError` when there
    are any, unless ``allow_overlap`` (then it warns on stderr); returns them, sorted. A run that
    recorded no split (an older version) is not checked: a warning says so."""
    from .data.dataset import normalise_patient_id

    recorded = recorded_split_of(cfg)
    if recorded is None:
        print(f"warning: {run_dir} records no split (trained by an older version): cannot check that "
              f"the {split} cases of {data_dir} were not used in training", file=sys.stderr)
        return []
    seen = {p: name for p, name in recorded.items() if name in LEAK_SPLITS.get(split, ())}
    leaked = sorted({normalise_patient_id(p) for p in patient_ids} & set(seen))
    if not leaked:
        return []
    where = " or ".join(sorted({seen[p] for p in leaked}))
    shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
    text = (f"{len(leaked)} patients of the {split!r} split of {data_dir} were in the {where} split of "
            f"run {run_dir} ({shown}): the data was prepared with another split (seed or --split) than "
            "the run's, so these results would be measured on cases the model was trained on")
    if not allow_overlap:
        raise RunError(text + "; evaluate on the preparation the run was trained on, or pass "
                       "--allow-overlap to evaluate anyway")
    print(f"warning: {text} (--allow-overlap)", file=sys.stderr)
    return leaked


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
    _dataset: Any = field(default=None, repr=False, compare=False)

    def dataset(self):
        """The prepared dataset this run was trained on (``data_dir``) at the run's image size,
        loaded on first use and kept by this Run object (explaining many cases loads it once)."""
        if self._dataset is None:
            from .data.dataset import load_prepared

            if self.data_dir is None or not Path(self.data_dir).is_dir():
                raise FileNotFoundError(
                    f"the prepared dataset of run {self.dir} ({self.data_dir}) is not available; "
                    "pass data=PATH (or --data DATA)")
            self._dataset = load_prepared(self.data_dir, size=int(self.preset.model.image_size))
        return self._dataset


def load_run(run_dir: str | Path, device=None) -> Run:
    """Read a run directory written by :func:`train`: the model (eval mode, on ``device``), its
    preset, push records and arrays, history, malignancy and pruning reports. The run must pass
    :func:`check_run` and :func:`check_prototypes`."""
    d = Path(run_dir)
    config = check_run(d, kind="iaiabl")

    def read_json(name):
        return read_run_json(d / name, default={})

    preset = Preset.from_dict(config["preset"])
    state = load_state(d / "model.pt")
    push = read_json("push.json")
    check_prototypes(config, state, d, push if isinstance(push, list) else None)
    model = build_model(preset, config.get("prototype_class"), pretrained=False)
    model.load_state_dict(state)
    model.to(pick_device(device)).eval()
    malignancy = read_json("malignancy.json")
    model.malignancy_fitted = bool(malignancy)
    arrays = {}
    if (d / "push.npz").is_file():
        with np.load(d / "push.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    history = read_history(d / "history.csv") if (d / "history.csv").is_file() else []
    data_dir = recorded_data_dir(config)
    return Run(model=model, preset=preset, dir=d, push=push if isinstance(push, list) else [],
               push_arrays=arrays, history=history, malignancy=malignancy,
               prune=read_json("prune.json"), data_dir=data_dir, config=config)
