"""iaiabl_lib.data.dataset: prepared-dataset I/O, tensors, augmentation, 75 + 10 batches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iaiabl_lib.config import IMAGENET_MEAN, IMAGENET_STD, MARGINS
from iaiabl_lib.data.dataset import (MANIFEST_COLUMNS, BatchPlan, MissingClassError, PreparedDatasetError,
                                     TensorSet, AUGMENTATIONS, augment_batch, check_classes, load_prepared, pre_augment,
                                     swap_context, balanced_order, save_prepared, to_tensors)


def write_dataset(path, n=30, size=32, splits=("train", "val", "test"), fine_every=3, seed=0):
    """A prepared dataset of bright squares (lesion = the square, fine = its top edge)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.uint8)
    lesion, fine = np.zeros_like(images), np.zeros_like(images)
    manifest = []
    for i in range(n):
        y, x, side = rng.integers(4, size // 2, 2).tolist() + [size // 4]
        images[i] = rng.integers(0, 60, (size, size))
        images[i, y:y + side, x:x + side] = 250
        lesion[i, y:y + side, x:x + side] = 1
        has_fine = i % fine_every == 0
        if has_fine:
            fine[i, y:y + 2, x:x + side] = 1
        label = i % 3
        manifest.append({**{c: "" for c in MANIFEST_COLUMNS}, "id": f"P_{i:05d}_LEFT_CC_1",
                         "patient_id": f"P_{i:05d}", "split": splits[(i // 3) % len(splits)],
                         "margin": MARGINS[label], "margin_index": label, "malignant": i % 2,
                         "has_fine": int(has_fine), "pathology": "MALIGNANT" if i % 2 else "BENIGN"})
    path.mkdir(parents=True, exist_ok=True)
    save_prepared(path, manifest, images, lesion, fine, {"size": size})
    return path


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data")


# --- loading -------------------------------------------------------------------------------------

def test_load_round_trip_subset_counts(data):
    ds = load_prepared(data)
    assert len(ds) == 30 and ds.size == 32 and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.has_fine.dtype == bool and ds.has_fine.sum() == 10
    assert ds.class_counts() == {"circumscribed": 10, "indistinct": 10, "spiculated": 10}
    train = ds.subset("train")
    assert set(train.split) == {"train"} and len(train) == 12
    assert train.ids == [r["id"] for r in train.manifest]
    np.testing.assert_array_equal(train.images[0], ds.images[ds.split == "train"][0])
    assert len(ds.subset(["val", "test"])) == 18
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ds.subset("dev")
    assert ds.summary == {"size": 32}


def test_load_resizes_and_rethresholds(data):
    ds = load_prepared(data, size=20)
    assert ds.images.shape == (30, 20, 20) and ds.lesion_masks.shape == (30, 20, 20)
    assert set(np.unique(ds.lesion_masks)) == {0, 1} and set(np.unique(ds.fine_masks)) <= {0, 1}
    # a mask pixel is >= half square, so its image pixel is >= half bright (250 vs background < 60)
    assert ds.images[ds.lesion_masks == 1].min() >= 120
    assert (ds.images[ds.lesion_masks == 0] > 200).sum() == 0
    big = load_prepared(data, size=48)
    assert big.lesion_masks.shape == (30, 48, 48) and set(np.unique(big.lesion_masks)) == {0, 1}


def test_load_errors_name_the_path(tmp_path, data):
    with pytest.raises(FileNotFoundError, match=r"missing not found.*iaiabl synth.*iaiabl prepare --cbis SRC --out .*missing"):
        load_prepared(tmp_path / "missing")
    (data / "fine_masks.npy").unlink()
    with pytest.raises(PreparedDatasetError, match=r"data.*fine_masks\.npy.*iaiabl prepare"):
        load_prepared(data)
    other = write_dataset(tmp_path / "other")
    np.save(other / "images.npy", np.zeros((29, 32, 32), np.uint8))
    with pytest.raises(PreparedDatasetError, match=r"images\.npy.*30 rows"):
        load_prepared(other)
    third = write_dataset(tmp_path / "third")
    text = (third / "manifest.csv").read_text().replace(",indistinct,1,", ",indistinct,7,", 1)
    (third / "manifest.csv").write_text(text)
    with pytest.raises(PreparedDatasetError, match="margin_index='7'"):
        load_prepared(third)


def test_check_classes_names_split_and_class(tmp_path):
    ds = load_prepared(write_dataset(tmp_path / "d", n=30))
    check_classes(ds)
    lacking = ds.select(~((ds.split == "val") & (ds.labels == 2)))
    with pytest.raises(MissingClassError, match="split 'val' has no 'spiculated'"):
        check_classes(lacking)
    check_classes(lacking, splits=["train", "test"])
    with pytest.raises(MissingClassError, match="split 'train set' has no 'circumscribed'"):
        check_classes(to_tensors(ds.select(ds.labels > 0)), name="train set")


# --- tensors -------------------------------------------------------------------------------------

def test_to_tensors_shapes_and_normalisation(data):
    ds = load_prepared(data)
    ts = to_tensors(ds, "cpu")
    assert ts.images.shape == (30, 3, 32, 32) and ts.images.dtype == torch.float32
    assert ts.lesion_masks.shape == (30, 1, 32, 32) and ts.lesion_masks.dtype == torch.float32
    assert ts.fine_masks.shape == (30, 1, 32, 32) and ts.has_fine.dtype == torch.bool
    assert ts.labels.dtype == torch.int64 and ts.malignant.tolist() == ds.malignant.tolist()
    raw = ds.images[0, 0, 0] / 255.0
    for c in range(3):
        assert ts.images[0, c, 0, 0].item() == pytest.approx((raw - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-5)
    assert len(ts.select(torch.tensor([1, 2]))) == 2


# --- augmentation --------------------------------------------------------------------------------

def _squares(b=16, size=48):
    images = torch.zeros(b, 3, size, size)
    masks = torch.zeros(b, 1, size, size)
    for i in range(b):
        y, x = 8 + i % 12, 10 + (3 * i) % 14
        images[i, :, y:y + 16, x:x + 12] = 1.0
        masks[i, :, y:y + 16, x:x + 12] = 1.0
    return images, masks


def test_augment_keeps_masks_on_the_bright_pixels():
    images, masks = _squares()
    out, out_mask = augment_batch(images, masks, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out_mask.shape == masks.shape
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    bright, m = out[:, 0] > 0.5, out_mask[:, 0] > 0.5
    assert not torch.equal(out, images)                   # something happened
    for i in range(len(images)):
        if bright[i].sum() == 0:
            continue
        iou = (bright[i] & m[i]).sum() / (bright[i] | m[i]).sum()
        assert iou > 0.9, (i, float(iou))


def test_augment_flip_is_exact_and_masks_share_the_warp():
    images, masks = _squares(4)
    out, (m1, m2) = augment_batch(images, [masks, masks.clone()], torch.Generator().manual_seed(1),
                                  flip_p=1.0, max_rotation=0.0, crop_fraction=1.0)
    assert (out - images.flip(-1)).abs().max() < 1e-5
    assert torch.equal(m1, masks.flip(-1))
    assert torch.equal(m1, m2)


def test_augment_dihedral_options_give_the_eight_symmetries_exactly():
    images, masks = _squares(16)
    out, m = augment_batch(images, masks, torch.Generator().manual_seed(4), flip_p=0.5, vflip_p=0.5,
                           quarter_turns=True, max_rotation=0.0, crop_fraction=1.0)
    seen = set()
    for i in range(len(images)):
        matches = [(f, k) for f in (False, True) for k in range(4)
                   if (out[i] - torch.rot90(images[i].flip(-1) if f else images[i], k, (1, 2))).abs().max() < 1e-5]
        assert matches, i                                  # each row is one of the 8 exactly
        f, k = matches[0]
        assert torch.equal(m[i], torch.rot90(masks[i].flip(-1) if f else masks[i], k, (1, 2)))
        seen.add(matches[0])
    assert len(seen) >= 4                                  # and they vary


def test_augment_expand_matches_torchvision_rotate_with_expand():
    """The outside reference: torchvision's rotate(expand=True) of the whole image, resized back to
    the side (what PIL's rotate(expand=1) does in the authors' dataHandling.py)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    images, masks = _squares(6, size=64)
    gen_seed = 7
    out, m = augment_batch(images, masks, torch.Generator().manual_seed(gen_seed), flip_p=0.0,
                           max_rotation=40.0, rotation_p=1.0, expand=True, crop_fraction=1.0)
    u = torch.rand((6, 4), generator=torch.Generator().manual_seed(gen_seed))   # augment_batch's first draw
    angles = (u[:, 1] * 2 - 1) * 40.0
    for i in range(6):
        a = float(angles[i])
        ref = TF.rotate(masks[i], a, interpolation=InterpolationMode.BILINEAR, expand=True)
        ref = TF.resize(ref, [64, 64], interpolation=InterpolationMode.BILINEAR, antialias=False) >= 0.5
        got = m[i] > 0.5
        iou = float((ref & got).sum() / (ref | got).sum())
        assert iou > 0.85, (i, a, iou)           # the same angle, counter-clockwise in both


def test_augment_expand_keeps_the_whole_image_in_frame():
    images = torch.zeros(32, 1, 64, 64)
    images[:, :, 1:4, 1:4] = 1.0                           # a dot in the corner
    kept, _ = augment_batch(images, [], torch.Generator().manual_seed(8), flip_p=0.0, max_rotation=45.0,
                            expand=True, crop_fraction=1.0)
    cut, _ = augment_batch(images, [], torch.Generator().manual_seed(8), flip_p=0.0, max_rotation=45.0,
                           crop_fraction=1.0)
    assert (kept.amax(dim=(1, 2, 3)) > 0.2).all()          # expand: the corner survives every rotation
    assert (cut.amax(dim=(1, 2, 3)) < 0.2).any()           # without it some rotations cut it off


def test_augment_crop_p_leaves_some_rows_at_their_own_scale():
    images, masks = _squares(32)
    _, m = augment_batch(images, masks, torch.Generator().manual_seed(9), flip_p=0.0, max_rotation=0.0,
                         crop_fraction=0.8, crop_p=0.5)
    area = m.sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))  # 1 at the own scale, 1 / 0.8² when cropped
    own = (area - 1).abs() < 0.05
    zoomed = (area - 1 / 0.64).abs() < 0.15
    assert own.any() and zoomed.any() and bool((own | zoomed).all())


def test_augmentation_recipes_are_augment_batch_keywords():
    import inspect
    keywords = set(inspect.signature(augment_batch).parameters)
    assert AUGMENTATIONS["light"] == {}                    # the defaults: earlier runs' draws
    from iaiabl_lib.config import _CHOICES, TrainConfig
    assert set(_CHOICES["train.augmentation"]) == set(AUGMENTATIONS)   # --set accepts exactly the recipes
    assert TrainConfig().augmentation in AUGMENTATIONS
    for name, recipe in AUGMENTATIONS.items():
        assert set(recipe) <= keywords, name
    images, masks = _squares(8)
    a = augment_batch(images, masks, torch.Generator().manual_seed(3), **AUGMENTATIONS["authors"])
    assert a[0].shape == images.shape and a[1].shape == masks.shape


def test_augment_is_reproducible_with_a_seed():
    images, masks = _squares()
    a = augment_batch(images, masks, torch.Generator().manual_seed(5))
    b = augment_batch(images, masks, torch.Generator().manual_seed(5))
    c = augment_batch(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_augment_pads_with_black():
    images = torch.full((8, 3, 32, 32), 0.7)
    images[:, :, :, :2] = -2.0                             # "black" after normalisation
    out, _ = augment_batch(images, [], torch.Generator().manual_seed(2))
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 0.7 + 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_cuda_matches_cpu():
    images, masks = _squares()
    cpu = augment_batch(images, masks, torch.Generator().manual_seed(3))
    gpu = augment_batch(images.cuda(), masks.cuda(), torch.Generator().manual_seed(3))
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    assert (gpu[0].cpu() - cpu[0]).abs().max() < 1e-4
    assert (gpu[1].cpu() != cpu[1]).float().mean() < 1e-3
    g = torch.Generator(device="cuda").manual_seed(3)
    out, _ = augment_batch(images.cuda(), masks.cuda(), g)
    assert out.device.type == "cuda"


def test_pre_augment_balances_classes(data):
    ts = to_tensors(load_prepared(data))
    big = pre_augment(ts, per_class=7, generator=torch.Generator().manual_seed(0))
    assert len(big) == 21 and torch.bincount(big.labels).tolist() == [7, 7, 7]
    assert big.images.shape == (21, 3, 32, 32) and set(big.lesion_masks.unique().tolist()) <= {0.0, 1.0}
    assert big.has_fine.dtype == torch.bool


# --- batches -------------------------------------------------------------------------------------

def test_batch_plan_75_plus_10():
    n = 200
    has_fine = torch.zeros(n, dtype=torch.bool)
    has_fine[::7] = True                                  # 29 fine examples
    plan = BatchPlan(torch.zeros(n, dtype=torch.long), has_fine, generator=torch.Generator().manual_seed(0))
    batches = list(plan)
    assert len(plan) == len(batches) == 3
    assert [len(b[0]) for b in batches] == [75, 75, 50]
    assert all(len(f) == 10 and len(set(f.tolist())) == 10 and has_fine[f].all() for _, f in batches)
    assert sorted(torch.cat([b[0] for b in batches]).tolist()) == list(range(n))   # each once per epoch
    again = list(BatchPlan(torch.zeros(n, dtype=torch.long), has_fine, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert len(BatchPlan(torch.zeros(n), has_fine, drop_last=True)) == 2


def test_batch_plan_few_or_no_fine_and_tensorset(data):
    has_fine = torch.zeros(100, dtype=torch.bool)
    has_fine[[3, 50, 97]] = True
    for _, fine in BatchPlan(torch.zeros(100), has_fine, batch_size=40, fine_batch_size=10):
        assert len(fine) == 10 and set(fine.tolist()) <= {3, 50, 97}    # with replacement
    for _, fine in BatchPlan(torch.zeros(100), torch.zeros(100, dtype=torch.bool)):
        assert fine.numel() == 0
    ts: TensorSet = to_tensors(load_prepared(data))
    lesion, fine = next(iter(BatchPlan(ts, batch_size=8, fine_batch_size=4)))
    assert len(lesion) == 8 and ts.has_fine[fine].all() and len(fine) == 4


def test_batch_plan_epoch_of_paper_size_is_class_balanced():
    """``epoch_size`` (the paper: 15 000): the epoch has that many rows, an equal share per class,
    each example of a class used equally often (± 1) — the paper's offline set drawn on the fly."""
    labels = torch.tensor([0] * 7 + [1] * 20 + [2] * 3)
    plan = BatchPlan(labels, torch.zeros(30, dtype=torch.bool), batch_size=75, fine_batch_size=0,
                     generator=torch.Generator().manual_seed(1), epoch_size=300)
    rows = torch.cat([lesion for lesion, _ in plan])
    assert len(plan) == 4 and len(rows) == 300
    assert torch.bincount(labels[rows], minlength=3).tolist() == [100, 100, 100]
    uses = torch.bincount(rows, minlength=30)
    for c in range(3):
        per = uses[labels == c]
        assert int(per.max() - per.min()) <= 1
    assert torch.bincount(labels[balanced_order(labels, 301)], minlength=3).tolist() == [101, 100, 100]


def test_unmarked_copy_holds_the_same_cases_without_the_marker(tmp_path):
    """The book's "unmarked" data set (bookcache.TREES): the same seed drawn without the confounder
    and prepared with the same split holds the same cases in every split, with the same labels, and
    its crops differ from the confounded ones only in marked training crops; ``load_splits`` accepts
    it as validation data."""
    from iaiabl_lib import bookcache
    from iaiabl_lib.config import get_preset
    from iaiabl_lib.data.cbis_ddsm import prepare
    from iaiabl_lib.data.synthetic import make_synthetic
    from iaiabl_lib.train.splits import load_splits

    assert bookcache.TREES["unmarked"] == "default"
    assert bookcache.DATASETS["unmarked"] == bookcache.DATASETS["default"]
    assert bookcache.SPLIT_MODES["unmarked"] == bookcache.SPLIT_MODES["confounded"]
    data = {}
    for name, confounder in (("confounded", 0.9), ("unmarked", 0.0)):
        tree = tmp_path / f"{name}-tree"
        make_synthetic(tree, patients=40, size=256, seed=3, confounder=confounder)
        prepare(tree, tmp_path / name, size=64, split="official", seed=3, verbose=False)
        data[name] = load_prepared(tmp_path / name, size=64)
    a, b = data["confounded"], data["unmarked"]
    assert list(a.ids) == list(b.ids)
    assert np.array_equal(a.split, b.split) and np.array_equal(a.labels, b.labels)
    differs = np.flatnonzero((a.images != b.images).reshape(len(a.ids), -1).any(axis=1))
    assert len(differs) > 0                                   # the marker is there...
    assert set(a.split[differs]) <= {"train", "val"}          # ...only in the train CSV's rows
    same_test = a.split == "test"
    assert np.array_equal(a.images[same_test], b.images[same_test])
    train_set, val_set, _, _ = load_splits(tmp_path / "confounded", get_preset("tiny"), torch.device("cpu"),
                                           val_data=tmp_path / "unmarked")
    assert len(val_set) == int((a.split == "val").sum())


def test_swap_context_keeps_each_lesion_and_takes_the_rest_from_another_case():
    b, s = 6, 16
    images = torch.arange(b, dtype=torch.float32)[:, None, None, None].expand(b, 3, s, s).clone()  # row i = i
    masks = torch.zeros(b, 1, s, s)
    masks[:, :, 6:10, 6:10] = 1                                  # every lesion in the centre
    masks[0, :, 1:3, 1:3] = 1                                    # row 0 has a second blob in a corner
    before = images.clone()
    out = swap_context(images, masks, torch.Generator().manual_seed(3), p=1.0, dilation=1)
    assert torch.equal(images, before)                           # the input is left alone
    kept = torch.nn.functional.max_pool2d(masks, 3, stride=1, padding=1) > 0   # the lesion and 1 px around
    for i in range(b):
        assert torch.equal(out[i][:, kept[i, 0]], images[i][:, kept[i, 0]])      # own lesion and margin kept
        far = out[i, 0, 12:, 12:]                                 # far from every lesion: one other row's value
        assert far.unique().numel() == 1
        j = int(far[0, 0])
        # where the partner has its own lesion (row 0's corner blob), row i keeps its own pixels
        if j == 0 and i != 0:
            assert torch.all(out[i, 0, 1:3, 1:3] == i)
    partners = [int(out[i, 0, 15, 15]) for i in range(b)]
    assert sorted(partners) == list(range(b))                     # a permutation of the rows
    assert all(j != i for i, j in enumerate(partners))            # in which no row is its own partner


def test_swap_context_probability_and_reproducibility():
    images, masks = _squares(8)
    images = images + torch.rand(images.shape, generator=torch.Generator().manual_seed(1))   # distinct contexts
    assert torch.equal(swap_context(images, masks, torch.Generator().manual_seed(0), p=0.0), images)
    a = swap_context(images, masks, torch.Generator().manual_seed(5), p=0.5)
    b = swap_context(images, masks, torch.Generator().manual_seed(5), p=0.5)
    assert torch.equal(a, b)
    changed = [not torch.equal(a[i], images[i]) for i in range(8)]
    assert 0 < sum(changed) < 8                                   # some rows swapped, some not
    assert torch.equal(swap_context(images[:1], masks[:1], None, p=1.0), images[:1])   # one row: nothing to swap
