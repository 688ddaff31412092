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

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .. import fastpath
from ..atomic import atomic_savez, atomic_write_json, remove_stale_tmp
from ..config import MARGINS, Preset, resolve_preset
from ..data.dataset import BatchPlan, stored_image_size
from ..eq9 import pair_activation_precision, true_class_pams
from ..errors import InputError
from ..fastpath import pick_device
from ..lock import LOCK_NAME, exclusive_lock
from ..model import build_model
from ..predict import average_margin_auroc, predict, similarities
from ..prune import prune_duplicates
from ..push import push_prototypes
from ..push import select as select_push
from ..rundir import RESUME_FILE, Run, load_run, load_state, save_state, split_record, write_config, write_history
from .checkpoint import capture_rng, clone_state, restore_rng, tensors_of
from .schedule import a1_steps_per_epoch, epoch_size, push_epochs
from .stage_a1 import Batch, make_batch, make_optimizer, make_step, set_stage
from .stage_a3 import train_last_layer
from .stage_b import fit_malignancy_head

__all__ = ["Trainer", "train", "estimate"]


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
            self._init_prototypes_on_lesion_patches(seed + 3)
        elif preset.model.prototype_init != "uniform":
            raise InputError(f"model.prototype_init must be 'uniform' or 'lesion_patches', "
                             f"got {preset.model.prototype_init!r}")
        self.a1_set = train_set
        if self.t.pre_augment_per_class > 0:  # offline augmentation (paper: 5000 per class), fixed by the seed
            g = torch.Generator(device=device).manual_seed(seed + 1)
            self.a1_set = pre_augment(train_set, self.t.pre_augment_per_class, g)
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

    def _log(self, text: str) -> None:
        if self.progress:
            from tqdm.auto import tqdm
            tqdm.write(text)

    def _bar(self, iterable, **kw):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm
        return tqdm(iterable, leave=False, dynamic_ncols=True, **kw)

    def _row(self, stage: str, t0: float, **values) -> dict:
        row = {"epoch": self.epoch, "stage": stage, **values, "seconds": round(time.perf_counter() - t0, 3)}
        self.history.append(row)
        return row

    def _val_auroc(self, sim: Tensor | None = None) -> float:
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

    @torch.no_grad()
    def _init_prototypes_on_lesion_patches(self, seed: int) -> None:
        """``model.prototype_init = "lesion_patches"``: each prototype starts as the latent patch
        (of the untrained network) of a random cell inside the lesion of a random training image of
        its class, all distinct, instead of a uniform random vector (the paper's ``torch.rand``)."""
        from ..push import patch_mask_from

        g = torch.Generator().manual_seed(seed)
        model = self.model
        was = model.training
        model.eval()
        z = torch.cat([model.features(self.plain.images[i:i + self.t.eval_batch_size])
                       for i in range(0, len(self.plain), self.t.eval_batch_size)]).float()   # (N, C, H, W)
        model.train(was)
        n, c, h, w = z.shape
        allowed = patch_mask_from(self.plain.lesion_masks, (h, w)).to(z.device)              # (N, H, W)
        labels = self.plain.labels.to(z.device)
        for cls in range(model.cfg.num_classes):
            cells = torch.nonzero(allowed & (labels == cls)[:, None, None])                # (K, 3)
            slots = torch.nonzero(model.prototype_class == cls).flatten()
            pick = cells[torch.randperm(len(cells), generator=g)[:len(slots)].to(cells.device)]
            model.prototypes.data[slots] = z[pick[:, 0], :, pick[:, 1], pick[:, 2]].to(model.prototypes.dtype)

    def _push_set(self) -> Tensor | None:
        """The cells a prototype may be projected onto (``train.push_set``): every cell of its
        class's training images ("all", the paper), or only cells inside the lesion ("lesion")."""
        if self.t.push_set == "all":
            return None
        if self.t.push_set != "lesion":
            raise InputError(f"train.push_set must be 'all' or 'lesion', got {self.t.push_set!r}")
        from ..push import patch_mask_from

        grid = self.model.grid_size()
        return patch_mask_from(self.plain.lesion_masks, (grid, grid))

    def _push_diagnostics(self, records: list[dict], arrays: dict) -> dict:
        """How many distinct training patches the prototypes sit on, and how much of their
        self-activation lies on the lesion of their source image."""
        from ..metrics import activation_precision

        distinct = len({(r["source_index"], *r["patch"]) for r in records})
        rows = torch.as_tensor(np.searchsorted(self.index, arrays["source_index"]))
        masks = self.plain.lesion_masks[rows.to(self.plain.lesion_masks.device), 0].cpu().numpy()
        ap = activation_precision(arrays["self_activation"], masks)
        return {"distinct_prototypes": distinct, "push_lesion_ap": float(np.mean(ap))}

    def _batches(self) -> list[tuple[Tensor, int]]:
        """This epoch's A1 batches (index tensors drawn up front, moved to the device in one copy)."""
        t = self.t
        plan = list(BatchPlan(self.a1_set.labels, self.a1_set.has_fine, batch_size=t.batch_size,
                              fine_batch_size=self._fine_batch_size(), generator=self.gen,
                              epoch_size=epoch_size(t, len(self.a1_set))))
        sizes = [(len(a), len(b)) for a, b in plan]
        flat = torch.cat([torch.cat([a, b]) for a, b in plan]).to(self.dev, non_blocking=True)
        return [(idx, na) for idx, (na, _) in zip(torch.split(flat, [a + b for a, b in sizes]), sizes)]

    def _fine_batch_size(self) -> int:
        return self.t.fine_batch_size if self.t.use_fine_loss else 0

    def _make_batch(self, idx: Tensor, n_lesion: int, generator: torch.Generator | None = None) -> Batch:
        return make_batch(self.a1_set, idx, n_lesion, self.preset, generator or self.gen)

    # -- before the first epoch: batch fitting and the run-time estimate (fastpath.py) ----------

    def _probe_indices(self, b: int, f: int, gen: torch.Generator) -> tuple[Tensor, int]:
        """Random rows of the A1 set for a probe batch: b lesion-scale rows, f fine-annotated rows."""
        ts = self.a1_set
        lesion = torch.randint(len(ts), (b,), device=self.dev, generator=gen)
        pool = torch.nonzero(ts.has_fine.to(self.dev)).flatten()
        fine = pool[torch.randint(len(pool), (f,), device=self.dev, generator=gen)] if f and len(pool) else pool[:0]
        return torch.cat([lesion, fine]), b

    def probe(self) -> tuple[int, int] | None:
        """Fit the A1 batch into the GPU's memory (``train.fit_batch_to_memory``, CUDA) and time
        ``train.estimate_steps`` steps and one evaluation batch on the real data. Runs on the
        model itself with a throw-away optimiser and generator; the weights are restored
        afterwards, so the run is exactly what it would have been without the probe.

        Returns the fitted ``(batch_size, fine_batch_size)`` when the preset's batch did not fit
        (None when it did, or when nothing was fitted); the preset is not changed here, the caller
        passes the result to :meth:`use_batch`."""
        t, dev, model = self.t, self.dev, self.model
        fit = t.fit_batch_to_memory and fastpath.fits_batches(dev)
        if not fit and t.estimate_steps <= 0:
            return None
        fitted: tuple[int, int] | None = None
        saved = clone_state(model)
        gen = torch.Generator(device=dev).manual_seed(self.seed + 2)
        model.train()
        set_stage(model, "joint")
        opt = make_optimizer(model, self.preset, "joint")
        step = make_step(model, self.preset, opt, forward=self.forward)

        def run(b: int, f: int):
            return step(self._make_batch(*self._probe_indices(b, f, gen), generator=gen))

        try:
            if fit:
                before = (t.batch_size, self._fine_batch_size())
                b, f = fastpath.fit_batch(run, *before, dev, log=print)
                if (b, f) != before:
                    fitted = (b, f)
                    print(f"training with A1 batches of {b} + {f} (the preset's {before[0]} + {before[1]} "
                          f"do not fit in this GPU's memory)")
            if t.estimate_steps > 0:
                size, fine = fitted or (t.batch_size, self._fine_batch_size())
                if dev.type == "cuda":       # the peak of the timed steps, not of failed fits
                    torch.cuda.reset_peak_memory_stats(dev)
                step_s = fastpath.time_calls(lambda: run(size, fine), dev, t.estimate_steps,
                                             warmup=0 if fit else 1)
                peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None
                n = min(len(self.plain), t.eval_batch_size)
                fwd_s = fastpath.time_calls(lambda: similarities(model, self.plain.images[:n], t.eval_batch_size),
                                            dev, 1, warmup=1)
                self.timing = (step_s, n / fwd_s, peak)
        finally:
            model.load_state_dict(saved)
            set_stage(model, "frozen")
            opt.state.clear()            # the throw-away optimiser's moments, before freeing memory
            fastpath.free_memory(dev)
        return fitted

    def use_batch(self, fitted: tuple[int, int] | None) -> None:
        """Train with the A1 batch ``fitted`` by :meth:`probe`: a new preset (presets are frozen),
        recorded in the run's config.json beside the preset's own batch."""
        if fitted is None:
            return
        before = (self.t.batch_size, self._fine_batch_size())
        b, f = fitted
        values = {"train.batch_size": b}
        if self.t.use_fine_loss:
            values["train.fine_batch_size"] = f
        self.preset = self.preset.replace(values)
        self.t = self.preset.train
        self.run_config["batch_fitted"] = {"preset": list(before), "used": [b, f],
                                           "device": fastpath.device_name(self.dev)}
        self.run_config["preset"] = self.preset.to_dict()

    def estimate(self) -> fastpath.RunEstimate | None:
        """The expected wall time of the epochs still to run (after ``probe``; None without it)."""
        if self.timing is None:
            return None
        t = self.t
        step_s, rate, peak = self.timing
        left = range(self.epoch + 1, t.epochs + 1)
        pushes = len(set(push_epochs(t)) & set(left))
        n_plain, n_val = len(self.plain), len(self.val)
        steps = len(left) * a1_steps_per_epoch(t, len(self.a1_set))
        # validation every epoch; per push: the search, A3's caches of train and val, validation;
        # at the end: validation and stage B's pass over the training split
        forward = len(left) * n_val + pushes * (2 * n_plain + 2 * n_val) + (n_plain + n_val)
        return fastpath.RunEstimate(fastpath.device_name(self.dev), t.batch_size, self._fine_batch_size(),
                                    steps, step_s, forward, rate, None if peak is None else round(peak, 2))

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
            batch = self._make_batch(idx, n_lesion)
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
        return self._row(stage, t0, ce=ce, clst=clst, sep=sep, fine=fine, **pull, loss=loss,
                         train_auroc=train_auc, lr=lr, **self._validate())

    def last_layer(self) -> float:
        """Stage A3 on the current model; history rows; returns the final validation AUROC."""
        t0 = time.perf_counter()

        def on_epoch(values: dict) -> None:
            nonlocal t0
            self._row("last_layer", t0, **values)
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
                                 patch_mask=self._push_set(), distinct=self.t.push_distinct == "image")
        self._row("push", t0, **self._validate(), **self._push_diagnostics(result.records, result.arrays))
        auc = self.last_layer()
        self._log(f"epoch {self.epoch}: pushed; validation average margin AUROC {auc:.3f}")
        best_auc = None if self.best is None else self.best["val_auroc"]
        if best_auc is None or (not math.isnan(auc) and (math.isnan(best_auc) or auc > best_auc)):
            self.best = {"state": clone_state(self.model), "val_auroc": auc, "epoch": self.epoch,
                         "push": result.records, "push_arrays": result.arrays}

    # -- checkpoints ----------------------------------------------------------------------------

    def resume_state(self) -> dict:
        best = None
        if self.best is not None:
            best = {"state": self.best["state"], "val_auroc": self.best["val_auroc"], "epoch": self.best["epoch"],
                    "push_json": json.dumps(self.best["push"]), "push_arrays": tensors_of(self.best["push_arrays"])}
        return {
            "format": 1,
            "run_config": json.dumps(self._resume_key()),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.opt.items()},
            "scheduler": self.sched.state_dict(),
            "scalers": {k: s.scaler.state_dict() for k, s in self.steps.items() if s.scaler is not None},
            "rng": capture_rng(self.gen),
            "best": best,
            "history_json": json.dumps(self.history),
        }

    def _resume_key(self) -> dict:
        """What must match for resume.pt to be continued: preset, data path, seed and the
        preparation itself (manifest hash: the same path re-prepared with another split is
        another data set)."""
        key = {k: self.run_config[k] for k in ("preset", "data", "seed")}
        key["manifest_sha256"] = (self.run_config.get("split") or {}).get("manifest_sha256")
        return key

    def try_resume(self) -> bool:
        path = self.out / RESUME_FILE
        if not path.is_file():
            return False
        state = load_state(path)
        if state.get("format") != 1 or json.loads(state["run_config"]) != json.loads(json.dumps(self._resume_key())):
            self._log(f"{path}: written by a run with other settings; starting afresh")
            return False
        self.model.load_state_dict(state["model"])
        for k, o in self.opt.items():
            o.load_state_dict(state["optimizers"][k])
        self.sched.load_state_dict(state["scheduler"])
        for k, s in state.get("scalers", {}).items():
            self.steps[k].scaler.load_state_dict(s)
        restore_rng(state["rng"], self.gen)
        b = state["best"]
        if b is not None:
            self.best = {"state": b["state"], "val_auroc": b["val_auroc"], "epoch": b["epoch"],
                         "push": json.loads(b["push_json"]),
                         "push_arrays": {k: v.numpy() for k, v in b["push_arrays"].items()}}
        self.history = json.loads(state["history_json"])
        self.epoch = int(state["epoch"])
        self._log(f"resuming {self.out} after epoch {self.epoch}")
        return True

    # -- the schedule ---------------------------------------------------------------------------

    def run(self, resume: bool) -> None:
        t_start = time.perf_counter()
        self.use_batch(self.probe())   # may change the batch size, which the resume check compares
        t = self.t
        start_epoch = self.epoch
        if resume and self.try_resume():
            start_epoch = self.epoch
        est = self.estimate()
        if est is not None:
            self.run_config["estimate"] = est.to_dict()
            self._log(est.describe())
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
            save_state(self.resume_state(), self.out / RESUME_FILE)
            write_history(self.out / "history.csv", self.history)
            if self.callback is not None:
                self.callback({"epoch": epoch, "history": self.history, "model": self.model})
        self.run_config["started_at_epoch"] = start_epoch
        self.finish(t_start)

    def finish(self, t_start: float | None = None) -> None:
        """Best pushed model → prune → (A3) → stage B → the run files; the resume file goes.
        ``t_start``: when ``run`` began (config.json's ``wall_seconds``, to set against the estimate)."""
        t, model, best = self.t, self.model, self.best
        assert best is not None, "no pushed model (push_epochs always includes the last epoch)"
        self.epoch = t.epochs
        model.load_state_dict(best["state"])
        records, arrays = best["push"], best["push_arrays"]
        if t.prune_duplicates:
            t0 = time.perf_counter()
            report = prune_duplicates(model, records, t.prune_tolerance)
            records, arrays = select_push(records, arrays, report["kept"])
            if report["after"] < report["before"]:
                self._row("prune", t0, val_auroc=self._val_auroc())
                self.last_layer()
        else:
            m = model.num_prototypes
            report = {"before": m, "after": m, "merged": [], "kept": list(range(m)),
                      "prototype_class": model.prototype_class.tolist(), "enabled": False}
        report["best_epoch"] = best["epoch"]
        # how far each prototype (original numbering) was from every training patch before the
        # selected push projected it: prototypes that had drifted away from all patches ("dead")
        # are the ones that land on the same patch and merge (chapter 7)
        report["sq_distance_before_push"] = [float(r["sq_distance"]) for r in best["push"]]
        val_auc = self._val_auroc()
        self._log(f"prune: {report['before']} → {report['after']} prototypes; "
                  f"validation average margin AUROC {val_auc:.3f} (pushed model of epoch {best['epoch']})")
        # stage B on the frozen margin logits of the training split
        with torch.no_grad():
            logits = model.margin_head(similarities(model, self.plain.images, t.eval_batch_size)).cpu().numpy()
        malignancy = fit_malignancy_head(model, logits, self.plain.malignant.cpu().numpy(), self.seed)
        self._log("stage B, malignancy head h2 (Eq. 10):\n" + malignancy["equation"])
        config = dict(self.run_config, num_prototypes=model.num_prototypes,
                      prototype_class=model.prototype_class.tolist(), best_epoch=best["epoch"],
                      val_average_margin_auroc=val_auc, complete=True)
        if t_start is not None:
            config["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        out = self.out
        # config.json (written last) keeps model.pt's size and hash: rundir.check_run
        config["model_pt"] = save_state({k: v.detach().cpu() for k, v in model.state_dict().items()},
                                        out / "model.pt")
        atomic_write_json(out / "push.json", records)
        atomic_savez(out / "push.npz", **arrays)
        atomic_write_json(out / "prune.json", report)
        atomic_write_json(out / "malignancy.json", malignancy)
        write_history(out / "history.csv", self.history)
        write_config(out, config)
        (out / RESUME_FILE).unlink(missing_ok=True)


def _load_splits(data: str | Path, preset: Preset, device: torch.device):
    """The prepared dataset's train and val splits as TensorSets on ``device`` (resized to the
    preset's image size), with the train rows' ids and dataset indices."""
    from ..data.dataset import check_classes, load_prepared, to_tensors

    ds = load_prepared(data, size=preset.model.image_size)        # a missing folder: says how to make one
    check_classes(ds, splits=("train", "val"))
    train_rows = np.flatnonzero(ds.split == "train")
    val_rows = np.flatnonzero(ds.split == "val")
    train_set = to_tensors(ds.select(train_rows), device)
    val_set = to_tensors(ds.select(val_rows), device)
    return train_set, val_set, [ds.ids[i] for i in train_rows], train_rows


def train(data: str | Path, preset: str | Preset, out: str | Path, epochs: int | None = None, seed: int = 0,
          device=None, progress: bool = True, overrides: dict[str, Any] | None = None, resume: bool = True,
          callback: Callable[[dict], None] | None = None) -> Run:
    """Train IAIA-BL on the prepared dataset ``data`` with ``preset`` (a name or a Preset) into the
    run directory ``out`` (see the module docstring for the schedule and the files).

    epochs: overrides train.epochs; overrides: dotted keys, e.g. {"train.warm_epochs": 1};
    resume: continue from ``out/resume.pt`` if an earlier run with the same settings was
    interrupted (the result is identical to an uninterrupted run on CPU); callback: called with
    {"epoch", "history", "model"} after each epoch's checkpoint. Returns ``load_run(out)``.
    The run seeds the global generators and sets the device's switches (``fastpath.setup``) for its
    own length only: the caller's random state and switches are as they were afterwards.
    """
    preset = resolve_preset(preset, overrides, epochs)
    dev = pick_device(device)
    out = Path(out)
    train_set, val_set, ids, index = _load_splits(data, preset, dev)
    out.mkdir(parents=True, exist_ok=True)
    with fastpath.restore_process_state():                              # the caller's seeds and switches
        with exclusive_lock(out / LOCK_NAME, f"run directory {out}"):  # one trainer per run directory
            remove_stale_tmp(out)                                       # left by a killed run
            _train_locked(data, preset, out, seed, dev, progress, overrides, resume, callback,
                          train_set, val_set, ids, index)
        return load_run(out, device=dev)


def _train_locked(data, preset: Preset, out: Path, seed: int, dev: torch.device, progress: bool,
                  overrides, resume: bool, callback, train_set, val_set, ids, index) -> None:
    """The body of :func:`train`, run while it holds the run directory's lock."""
    run_config = {
        "preset_name": preset.name,
        "preset": preset.to_dict(),
        "data": str(Path(data).resolve()),
        "data_size": stored_image_size(data),     # side of the prepared crops (explain cuts DICOMs alike)
        "seed": int(seed),
        "overrides": dict(overrides or {}),
        "device": str(dev),
        "classes": list(MARGINS),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "torch": torch.__version__,
        "split": split_record(data),            # patients per split: evaluate/explain check leaks
        "complete": False,
    }
    if not resume:
        (out / RESUME_FILE).unlink(missing_ok=True)
    write_config(out, run_config)
    fastpath.setup(dev, seed)
    trainer = Trainer(preset, train_set, val_set, ids, index, out, dev, seed, progress, run_config, callback)
    trainer.run(resume)


def estimate(data: str | Path, preset: str | Preset, epochs: int | None = None, seed: int = 0, device=None,
             overrides: dict[str, Any] | None = None) -> fastpath.RunEstimate:
    """How long ``train(data, preset, ...)`` would take on ``device``, without training: the
    trainer's probe (``fastpath``: fit the batch to the GPU's memory, time
    ``train.estimate_steps`` A1 steps and one evaluation batch on this data set) and nothing else.
    ``RunEstimate.describe()`` says it in words; ``iaiabl train --estimate-only`` prints it. Like
    :func:`train`, it leaves the caller's random state and backend switches as they were."""
    preset = resolve_preset(preset, overrides, epochs)
    if preset.train.estimate_steps <= 0:
        preset = preset.replace({"train.estimate_steps": 3})
    dev = pick_device(device)
    train_set, val_set, ids, index = _load_splits(data, preset, dev)
    with fastpath.restore_process_state():                              # the caller's seeds and switches
        fastpath.setup(dev, seed)
        trainer = Trainer(preset, train_set, val_set, ids, index, Path("."), dev, seed, False, {}, None)
        trainer.use_batch(trainer.probe())
        est = trainer.estimate()
    assert est is not None
    return est
