"""The fast path on a CPU: bf16 autocast agrees with the fp32 reference, the mixed-precision push
returns exact fp32 patches, batch fitting shrinks on out-of-memory, and the trainer's probe and
run-time estimate leave the run unchanged (issue 7; the GPU figures come from benchmarks/)."""
from __future__ import annotations

import json

import pytest
import torch

from iaiabl_lib import fastpath
from iaiabl_lib.config import get_preset
from iaiabl_lib.model import IAIABL, squared_distances
from iaiabl_lib.push import nearest_patches
from iaiabl_lib.train import Batch, load_run, make_optimizer, make_step, set_stage, train


def _batch(n: int, size: int, n_fine: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()
    masks = disc[None, None].repeat(n, 1, 1, 1)
    masks[n - n_fine:] = 1 - masks[n - n_fine:]
    return Batch(images, torch.arange(n) % 3, masks, 0)


@pytest.mark.integration          # the paper preset's VGG-16 in fp32 and bf16 (half a minute)
@pytest.mark.parametrize("preset_name, size, n, amp_dtype", [("tiny", 64, 12, "bf16"), ("paper", 64, 6, "bf16"),
                                                              ("tiny", 64, 12, "fp16")])
def test_mixed_precision_fast_path_agrees_with_fp32_reference(preset_name, size, n, amp_dtype):
    """Issue 7: the loss of the same batch, the fast path (bf16 autocast, or fp16 with a
    GradScaler as on a T4; channels_last) vs the fp32 reference, within bf16 tolerance; the paper
    preset is VGG-16 (random weights) at 64 px."""
    preset = get_preset(preset_name).replace({"model.pretrained": "none", "model.image_size": size,
                                              "train.channels_last": True, "train.amp_dtype": amp_dtype})
    dtype = fastpath.AMP_DTYPES[amp_dtype]
    batch = _batch(n, size, n_fine=2)
    out, grads, dtypes = [], [], []
    for reference in (True, False):
        torch.manual_seed(0)
        model = IAIABL(preset.model)
        set_stage(model, "joint")
        hook = model.add_on.register_forward_hook(lambda m, i, o: dtypes.append(i[0].dtype))
        opt = make_optimizer(model, preset, "joint", reference)
        before = model.prototypes.detach().clone()
        # fp16: start the loss scale low enough that this one compared step is taken (from 2¹⁶ the
        # first steps of a run may be skipped while the scaler calibrates, as loss scaling does)
        step = make_step(model, preset, opt, reference=reference, amp=True, init_scale=2.0 ** 10)
        assert (step.scaler is not None) == (not reference and amp_dtype == "fp16")
        out.append(step(batch))
        hook.remove()
        grads.append(model.prototypes.detach() - before)          # Adam's first update ∝ sign(grad)
    assert dtypes == [torch.float32, dtype]                       # the fast path really ran in bf16/fp16
    ref, fast = out
    for term in ("loss", "ce", "clst", "sep"):
        assert torch.isfinite(fast[term])
        assert float(fast[term]) == pytest.approx(float(ref[term]), rel=1e-2, abs=1e-3), term
    assert float(fast["fine"]) == pytest.approx(float(ref["fine"]), rel=1e-2, abs=1e-4)
    assert not torch.equal(ref["loss"], fast["loss"])           # not the same computation
    agree = (torch.sign(grads[0]) == torch.sign(grads[1])).float().mean()
    assert agree > 0.9, f"only {agree:.2f} of the prototype updates have the same sign"


def test_autocast_dtype_policy(monkeypatch):
    assert fastpath.autocast_dtype(torch.device("cpu")) == torch.bfloat16
    calls = []

    def no_native(including_emulation=True):
        calls.append(including_emulation)
        return including_emulation      # a T4: bf16 only by emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_native)
    assert fastpath.autocast_dtype(torch.device("cuda")) == torch.float16
    assert calls == [False]             # native support asked for, not emulation
    assert fastpath.needs_scaler(torch.float16) and not fastpath.needs_scaler(torch.bfloat16)
    assert fastpath.autocast_dtype(torch.device("cuda"), "bf16") == torch.bfloat16   # forced
    with pytest.raises(ValueError, match="train.amp_dtype 'fp8'"):
        fastpath.autocast_dtype(torch.device("cpu"), "fp8")


def test_mixed_precision_push_returns_exact_fp32_patches():
    torch.manual_seed(0)
    model = IAIABL(get_preset("tiny").model).eval()
    images = torch.randn(24, 3, 64, 64)
    labels = torch.arange(3).repeat(8)
    exact = nearest_patches(model, images, labels, batch_size=7)
    mixed = nearest_patches(model, images, labels, batch_size=7, autocast=torch.bfloat16)
    with torch.no_grad():
        z = model.features(images)                                            # (24, C, 8, 8)
        d = squared_distances(z, model.prototypes)                             # (24, m, 8, 8)
    zf = z.flatten(2)
    for j in range(model.num_prototypes):
        i, p = int(mixed.image[j]), int(mixed.patch[j])
        assert int(labels[i]) == int(model.prototype_class[j])
        assert torch.equal(mixed.vector[j], zf[i, :, p])                      # the fp32 patch itself
        assert float(mixed.sq_distance[j]) == pytest.approx(float(d[i, j].flatten()[p]), rel=1e-4, abs=1e-5)
        # the bf16 search found the fp32 minimum up to bf16 rounding of the distances
        assert float(mixed.sq_distance[j]) <= float(exact.sq_distance[j]) * (1 + 2e-2) + 1e-3
    assert (mixed.image == exact.image).float().mean() >= 0.8


def test_fit_batch_shrinks_until_a_step_fits():
    tried, log = [], []

    def step(b, f):
        tried.append((b, f))
        if b > 30:
            raise torch.OutOfMemoryError("CUDA out of memory")
    b, f = fastpath.fit_batch(step, 75, 10, torch.device("cpu"), log=log.append)
    assert tried == [(75, 10), (56, 7), (42, 5), (31, 4), (23, 3)] and (b, f) == (23, 3)
    assert len(log) == 4 and "does not fit" in log[0] and "trying 56 + 7" in log[0]
    assert fastpath.fit_batch(step, 20, 0, torch.device("cpu"), log=log.append) == (20, 0)

    def never(b, f):
        raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(RuntimeError, match=r"batch 8 \+ 1 does not fit .* smaller image size"):
        fastpath.fit_batch(never, 75, 10, torch.device("cpu"), log=log.append)


def test_run_estimate_is_recorded_and_the_probe_changes_nothing(prepared, tiny_run, tmp_path):
    """config.json carries the estimate made before training and the measured wall time; a run
    without the probe is identical to the one with it (the probe restores the weights and uses its
    own generator)."""
    from test_train import RUN_KW, _same_run

    cfg = json.loads((tiny_run / "config.json").read_text())
    est = cfg["estimate"]
    n_a1, batch = cfg["n_train"], cfg["preset"]["train"]["batch_size"]
    assert est["a1_steps"] == RUN_KW["epochs"] * -(-n_a1 // batch)
    assert est["step_seconds"] > 0 and est["forward_images_per_second"] > 0 and est["seconds"] > 0
    assert est["forward_images"] == 4 * cfg["n_val"] + 2 * (2 * n_a1 + 2 * cfg["n_val"]) + n_a1 + cfg["n_val"]
    assert cfg["wall_seconds"] > 0 and cfg["started_at_epoch"] == 0
    assert "estimated training time on CPU" in fastpath.RunEstimate(**{k: v for k, v in est.items()
                                                                        if k != "seconds"}).describe()
    kw = dict(RUN_KW, overrides=dict(RUN_KW["overrides"], **{"train.estimate_steps": 0}))
    train(prepared, "tiny", tmp_path / "no_probe", **kw)
    assert "estimate" not in load_run(tmp_path / "no_probe").config
    _same_run(tiny_run, tmp_path / "no_probe")


def test_format_seconds():
    assert fastpath.format_seconds(42) == "42 s"
    assert fastpath.format_seconds(600) == "10.0 min"
    assert fastpath.format_seconds(3 * 3600 + 20 * 60) == "3 h 20 min"


@pytest.mark.integration          # runs the benchmark script (about a minute on 2 cores)
def test_train_step_benchmark_cpu_smoke():
    """benchmarks/train_step.py --device cpu --size 64 (the issue's smoke command): last line JSON."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--size", "64"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("fast_img_per_s", "reference_img_per_s", "push_img_per_s", "estimated_recipe_s"):
        assert result[key] > 0, key
    assert result["speedup"] == pytest.approx(result["fast_img_per_s"] / result["reference_img_per_s"], rel=2e-2)
    assert "reference path" in proc.stdout and "push (batched nearest-patch search" in proc.stdout


def test_trainer_fits_its_batch_to_memory_and_records_it(prepared, tmp_path, monkeypatch, capsys):
    """A GPU whose memory holds at most 17 images per step (simulated on the CPU): the trainer
    shrinks the tiny preset's 24 + 8 by quarters to 13 + 4 before the first epoch, says so, trains
    with it, records it in config.json, and a rerun in the same directory resumes (the fitted
    batch is part of the settings the resume check compares)."""
    import iaiabl_lib.train.probe as probe_mod        # the probe's own reference to make_step
    import iaiabl_lib.train.trainer as train_mod      # the loop's own reference to make_step
    from test_train import RUN_KW

    real_make_step = train_mod.make_step

    def small_gpu_make_step(model, preset, optimizer, **kw):
        step = real_make_step(model, preset, optimizer, **kw)

        def limited(batch):
            if batch.images.shape[0] > 17:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return step(batch)
        limited.scaler = step.scaler
        return limited

    monkeypatch.setattr(fastpath, "fits_batches", lambda device: True)
    monkeypatch.setattr(train_mod, "make_step", small_gpu_make_step)
    monkeypatch.setattr(probe_mod, "make_step", small_gpu_make_step)
    out = tmp_path / "run"
    stop = {"after": 2}

    def interrupt(info):
        if info["epoch"] == stop["after"]:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(prepared, "tiny", out, callback=interrupt, **RUN_KW)
    printed = capsys.readouterr().out
    assert "batch 24 + 8 does not fit" in printed and "trying 18 + 6" in printed and "13 + 4" in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["batch_fitted"]["preset"] == [24, 8] and cfg["batch_fitted"]["used"] == [13, 4]
    assert cfg["preset"]["train"]["batch_size"] == 13 and cfg["estimate"]["batch_size"] == 13
    run = train(prepared, "tiny", out, **RUN_KW)
    assert run.config["started_at_epoch"] == 2 and run.config["complete"]
    assert run.preset.train.batch_size == 13 and run.preset.train.fine_batch_size == 4


def test_estimate_only(prepared, tmp_path, capsys, monkeypatch):
    """``train.estimate`` / ``iaiabl train --estimate-only``: the probe without the training."""
    from iaiabl_lib.cli import main
    from iaiabl_lib.train import estimate

    monkeypatch.chdir(tmp_path)
    est = estimate(prepared, "tiny", device="cpu")
    preset = get_preset("tiny")
    assert est.a1_steps % preset.train.epochs == 0 and est.a1_steps > 0
    assert est.batch_size == 24 and est.fine_batch_size == 8 and est.seconds > 0
    assert main(["train", "--data", str(prepared), "--preset", "tiny", "--device", "cpu", "--epochs", "10",
                 "--estimate-only"]) == 0
    printed = capsys.readouterr().out
    assert "estimated training time on CPU" in printed and f"{est.a1_steps * 10 // preset.train.epochs} A1 steps" in printed
    assert not list(tmp_path.iterdir())          # nothing written
    assert main(["train", "--data", str(prepared), "--preset", "tiny"]) == 2
    assert "--out is required" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_step_loop_never_waits_for_the_gpu():
    """Issue 7: no host synchronisation inside the A1 step loop (augmentation, forward, five loss
    terms, backward, fused Adam), checked by CUDA's sync debug mode, which raises on any sync."""
    from iaiabl_lib.data.dataset import augment_batch

    dev = torch.device("cuda")
    preset = get_preset("tiny")
    torch.manual_seed(0)
    model = IAIABL(preset.model).to(dev)
    set_stage(model, "joint")
    step = make_step(model, preset, make_optimizer(model, preset, "joint"), amp=True)
    batch = _batch(12, 64, n_fine=2)
    images, masks, labels = batch.images.to(dev), batch.relevant_mask.to(dev), batch.labels.to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)

    def one():
        x, m = augment_batch(images, masks, gen)
        return step(Batch(x, labels, m, 0))

    one()                                   # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            out = one()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out["loss"]).item()
