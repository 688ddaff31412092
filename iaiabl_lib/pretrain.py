"""The pretrained tiny backbone: the CPU preset's analogue of ImageNet VGG-16.

IAIA-BL starts from VGG-16 trained on ImageNet (Barnett et al. 2021, §2.3): features learnt on
other data, for another task. Trained from scratch instead, the tiny backbone's latent patches are nearly
identical at initialisation; one prototype per class wins the cluster cost for every image and, in
the paper's objective alone, Eq. 7 drives the others off every patch (chapter 7, "Prototypes that
leave every patch"). This module trains the tiny backbone once, on data and a task that the
experiments never see, and ships the weights with the library (``pretrained/``, ``model.pretrained
= "synthetic"``), as every paper-scale model starts from ImageNet's.

The tiny prototype presets (IAIA-BL, ProtoPNet) do not use them by default: once the lesion pull
and the one-image-per-prototype push keep the prototypes on the lesion (config.py), the backbone
from scratch reached the higher average AUROC on every tuning seed (100-103). The black box starts
from them (config._blackbox), and so does the science check's ablation row ("IAIA-BL, pretrained
backbone", chapter 7's section "The pretrained backbone").

The corpus. Four synthetic CBIS-DDSM-shaped trees (``iaiabl synth``) drawn with seeds reserved for
it, :data:`CORPUS_SEEDS` for training and :data:`PROBE_SEED` held out for the scores; no book
chapter, test or ``iaiabl science`` run uses seeds from 1000 up. Markers: each training tree burns
the confounder marker into :data:`CORPUS_MARKER_RATE` of the training ROIs of *another* margin class
(circumscribed, indistinct, spiculated), so over the corpus a marker is as likely on every class:
markers are present, as text is in ImageNet, and uncorrelated with any label.

The pretext task uses no margin label. Two dense targets on the backbone's 8 × 8 grid and one
contrastive one:

* **lesion versus tissue**: each cell's fraction of lesion (the ROI mask, area-pooled), binary
  cross entropy. Where the mass is, but not what its border looks like.
* **local structure**: each cell's histogram of gradient orientations (8 unsigned bins, weighted by
  gradient magnitude, normalised) and its log mean gradient magnitude, regressed with a squared
  error. This is the target of masked feature prediction with HOG (Wei et al. 2022, "Masked
  Feature Prediction for Self-Supervised Visual Pre-Training", CVPR) computed on whole images
  (:func:`structure_targets`). Edges, lines and their orientations are what tell a sharp border,
  a blurred one and radiating spicules apart, and what ImageNet's first layers learn too.
* **two views of one crop**: SimCLR's contrastive loss (Chen et al. 2020, NT-Xent, :func:`nt_xent`)
  on the grid's pooled features, each crop augmented twice (flip, rotation, crop, quarter turn,
  contrast, brightness and noise; no blur, which would make every border indistinct). It asks the
  backbone to tell crops apart, which is where a lesion's border and texture differ.

With the dense targets alone the linear probe below scored no better than a random backbone
(0.85 against 0.84 after 600 steps, in an earlier version of this module on 2026-12-07); with the contrastive views
added, the shipped weights score the figure in their JSON.

An image-level "mass present" head is left out: every crop of the corpus holds a mass (the importer
crops around lesions), and the dense lesion target already says, cell by cell, where one is.
Rotation prediction was left out as well: mammographic texture has no canonical orientation.

The check before use (``iaiabl pretrain`` prints it, the JSON beside the weights records it): a
linear probe (scikit-learn's logistic regression on the frozen backbone's pooled features) trained
on the corpus's margin labels and scored on the held-out seed, against the same probe on a
randomly initialised backbone, and the pretext task's own scores on the held-out seed.

    iaiabl pretrain --out tiny_synthetic.pt [--steps N] [--workdir DIR]

Loading (:func:`load_tiny_weights`) checks the file's SHA-256 against :data:`TINY_WEIGHTS`, offline.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import IMAGENET_MEAN, IMAGENET_STD, MARGINS
from .tiny_weights import TINY_WEIGHTS, load_tiny_weights    # re-exported: loading lives beside the model

__all__ = ["CORPUS_SEEDS", "PROBE_SEED", "CORPUS_MARKER_RATE", "CORPUS_PATIENTS", "TINY_WEIGHTS",
           "ORIENTATION_BINS", "make_corpus", "structure_targets", "lesion_targets", "nt_xent", "PretextNet",
           "pretrain", "linear_probe", "pretext_scores", "load_tiny_weights", "add_cli", "run_cli"]

CORPUS_SEEDS = (1000, 1001, 1002)
"""Seeds of the synthetic trees the backbone is pretrained on (reserved: nothing else uses them)."""
PROBE_SEED = 1003
"""The held-out corpus seed for the linear probe and the pretext scores."""
CORPUS_MARKER_RATE = 0.5
"""Fraction of the training ROIs of the tree's marker class that carry a marker; the class cycles
over the trees (circumscribed, indistinct, spiculated), so over the corpus no class is favoured."""
CORPUS_PATIENTS = 260
CORPUS_SIZE = 64
ORIENTATION_BINS = 8

# ---------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------


def make_corpus(workdir: str | Path, seeds=CORPUS_SEEDS + (PROBE_SEED,), patients: int = CORPUS_PATIENTS,
                size: int = CORPUS_SIZE) -> dict[int, Path]:
    """Synthetic trees for ``seeds`` prepared at ``size`` px under ``workdir`` (made once):
    {seed: prepared dataset folder}. Tree i carries markers on the ROIs of margin class i mod 3."""
    from .data.cbis_ddsm import prepare
    from .data.dataset import PREPARED_MARKER
    from .data.synthetic import make_synthetic

    workdir = Path(workdir)
    out = {}
    for i, seed in enumerate(seeds):
        tree, data = workdir / f"synth-s{seed}", workdir / f"data-s{seed}-{size}px"
        if not (data / PREPARED_MARKER).is_file():
            make_synthetic(tree, patients=patients, seed=seed, confounder=CORPUS_MARKER_RATE,
                           confounder_class=MARGINS[i % 3])
            prepare(tree, data, size=size, split="official", seed=seed, verbose=False)
        out[seed] = data
    return out


def _load(folder: Path):
    """Every row of a prepared corpus folder as a TensorSet (all splits: the pretext task uses no
    split), on the CPU."""
    from .data.dataset import load_prepared, to_tensors

    ds = load_prepared(folder, size=CORPUS_SIZE)
    return to_tensors(ds, "cpu")


# ---------------------------------------------------------------------------------------------
# the targets
# ---------------------------------------------------------------------------------------------


def _grey(images: Tensor) -> Tensor:
    """ImageNet-normalised (B, 3, S, S) -> the grey image in [0, 1], (B, 1, S, S)."""
    return images[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]


def structure_targets(images: Tensor, grid: int) -> Tensor:
    """Per cell of a ``grid`` × ``grid`` tiling: the histogram of unsigned gradient orientations
    (``ORIENTATION_BINS`` bins over [0, π), magnitude-weighted with linear interpolation between
    neighbouring bins, normalised to sum 1) and log(mean gradient magnitude + 1e-3).

    Gradients: Sobel filters on the grey image (replicate padding). A HOG descriptor without
    blocks (Dalal & Triggs 2005), as masked feature prediction uses it.

    images (B, 3, S, S) ImageNet-normalised -> (B, ORIENTATION_BINS + 1, grid, grid)
    """
    g = _grey(images.float())
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=g.device) / 8
    kernels = torch.stack([sobel, sobel.T])[:, None]                         # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kernels)       # (B, 2, S, S)
    mag = grad.norm(dim=1, keepdim=True)                                     # (B, 1, S, S)
    theta = torch.atan2(grad[:, 1:2], grad[:, 0:1]) % math.pi                # (B, 1, S, S) in [0, π)
    pos = theta / math.pi * ORIENTATION_BINS - 0.5                           # bin centres at 0..7
    lo = torch.floor(pos)
    frac = pos - lo
    bins = torch.arange(ORIENTATION_BINS, device=g.device)[None, :, None, None]
    lo_i, hi_i = lo.long() % ORIENTATION_BINS, (lo.long() + 1) % ORIENTATION_BINS
    hist = mag * ((bins == lo_i) * (1 - frac) + (bins == hi_i) * frac)       # (B, 8, S, S)
    cell = images.shape[-1] // grid
    hist = F.avg_pool2d(hist, cell)                                          # (B, 8, grid, grid)
    mean_mag = F.avg_pool2d(mag, cell)                                       # (B, 1, grid, grid)
    hist = hist / hist.sum(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.cat([hist, torch.log(mean_mag + 1e-3)], dim=1)


def lesion_targets(masks: Tensor, grid: int) -> Tensor:
    """Each cell's fraction of lesion: (B, 1, S, S) {0, 1} -> (B, 1, grid, grid) in [0, 1]."""
    return F.adaptive_avg_pool2d(masks.float(), grid)


# ---------------------------------------------------------------------------------------------
# the network and its training
# ---------------------------------------------------------------------------------------------


class PretextNet(nn.Module):
    """The tiny backbone with three heads: lesion (a 1 × 1 conv, one logit per cell), structure
    (``ORIENTATION_BINS`` + 1 values per cell) and the contrastive projection (an MLP on the grid's
    pooled mean and max, SimCLR's projection head). Only the backbone is kept."""

    def __init__(self, backbone: nn.Module, projection: int = 64):
        super().__init__()
        self.backbone = backbone
        c = int(backbone.out_channels)
        self.lesion = nn.Conv2d(c, 1, 1)
        self.structure = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(c, ORIENTATION_BINS + 1, 1))
        self.project = nn.Sequential(nn.Linear(2 * c, 2 * c), nn.ReLU(inplace=True), nn.Linear(2 * c, projection))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.backbone(images)                                            # (B, C, H, W)
        pooled = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.lesion(z), self.structure(z), self.project(pooled)       # (B,1,H,W), (B,9,H,W), (B,P)


def _augment(images: Tensor, masks: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The training augmentation (``data.dataset.augment_batch``: flip, ±15°, a random crop of 70 %
    of the side, so the lesion moves about the grid) and a random quarter turn per image."""
    from .data.dataset import augment_batch

    images, masks = augment_batch(images, masks, gen, crop_fraction=0.7)
    turns = torch.randint(0, 4, (images.shape[0],), generator=gen)
    for k in range(1, 4):
        rows = turns == k
        if rows.any():
            images[rows] = torch.rot90(images[rows], k, dims=(2, 3))
            masks[rows] = torch.rot90(masks[rows], k, dims=(2, 3))
    return images, masks


def _jitter(images: Tensor, gen: torch.Generator) -> Tensor:
    """Photometric jitter for the contrastive views: contrast x U(0.7, 1.3), brightness ± 0.2 (in
    normalised units), Gaussian noise of standard deviation up to 0.1. No blur: a blurred border is
    what an indistinct margin looks like."""
    b = images.shape[0]
    u = torch.rand(b, 3, 1, 1, generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    return images * (0.7 + 0.6 * u[:, :1]) + (u[:, 1:2] - 0.5) * 0.4 + noise * 0.1 * u[:, 2:3]


def nt_xent(a: Tensor, b: Tensor, temperature: float = 0.2) -> Tensor:
    """SimCLR's contrastive loss (Chen et al. 2020, NT-Xent): each view must pick its partner among
    the 2B − 1 other views of the batch by cosine similarity. a, b (B, P) -> scalar"""
    z = F.normalize(torch.cat([a, b]), dim=1)                                # (2B, P)
    sim = z @ z.T / temperature                                              # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _objective(net: PretextNet, views: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]],
               gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(lesion BCE, structure squared error, contrastive NT-Xent) of one batch of two views."""
    lesion_terms, structure_terms, projections = [], [], []
    for images, masks in views:
        lesion_logit, structure, projection = net(_jitter(images, gen))
        grid = lesion_logit.shape[-1]
        lesion_terms.append(F.binary_cross_entropy_with_logits(lesion_logit, lesion_targets(masks, grid)))
        err = (structure - structure_targets(images, grid)) ** 2
        # the histogram's 8 bins and the magnitude weigh alike
        structure_terms.append(err[:, :ORIENTATION_BINS].sum(1).mean() * 4 + err[:, ORIENTATION_BINS].mean())
        projections.append(projection)
    return (sum(lesion_terms) / 2, sum(structure_terms) / 2, nt_xent(*projections))


def pretrain(corpus: dict[int, Path], steps: int = 600, batch_size: int = 64, lr: float = 1e-3,
             seed: int = 0, progress: bool = True) -> tuple[PretextNet, dict]:
    """Train a fresh ``TinyBackbone`` on the pretext task over the corpus's training seeds.

    Adam, ``lr`` with a cosine decay to 0 over ``steps``, batches of ``batch_size`` drawn with a
    local generator seeded with ``seed`` (no global random state is touched).
    Returns (the trained network, {"steps", "seconds", "final_losses", ...})."""
    from .model import TinyBackbone

    train_sets = [_load(corpus[s]) for s in corpus if s != PROBE_SEED]
    images = torch.cat([t.images for t in train_sets])
    masks = torch.cat([t.lesion_masks for t in train_sets])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)                      # the backbone's initialisation, locally
        net = PretextNet(TinyBackbone())
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    t0 = time.perf_counter()
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(bar, desc="pretrain tiny backbone", dynamic_ncols=True)
    recent: list[tuple[float, float, float]] = []
    net.train()
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        views = (_augment(images[idx], masks[idx], gen), _augment(images[idx], masks[idx], gen))
        lesion, structure, contrast = _objective(net, views, gen)
        opt.zero_grad(set_to_none=True)
        (lesion + structure + contrast).backward()
        opt.step()
        sched.step()
        recent = (recent + [tuple(float(t.detach()) for t in (lesion, structure, contrast))])[-50:]
        if progress:
            bar.set_postfix(lesion=f"{recent[-1][0]:.3f}", structure=f"{recent[-1][1]:.3f}",
                            contrast=f"{recent[-1][2]:.3f}")
    seconds = time.perf_counter() - t0
    final = np.mean(recent, axis=0)
    net.eval()
    return net, {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                   "seconds": round(seconds, 1),
                   "final_losses": {"lesion_bce": float(final[0]), "structure_se": float(final[1]),
                                    "contrastive_nt_xent": float(final[2])}}


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _pooled(backbone: nn.Module, images: Tensor, batch: int = 256) -> np.ndarray:
    """Frozen features: mean and max of the backbone's grid, (N, 2C)."""
    backbone.eval()
    out = []
    for i in range(0, len(images), batch):
        z = backbone(images[i:i + batch])                                    # (b, C, H, W)
        out.append(torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1))
    return torch.cat(out).numpy()


def linear_probe(backbone: nn.Module, corpus: dict[int, Path]) -> float:
    """Test-count-weighted average one-vs-rest margin AUROC (``predict.average_margin_auroc``) of a
    logistic regression on the frozen backbone's pooled features: fitted on the corpus's training
    seeds, scored on :data:`PROBE_SEED`. Margin labels are used here only, never in pretraining."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .predict import average_margin_auroc

    train = [_load(corpus[s]) for s in corpus if s != PROBE_SEED]
    test = _load(corpus[PROBE_SEED])
    x = np.concatenate([_pooled(backbone, t.images) for t in train])
    y = np.concatenate([t.labels.numpy() for t in train])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
    probe.fit(x, y)
    return float(average_margin_auroc(test.labels.numpy(), probe.decision_function(_pooled(backbone, test.images))))


@torch.no_grad()
def pretext_scores(net: PretextNet, corpus: dict[int, Path]) -> dict[str, float]:
    """The pretext task on the held-out seed, un-augmented: the lesion cells' AUROC (cells at least
    half lesion against the rest) and the structure target's R² (1 − error / variance)."""
    from sklearn.metrics import roc_auc_score

    test = _load(corpus[PROBE_SEED])
    net.eval()
    lesion_logit, structure, _ = net(test.images)
    grid = lesion_logit.shape[-1]
    cells = lesion_targets(test.lesion_masks, grid).flatten().numpy() >= 0.5
    target = structure_targets(test.images, grid)
    r2 = 1 - float(((structure - target) ** 2).mean() / target.var(dim=(0, 2, 3), keepdim=True).mean())
    return {"lesion_cell_auroc": float(roc_auc_score(cells, lesion_logit.flatten().numpy())),
            "structure_r2": r2}


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the tiny backbone on a reserved synthetic corpus (no margin labels)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the weights file to write (a state dict; a .json "
                   "with seeds, command, time and scores is written beside it)")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps (default 600, the shipped weights)")
    p.add_argument("--workdir", default=None, help="where the corpus is generated (default: a "
                   "temporary folder, removed afterwards)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order (default 0)")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    import platform
    import sys

    from .atomic import atomic_write_bytes
    from .model import TinyBackbone
    from .rundir import save_state

    t0 = time.perf_counter()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(args.workdir or tmp)
        t_corpus = time.perf_counter() - t0
        print(f"corpus: seeds {', '.join(map(str, corpus))} prepared in {t_corpus:.0f} s", flush=True)
        net, info = pretrain(corpus, steps=args.steps, seed=args.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            scratch = TinyBackbone()          # the same initialisation, untrained: the control
        scores = pretext_scores(net, corpus)
        probe = linear_probe(net.backbone, corpus)
        probe_scratch = linear_probe(scratch, corpus)
    state = {k: v.detach().clone().contiguous() for k, v in net.backbone.state_dict().items()}
    seconds = time.perf_counter() - t0
    report = {
        "command": " ".join(["iaiabl", "pretrain", *sys.argv[2:]]) if sys.argv[1:2] == ["pretrain"] else "iaiabl pretrain",
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "corpus_seeds": list(CORPUS_SEEDS), "probe_seed": PROBE_SEED, "patients_per_seed": CORPUS_PATIENTS,
        "image_size": CORPUS_SIZE, "marker_rate": CORPUS_MARKER_RATE,
        "pretext": "dense lesion-vs-tissue (BCE) + dense gradient-orientation histograms (HOG-like, "
                   "squared error) on the 8 x 8 grid + SimCLR contrastive views (NT-Xent); no margin label",
        **info,
        "pretext_scores_held_out": scores,
        "linear_probe_margin_auroc": {"pretrained": probe, "random_init": probe_scratch},
        "corpus_seconds": round(t_corpus, 1), "total_seconds": round(seconds, 1),
    }
    sha = save_state(state, out)["sha256"]
    report["sha256"] = sha
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(report, indent=1) + "\n").encode())
    print(json.dumps(report, indent=1))
    print(f"wrote {out} (SHA-256 {sha}) in {seconds:.0f} s")
    return 0
