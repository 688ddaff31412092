"""Training stages, run files, determinism, exact resume, safe checkpoints and clear errors."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from iaiabl_lib.config import MARGINS, get_preset, resolve_preset
from iaiabl_lib.data.dataset import TensorSet, load_prepared, save_prepared, to_tensors
from iaiabl_lib.model import IAIABL
from iaiabl_lib.prune import prune_duplicates
from iaiabl_lib.train import (HISTORY_COLUMNS, Batch, CheckpointError, add_cli, average_margin_auroc, make_batch,
                              fit_malignancy_head, load_run, load_state, make_optimizer, make_step, pick_device,
                              predict, push_epochs, resolve_preset, save_state, set_stage, train,
                              train_last_layer, train_step)
from iaiabl_lib.errors import InputError
from iaiabl_lib.rundir import RunError, file_digest

# the tiny_run fixture's arguments (tests/conftest.py): runs compared with it must use the same
RUN_KW = dict(epochs=4, seed=0, device="cpu", progress=False,
              overrides={"train.warm_epochs": 1, "train.push_start": 2, "train.push_every": 2,
                         "train.last_layer_epochs": 3})


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _same_run(dir_a, dir_b) -> None:
    _states_equal(load_state(dir_a / "model.pt"), load_state(dir_b / "model.pt"))
    for name in ("push.json", "prune.json", "malignancy.json"):
        assert json.loads((dir_a / name).read_text()) == json.loads((dir_b / name).read_text()), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(load_run(dir_a).history) == strip(load_run(dir_b).history)


# ---------------------------------------------------------------------------------------------
# small in-memory data
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def toy_set() -> TensorSet:
    g = torch.Generator().manual_seed(0)
    n, s = 12, 64
    masks = (torch.rand(n, 1, s, s, generator=g) > 0.5).float()
    return TensorSet(images=torch.randn(n, 3, s, s, generator=g), lesion_masks=masks, fine_masks=1 - masks,
                     has_fine=torch.arange(n) % 2 == 0, labels=torch.arange(3).repeat(4),
                     malignant=torch.arange(n) % 2)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _moved(model, before) -> set[str]:
    return {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("stage, expected", [("warm", {"add_on", "prototypes"}),
                                             ("joint", {"backbone", "add_on", "prototypes"})])
def test_a1_stages_train_only_their_parameters(toy_set, stage, expected):
    torch.manual_seed(0)
    preset = get_preset("tiny")
    model = IAIABL(preset.model)
    set_stage(model, stage)
    opt = make_optimizer(model, preset, stage)
    before = _snapshot(model)
    batch = Batch(toy_set.images, toy_set.labels, toy_set.lesion_masks, 0)
    terms = train_step(model, preset, opt, batch)
    assert set(terms) == {"ce", "clst", "sep", "fine", "loss", "margin_logits"}
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert float(terms["fine"]) > 0
    assert _moved(model, before) == expected       # warm: backbone frozen; both: h1 and h2 fixed


def test_last_layer_trains_only_h1_and_stage_b_only_h2(toy_set):
    torch.manual_seed(0)
    preset = get_preset("tiny")
    model = IAIABL(preset.model)
    before = _snapshot(model)
    rows = []
    auc = train_last_layer(model, preset, toy_set, toy_set, torch.Generator().manual_seed(0), epochs=2,
                           on_epoch=rows.append)
    assert _moved(model, before) == {"margin_head"}
    assert len(rows) == 2 and set(rows[0]) == {"ce", "l1", "loss", "train_auroc", "val_auroc", "lr"}
    assert 0 <= auc <= 1
    before = _snapshot(model)
    logits = predict(model, toy_set)["margin_logits"]
    logits[:, 2] += toy_set.malignant.numpy()       # an untrained h1 says little: give h2 a signal to fit
    report = fit_malignancy_head(model, logits, toy_set.malignant.numpy())
    assert _moved(model, before) == {"malignancy_head"}
    assert model.malignancy_head.weight[0].tolist() == pytest.approx(list(report["coefficients"].values()))
    assert float(model.malignancy_head.bias) == pytest.approx(report["offset"])
    assert report["equation"].startswith("P(malignant) = σ(") and "spiculated" in report["equation"]


def test_reference_and_fast_step_agree_on_cpu(toy_set):
    """On the CPU the fast path has nothing to switch on except channels_last: same numbers."""
    preset = get_preset("tiny").replace({"train.channels_last": True})
    out = []
    for reference in (True, False):
        torch.manual_seed(0)
        model = IAIABL(preset.model)
        set_stage(model, "joint")
        step = make_step(model, preset, make_optimizer(model, preset, "joint", reference), reference=reference)
        out.append(step(Batch(toy_set.images, toy_set.labels, toy_set.fine_masks[6:], 6)))
    assert torch.allclose(out[0]["loss"], out[1]["loss"], rtol=1e-4)


def test_average_margin_auroc():
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert average_margin_auroc(labels, np.eye(3)[labels] * 5) == 1.0
    assert np.isnan(average_margin_auroc(np.array([0, 1, 0]), np.zeros((3, 3))))


def test_push_schedule():
    tiny = get_preset("tiny")
    t = tiny.replace({"train.epochs": 16, "train.push_start": 8, "train.push_every": 8}).train
    assert push_epochs(t) == [8, 16]
    t = tiny.replace({"train.epochs": 10, "train.push_start": 3, "train.push_every": 4}).train
    assert push_epochs(t) == [3, 7, 10]        # the last epoch is always pushed


def test_presets_are_frozen_and_overrides_make_new_ones():
    """Issue 15: nothing changes a preset in place; ``replace``/``resolve_preset`` return new ones."""
    import dataclasses

    tiny = get_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.train.batch_size = 3
    bigger = tiny.replace({"train.batch_size": 48})
    assert (bigger.train.batch_size, tiny.train.batch_size) == (48, 24)
    assert bigger.model is tiny.model                       # untouched sections are shared, not copied
    parsed = resolve_preset(tiny, {"train.batch_size": "12", "model.topk": "none"})
    assert (parsed.train.batch_size, parsed.model.topk, tiny.model.topk) == (12, None, 3)
    with pytest.raises(ValueError, match="TrainConfig has no field 'batchsize'"):
        resolve_preset("tiny", {"train.batchsize": "x"})


def test_paper_schedule_in_steps_matches_the_paper_and_the_authors_code():
    """An epoch of the paper preset is 15 000 images (5000 per class) whatever the data set's size:
    200 A1 steps of 75 + 10, 50 epochs (the paper's text), warm-up 10 epochs, pushes after epochs
    11, 21, 31, 41 (the authors' code: 0-based 10, 20, ...) and the last one, 2000 A3 steps each."""
    from iaiabl_lib.train.schedule import AUTHORS_CODE, schedule_table, steps_per_stage

    s = steps_per_stage(get_preset("paper"), n_train=1100)
    assert (s["epoch_images"], s["a1_steps_per_epoch"], s["a1_steps"]) == (15000, 200, 10000)
    assert s["push_epochs"] == [11, 21, 31, 41, 50] and s["a3_steps_per_push"] == 2000
    assert s["warm_epochs"] == AUTHORS_CODE["warm_epochs"] and s["lr_decay_every_steps"] == 1000
    tiny = steps_per_stage(get_preset("tiny"), n_train=266)     # one pass over the split
    assert (tiny["epoch_images"], tiny["a1_steps_per_epoch"]) == (266, 12)
    table = schedule_table(get_preset("paper"), 1100)
    assert "| A1 steps in all | 10000 | 10000 | 26000 |" in table


def test_make_batch_masks_follow_the_preset(toy_set):
    """The public batching function: IAIA-BL masks every row (lesion then fine); ProtoPNet none;
    IAIA-BL without lesion masks only the fine rows (mask_start = the lesion-batch size)."""
    idx = torch.arange(6)
    for name, overrides, start, rows in (("tiny", {}, 0, 6), ("tiny-protopnet", {}, 4, None),
                                         ("tiny", {"train.use_lesion_masks": False}, 4, 2)):
        preset = resolve_preset(name, dict(overrides, **{"train.augment": False}))
        b = make_batch(toy_set, idx, 4, preset)
        assert b.images.shape[0] == 6 and b.mask_start == start
        assert (b.relevant_mask is None) if rows is None else (b.relevant_mask.shape[0] == rows)
    b = make_batch(toy_set, idx, 4, resolve_preset("tiny", {"train.augment": False}))
    assert torch.equal(b.relevant_mask[:4], toy_set.lesion_masks[:4])
    assert torch.equal(b.relevant_mask[4:], toy_set.fine_masks[4:6])


def test_make_batch_context_swap_keeps_every_lesion(toy_set):
    """train.context_swap (not the paper): with p = 1 the pixels around each mass come from another
    row and the lesion's pixels are the row's own, with or without the augmentation; it needs the
    lesion masks."""
    masks = torch.zeros_like(toy_set.lesion_masks)
    masks[:, :, 24:40, 24:40] = 1                                               # a mass in the middle
    toy_set = dataclasses.replace(toy_set, lesion_masks=masks, fine_masks=masks)
    idx = torch.arange(6)
    plain = make_batch(toy_set, idx, 4, resolve_preset("tiny", {"train.augment": False}))
    swapped = make_batch(toy_set, idx, 4, resolve_preset("tiny", {"train.augment": False, "train.context_swap": 1}),
                         torch.Generator().manual_seed(0))
    lesion = toy_set.lesion_masks[idx][:, 0] > 0                                 # (6, S, S)
    assert torch.equal(swapped.images.permute(1, 0, 2, 3)[:, lesion], plain.images.permute(1, 0, 2, 3)[:, lesion])
    assert not torch.equal(swapped.images, plain.images)
    assert torch.equal(swapped.relevant_mask, plain.relevant_mask)              # the masks are the rows' own
    # with the augmentation on, the swap comes after it and keeps each row's warped lesion
    aug = make_batch(toy_set, idx, 4, resolve_preset("tiny", {}), torch.Generator().manual_seed(1))
    aug_swapped = make_batch(toy_set, idx, 4, resolve_preset("tiny", {"train.context_swap": 1}),
                             torch.Generator().manual_seed(1))
    warped = aug.lesion_masks[:, 0] > 0                                         # (6, S, S), the same warp
    assert warped.any() and torch.equal(aug_swapped.lesion_masks, aug.lesion_masks)
    assert torch.equal(aug_swapped.images.permute(1, 0, 2, 3)[:, warped], aug.images.permute(1, 0, 2, 3)[:, warped])
    assert not torch.equal(aug_swapped.images, aug.images)
    # the lesion masks ride along for the swap, but the batch carries them only for the lesion pull
    no_pull = make_batch(toy_set, idx, 4, resolve_preset("tiny", {"train.context_swap": 1, "loss.remember": 0}),
                         torch.Generator().manual_seed(1))
    assert no_pull.lesion_masks is None and torch.equal(no_pull.images, aug_swapped.images)
    with pytest.raises(ValueError, match="context_swap"):
        resolve_preset("tiny", {"train.context_swap": 2})
    with pytest.raises(ValueError, match="needs the lesion masks"):
        resolve_preset("tiny", {"train.context_swap": 1, "train.use_lesion_masks": False})


def test_resolve_preset_overrides():
    p = resolve_preset("tiny", {"train.warm_epochs": "0", "loss.fine": 0, "train.amp": "false"}, epochs=3)
    assert (p.train.warm_epochs, p.loss.fine, p.train.amp, p.train.epochs) == (0, 0, False, 3)
    with pytest.raises(ValueError, match="has no field 'warm'"):
        resolve_preset("tiny", {"train.warm": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("huge")


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


def test_cli_registration():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", "D", "--preset", "tiny-protopnet", "--out", "R", "--epochs", "3",
                              "--seed", "1", "--device", "cpu", "--no-resume", "--set", "train.warm_epochs=1"])
    assert (args.data, args.preset, args.out, args.epochs, args.seed, args.no_resume) == \
        ("D", "tiny-protopnet", "R", 3, 1, True)
    assert args.func.__name__ == "run_cli"


# ---------------------------------------------------------------------------------------------
# whole runs on the shared prepared dataset
# ---------------------------------------------------------------------------------------------


def test_run_files(tiny_run, prepared):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.pt", "push.json", "push.npz", "prune.json", "malignancy.json",
            "history.csv"} <= names
    assert "resume.pt" not in names
    run = load_run(tiny_run)
    assert not run.model.training
    assert list(run.history[0]) == list(HISTORY_COLUMNS)
    stages = [r["stage"] for r in run.history]
    assert stages[:2] == ["warm", "joint"] and stages.count("push") == 2
    # the tiny preset's lesion pull (loss.remember, not the paper) has its own column
    a1 = [r for r in run.history if r["stage"] in ("warm", "joint")]
    assert all(r["remember"] is not None and r["remember"] >= 0 for r in a1)
    assert stages.count("last_layer") >= 6
    assert run.prune["before"] == 15 and run.prune["after"] == run.model.num_prototypes == len(run.push)
    assert run.config["prototype_class"] == run.model.prototype_class.tolist()
    assert run.malignancy["equation"].startswith("P(malignant) = σ(")
    assert run.model.malignancy_head.weight[0].tolist() == \
        pytest.approx([run.malignancy["coefficients"][m] for m in MARGINS])
    assert 0 <= run.config["val_average_margin_auroc"] <= 1
    assert run.push_arrays["self_activation"].shape == (run.model.num_prototypes, 64, 64)
    # each prototype is the latent patch its push record names, of a training image of its class
    ds = load_prepared(prepared, size=64)
    src = np.array([r["source_index"] for r in run.push])
    assert set(ds.split[src]) == {"train"}
    assert ds.labels[src].tolist() == run.model.prototype_class.tolist()
    with torch.no_grad():
        z = run.model.features(to_tensors(ds.select(src)).images)             # (m, C, H, W)
    for j, rec in enumerate(run.push):
        row, col = rec["patch"]
        assert torch.allclose(run.model.prototypes[j], z[j, :, row, col], atol=1e-5)


def test_determinism_and_load_run_round_trip(tiny_run, prepared, tmp_path):
    run = train(prepared, "tiny", tmp_path / "again", **RUN_KW)
    _same_run(tiny_run, tmp_path / "again")
    # load_run round trip: the same predictions, bit for bit
    val = to_tensors(load_prepared(prepared, size=64).subset("val"))
    a, b = predict(run.model, val), predict(load_run(tiny_run).model, val)
    assert a.keys() == {"margin_logits", "margin_prob", "malignancy_prob", "similarity", "similarity_maps"}
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    m = run.model.num_prototypes
    assert a["similarity"].shape == (len(val), m) and a["similarity_maps"].shape == (len(val), m, 8, 8)


def test_interrupted_run_resumes_to_the_same_result(tiny_run, prepared, tmp_path):
    out = tmp_path / "interrupted"

    def stop_after_3(info):
        if info["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared, "tiny", out, callback=stop_after_3, **RUN_KW)
    assert (out / "resume.pt").is_file() and not (out / "model.pt").exists()
    with pytest.raises(FileNotFoundError, match="re-run the same"):
        load_run(out)
    epochs_seen = []
    train(prepared, "tiny", out, callback=lambda info: epochs_seen.append(info["epoch"]), **RUN_KW)
    assert epochs_seen == [4]                  # resumed after epoch 3
    assert not (out / "resume.pt").exists()
    _same_run(tiny_run, out)


class Evil:
    """Any class: pickling an instance makes the checkpoint a pickle, not a state dict."""


def test_checkpoint_with_a_pickled_object_is_refused(tiny_run, tmp_path):
    run_dir = tmp_path / "tampered"
    shutil.copytree(tiny_run, run_dir)
    state = load_state(run_dir / "model.pt")
    state["extra"] = Evil()
    torch.save(state, run_dir / "model.pt")
    # config.json's digest no longer matches: refused before the file is unpickled at all
    with pytest.raises(RunError, match=r"model\.pt is not the model\.pt this run wrote"):
        load_run(run_dir)
    # a tamperer who also rewrites the digest: the unpickler still refuses, in our words
    config = json.loads((run_dir / "config.json").read_text())
    config["model_pt"] = file_digest(run_dir / "model.pt")
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.pt: refusing to load it: it carries a pickled Python "
                                              r"object \(it references [\w.]*Evil\)") as refused:
        load_run(run_dir)
    assert "weights_only" not in str(refused.value)     # not torch's hint to load it unsafely


def test_pruned_model_round_trip(tiny_run, prepared, tmp_path):
    run_dir = tmp_path / "pruned"
    shutil.copytree(tiny_run, run_dir)
    run = load_run(run_dir)
    model = run.model
    pclass = model.prototype_class.tolist()
    pairs = [(i, j) for i in range(len(pclass)) for j in range(i + 1, len(pclass)) if pclass[i] == pclass[j]]
    assert pairs, f"the tiny run kept no two prototypes of one class: {pclass}"
    i, j = pairs[0]
    with torch.no_grad():
        model.prototypes[j] = model.prototypes[i]
    records = [dict(r) for r in run.push]
    records[j].update(source_index=records[i]["source_index"], patch=records[i]["patch"])
    report = prune_duplicates(model, records, 1e-6)
    assert report["after"] == run.model.num_prototypes == len(run.push) - 1
    digest = save_state(model.state_dict(), run_dir / "model.pt")
    config = dict(run.config, prototype_class=model.prototype_class.tolist(),
                  num_prototypes=model.num_prototypes, model_pt=digest)
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=f"disagree on the number of prototypes.*push.json {len(run.push)}"):
        load_run(run_dir)                   # push.json still lists the merged prototype
    (run_dir / "push.json").write_text(json.dumps([records[k] for k in report["kept"]]))
    val = to_tensors(load_prepared(prepared, size=64).subset("val"))
    again = load_run(run_dir)
    assert again.model.num_prototypes == model.num_prototypes
    a, b = predict(model, val), predict(again.model, val)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_wrong_shape_input_is_refused(tiny_run):
    model = load_run(tiny_run).model
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, S, S\)"):
        predict(model, torch.zeros(2, 1, 64, 64))


def test_dataset_missing_a_class_is_refused(prepared, tmp_path):
    ds = load_prepared(prepared)
    keep = ~((ds.split == "val") & (ds.labels == 2))
    part = ds.select(keep)
    out = tmp_path / "no_spiculated_val"
    out.mkdir()
    save_prepared(out, part.manifest, part.images, part.lesion_masks, part.fine_masks, part.summary)
    with pytest.raises(ValueError, match="split 'val' has no 'spiculated' example"):
        train(out, "tiny", tmp_path / "run", **RUN_KW)


def test_missing_data_dir_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="data directory .* not found"):
        train(tmp_path / "nowhere", "tiny", tmp_path / "run", **RUN_KW)


def test_push_to_pull_fades_under_the_group_norm_and_touches_nothing(toy_set):
    """train.push_to_pull: Eq. 7's push against the cross entropy's pull per prototype. On a
    prototype moved far from every patch the group norm's push is smaller than the printed
    per-prototype norm's; the model's parameters, gradients and requires_grad are left alone."""
    from iaiabl_lib.train import push_to_pull

    preset = get_preset("tiny").replace({"train.augment": False})
    torch.manual_seed(0)
    model = IAIABL(dataclasses.replace(preset.model, pretrained="none"))
    with torch.no_grad():
        model.prototypes[0] += 2.0
    model.prototypes.requires_grad_(False)
    before = _snapshot(model)
    batch = make_batch(toy_set, torch.arange(12), 8, preset)
    ratios = {norm: push_to_pull(model, batch, preset.replace({"loss.fine_norm": norm}))
              for norm in ("group", "prototype")}
    assert ratios["group"].shape == (15,) and torch.isfinite(ratios["group"]).all()
    assert float(ratios["group"][0]) < float(ratios["prototype"][0])
    assert not model.prototypes.requires_grad and model.prototypes.grad is None
    assert not _moved(model, before)


def test_lesion_pull_is_off_without_lesion_masks(toy_set):
    """loss.remember uses the lesion masks: with train.use_lesion_masks off (the model without
    annotation, ProtoPNet) the batch carries none and the objective has no pull."""
    preset = get_preset("tiny").replace({"train.augment": False})
    with_masks = make_batch(toy_set, torch.arange(12), 8, preset)
    assert with_masks.lesion_masks is not None and with_masks.lesion_masks.shape == (12, 1, 64, 64)
    without = make_batch(toy_set, torch.arange(12), 8, preset.replace({"train.use_lesion_masks": False,
                                                                         "train.use_fine_loss": False}))
    assert without.lesion_masks is None
    assert get_preset("tiny-protopnet").loss.remember == 0.0


def test_validation_on_another_data_set_changes_the_selection_not_the_training(tiny_run, prepared, tmp_path):
    """``train(..., val_data=)`` validates and selects on another prepared copy of the same cases
    (here: the val crops inverted, as a marker-free copy changes only pixels): every A1 step is the
    same as without it, the validation figures are not, and the run says which data it selected on.
    A copy that does not hold the same val cases is refused before training starts."""
    other = tmp_path / "val-copy"
    shutil.copytree(prepared, other)
    ds = load_prepared(prepared, size=64)
    images = np.load(other / "images.npy")
    val_rows = np.flatnonzero(ds.split == "val")
    images[val_rows] = 255 - images[val_rows]
    np.save(other / "images.npy", images)
    run = train(prepared, "tiny", tmp_path / "mf", val_data=other, **RUN_KW)
    base = load_run(tiny_run)
    a1 = lambda h: [(r["epoch"], r["stage"], r["loss"]) for r in h if r["stage"] in ("warm", "joint")]  # noqa: E731
    assert a1(run.history) == a1(base.history)
    assert [r["val_auroc"] for r in run.history] != [r["val_auroc"] for r in base.history]
    assert run.config["val_data"] == str(other.resolve())
    assert "val_data" not in base.config

    # other cases in the val split: refused, naming the option and both data sets
    relabelled = tmp_path / "other-split"
    shutil.copytree(prepared, relabelled)
    manifest = (relabelled / "manifest.csv").read_text().splitlines()
    header = manifest[0].split(",")
    col = header.index("split")
    rows = [line.split(",") for line in manifest[1:]]
    first_train = next(i for i, r in enumerate(rows) if r[col] == "train")
    rows[first_train][col] = "val"
    (relabelled / "manifest.csv").write_text("\n".join([manifest[0]] + [",".join(r) for r in rows]) + "\n")
    with pytest.raises(InputError, match="--val-data .*does not hold the same cases"):
        train(prepared, "tiny", tmp_path / "bad", val_data=relabelled, **RUN_KW)
    assert not (tmp_path / "bad" / "model.pt").exists()
