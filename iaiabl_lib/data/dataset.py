"""The prepared dataset: I/O, tensors, the paper's augmentation and its 75 + 10 batches.

On disk (docs/INTERFACES.md §2)::

    DATA/manifest.csv        one row per ROI (MANIFEST_COLUMNS); row i is index i of every array
    DATA/images.npy          uint8 (N, S, S) windowed ROI crops, 0 = black
    DATA/lesion_masks.npy    uint8 (N, S, S) 1 inside the lesion
    DATA/fine_masks.npy      uint8 (N, S, S) 1 on the margin-relevant region (0 where has_fine == 0)
    DATA/summary.json        counts, skipped rows with reasons
    DATA/prepared-by-iaiabl.json   the marker: format version and the files above (PREPARED_FILES)

In memory: :class:`PreparedDataset` (numpy) -> :func:`to_tensors` -> :class:`TensorSet` (torch,
ImageNet-normalised 3-channel images) -> :func:`augment_batch` / :class:`BatchPlan` in training.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from iaiabl_lib.config import IMAGENET_MEAN, IMAGENET_STD, MARGINS
from ..errors import InputError

__all__ = [
    "MANIFEST_COLUMNS", "ARRAY_FILES", "SPLITS", "PreparedDatasetError", "MissingClassError",
    "PreparedDataset", "TensorSet", "load_prepared", "save_prepared", "resize_images",
    "resize_masks", "to_tensors", "AUGMENTATIONS", "augment_batch", "swap_context", "BatchPlan", "balanced_order",
    "pre_augment",
    "check_classes", "PREPARED_MARKER", "PREPARED_FILES", "PREPARED_FORMAT", "foreign_entries",
    "normalise_patient_id", "stored_image_size",
]

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = (
    "id", "patient_id", "split", "margin", "margin_index", "pathology", "malignant", "has_fine",
    "side", "view", "abnormality_id", "source_csv", "csv_row", "image_path", "mask_path",
    "fine_mask_path", "bbox", "crop_box",
)
"""manifest.csv columns: INTERFACES.md §2, plus ``crop_box`` ("top left side" of the square crop
in full-image pixels, so a prepared ROI maps back onto its mammogram)."""
ARRAY_FILES = {"images": "images.npy", "lesion_masks": "lesion_masks.npy", "fine_masks": "fine_masks.npy"}
PREPARED_MARKER = "prepared-by-iaiabl.json"
PREPARED_FORMAT = 1
PREPARED_FILES = ("manifest.csv", *ARRAY_FILES.values(), "summary.json", PREPARED_MARKER)
"""Every file :func:`save_prepared` writes, the marker last. ``prepare`` replaces an existing
folder only when it holds the marker and nothing but these files (:func:`foreign_entries`): it
never deletes what it did not write."""


def foreign_entries(path: str | Path) -> list[str] | None:
    """What keeps ``path`` from being recognised as a prepared dataset that ``prepare`` may
    replace: None when it is one (the marker and only :data:`PREPARED_FILES`, or an empty
    folder), else the names of the entries that are not ours (or ``[marker]`` when the marker
    is missing), sorted."""
    path = Path(path)
    entries = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in path.iterdir())
    if not entries:
        return None
    foreign = [e for e in entries if e not in PREPARED_FILES]
    if foreign:
        return foreign
    return None if PREPARED_MARKER in entries else [PREPARED_MARKER]


def normalise_patient_id(patient_id: str) -> str:
    """One spelling per patient: upper case, no whitespace (``" p_00012 "`` -> ``"P_00012"``).
    Applied before splitting, so that one patient never lands in two splits, and when a run's
    recorded split is compared with another preparation's."""
    return "".join(str(patient_id).split()).upper()


class PreparedDatasetError(InputError):
    """A prepared-dataset directory that is missing files or whose files disagree."""


class MissingClassError(InputError):
    """A split without any example of one margin class (training or evaluation would be wrong)."""


# --- resizing (shared by the importer and the loader) --------------------------------------------

def _resize_float(x: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """(N, H, W) -> float32 (N, size, size): area averaging when shrinking, bilinear when growing."""
    n, h, w = x.shape
    out = np.empty((n, size, size), dtype=np.float32)
    mode = "area" if size < max(h, w) else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    for start in range(0, n, chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk], dtype=np.float32))[:, None]
        out[start:start + chunk] = F.interpolate(t, size=(size, size), mode=mode, **kwargs)[:, 0].numpy()
    return out


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) -> uint8 (N, size, size) (area / bilinear, rounded)."""
    if images.shape[1:] == (size, size):
        return images
    return np.clip(np.rint(_resize_float(images, size)), 0, 255).astype(np.uint8)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """{0,1} (N, H, W) -> uint8 {0,1} (N, size, size): the image resize, then threshold 0.5."""
    if masks.shape[1:] == (size, size):
        return masks.astype(np.uint8)
    return (_resize_float(masks, size) >= 0.5).astype(np.uint8)


def stored_image_size(data_dir: str | Path | None) -> int | None:
    """Side of the crops stored in a prepared dataset (images.npy, read without loading it); None
    when there is none or it is unreadable."""
    if data_dir is None or not (Path(data_dir) / "images.npy").is_file():
        return None
    try:
        images = np.load(Path(data_dir) / "images.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return int(images.shape[-1])


# --- numpy dataset -------------------------------------------------------------------------------

@dataclass
class PreparedDataset:
    """A prepared dataset in memory. Arrays are (N, S, S) uint8; per-row vectors are (N,)."""

    images: np.ndarray
    lesion_masks: np.ndarray
    fine_masks: np.ndarray
    has_fine: np.ndarray          # bool
    labels: np.ndarray            # int64 margin index (MARGINS)
    malignant: np.ndarray         # int64 0 | 1
    split: np.ndarray             # str
    ids: list[str]
    manifest: list[dict]
    summary: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def select(self, index: np.ndarray) -> "PreparedDataset":
        """Rows ``index`` (int array or bool mask), as a new dataset."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.int64)
        return PreparedDataset(
            images=self.images[index], lesion_masks=self.lesion_masks[index],
            fine_masks=self.fine_masks[index], has_fine=self.has_fine[index],
            labels=self.labels[index], malignant=self.malignant[index], split=self.split[index],
            ids=[self.ids[i] for i in index], manifest=[self.manifest[i] for i in index],
            summary=self.summary, path=self.path)

    def subset(self, split: str | Iterable[str]) -> "PreparedDataset":
        """The rows of one split (``"train"``, ``"val"``, ``"test"``) or of several."""
        names = (split,) if isinstance(split, str) else tuple(split)
        unknown = [s for s in names if s not in SPLITS]
        if unknown:
            raise InputError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
        return self.select(np.isin(self.split, names))

    def class_counts(self) -> dict[str, int]:
        """``{margin: count}`` in MARGINS order."""
        counts = np.bincount(self.labels, minlength=len(MARGINS))
        return {m: int(counts[i]) for i, m in enumerate(MARGINS)}


def save_prepared(path: str | Path, manifest: Sequence[dict], images: np.ndarray,
                  lesion_masks: np.ndarray, fine_masks: np.ndarray, summary: dict) -> None:
    """Write the prepared-dataset files into the existing directory ``path`` (no atomicity here:
    the importer writes into a temporary directory and renames it), the marker
    (:data:`PREPARED_MARKER`) last."""
    path = Path(path)
    n = len(manifest)
    for name, arr in (("images", images), ("lesion_masks", lesion_masks), ("fine_masks", fine_masks)):
        if arr.shape[0] != n or arr.ndim != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 ({n}, S, S), got {arr.dtype} {arr.shape}")
        np.save(path / ARRAY_FILES[name], arr)
    with open(path / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="raise")
        writer.writeheader()
        writer.writerows(manifest)
    with open(path / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    with open(path / PREPARED_MARKER, "w", encoding="utf-8") as f:   # last: the set is complete
        json.dump({"format": PREPARED_FORMAT, "written_by": "iaiabl prepare",
                   "files": list(PREPARED_FILES)}, f, indent=1)
        f.write("\n")


def _read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("id", "split", "margin_index", "malignant", "has_fine")
                   if c not in (reader.fieldnames or [])]
        if missing:
            raise PreparedDatasetError(f"{path}: missing column(s) {', '.join(missing)}; "
                                       "re-run `iaiabl prepare`")
        return list(reader)


def _int_column(rows: list[dict], column: str, path: Path, allowed: range) -> np.ndarray:
    values = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            values[i] = int(row[column])
        except (TypeError, ValueError):
            values[i] = -1
        if values[i] not in allowed:
            raise PreparedDatasetError(f"{path}: row {i + 1} ({row.get('id')}): {column}="
                                       f"{row[column]!r} is not in {list(allowed)}; re-run `iaiabl prepare`")
    return values


def load_prepared(path: str | Path, size: int | None = None) -> PreparedDataset:
    """Load a prepared dataset (INTERFACES.md §2); ``size``: resize to ``size`` px on load (images
    area/bilinear, masks re-thresholded at 0.5). Raises FileNotFoundError for a missing folder (with
    the commands that make one) and :class:`PreparedDatasetError` naming the path when files are
    missing or the manifest and the arrays disagree."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} not found; make one with `iaiabl synth --out SRC` "
                                f"(or `iaiabl download cbis-ddsm --out SRC`), then "
                                f"`iaiabl prepare --cbis SRC --out {path}`")
    wanted = ["manifest.csv", *ARRAY_FILES.values()]
    missing = [name for name in wanted if not (path / name).is_file()]
    if missing:
        raise PreparedDatasetError(f"{path}: not a prepared dataset (missing {', '.join(missing)}); "
                                   "create it with `iaiabl prepare --cbis DIR --out DATA`")
    rows = _read_manifest(path / "manifest.csv")
    arrays = {}
    for name, filename in ARRAY_FILES.items():
        try:
            arr = np.load(path / filename, allow_pickle=False)
        except (ValueError, EOFError) as err:
            raise PreparedDatasetError(f"{path / filename}: not a readable array ({err}); the dataset is "
                                       "damaged: re-run `iaiabl prepare`") from None
        if arr.ndim != 3 or arr.shape[0] != len(rows) or arr.shape[1] != arr.shape[2]:
            raise PreparedDatasetError(
                f"{path / filename}: shape {arr.shape} does not match manifest.csv ({len(rows)} rows, "
                "expected (N, S, S)); the dataset is incomplete: re-run `iaiabl prepare`")
        arrays[name] = arr.astype(np.uint8, copy=False)
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise PreparedDatasetError(f"{path}: arrays disagree in shape {sorted(shapes)}; re-run `iaiabl prepare`")
    summary = {}
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PreparedDatasetError(f"{path / 'summary.json'}: not valid JSON ({err}); the dataset "
                                       "is damaged: re-run `iaiabl prepare`") from None
    if size is not None and size != arrays["images"].shape[-1]:
        arrays = {"images": resize_images(arrays["images"], size),
                  "lesion_masks": resize_masks(arrays["lesion_masks"], size),
                  "fine_masks": resize_masks(arrays["fine_masks"], size)}
    split = np.array([r["split"] for r in rows], dtype=object).astype(str)
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise PreparedDatasetError(f"{path / 'manifest.csv'}: unknown split {bad[0]!r}; re-run `iaiabl prepare`")
    return PreparedDataset(
        **arrays,
        has_fine=_int_column(rows, "has_fine", path / "manifest.csv", range(2)).astype(bool),
        labels=_int_column(rows, "margin_index", path / "manifest.csv", range(len(MARGINS))),
        malignant=_int_column(rows, "malignant", path / "manifest.csv", range(2)),
        split=split, ids=[r["id"] for r in rows], manifest=rows, summary=summary, path=path)


def check_classes(ds: "PreparedDataset | TensorSet", splits: Iterable[str] | None = None,
                  name: str = "dataset") -> None:
    """Raise :class:`MissingClassError` when a split lacks a margin class.

    A :class:`PreparedDataset` is checked per split (``splits``, default all three); a
    :class:`TensorSet` has no split column and is checked as a whole, called ``name``.
    """
    if isinstance(ds, TensorSet):
        groups = {name: ds.labels.detach().cpu().numpy()}
    else:
        groups = {s: ds.labels[ds.split == s] for s in (splits or SPLITS)}
    for split_name, labels in groups.items():
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(MARGINS))
        for index, margin in enumerate(MARGINS):
            if counts[index] == 0:
                have = ", ".join(f"{m} {int(c)}" for m, c in zip(MARGINS, counts))
                raise MissingClassError(
                    f"split {split_name!r} has no {margin!r} example ({have}); prepare more patients "
                    "or another --seed, or use --split official")


# --- tensors -------------------------------------------------------------------------------------

@dataclass
class TensorSet:
    """Training tensors: images (N,3,S,S) float32 ImageNet-normalised; lesion_masks and fine_masks
    (N,1,S,S) float32 {0,1}; has_fine (N,) bool; labels, malignant (N,) int64."""

    images: torch.Tensor
    lesion_masks: torch.Tensor
    fine_masks: torch.Tensor
    has_fine: torch.Tensor
    labels: torch.Tensor
    malignant: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, index: torch.Tensor) -> "TensorSet":
        """Rows ``index`` (on any device; moved to the tensors' device)."""
        index = torch.as_tensor(index, device=self.labels.device)
        return TensorSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> "TensorSet":
        return TensorSet(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def normalise(gray: torch.Tensor) -> torch.Tensor:
    """uint8 or [0,1] float (N,1,S,S) -> (N,3,S,S) float32, ImageNet-normalised per channel."""
    x = gray.float() / 255.0 if gray.dtype == torch.uint8 else gray.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def to_tensors(ds: PreparedDataset, device: torch.device | str = "cpu") -> TensorSet:
    """A :class:`PreparedDataset` as a :class:`TensorSet` on ``device``."""
    def masks(a: np.ndarray) -> torch.Tensor:  # (N,S,S) uint8 -> (N,1,S,S) float32
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)[:, None].float()

    images = normalise(torch.from_numpy(np.ascontiguousarray(ds.images)).to(device)[:, None])
    return TensorSet(
        images=images.contiguous(), lesion_masks=masks(ds.lesion_masks), fine_masks=masks(ds.fine_masks),
        has_fine=torch.from_numpy(np.asarray(ds.has_fine, dtype=bool)).to(device),
        labels=torch.from_numpy(np.asarray(ds.labels, dtype=np.int64)).to(device),
        malignant=torch.from_numpy(np.asarray(ds.malignant, dtype=np.int64)).to(device))


# --- augmentation --------------------------------------------------------------------------------

def _random(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0,1) numbers drawn on the generator's device (reproducible), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "light": {},
    "authors": {"flip_p": 0.5, "vflip_p": 0.5, "quarter_turns": True, "max_rotation": 45.0, "rotation_p": 0.9,
                "expand": True, "crop_fraction": 0.9, "crop_p": 0.8},
    "scale": {"crop_fraction": 0.9, "crop_p": 0.8},
}
"""Augmentation recipes by name (``train.augmentation``): keyword arguments of :func:`augment_batch`.

"light": the defaults of :func:`augment_batch` (a horizontal flip, ±15°, and a crop of 0.8 of the side
on every image, so every A1 image is magnified 1.25 times while the push, stage A3 and the test see
the images at their own scale). "authors": the offline augmentation of the authors' code
(dataHandling.py, ``augment_numpy_images``): a crop of 0.9 of the side with probability 0.8, a
rotation with probability 0.9 that keeps the whole rotated image (PIL's ``rotate(expand=1)``, so the
image shrinks by up to 1/√2 and black corners appear), flips about both axes and random quarter
turns. Their angle is a whole number of degrees in [0, 90); with the quarter turns and the flips, a
uniform ±45° gives the same spread of orientations. Its magnifications, from 1.11 (the crop alone)
down to 0.71 (a 45° turn), straddle the test's 1.
"scale": "light" with the authors' crop instead of its own (0.9 of the side with probability 0.8,
else the image at its own scale), the scale half of the difference alone. The authors' recipe is the
one that produced the paper's numbers; README, "How the tiny preset was chosen", compares the three
on the tuning seeds."""


def augment_batch(images: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] = (),
                  generator: torch.Generator | None = None, *, flip_p: float = 0.5,
                  max_rotation: float = 15.0, crop_fraction: float = 0.8, vflip_p: float = 0.0,
                  quarter_turns: bool = False, rotation_p: float = 1.0, expand: bool = False,
                  crop_p: float = 1.0):
    """The training augmentation as one batched affine warp, identical for images and masks.

    Per example: a horizontal flip with probability ``flip_p`` (and a vertical one with
    ``vflip_p``), a random number of quarter turns (``quarter_turns``), with probability
    ``rotation_p`` a rotation uniform in ±``max_rotation`` degrees (``expand``: the whole rotated
    image is kept and resized back, as PIL's ``rotate(expand=True)``, so it shrinks by
    1 / (|cos| + |sin|)), and with probability ``crop_p`` a random square crop of ``crop_fraction``
    of the side (position uniform) resized back to the full side. One ``affine_grid`` +
    ``grid_sample`` call warps the images and every mask together (bilinear); masks are
    re-thresholded at 0.5, and images are padded with their own per-channel minimum (black) where
    the warp leaves the frame. The defaults are the recipe "light" of :data:`AUGMENTATIONS`; the
    extra random numbers of the other options are drawn only when one of them is on, so the
    default's draws are those of earlier versions.

    images (B,C,S,S) float; masks: a (B,k,S,S) tensor or a sequence of them (any k). Returns
    ``(images, masks)`` with ``masks`` in the form it was given. Runs on the tensors' device;
    ``generator`` (on any device) makes it reproducible.
    """
    single = isinstance(masks, torch.Tensor)
    mask_list = [masks] if single else list(masks)
    b, c = images.shape[:2]
    device, dtype = images.device, images.dtype if images.is_floating_point() else torch.float32
    u = _random((b, 4), generator, device).to(dtype)                       # (B, 4)
    hflip = torch.where(u[:, 0] < flip_p, -1.0, 1.0).to(dtype)              # (B,)
    angle = (u[:, 1] * 2 - 1) * math.radians(max_rotation)                  # (B,)
    crop: torch.Tensor | float = float(crop_fraction)                        # (B,) once drawn
    vflip = torch.ones_like(hflip)
    if vflip_p > 0 or quarter_turns or rotation_p < 1 or expand or crop_p < 1:
        v = _random((b, 4), generator, device).to(dtype)                   # (B, 4)
        vflip = torch.where(v[:, 0] < vflip_p, -1.0, 1.0).to(dtype)
        angle = torch.where(v[:, 1] < rotation_p, angle, torch.zeros_like(angle))
        if quarter_turns:
            angle = angle + torch.floor(v[:, 2] * 4) * (math.pi / 2)
        crop = torch.where(v[:, 3] < crop_p, crop_fraction, 1.0).to(dtype)
    margin = (1 - crop)[:, None] if isinstance(crop, torch.Tensor) else 1 - crop
    shift = (u[:, 2:] * 2 - 1) * margin                                     # (B, 2) normalised
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = crop * (cos.abs() + sin.abs() if expand else 1.0)               # (B,)
    # input = shift + crop * R(angle) * k * diag(hflip, vflip) @ output, k = |cos| + |sin| with expand
    # (x = width axis, y = height axis; the crop first, then the rotation, then the flips, as the
    # authors' dataHandling.py applies them)
    theta = torch.stack([
        torch.stack([cos * scale * hflip, -sin * scale * vflip, shift[:, 0]], dim=1),
        torch.stack([sin * scale * hflip, cos * scale * vflip, shift[:, 1]], dim=1),
    ], dim=1)                                                               # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, *images.shape[2:]], align_corners=False)
    fill = images.float().amin(dim=(2, 3), keepdim=True).to(dtype)         # (B, C, 1, 1)
    stacked = torch.cat([images.to(dtype) - fill, *[m.to(dtype) for m in mask_list]], dim=1)
    warped = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_images = warped[:, :c] + fill
    out_masks, start = [], c
    for m in mask_list:
        k = m.shape[1]
        out_masks.append((warped[:, start:start + k] >= 0.5).to(m.dtype if m.is_floating_point() else dtype))
        start += k
    return out_images, (out_masks[0] if single else out_masks)


def swap_context(images: torch.Tensor, lesion_masks: torch.Tensor, generator: torch.Generator | None = None,
                 *, p: float = 0.5, dilation: int = 2) -> torch.Tensor:
    """Annotation-guided context swap (NOT the paper; ``train.context_swap``): with probability
    ``p`` per row, the pixels around the mass come from another row of the batch.

    A latent patch on the lesion sees its whole receptive field, so a model can put its activation
    on the lesion (what Eq. 7 checks) and still read a marker beside it (``evaluate.marker``). The
    lesion masks say where the evidence is; everything outside them is context, and swapping it
    between cases breaks any link between context and label. Row i keeps its lesion dilated by
    ``dilation`` pixels; where row j (another row: the partners form one random cycle through the
    batch, so no row is its own) has no lesion either, row i takes row j's pixels; where j's own
    lesion lies, row i keeps its own. A marker beside i's mass is then mostly replaced, and j's
    marker, if it has one, moves to i's case, whose label is another class's about two times in
    three in a class-balanced batch. Counterfactual background swaps of this kind are a standard
    remedy for spurious context (e.g. Xiao et al. 2021, "Noise or signal: the role of image
    backgrounds"). Measured on the tuning seeds it lowered the reliance on the marker and the
    AUROC alike (README, "How the tiny preset was chosen"), so it is off by default.

    images (B, C, S, S); lesion_masks (B, 1, S, S), 1 = lesion, aligned with the images (after
    ``augment_batch``). Returns new images; the inputs are not modified; ``generator`` makes it
    reproducible. The masks stay valid: the lesion of each row is its own.
    """
    b = images.shape[0]
    if b < 2 or p <= 0:
        return images
    device = images.device
    u = _random((b,), generator, device)                                      # (B,)
    order = torch.argsort(_random((b,), generator, device))                   # a random permutation (B,)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)                                           # one random cycle: never i itself
    keep_own = lesion_masks.float()                                           # (B, 1, S, S)
    if dilation > 0:                                                          # the lesion and its margin band
        keep_own = F.max_pool2d(keep_own, 2 * dilation + 1, stride=1, padding=dilation)
    take = (1 - keep_own) * (1 - keep_own[partner]) * (u < p).float()[:, None, None, None]   # (B, 1, S, S)
    take = take.to(images.dtype)
    return images * (1 - take) + images[partner] * take


def pre_augment(ts: TensorSet, per_class: int, generator: torch.Generator | None = None,
                chunk: int = 256, recipe: str = "authors") -> TensorSet:
    """Offline augmentation (paper: 5000 per class): ``per_class`` augmented copies of each margin
    class, drawn round-robin over that class's examples (each original used equally often), in
    class order, each through ``augment_batch`` with the recipe ``recipe`` of :data:`AUGMENTATIONS`.
    Memory: 3 * per_class images of (3, S, S) float32 on ``ts``'s device."""
    check_classes(ts, name="pre_augment input")
    device = ts.labels.device
    parts: list[TensorSet] = []
    for cls in range(len(MARGINS)):
        members = torch.nonzero(ts.labels == cls).flatten()
        index = _round_robin(members, per_class, generator, device)
        for start in range(0, per_class, chunk):
            part = ts.select(index[start:start + chunk])
            images, (lesion, fine) = augment_batch(part.images, [part.lesion_masks, part.fine_masks], generator,
                                                   **AUGMENTATIONS[recipe])
            parts.append(TensorSet(images, lesion, fine, part.has_fine, part.labels, part.malignant))
    return TensorSet(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(TensorSet)})


# --- batches -------------------------------------------------------------------------------------

def _randperm(n: int, generator: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    where = generator.device if generator is not None else "cpu"
    return torch.randperm(n, generator=generator, device=where).to(device)


def _round_robin(members: torch.Tensor, count: int, generator: torch.Generator | None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` of ``members``, round-robin over one random order of them: each used equally
    often (± 1), as in the paper's offline augmentation (5000 copies per class)."""
    order = members.to(device)[_randperm(len(members), generator, device)]
    return order.repeat(math.ceil(count / max(len(members), 1)))[:count]


def balanced_order(labels, epoch_size: int, generator: torch.Generator | None = None,
                   num_classes: int = len(MARGINS)) -> torch.Tensor:
    """One epoch of ``epoch_size`` example indices, an equal share per class (the remainder to the
    first classes), each class's examples used round-robin (``_round_robin``), in random order.

    The paper's epoch is its offline-augmented training set, 5000 images of each class (15 000);
    drawing an epoch this way and augmenting each batch on the fly gives the same composition and
    the same number of steps without storing the 15 000 images. labels (N,) -> (epoch_size,) int64
    on the CPU; classes without examples are left out (their share goes to the others)."""
    labels = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    present = [c for c in range(num_classes) if bool((labels == c).any())]
    if not present:
        raise ValueError("balanced_order: no examples")
    shares = [epoch_size // len(present) + (i < epoch_size % len(present)) for i in range(len(present))]
    parts = [_round_robin(torch.nonzero(labels == c).flatten(), k, generator) for c, k in zip(present, shares)]
    index = torch.cat(parts)
    return index[_randperm(len(index), generator)]


class BatchPlan:
    """One epoch of the paper's batches as index tensors.

    ``BatchPlan(labels, has_fine, batch_size=75, fine_batch_size=10, generator=None)`` or
    ``BatchPlan(tensorset_or_prepared, batch_size=..., ...)``. Iterating yields
    ``(lesion_idx, fine_idx)`` int64 CPU tensors: ``lesion_idx`` (batch_size,) walks a fresh
    permutation of all examples (the last batch may be smaller unless ``drop_last``), or, with
    ``epoch_size`` (the paper: 15 000), a fresh class-balanced draw of that many
    (``balanced_order``);
    ``fine_idx`` (fine_batch_size,) is drawn from the examples with fine annotations — without
    replacement while enough remain in this epoch's shuffled pool, with replacement when there
    are fewer than ``fine_batch_size`` of them; empty (0,) when none has a fine annotation.
    """

    def __init__(self, labels, has_fine=None, batch_size: int = 75, fine_batch_size: int = 10,
                 generator: torch.Generator | None = None, drop_last: bool = False,
                 epoch_size: int | None = None):
        if has_fine is None and hasattr(labels, "has_fine"):
            labels, has_fine = labels.labels, labels.has_fine
        if has_fine is None:
            raise TypeError("BatchPlan needs has_fine (or a TensorSet / PreparedDataset)")
        self.labels = labels
        self.epoch_size = int(epoch_size) if epoch_size else None
        self.n = self.epoch_size or int(len(labels))
        self.fine_pool = torch.nonzero(torch.as_tensor(np.asarray(has_fine.cpu() if isinstance(
            has_fine, torch.Tensor) else has_fine, dtype=bool))).flatten()
        if batch_size < 1 or fine_batch_size < 0:
            raise InputError(f"batch_size must be >= 1 and fine_batch_size >= 0 "
                             f"(got {batch_size}, {fine_batch_size})")
        self.batch_size, self.fine_batch_size = batch_size, fine_batch_size
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def _fine_stream(self) -> Iterator[torch.Tensor]:
        pool, k = self.fine_pool, self.fine_batch_size
        if k == 0 or len(pool) == 0:
            while True:
                yield torch.empty(0, dtype=torch.long)
        if len(pool) < k:  # few fine annotations: with replacement
            while True:
                yield pool[torch.randint(len(pool), (k,), generator=self.generator,
                                         device=self._gdev()).cpu()]
        buffer = torch.empty(0, dtype=torch.long)
        while True:
            if len(buffer) < k:  # refill; leftovers first, and no index twice in one batch
                fresh = pool[_randperm(len(pool), self.generator)]
                repeat = torch.isin(fresh, buffer)
                buffer = torch.cat([buffer, fresh[~repeat], fresh[repeat]])
            yield buffer[:k]
            buffer = buffer[k:]

    def _gdev(self):
        return self.generator.device if self.generator is not None else "cpu"

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = (balanced_order(self.labels, self.epoch_size, self.generator) if self.epoch_size
                 else _randperm(self.n, self.generator))
        fine = self._fine_stream()
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size], next(fine)
