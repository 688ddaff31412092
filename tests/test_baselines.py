"""Baselines: GradCAM / GradCAM++ against pytorch_grad_cam, the black-box runs, ProtoPNet's preset,
the radiologists' BI-RADS estimate, and the `baseline` command."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iaiabl_lib.baselines import (BlackBox, blackbox_predict, build_blackbox, gradcam, gradcam_both,
                                  load_blackbox, protopnet_preset, radiologist_auroc,
                                  read_assessments, train_blackbox)
from iaiabl_lib.config import get_preset

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def reference_cams(model: BlackBox, x: torch.Tensor, targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for klass in (GradCAM, GradCAMPlusPlus):
        with klass(model=model, target_layers=[model.backbone]) as cam:
            out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    return out[0], out[1]


@pytest.mark.parametrize("task", ["margin", "malignancy"])
def test_gradcam_matches_pytorch_grad_cam_tiny(task):
    torch.manual_seed(0)
    model = build_blackbox("tiny", task).eval()
    # give the head some non-trivial weights
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 3, 64, 64)
    targets = [0, 1, 2, 2, 1, 0] if task == "margin" else [0] * 6
    ref_cam, ref_pp = reference_cams(model, x, targets)
    mine = gradcam(model, x, torch.tensor(targets)).numpy()
    mine_pp = gradcam(model, x, torch.tensor(targets), plus_plus=True).numpy()
    assert mine.shape == mine_pp.shape == (6, 64, 64)
    np.testing.assert_allclose(mine, ref_cam, atol=1e-5)
    np.testing.assert_allclose(mine_pp, ref_pp, atol=1e-5)
    assert mine.min() >= 0 and mine.max() <= 1 + 1e-6


def test_gradcam_matches_pytorch_grad_cam_vgg16_and_default_target():
    from torchvision.models.vgg import cfgs, make_layers

    # VGG-16's conv layers without the last max-pool, as model.vgg16_features builds them (but
    # without initialising torchvision's 120M-parameter classifier, which the black box drops)
    torch.manual_seed(1)
    features = make_layers(cfgs["D"])[:-1]
    features.out_channels = 512
    model = BlackBox(get_preset("paper").model, "margin", backbone=features).eval()
    x = torch.randn(2, 3, 64, 64)                                           # 4 x 4 latent grid
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    ref_cam, ref_pp = reference_cams(model, x, pred)
    cam, campp, logits = gradcam_both(model, x)                             # None: predicted class
    assert logits.argmax(1).tolist() == pred
    np.testing.assert_allclose(cam.numpy(), ref_cam, atol=1e-5)
    np.testing.assert_allclose(campp.numpy(), ref_pp, atol=1e-5)


def test_gradcam_rejects_bad_targets():
    model = build_blackbox("tiny", "margin").eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, x, 3)
    with pytest.raises(ValueError, match="2 ints"):
        gradcam(model, x, [0, 1, 2])


def test_blackbox_run_files_and_reload(tiny_blackbox, prepared):
    run_dir = Path(tiny_blackbox)
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "model.pt", "history.csv"}
    cfg = json.loads((run_dir / "config.json").read_text())
    # "tiny" trains with the black box's tiny recipe (config._blackbox)
    assert cfg["kind"] == "blackbox" and cfg["task"] == "margin" and cfg["preset_name"] == "tiny-blackbox"
    assert cfg["preset"]["model"]["head_dropout"] == 0.1 and cfg["preset"]["model"]["pretrained"] == "synthetic"
    # a run shortened below the recipe's selection window (epochs 101-150) selects from its last epoch
    assert cfg["selected_epoch"] == 2 and cfg["selection"].endswith("among epochs 2-2")
    assert cfg["preset"]["model"]["backbone"] == "tiny"
    state = torch.load(run_dir / "model.pt", weights_only=True)             # a plain state dict
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["blackbox", "blackbox"]
    bb = load_blackbox(run_dir, device="cpu")
    assert bb.task == "margin" and not bb.model.training and len(bb.history) == 2
    from iaiabl_lib.data.dataset import load_prepared, to_tensors

    ts = to_tensors(load_prepared(prepared, size=64).subset("test"))
    out = blackbox_predict(bb, ts, batch_size=5)                            # a run or its model
    n = len(ts)
    assert out["margin_prob"].shape == (n, 3)
    np.testing.assert_allclose(out["margin_prob"].sum(1), 1, atol=1e-5)
    assert out["gradcam"].shape == out["gradcampp"].shape == (n, 64, 64)
    assert 0 <= out["gradcam"].min() and out["gradcam"].max() <= 1 + 1e-6
    # the same maps as one call of gradcam on the whole batch
    np.testing.assert_allclose(out["gradcam"], gradcam(bb.model, ts.images).numpy(), atol=1e-6)


def test_malignancy_blackbox(prepared, tmp_path):
    run = train_blackbox(prepared, "tiny", tmp_path / "mal", task="malignancy", epochs=1,
                         device="cpu", progress=False)
    bb = load_blackbox(run, device="cpu")
    assert bb.model.num_outputs == 1
    x = torch.randn(3, 3, 64, 64)
    out = blackbox_predict(bb, x, cams=False)
    assert out["malignancy_prob"].shape == (3,) and "margin_prob" not in out and "gradcam" not in out


def test_load_blackbox_refuses_an_iaiabl_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"preset_name": "tiny"}))
    with pytest.raises(ValueError, match="not 'blackbox'"):
        load_blackbox(tmp_path)


def test_protopnet_preset_names():
    assert protopnet_preset("tiny") == "tiny-protopnet"
    assert protopnet_preset("paper") == "protopnet"
    assert protopnet_preset("protopnet") == "protopnet"
    p = get_preset(protopnet_preset("tiny"))
    assert p.model.topk == 1 and not p.train.use_fine_loss and p.model.incorrect_class_weight == -0.5
    # one naming rule: the presets' own names, the baseline's and the book cache's agree
    from iaiabl_lib import bookcache
    from iaiabl_lib.config import protopnet_name
    for base in ("tiny", "paper"):
        assert get_preset(protopnet_name(base)).name == protopnet_name(base) == protopnet_preset(base)
    assert bookcache.preset_for("cpu", "protopnet") == protopnet_name(bookcache.preset_for("cpu"))


def test_radiologist_auroc_reads_the_csv(prepared):
    scores, source = read_assessments(prepared)
    with open(Path(prepared) / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    assert len(scores) == len(manifest) and source != "manifest"
    assert np.all(np.isfinite(scores)) and set(np.unique(scores)) <= {0, 1, 2, 3, 4, 5}
    result = radiologist_auroc(prepared, split="test")
    assert result["n"] == sum(r["split"] == "test" for r in manifest)
    if result["value"] is not None:
        assert 0 <= result["ci_low"] <= result["value"] <= result["ci_high"] <= 1


def test_radiologist_auroc_names_a_missing_csv(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="source CSV not found"):
        read_assessments(prepared, cbis_dir=tmp_path)


def test_baseline_cli(prepared, tmp_path, capsys):
    from iaiabl_lib.cli import main

    out = tmp_path / "bb"
    assert main(["baseline", "--data", str(prepared), "--model", "blackbox", "--task", "margin",
                 "--preset", "tiny", "--out", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    assert json.loads((out / "config.json").read_text())["kind"] == "blackbox"
    assert main(["baseline", "--data", str(prepared), "--model", "radiologists",
                 "--out", str(tmp_path / "rad")]) == 0
    assert "value" in json.loads((tmp_path / "rad" / "radiologists.json").read_text())
    assert main(["baseline", "--data", str(prepared), "--model", "blackbox", "--preset", "nope",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_train_protopnet_uses_the_protopnet_preset(prepared, tmp_path):
    from iaiabl_lib.baselines import train_protopnet

    run = train_protopnet(prepared, "tiny", tmp_path / "ppn", epochs=1, device="cpu", progress=False,
                          overrides={"train.warm_epochs": 0, "train.push_start": 1,
                                     "train.last_layer_epochs": 1})
    assert run.preset.name == "tiny-protopnet"
    assert run.model.cfg.topk == 1 and not run.preset.train.use_fine_loss
    assert json.loads((tmp_path / "ppn" / "config.json").read_text())["preset_name"] == "tiny-protopnet"
