"""Explanations (explain.py) and the `explain` report (report.py)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from iaiabl_lib.config import MARGINS
from iaiabl_lib.data.dataset import load_prepared, to_tensors
from iaiabl_lib.explain import (CaseExplanation, case_text, class_activation_map, explain_case,
                                logit_contribution_map,
                                prototype_gallery)
from iaiabl_lib.model import activation_map


@pytest.fixture(scope="module")
def run(tiny_run):
    from iaiabl_lib.train import load_run

    return load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def data(prepared):
    return load_prepared(prepared, size=64)


def test_contributions_are_similarity_times_weight_and_sum_to_the_logits(run, data):
    i = int(np.flatnonzero(data.split == "test")[0])
    e = explain_case(run, i, top=4)
    assert isinstance(e, CaseExplanation) and e.case_id == data.ids[i]
    with torch.no_grad():
        out = run.model(to_tensors(data.select([i])).images)
    np.testing.assert_allclose(e.margin_logits, out.margin_logits[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.similarity, out.similarity[0].numpy(), rtol=1e-6)
    w = run.model.margin_head.weight.detach().numpy()
    np.testing.assert_allclose(e.contributions, w * e.similarity[None], rtol=1e-6)
    # h1 has no bias: the contributions of all prototypes to a class sum to its margin logit
    np.testing.assert_allclose(e.contributions.sum(axis=1), e.margin_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.margin_prob, torch.softmax(out.margin_logits[0], 0).numpy(), atol=1e-6)
    assert e.predicted_class == int(np.argmax(e.margin_prob)) == e.explained_class
    assert abs(e.malignancy_prob - torch.sigmoid(out.malignancy_logit[0]).item()) < 1e-6
    # top prototypes: sorted by contribution to the predicted class, similarity × weight each
    assert len(e.prototypes) == 4
    contribs = [p.contribution for p in e.prototypes]
    assert contribs == sorted(contribs, reverse=True)
    assert contribs[0] == pytest.approx(e.contributions[e.predicted_class].max(), rel=1e-6)
    size = run.preset.model.image_size
    pam = activation_map(out.similarity_maps, size)[0].numpy()
    for p in e.prototypes:
        assert p.contribution == pytest.approx(p.similarity * p.weight, rel=1e-6)
        assert p.weight == pytest.approx(w[e.predicted_class, p.index], rel=1e-6)
        np.testing.assert_allclose(p.activation, pam[p.index], rtol=1e-5, atol=1e-5)
        rec = run.push[p.index]
        assert p.source_id == rec["source_id"] and p.cls == rec["class"]
        np.testing.assert_array_equal(p.source_image, run.push_arrays["source_image"][p.index])
        np.testing.assert_array_equal(p.self_activation, run.push_arrays["self_activation"][p.index])
        assert p.patch_image is not None and p.patch_image.size > 0


def test_explain_case_accepts_ids_images_and_another_class(run, data):
    i = 5
    by_index = explain_case(run, i)
    by_id = explain_case(run, data.ids[i])
    by_image = explain_case(run, data.images[i])
    np.testing.assert_allclose(by_id.margin_logits, by_index.margin_logits)
    np.testing.assert_allclose(by_image.margin_logits, by_index.margin_logits, atol=1e-5)
    assert by_image.case_id is None and by_index.true_margin == int(data.labels[i])
    other = (by_index.predicted_class + 1) % 3
    e = explain_case(run, i, explained_class=other, top=2)
    assert e.explained_class == other and all(
        p.weight == pytest.approx(e.weights[other, p.index]) for p in e.prototypes)
    with pytest.raises(ValueError, match="not an id"):
        explain_case(run, "no-such-case")


def test_class_activation_map_is_eq11_of_appendix_a(run, data):
    """Eq. 11 written out from the paper on a loop: Σ over class c's prototypes of s_j · PAM_j,
    then (a − min) / (max − min) per image; the logit-contribution map is the h1-weighted sum."""
    ts = to_tensors(data.select(np.arange(4)))
    with torch.no_grad():
        out = run.model(ts.images)
    s = out.similarity.numpy()                                                # (N, m)
    pam = activation_map(out.similarity_maps, ts.images.shape[-1]).numpy()   # (N, m, S, S)
    w = run.model.margin_head.weight.detach().numpy()
    pclass = run.model.prototype_class.numpy()
    for c in range(3):
        own = np.flatnonzero(pclass == c)
        for b in range(3):
            raw = sum(s[b, j] * pam[b, j] for j in own)
            want = (raw - raw.min()) / (raw.max() - raw.min())
            got = class_activation_map(run, ts, c)[b]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            assert got.min() == 0.0 and got.max() == pytest.approx(1.0)
            contrib = sum(w[c, j] * pam[b, j] for j in own)
            np.testing.assert_allclose(logit_contribution_map(run, ts, c)[b], contrib, rtol=1e-4, atol=1e-4)
    everything = logit_contribution_map(run, ts, 0, own_class_only=False)
    np.testing.assert_allclose(everything, np.einsum("j,bjhw->bhw", w[0], pam), rtol=1e-4, atol=1e-4)
    # one class per image; grey crops (normalised inside) give the same maps
    cls = np.array([0, 1, 2, 1])
    cam = class_activation_map(run, data.images[:4], cls)
    for b, c in enumerate(cls):
        np.testing.assert_allclose(cam[b], class_activation_map(run, ts, int(c))[b], rtol=1e-4, atol=1e-4)
    # an explanation's own maps (from the maps it kept, no forward pass) are the same maps; by
    # default for the recorded true margin, as the paper draws Eq. 11
    for i in range(2):
        e = explain_case(run, i)
        assert e.true_margin is not None
        for c in (None, 0, 2):
            k = e.true_margin if c is None else c
            want = class_activation_map(run, data.images[i], k)[0]
            np.testing.assert_allclose(e.class_activation(c), want, rtol=1e-4, atol=1e-4)
            want = logit_contribution_map(run, data.images[i], k)[0]
            np.testing.assert_allclose(e.logit_contribution(c), want, rtol=1e-4, atol=1e-4)


def test_prototype_gallery_finds_each_prototype_in_its_source(run, data):
    gallery = prototype_gallery(run, n_nearest=3, same_class=True)
    assert len(gallery) == run.model.num_prototypes
    for entry in gallery:
        assert len(entry.neighbours) == 3
        d = [n.sq_distance for n in entry.neighbours]
        assert d == sorted(d)
        assert all(data.labels[n.index] == entry.cls for n in entry.neighbours)
        # the push projected the prototype onto a patch of its source: distance ~ 0 there
        assert d[0] < 1e-3
        assert data.split[entry.neighbours[0].index] == "train"
        n0 = entry.neighbours[0]
        assert n0.image.shape == n0.activation.shape == (64, 64)
    everywhere = prototype_gallery(run, n_nearest=2, prototypes=[0, 1])
    assert [e.index for e in everywhere] == [0, 1]
    with pytest.raises(ValueError, match="do not exist"):
        prototype_gallery(run, prototypes=[run.model.num_prototypes])


def test_case_text_reads_like_a_report(run):
    e = explain_case(run, 2, top=2)
    text = case_text(e)
    assert MARGINS[e.predicted_class] in text
    assert f"prototype {e.prototypes[0].index}" in text
    assert "This mass's margin looks most like" in text
    assert f"{e.prototypes[0].similarity:.2f} × weight" in text
    assert "malignancy" in text
    assert "tensor" not in text and "[" not in text
    # a data set ID only labelled as one (the explorers' rule, explain.text.dataset_id_words)
    assert e.case_id not in text
    ids = re.findall(r"\S*P_\d{5}\S*", text)
    assert all(re.search(r"data set ID " + re.escape(i), text) for i in ids), ids
    assert len(ids) == sum(1 for p in e.prototypes if p.source_id and p.source_id != e.case_id)
    assert "previous case" not in text


# --- the `explain` command (report.py) ----------------------------------------------------------


def manifest_rows(prepared: Path) -> list[dict]:
    with open(Path(prepared) / "manifest.csv") as f:
        return list(csv.DictReader(f))


def assert_self_contained(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    sources = re.findall(r"""src\s*=\s*["']([^"']*)""", text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in text and "<link" not in text and "http://" not in text
    assert "url(" not in text
    assert "Research tool" in text and "not for clinical use" in text
    assert "tensor(" not in text and "array(" not in text
    return text


def test_explain_cli_prepared_id(tiny_run, prepared):
    from iaiabl_lib.cli import main

    case = next(r["id"] for r in manifest_rows(prepared) if r["split"] == "test")
    assert main(["explain", "--run", str(tiny_run), case]) == 0
    out = Path(tiny_run) / "explanations" / f"{case}.html"
    text = assert_self_contained(out)
    assert case in text and "probability of malignancy" in text
    assert all(m in text for m in MARGINS)


def test_explain_cli_raw_dicom_with_box_or_mask(tiny_run, prepared, synth_tree, tmp_path):
    from iaiabl_lib.cli import main
    from iaiabl_lib.explain.report import crop_dicom_case

    rows = manifest_rows(prepared)
    i, row = next((k, r) for k, r in enumerate(rows) if r["split"] == "test")
    dicom = Path(synth_tree) / row["image_path"]
    mask = Path(synth_tree) / row["mask_path"]
    box = ",".join(row["bbox"].split())
    # the crop is the importer's: identical to the prepared image of this case
    roi = crop_dicom_case(dicom, box=box, size=64)
    data = load_prepared(prepared)
    np.testing.assert_array_equal(roi["image"], data.images[i])
    roi_mask = crop_dicom_case(dicom, mask_path=mask, size=64)
    np.testing.assert_array_equal(roi_mask["image"], data.images[i])
    np.testing.assert_array_equal(roi_mask["lesion_mask"], data.lesion_masks[i])
    assert " ".join(map(str, roi_mask["crop_box"])) == row["crop_box"]

    out = tmp_path / "box.html"
    assert main(["explain", "--run", str(tiny_run), str(dicom), "--box", box, "--out", str(out)]) == 0
    assert "DICOM file" in assert_self_contained(out)
    out2 = tmp_path / "mask.html"
    assert main(["explain", "--run", str(tiny_run), str(dicom), "--mask", str(mask), "--out", str(out2)]) == 0
    assert_self_contained(out2)


def test_explain_dicom_is_deterministic_and_runs_the_network_once(tiny_run, prepared, synth_tree, tmp_path, capsys):
    """Issue 15: the crop of a raw DICOM depends on the run alone (its recorded ``data_size``), not
    on whether the training data still exist; the report says the size; one forward pass per case,
    the class activation map included (it comes from explain_case's own pass)."""
    import json
    import shutil

    from iaiabl_lib.explain.report import crop_size_of, explain_to_html
    from iaiabl_lib.train import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data_size"] == load_prepared(prepared).size == crop_size_of(load_run(run_dir))
    row = next(r for r in manifest_rows(prepared) if r["split"] == "test")
    dicom, box = Path(synth_tree) / row["image_path"], ",".join(row["bbox"].split())

    calls = []
    original = torch.nn.Module.__call__

    def counting(module, *args, **kwargs):
        if type(module).__name__ == "IAIABL" and args and args[0].shape[0] == 1:   # the case itself
            calls.append(1)                 # (the run's health check reads the training split in batches)
        return original(module, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Module, "__call__", counting)
        with_data = explain_to_html(run_dir, str(dicom), box=box, out=tmp_path / "a.html").read_text()
    assert len(calls) == 1
    assert f"resized to {cfg['data_size']} px" in capsys.readouterr().out
    cfg["data"] = str(tmp_path / "gone")                                  # the training data moved away
    (run_dir / "config.json").write_text(json.dumps(cfg))
    without = explain_to_html(run_dir, str(dicom), box=box, out=tmp_path / "b.html").read_text()
    images = lambda t: re.findall(r'src="data:image/png;base64,[^"]+"', t)   # noqa: E731
    assert images(with_data) == images(without) and images(with_data)
    assert f"{cfg['data_size']} px (the run&#x27;s training crops)" in with_data
    # the library's one distrust rule, where the run's training data are at hand
    assert "<h2>Prototypes to distrust</h2>" in with_data and "health check of every prototype" in with_data
    assert "Not checked: the health check needs" in without


def test_explain_cuts_a_dicom_exactly_as_prepare_does(prepared, synth_tree):
    """Issue 23: ``iaiabl explain FILE.dcm --mask MASK.dcm`` and ``iaiabl prepare`` cut the same
    region of interest, pixel for pixel (one function, ``cbis_ddsm.cut_roi``: largest component of
    the mask, crop, window of the whole mammogram, resize)."""
    from iaiabl_lib.explain.report import crop_dicom_case

    ds = load_prepared(prepared)
    rows = manifest_rows(prepared)
    assert rows and len(rows) == len(ds.ids)
    for i, row in enumerate(rows[:4]):
        roi = crop_dicom_case(Path(synth_tree) / row["image_path"], mask_path=Path(synth_tree) / row["mask_path"],
                              size=ds.size)
        np.testing.assert_array_equal(roi["image"], ds.images[i], err_msg=row["image_path"])
        np.testing.assert_array_equal(roi["lesion_mask"], ds.lesion_masks[i], err_msg=row["mask_path"])
        assert " ".join(map(str, roi["crop_box"])) == row["crop_box"]


def test_explain_cli_clear_errors(tiny_run, prepared, synth_tree, tmp_path, capsys):
    from cbis_fixtures import write_dicom

    from iaiabl_lib.cli import main

    row = next(r for r in manifest_rows(prepared) if r["split"] == "test")
    dicom = Path(synth_tree) / row["image_path"]
    run = ["explain", "--run", str(tiny_run), str(dicom)]

    def error(args) -> str:
        assert main(args) == 2
        return capsys.readouterr().err

    assert "y1 must be greater than y0" in error(run + ["--box", "50,10,20,40"])
    assert "leaves the image" in error(run + ["--box", "0,0,10,99999"])
    assert "four" in error(run + ["--box", "1,2,3"])
    assert "--box" in error(run)                                     # no lesion location
    small = write_dicom(tmp_path / "small_mask.dcm", np.pad(np.full((8, 8), 255, np.uint8), 8))
    err = error(run + ["--mask", str(small)])
    assert "24 × 24 px" in err and "full image's size" in err
    grey = write_dicom(tmp_path / "grey.dcm", np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert "not a binary mask" in error(run + ["--mask", str(grey)])
    assert "neither a DICOM file nor a case id" in error(["explain", "--run", str(tiny_run), "P_NOPE"])
    # damaged files (issue 24): the reader's error, naming the file and the element, on one line
    from dicom_mutations import with_syntax_byte, with_vr

    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(with_vr(dicom.read_bytes()))                  # Rows' VR byte flipped
    err = error(["explain", "--run", str(tiny_run), str(damaged), "--box", "10,10,40,40"])
    assert str(damaged) in err and "Rows (0028,0010)" in err and err.strip().count("\n") == 0
    bad_mask = tmp_path / "bad_mask.dcm"
    bad_mask.write_bytes(with_syntax_byte(small.read_bytes()))         # transfer syntax UID byte changed
    err = error(run + ["--mask", str(bad_mask)])
    assert str(bad_mask) in err and "TransferSyntaxUID" in err and err.strip().count("\n") == 0
    assert not list(tmp_path.glob("*.html"))


def test_prototype_health_measures_each_prototype_against_a_direct_computation(run, data):
    """Each prototype's training lesion precision equals Eq. 9 computed by hand on its class's
    training cases; a prototype mostly off the mass and its margin is flagged in words; border cells
    are flagged."""
    from iaiabl_lib.explain import prototype_health
    from iaiabl_lib.metrics import activation_precision

    health = prototype_health(run, data)
    assert [h.index for h in health] == list(range(run.model.num_prototypes))
    train = data.subset("train")
    with torch.no_grad():
        maps = run.model(to_tensors(train).images).similarity_maps
    grid = maps.shape[-1]
    for h in health:
        rows = np.flatnonzero(train.labels == h.cls)
        pam = activation_map(maps[rows, h.index][:, None], 64)[:, 0].numpy()
        assert h.lesion_ap == pytest.approx(float(np.mean(activation_precision(pam, train.lesion_masks[rows]))))
        patch = run.push[h.index]["patch"]
        assert h.on_border == (min(patch) == 0 or max(patch) == grid - 1)
        assert any("off the mass" in f for f in h.flags) == (h.margin_ap < 0.5)
        assert h.margin_ap >= h.lesion_ap                  # the widened region contains the lesion
        assert h.flagged == bool(h.flags)
        w = run.model.margin_head.weight[:, h.index].detach().numpy()
        assert h.weights == pytest.approx(tuple(w))
        assert any("against every margin" in f for f in h.flags) == bool((w < 0).all())
        assert any("against its own class" in f for f in h.flags) == bool(w[h.cls] < 0 and not (w < 0).all())
    strict = prototype_health(run, data, threshold=1.01)          # every prototype is below 101 %
    assert all(any("off the mass" in f for f in h.flags) for h in strict)
    # the weight rules, on a copy whose h1 is set by hand
    import copy

    bent = copy.copy(run)
    bent.model = copy.deepcopy(run.model)
    with torch.no_grad():
        bent.model.margin_head.weight[:, 0] = -1.0                   # against every margin
        c1 = int(bent.model.prototype_class[1])
        bent.model.margin_head.weight[:, 1] = 1.0
        bent.model.margin_head.weight[c1, 1] = -0.5                  # against its own class only
    flags = {h.index: h.flags for h in prototype_health(bent, data)}
    assert any("against every margin" in f for f in flags[0])
    assert any("against its own class" in f for f in flags[1])
    assert not any("against its own class" in f for f in flags[0])   # one reason, the stronger


def test_the_report_shows_the_whole_mammogram_with_the_region_and_a_scale_bar(tiny_run, prepared, synth_tree, tmp_path):
    """Issue 22, item 8: ``iaiabl explain`` shows the case's whole mammogram, shrunk, the region of
    interest boxed and a scale bar from the DICOM pixel spacing (the case reader's drawing,
    ``explain.whole_view_html``), for a prepared case and a raw DICOM alike; where the full image
    is gone, a sentence says so."""
    import shutil

    from iaiabl_lib.explain.report import explain_to_html

    row = next(r for r in manifest_rows(prepared) if r["split"] == "test")
    alt = re.compile(r"<img src='data:image/png;base64,[^']+' alt='([^']*the whole mammogram[^']*)'>")
    by_id = assert_self_contained(explain_to_html(tiny_run, row["id"], out=tmp_path / "id.html"))
    dicom = Path(synth_tree) / row["image_path"]
    raw = assert_self_contained(explain_to_html(tiny_run, str(dicom), box=",".join(row["bbox"].split()),
                                                out=tmp_path / "raw.html"))
    for text in (by_id, raw):
        assert "<h2>Where the region lies in the mammogram</h2>" in text
        found = alt.search(text)
        assert found and "boxed in yellow" in found.group(1) and "scale bar is" in found.group(1), text[:200]
    assert alt.search(raw).group(1) == alt.search(by_id).group(1).replace(row["id"] + ", ", raw_name(raw) + ", ")
    # the tree the data were prepared from, gone: the report still comes, and says why
    moved = tmp_path / "data"
    shutil.copytree(prepared, moved)
    summary = (moved / "summary.json").read_text().replace(str(synth_tree), str(tmp_path / "gone"))
    (moved / "summary.json").write_text(summary)
    text = explain_to_html(tiny_run, row["id"], data=moved, out=tmp_path / "gone.html").read_text()
    assert f"The whole mammogram cannot be shown: its file was not found at {tmp_path / 'gone'}" in text
    assert not alt.search(text)


def raw_name(report: str) -> str:
    return re.search(r"<title>IAIA-BL explanation: ([^<]+)</title>", report).group(1)
