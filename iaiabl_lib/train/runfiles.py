"""The end of a run: the best pushed model, pruning (and A3 again), stage B, and the run files
(``rundir``: model.pt, push.json/.npz, prune.json, malignancy.json, history.csv, config.json last).
A function of a :class:`~iaiabl_lib.train.trainer.Trainer` (``tr``)."""
from __future__ import annotations

import time

import torch

from ..atomic import atomic_savez, atomic_write_json
from ..predict import similarities
from ..prune import prune_duplicates
from ..push import select as select_push
from ..rundir import RESUME_FILE, save_state, write_config, write_history
from .stage_b import fit_malignancy_head

__all__ = ["finish"]


def finish(tr, t_start: float | None = None) -> None:
    """Best pushed model → prune → (A3) → stage B → the run files; the resume file goes.
    ``t_start``: when ``run`` began (config.json's ``wall_seconds``, to set against the estimate)."""
    t, model, best = tr.t, tr.model, tr.best
    assert best is not None, "no pushed model (push_epochs always includes the last epoch)"
    tr.epoch = t.epochs
    model.load_state_dict(best["state"])
    records, arrays = best["push"], best["push_arrays"]
    if t.prune_duplicates:
        t0 = time.perf_counter()
        report = prune_duplicates(model, records, t.prune_tolerance)
        records, arrays = select_push(records, arrays, report["kept"])
        if report["after"] < report["before"]:
            tr.row("prune", t0, val_auroc=tr.val_auroc())
            tr.last_layer()
    else:
        m = model.num_prototypes
        report = {"before": m, "after": m, "merged": [], "kept": list(range(m)),
                  "prototype_class": model.prototype_class.tolist(), "enabled": False}
    report["best_epoch"] = best["epoch"]
    # how far each prototype (original numbering) was from every training patch before the
    # selected push projected it: prototypes that had drifted away from all patches ("dead")
    # are the ones that land on the same patch and merge (chapter 7)
    report["sq_distance_before_push"] = [float(r["sq_distance"]) for r in best["push"]]
    val_auc = tr.val_auroc()
    tr.log(f"prune: {report['before']} → {report['after']} prototypes; "
              f"validation average margin AUROC {val_auc:.3f} (pushed model of epoch {best['epoch']})")
    # stage B on the frozen margin logits of the training split
    with torch.no_grad():
        logits = model.margin_head(similarities(model, tr.plain.images, t.eval_batch_size)).cpu().numpy()
    malignancy = fit_malignancy_head(model, logits, tr.plain.malignant.cpu().numpy(), tr.seed)
    tr.log("stage B, malignancy head h2 (Eq. 10):\n" + malignancy["equation"])
    config = dict(tr.run_config, num_prototypes=model.num_prototypes,
                  prototype_class=model.prototype_class.tolist(), best_epoch=best["epoch"],
                  val_average_margin_auroc=val_auc, complete=True)
    if t_start is not None:
        config["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    out = tr.out
    # config.json (written last) keeps model.pt's size and hash: rundir.check_run
    config["model_pt"] = save_state({k: v.detach().cpu() for k, v in model.state_dict().items()},
                                    out / "model.pt")
    atomic_write_json(out / "push.json", records)
    atomic_savez(out / "push.npz", **arrays)
    atomic_write_json(out / "prune.json", report)
    atomic_write_json(out / "malignancy.json", malignancy)
    write_history(out / "history.csv", tr.history)
    write_config(out, config)
    (out / RESUME_FILE).unlink(missing_ok=True)
