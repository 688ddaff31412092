"""Before the first epoch: fit the A1 batch to the device's memory and time a few steps for the
run-time estimate (``fastpath``). Functions of a :class:`~iaiabl_lib.train.trainer.Trainer` (``tr``);
the probe restores the weights and uses its own generator, so a run with it is identical to a run
without it (tested)."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import fastpath
from ..predict import similarities
from .checkpoint import clone_state
from .schedule import a1_steps_per_epoch, push_epochs
from .stage_a1 import make_optimizer, make_step, set_stage

__all__ = ["probe", "use_batch", "estimate_left"]


def probe_indices(tr, b: int, f: int, gen: torch.Generator) -> tuple[Tensor, int]:
    """Random rows of the A1 set for a probe batch: b lesion-scale rows, f fine-annotated rows."""
    ts = tr.a1_set
    lesion = torch.randint(len(ts), (b,), device=tr.dev, generator=gen)
    pool = torch.nonzero(ts.has_fine.to(tr.dev)).flatten()
    fine = pool[torch.randint(len(pool), (f,), device=tr.dev, generator=gen)] if f and len(pool) else pool[:0]
    return torch.cat([lesion, fine]), b


def probe(tr) -> tuple[int, int] | None:
    """Fit the A1 batch into the GPU's memory (``train.fit_batch_to_memory``, CUDA) and time
    ``train.estimate_steps`` steps and one evaluation batch on the real data. Runs on the
    model itself with a throw-away optimiser and generator; the weights are restored
    afterwards, so the run is exactly what it would have been without the probe.

    Returns the fitted ``(batch_size, fine_batch_size)`` when the preset's batch did not fit
    (None when it did, or when nothing was fitted); the preset is not changed here, the caller
    passes the result to :func:`use_batch`."""
    t, dev, model = tr.t, tr.dev, tr.model
    fit = t.fit_batch_to_memory and fastpath.fits_batches(dev)
    if not fit and t.estimate_steps <= 0:
        return None
    fitted: tuple[int, int] | None = None
    saved = clone_state(model)
    gen = torch.Generator(device=dev).manual_seed(tr.seed + 2)
    model.train()
    set_stage(model, "joint")
    opt = make_optimizer(model, tr.preset, "joint")
    step = make_step(model, tr.preset, opt, forward=tr.forward)

    def run(b: int, f: int):
        return step(tr.make_batch(*probe_indices(tr, b, f, gen), generator=gen))

    try:
        if fit:
            before = (t.batch_size, tr.fine_batch_size())
            b, f = fastpath.fit_batch(run, *before, dev, log=print)
            if (b, f) != before:
                fitted = (b, f)
                print(f"training with A1 batches of {b} + {f} (the preset's {before[0]} + {before[1]} "
                      f"do not fit in this GPU's memory)")
        if t.estimate_steps > 0:
            size, fine = fitted or (t.batch_size, tr.fine_batch_size())
            if dev.type == "cuda":       # the peak of the timed steps, not of failed fits
                torch.cuda.reset_peak_memory_stats(dev)
            step_s = fastpath.time_calls(lambda: run(size, fine), dev, t.estimate_steps,
                                         warmup=0 if fit else 1)
            peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None
            n = min(len(tr.plain), t.eval_batch_size)
            fwd_s = fastpath.time_calls(lambda: similarities(model, tr.plain.images[:n], t.eval_batch_size),
                                        dev, 1, warmup=1)
            tr.timing = (step_s, n / fwd_s, peak)
    finally:
        model.load_state_dict(saved)
        set_stage(model, "frozen")
        opt.state.clear()            # the throw-away optimiser's moments, before freeing memory
        fastpath.free_memory(dev)
    return fitted


def use_batch(tr, fitted: tuple[int, int] | None) -> None:
    """Train with the A1 batch ``fitted`` by :func:`probe`: a new preset (presets are frozen),
    recorded in the run's config.json beside the preset's own batch."""
    if fitted is None:
        return
    before = (tr.t.batch_size, tr.fine_batch_size())
    b, f = fitted
    values = {"train.batch_size": b}
    if tr.t.use_fine_loss:
        values["train.fine_batch_size"] = f
    tr.preset = tr.preset.replace(values)
    tr.t = tr.preset.train
    tr.run_config["batch_fitted"] = {"preset": list(before), "used": [b, f],
                                       "device": fastpath.device_name(tr.dev)}
    tr.run_config["preset"] = tr.preset.to_dict()


def estimate_left(tr) -> fastpath.RunEstimate | None:
    """The expected wall time of the epochs still to run (after :func:`probe`; None without it)."""
    if tr.timing is None:
        return None
    t = tr.t
    step_s, rate, peak = tr.timing
    left = range(tr.epoch + 1, t.epochs + 1)
    pushes = len(set(push_epochs(t)) & set(left))
    n_plain, n_val = len(tr.plain), len(tr.val)
    steps = len(left) * a1_steps_per_epoch(t, len(tr.a1_set))
    # validation every epoch; per push: the search, A3's caches of train and val, validation;
    # at the end: validation and stage B's pass over the training split
    forward = len(left) * n_val + pushes * (2 * n_plain + 2 * n_val) + (n_plain + n_val)
    return fastpath.RunEstimate(fastpath.device_name(tr.dev), t.batch_size, tr.fine_batch_size(),
                                steps, step_s, forward, rate, None if peak is None else round(peak, 2))
