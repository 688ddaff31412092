"""The training loop: one run of the schedule (``schedule``) from a prepared dataset to a run
directory (``rundir``).

    train(DATA, preset, RUN)       warm-up and joint epochs (A1), push (A2) and last layer (A3) on
                                   schedule, model selection on the validation AUROC, pruning,
                                   the malignancy head (B), the run files; resumable
    estimate(DATA, preset)         how long ``train`` would take here, without training

Only pushed models are eligible for selection: only they are interpretable (every prototype is a
real training patch). Stage B never returns to A.

Before the first epoch the trainer probes the device (``fastpath``): on CUDA it fits the A1 batch
into memory, and it times a few steps for the run-time estimate; the probe restores the weights
and uses its own generator, so a run with it is identical to a run without it. The run's
data (the whole TensorSet) lives on the device; no host synchronisation happens inside an epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .. import fastpath
from ..atomic import remove_stale_tmp
from ..config import MARGINS, Preset, resolve_preset
from ..data.dataset import BatchPlan, stored_image_size
from ..eq9 import pair_activation_precision, true_class_pams
from ..errors import InputError
from ..fastpath import pick_device
from ..lock import LOCK_NAME, exclusive_lock
from ..model import build_model
from ..predict import average_margin_auroc, predict, similarities
from ..push import push_cells, push_diagnostics, push_prototypes
from ..rundir import RESUME_FILE, Run, base_config, load_run, save_state, write_config, write_history
from .checkpoint import clone_state
from .schedule import epoch_size, push_epochs
from .probe import estimate_left, probe, use_batch
from .resume import resume_state, try_resume
from .runfiles import finish
from .splits import load_splits
from .stage_a1 import Batch, init_prototypes_on_lesion_patches, make_batch, make_optimizer, make_step, set_stage
from .stage_a3 import train_last_layer

__all__ = ["Trainer", "train"]


class Trainer:
    """Holds the state of one run; ``run()`` executes the schedule (``schedule``)."""

    def __init__(self, preset: Preset, train_set, val_set, train_ids: list[str], train_index: np.ndarray,
                 out: Path, device: torch.device, seed: int, progress: bool, run_config: dict,
                 callback: Callable[[dict], None] | None = None):
        from ..data.dataset import pre_augment

        self.preset, self.t = preset, preset.train
        self.plain, self.val = train_set, val_set       # un-augmented train split (push, A3, B), val
        self.ids, self.index = train_ids, train_index
        self.out, self.dev, self.seed, self.progress = out, device, seed, progress
        self.run_config, self.callback = run_config, callback
        self.model = build_model(preset).to(device)     # after fastpath.setup(device, seed) by the caller
        self.gen = torch.Generator(device=device).manual_seed(seed)
        if preset.model.prototype_init == "lesion_patches":
            init_prototypes_on_lesion_patches(self.model, train_set, self.t.eval_batch_size, seed + 3)
        elif preset.model.prototype_init != "uniform":
            raise InputError(f"model.prototype_init must be 'uniform' or 'lesion_patches', "
                             f"got {preset.model.prototype_init!r}")
        self.a1_set = train_set
        if self.t.pre_augment_per_class > 0:  # offline augmentation (paper: 5000 per class), fixed by the seed
            g = torch.Generator(device=device).manual_seed(seed + 1)
            self.a1_set = pre_augment(train_set, self.t.pre_augment_per_class, g, recipe=self.t.augmentation)
        self.opt = {s: make_optimizer(self.model, preset, s) for s in ("warm", "joint")}
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt["joint"], step_size=self.t.lr_step_size,
                                                     gamma=self.t.lr_gamma)
        self.forward = torch.compile(self.model) if self.t.compile else None
        self.steps = {s: make_step(self.model, preset, self.opt[s], forward=self.forward) for s in ("warm", "joint")}
        self.timing: tuple[float, float, float | None] | None = None   # probe(): step s, eval images/s, GiB
        self.epoch = 0
        self.history: list[dict] = []
        self.best: dict | None = None     # state, val_auroc, epoch, push records/arrays

    # -- helpers --------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        if self.progress:
            from tqdm.auto import tqdm
            tqdm.write(text)

    def _bar(self, iterable, **kw):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm
        return tqdm(iterable, leave=False, dynamic_ncols=True, **kw)

    def row(self, stage: str, t0: float, **values) -> dict:
        row = {"epoch": self.epoch, "stage": stage, **values, "seconds": round(time.perf_counter() - t0, 3)}
        self.history.append(row)
        return row

    def val_auroc(self, sim: Tensor | None = None) -> float:
        sim = similarities(self.model, self.val.images, self.t.eval_batch_size) if sim is None else sim
        logits = self.model.margin_head(sim)
        return average_margin_auroc(self.val.labels.cpu().numpy(), logits.detach().cpu().numpy())

    def _validate(self) -> dict:
        """Validation average margin AUROC and lesion activation precision (Eq. 9, the paper's
        protocol), from one pass over the validation split."""
        out = predict(self.model, self.val.images, self.t.eval_batch_size)
        labels = self.val.labels.cpu().numpy()
        pams, valid = true_class_pams(out["similarity_maps"], self.model.prototype_class, labels,
                                      self.val.images.shape[-1])
        ap, count = pair_activation_precision(pams, valid, self.val.lesion_masks[:, 0].cpu().numpy())
        keep = count > 0
        lesion_ap = float((ap[keep] * count[keep]).sum() / count[keep].sum()) if keep.any() else float("nan")
        return {"val_auroc": average_margin_auroc(labels, out["margin_logits"]), "val_lesion_ap": lesion_ap}

    def _batches(self) -> list[tuple[Tensor, int]]:
        """This epoch's A1 batches (index tensors drawn up front, moved to the device in one copy)."""
        t = self.t
        plan = list(BatchPlan(self.a1_set.labels, self.a1_set.has_fine, batch_size=t.batch_size,
                              fine_batch_size=self.fine_batch_size(), generator=self.gen,
                              epoch_size=epoch_size(t, len(self.a1_set))))
        sizes = [(len(a), len(b)) for a, b in plan]
        flat = torch.cat([torch.cat([a, b]) for a, b in plan]).to(self.dev, non_blocking=True)
        return [(idx, na) for idx, (na, _) in zip(torch.split(flat, [a + b for a, b in sizes]), sizes)]

    def fine_batch_size(self) -> int:
        return self.t.fine_batch_size if self.t.use_fine_loss else 0

    def make_batch(self, idx: Tensor, n_lesion: int, generator: torch.Generator | None = None) -> Batch:
        return make_batch(self.a1_set, idx, n_lesion, self.preset, generator or self.gen)

    # -- stages ---------------------------------------------------------------------------------

    def a1_epoch(self, stage: str) -> dict:
        """One warm-up or joint epoch (Eq. 3)."""
        t0 = time.perf_counter()
        model = self.model
        model.train()
        set_stage(model, stage)
        step = self.steps[stage]
        sums = torch.zeros(6, device=self.dev)
        n, logits, labels = 0, [], []
        for idx, n_lesion in self._bar(self._batches(), desc=f"epoch {self.epoch} {stage}"):
            batch = self.make_batch(idx, n_lesion)
            r = step(batch)
            sums += torch.stack([r["ce"], r["clst"], r["sep"], r["fine"], r.get("remember", r["fine"] * 0),
                                 r["loss"]]).float()
            n += 1
            logits.append(r["margin_logits"])
            labels.append(batch.labels)
        set_stage(model, "frozen")
        ce, clst, sep, fine, remember, loss = (sums / max(n, 1)).tolist()    # the one sync per epoch
        train_auc = average_margin_auroc(torch.cat(labels).cpu().numpy(), torch.cat(logits).float().cpu().numpy())
        lr = self.opt[stage].param_groups[0]["lr"]
        if stage == "joint":
            self.sched.step()
        pull = {"remember": remember} if self.preset.loss.remember and self.t.use_lesion_masks else {}
        return self.row(stage, t0, ce=ce, clst=clst, sep=sep, fine=fine, **pull, loss=loss,
                         train_auroc=train_auc, lr=lr, **self._validate())

    def last_layer(self) -> float:
        """Stage A3 on the current model; history rows; returns the final validation AUROC."""
        t0 = time.perf_counter()

        def on_epoch(values: dict) -> None:
            nonlocal t0
            self.row("last_layer", t0, **values)
            t0 = time.perf_counter()

        return train_last_layer(self.model, self.preset, self.plain, self.val, self.gen,
                                on_epoch=on_epoch, bar=self._bar, desc=f"epoch {self.epoch} last layer",
                                epoch_size=epoch_size(self.t, len(self.plain)))

    def push_cycle(self) -> None:
        """A2 push, A3 last layer, then model selection on the validation AUROC."""
        t0 = time.perf_counter()
        set_stage(self.model, "frozen")
        autocast = fastpath.autocast_dtype(self.dev, self.t.amp_dtype) if (self.t.amp and self.dev.type == "cuda") else None
        result = push_prototypes(self.model, self.plain.images, self.plain.labels, self.ids, self.index,
                                 self.t.eval_batch_size, epoch=self.epoch, autocast=autocast,
                                 patch_mask=push_cells(self.t.push_set, self.plain.lesion_masks, self.model.grid_size()),
                                 distinct=self.t.push_distinct == "image")
        self.row("push", t0, **self._validate(), **push_diagnostics(result.records, result.arrays, self.index, self.plain.lesion_masks))
        auc = self.last_layer()
        self.log(f"epoch {self.epoch}: pushed; validation average margin AUROC {auc:.3f}")
        best_auc = None if self.best is None else self.best["val_auroc"]
        if best_auc is None or (not math.isnan(auc) and (math.isnan(best_auc) or auc > best_auc)):
            self.best = {"state": clone_state(self.model), "val_auroc": auc, "epoch": self.epoch,
                         "push": result.records, "push_arrays": result.arrays}

    # -- the schedule ---------------------------------------------------------------------------

    def run(self, resume: bool) -> None:
        t_start = time.perf_counter()
        use_batch(self, probe(self))   # may change the batch size, which the resume check compares
        t = self.t
        start_epoch = self.epoch
        if resume and try_resume(self):
            start_epoch = self.epoch
        est = estimate_left(self)
        if est is not None:
            self.run_config["estimate"] = est.to_dict()
            self.log(est.describe())
        write_config(self.out, self.run_config)
        pushes = set(push_epochs(t))
        outer = range(self.epoch + 1, t.epochs + 1)
        if self.progress:
            from tqdm.auto import tqdm
            outer = tqdm(outer, desc=f"IAIA-BL {self.preset.name}", initial=self.epoch, total=t.epochs,
                         dynamic_ncols=True)
        for epoch in outer:
            self.epoch = epoch
            row = self.a1_epoch("warm" if epoch <= t.warm_epochs else "joint")
            if self.progress:
                outer.set_postfix(stage=row["stage"], loss=f"{row['loss']:.3f}", val_auroc=f"{row['val_auroc']:.3f}")
            if epoch in pushes:
                self.push_cycle()
            save_state(resume_state(self), self.out / RESUME_FILE)
            write_history(self.out / "history.csv", self.history)
            if self.callback is not None:
                self.callback({"epoch": epoch, "history": self.history, "model": self.model})
        self.run_config["started_at_epoch"] = start_epoch
        finish(self, t_start)



def train(data: str | Path, preset: str | Preset, out: str | Path, epochs: int | None = None, seed: int = 0,
          device=None, progress: bool = True, overrides: dict[str, Any] | None = None, resume: bool = True,
          callback: Callable[[dict], None] | None = None, val_data: str | Path | None = None) -> Run:
    """Train IAIA-BL on the prepared dataset ``data`` with ``preset`` (a name or a Preset) into the
    run directory ``out`` (see the module docstring for the schedule and the files).

    epochs: overrides train.epochs; overrides: dotted keys, e.g. {"train.warm_epochs": 1};
    resume: continue from ``out/resume.pt`` if an earlier run with the same settings was
    interrupted (the result is identical to an uninterrupted run on CPU); callback: called with
    {"epoch", "history", "model"} after each epoch's checkpoint; val_data: validate and select on
    the val split of this prepared dataset instead (same cases, e.g. without the confounder's
    marker: :func:`load_splits`). Returns ``load_run(out)``.
    The run seeds the global generators and sets the device's switches (``fastpath.setup``) for its
    own length only: the caller's random state and switches are as they were afterwards.
    """
    preset = resolve_preset(preset, overrides, epochs)
    dev = pick_device(device)
    out = Path(out)
    train_set, val_set, ids, index = load_splits(data, preset, dev, val_data)
    out.mkdir(parents=True, exist_ok=True)
    with fastpath.restore_process_state():                              # the caller's seeds and switches
        with exclusive_lock(out / LOCK_NAME, f"run directory {out}"):  # one trainer per run directory
            remove_stale_tmp(out)                                       # left by a killed run
            _train_locked(data, preset, out, seed, dev, progress, overrides, resume, callback,
                          train_set, val_set, ids, index, val_data)
        return load_run(out, device=dev)


def _train_locked(data, preset: Preset, out: Path, seed: int, dev: torch.device, progress: bool,
                  overrides, resume: bool, callback, train_set, val_set, ids, index, val_data=None) -> None:
    """The body of :func:`train`, run while it holds the run directory's lock."""
    run_config = {
        **base_config(preset, data, seed, overrides, dev, MARGINS, len(train_set), len(val_set)),
        "data_size": stored_image_size(data),     # side of the prepared crops (explain cuts DICOMs alike)
        "complete": False,
    }
    if val_data is not None:                    # validation and selection on another data set's val split
        run_config["val_data"] = str(Path(val_data).resolve())
    if not resume:
        (out / RESUME_FILE).unlink(missing_ok=True)
    write_config(out, run_config)
    fastpath.setup(dev, seed)
    trainer = Trainer(preset, train_set, val_set, ids, index, out, dev, seed, progress, run_config, callback)
    trainer.run(resume)

