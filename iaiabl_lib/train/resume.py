"""Checkpoints of an unfinished run (``resume.pt``): what is saved after every epoch, what must
match for a run to continue from it, and the continuation itself. Functions of a
:class:`~iaiabl_lib.train.trainer.Trainer` (``tr``); a resumed CPU run ends identical to an
uninterrupted one (tested)."""
from __future__ import annotations

import json

from ..rundir import RESUME_FILE, load_state
from .checkpoint import capture_rng, restore_rng, tensors_of

__all__ = ["resume_state", "resume_key", "try_resume"]


def resume_state(tr) -> dict:
    best = None
    if tr.best is not None:
        best = {"state": tr.best["state"], "val_auroc": tr.best["val_auroc"], "epoch": tr.best["epoch"],
                "push_json": json.dumps(tr.best["push"]), "push_arrays": tensors_of(tr.best["push_arrays"])}
    return {
        "format": 1,
        "run_config": json.dumps(resume_key(tr)),
        "epoch": tr.epoch,
        "model": tr.model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in tr.opt.items()},
        "scheduler": tr.sched.state_dict(),
        "scalers": {k: s.scaler.state_dict() for k, s in tr.steps.items() if s.scaler is not None},
        "rng": capture_rng(tr.gen),
        "best": best,
        "history_json": json.dumps(tr.history),
    }


def resume_key(tr) -> dict:
    """What must match for resume.pt to be continued: preset, data path, seed, the
    preparation itself (manifest hash: the same path re-prepared with another split is
    another data set) and the validation data when it is another data set (``val_data``)."""
    key = {k: tr.run_config[k] for k in ("preset", "data", "seed")}
    if tr.run_config.get("val_data") is not None:
        key["val_data"] = tr.run_config["val_data"]
    key["manifest_sha256"] = (tr.run_config.get("split") or {}).get("manifest_sha256")
    return key


def try_resume(tr) -> bool:
    path = tr.out / RESUME_FILE
    if not path.is_file():
        return False
    state = load_state(path)
    if state.get("format") != 1 or json.loads(state["run_config"]) != json.loads(json.dumps(resume_key(tr))):
        tr.log(f"{path}: written by a run with other settings; starting afresh")
        return False
    tr.model.load_state_dict(state["model"])
    for k, o in tr.opt.items():
        o.load_state_dict(state["optimizers"][k])
    tr.sched.load_state_dict(state["scheduler"])
    for k, s in state.get("scalers", {}).items():
        tr.steps[k].scaler.load_state_dict(s)
    restore_rng(state["rng"], tr.gen)
    b = state["best"]
    if b is not None:
        tr.best = {"state": b["state"], "val_auroc": b["val_auroc"], "epoch": b["epoch"],
                     "push": json.loads(b["push_json"]),
                     "push_arrays": {k: v.numpy() for k, v in b["push_arrays"].items()}}
    tr.history = json.loads(state["history_json"])
    tr.epoch = int(state["epoch"])
    tr.log(f"resuming {tr.out} after epoch {tr.epoch}")
    return True
