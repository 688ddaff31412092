"""Training IAIA-BL (Barnett et al. 2021 §2.3: Eq. 3 for A1, Eq. 8 for A3, Eq. 10 for B): one file
per stage, one for the schedule, one for the loop.

    stage_a1.py    A1: warm-up and joint epochs, CE + λc·Clst − λs·Sep + λf·Fine (Eq. 3-7)
    ../push.py     A2: project each prototype onto its nearest training patch of its class
    stage_a3.py    A3: the last layer h1, CE + λ1·L1(off-class h1), on cached similarities
    ../prune.py    merge prototypes that were pushed onto the same patch
    stage_b.py     B: the malignancy head h2, logistic regression on the margin logits (Eq. 10)
    schedule.py    which stage runs when, and how many steps each takes (vs the paper and its code)
    trainer.py     the loop: train(DATA, preset, RUN)
    splits.py      the train split and the val split it validates and selects on (--val-data)
    probe.py       before the first epoch: batch fitting and the run-time estimate
    estimate.py    estimate(DATA, preset): the probe alone
    resume.py      resume.pt: what an unfinished run saves and how it continues
    runfiles.py    the end of a run: best pushed model, pruning, stage B, the run files
    checkpoint.py  random-generator state for exact resume
    cli.py         ``iaiabl train``

The run directory it writes is described (and read back) in ``iaiabl_lib.rundir``; inference
(``predict``, ``similarities``) lives in ``iaiabl_lib.predict``. The names below are re-exported so
that ``from iaiabl_lib import train; train.train(...)`` keeps working.
"""
from ..atomic import atomic_write_bytes, atomic_write_json
from ..config import resolve_preset
from ..fastpath import pick_device
from ..model import build_model
from ..predict import average_margin_auroc, predict, similarities
from ..rundir import (HISTORY_COLUMNS, RESUME_FILE, RUN_FILES, CheckpointError, Run, load_run, load_state,
                      read_history, save_state)
from .cli import add_cli, run_cli
from .schedule import push_epochs, schedule_table, steps_per_stage
from .stage_a1 import (STAGE_TRAINABLE, Batch, a1_objective, make_batch, make_optimizer, make_step, push_to_pull,
                       set_stage, train_step)
from .stage_a3 import train_last_layer
from .stage_b import fit_malignancy_head, malignancy_equation
from .estimate import estimate
from .trainer import Trainer, train

__all__ = [
    "train", "estimate", "Trainer", "push_epochs", "steps_per_stage", "schedule_table",
    "STAGE_TRAINABLE", "set_stage", "make_optimizer", "Batch", "make_batch", "a1_objective", "push_to_pull", "make_step",
    "train_step", "train_last_layer", "fit_malignancy_head", "malignancy_equation",
    "add_cli", "run_cli",
    # re-exported from the modules that own them
    "pick_device", "resolve_preset", "build_model", "predict", "similarities", "average_margin_auroc",
    "HISTORY_COLUMNS", "RESUME_FILE", "RUN_FILES", "CheckpointError", "Run", "load_run", "load_state",
    "save_state", "read_history", "atomic_write_bytes", "atomic_write_json",
]
