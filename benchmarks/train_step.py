"""Benchmark: the paper-configuration training step on the fast path vs a plain fp32 reference.

Not a test. In one run it times
  1. the stage-A1 joint step (VGG-16 at --size px, a batch of 75 lesion-scale + 10 fine-annotated
     images, on-device augmentation, CE + cluster + separation + fine-annotation on lesion and fine
     masks; h1 is fixed in A1, so the L1 term of A3 is not part of this step) on the FAST path
     (bf16 autocast, channels_last, fused Adam, cuDNN autotuning, optional torch.compile) and on
     the REFERENCE path (fp32, contiguous, plain Adam) of the same code (iaiabl_lib.train.make_step);
  2. the push (stage A2): the batched nearest-patch search over a training set, images/s;
  3. optionally (--short-run) the wall time of a short paper-preset run on synthetic data
     (synth → prepare → train), and an estimate of the full recipe from the measured rates.
The last line of output is JSON with at least fast_img_per_s, reference_img_per_s, speedup.

    python benchmarks/train_step.py                        # on CUDA if present
    python benchmarks/train_step.py --device cpu --size 64 # CPU smoke test, under a minute
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib import fastpath  # noqa: E402
from iaiabl_lib.config import get_preset  # noqa: E402
from iaiabl_lib.data.dataset import augment_batch  # noqa: E402
from iaiabl_lib.push import nearest_patches  # noqa: E402
from iaiabl_lib.train import Batch, build_model, make_optimizer, make_step, pick_device, set_stage  # noqa: E402


def synthetic_tensors(n: int, size: int, dev: torch.device, seed: int = 0):
    """A random training set held on the device: images (N, 3, S, S), masks (N, 1, S, S), labels."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(n, 1, size, size, generator=g).repeat(1, 3, 1, 1).to(dev)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2).float()
    lesion = disc[None, None].repeat(n, 1, 1, 1).to(dev)
    ring = (disc - (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 5) ** 2).float())
    fine = ring[None, None].repeat(n, 1, 1, 1).to(dev)
    labels = torch.randint(0, 3, (n,), generator=g).to(dev)
    return images, lesion, fine, labels


def time_steps(preset, reference: bool, dev, data, batch: int, fine_batch: int, steps: int, warmup: int,
               compile_model: bool) -> float:
    """Images per second of the A1 joint step (augmentation included) on one path."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(preset).to(dev)
    model.train()
    set_stage(model, "joint")
    opt = make_optimizer(model, preset, "joint", reference=reference)
    fwd = torch.compile(model) if (compile_model and not reference) else None
    step = make_step(model, preset, opt, reference=reference, forward=fwd)
    images, lesion, fine, labels = data
    n = images.shape[0]
    gen = torch.Generator(device=dev).manual_seed(0)

    def one():
        idx = torch.randint(0, n, (batch + fine_batch,), device=dev, generator=gen)
        masks = torch.cat([lesion[idx[:batch]], fine[idx[batch:]]])
        x, m = augment_batch(images[idx], masks, gen)
        return step(Batch(x, labels[idx], m, 0))

    rate = (batch + fine_batch) / fastpath.time_calls(one, dev, steps, warmup)
    r = one()
    loss = float(r["loss"])
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} on the {'reference' if reference else 'fast'} path")
    del model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def time_push(preset, dev, data, amp: bool, reps: int = 2) -> float:
    """Images per second of the push's batched nearest-patch search, in the trainer's precision
    (bf16/fp16 search + fp32 recomputation of the winners on a GPU; fp32 on a CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(preset).to(dev).eval()
    autocast = None
    if amp and dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        autocast = fastpath.autocast_dtype(dev)
    images, _, _, labels = data
    bs = preset.train.eval_batch_size
    nearest_patches(model, images[: bs], labels[: bs], bs, autocast)  # warm-up
    seconds = fastpath.time_calls(lambda: nearest_patches(model, images, labels, bs, autocast), dev, reps, warmup=0)
    return images.shape[0] / seconds


def short_run(dev: torch.device, epochs: int, per_class: int, patients: int) -> dict:
    """synth → prepare → train (paper preset, random VGG-16 weights) and the wall time of each."""
    from iaiabl_lib.data.cbis_ddsm import prepare
    from iaiabl_lib.data.synthetic import make_synthetic
    from iaiabl_lib.train import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_synthetic(tmp / "cbis", patients=patients, seed=0)
        out["synth_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare(tmp / "cbis", tmp / "data", size=224, split="paper", seed=0)
        out["prepare_s"] = time.perf_counter() - t0
        overrides = {"model.pretrained": "none", "train.pre_augment_per_class": per_class,
                     "train.push_start": max(1, epochs // 2), "train.push_every": max(1, epochs // 2),
                     "train.warm_epochs": 1, "train.last_layer_epochs": 5}
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = train(tmp / "data", "paper", tmp / "run", epochs=epochs, seed=0, device=str(dev),
                        progress=False, overrides=overrides)
        out["train_s"] = time.perf_counter() - t0
        out["epochs"] = epochs
        out["images_per_epoch"] = 3 * per_class
        out["val_auroc"] = run.config.get("val_average_margin_auroc")
        out["trainer_estimate_s"] = run.config.get("estimate", {}).get("seconds")
        out["trainer_wall_s"] = run.config.get("wall_seconds")
        out["batch_fitted"] = run.config.get("batch_fitted")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda | cpu (default: CUDA if present)")
    ap.add_argument("--size", type=int, default=224, help="image side in px (paper: 224)")
    ap.add_argument("--batch", type=int, default=None, help="lesion-scale batch (paper: 75; CPU default 8)")
    ap.add_argument("--fine-batch", type=int, default=None, help="fine-annotated batch (paper: 10; CPU default 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per path (GPU 30, CPU 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (GPU 10, CPU 1)")
    ap.add_argument("--push-images", type=int, default=None, help="images in the push benchmark (GPU 20000)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model on the fast path")
    ap.add_argument("--short-run", action="store_true", help="also time a short paper-preset run on synthetic data")
    ap.add_argument("--short-epochs", type=int, default=4)
    ap.add_argument("--short-per-class", type=int, default=5000, help="pre-augmented images per class (paper 5000)")
    ap.add_argument("--short-patients", type=int, default=240)
    args = ap.parse_args(argv)

    dev = pick_device(args.device)
    gpu = dev.type == "cuda"
    batch = args.batch or (75 if gpu else 8)
    fine_batch = args.fine_batch if args.fine_batch is not None else (10 if gpu else 2)
    steps = args.steps or (30 if gpu else 2)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    n_push = args.push_images or (20000 if gpu else 32)
    torch.set_num_threads(os.cpu_count() or 1)
    fastpath.configure_backends(dev)

    # timing only: random weights are allowed
    preset = get_preset("paper").replace({"model.pretrained": "none", "model.image_size": args.size})
    name = fastpath.device_name(dev)
    print(f"device: {name}; torch {torch.__version__}; VGG-16 at {args.size} px; batch {batch} + {fine_batch}; "
          f"{steps} timed steps after {warmup} warm-up")

    data = synthetic_tensors(max(n_push, 4 * (batch + fine_batch)), args.size, dev)
    fast = time_steps(preset, False, dev, data, batch, fine_batch, steps, warmup, args.compile)
    print(f"fast path      (bf16 autocast={gpu and preset.train.amp}, channels_last, fused Adam): {fast:9.1f} images/s")
    ref = time_steps(preset, True, dev, data, batch, fine_batch, steps, warmup, False)
    print(f"reference path (fp32, contiguous, plain Adam):                     {ref:9.1f} images/s")
    print(f"speedup: {fast / ref:.2f}x")
    push_data = tuple(t[:n_push] for t in data)
    push = time_push(preset, dev, push_data, amp=True)
    print(f"push (batched nearest-patch search over {n_push} images): {push:9.1f} images/s")

    result = {"device": name, "size": args.size, "batch": batch, "fine_batch": fine_batch,
              "fast_img_per_s": round(fast, 1), "reference_img_per_s": round(ref, 1),
              "speedup": round(fast / ref, 3), "push_img_per_s": round(push, 1)}
    # the paper's recipe: 50 epochs over 15 000 pre-augmented images, 5 pushes over the training set
    recipe_images = 50 * 15000
    est = recipe_images / fast + 5 * 15000 / push
    result["estimated_recipe_s"] = round(est, 1)
    print(f"estimated paper recipe (50 epochs x 15000 images + 5 pushes, each bounded by a search over 15000 "
          f"images; the push searches only the un-augmented training split): {est / 60:.1f} min")
    if args.short_run:
        sr = short_run(dev, args.short_epochs, args.short_per_class, args.short_patients)
        print(f"short paper-preset run: synth {sr['synth_s']:.1f} s, prepare {sr['prepare_s']:.1f} s, "
              f"train {sr['train_s']:.1f} s for {sr['epochs']} epochs x {sr['images_per_epoch']} images "
              f"(val AUROC {sr['val_auroc']}; the trainer estimated {sr['trainer_estimate_s']} s "
              f"and measured {sr['trainer_wall_s']} s)")
        result["short_run"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in sr.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
