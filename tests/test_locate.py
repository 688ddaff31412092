"""iaiabl_lib.data.locate: UIDs in CSV cells and folder names, the series index of a tree."""
from __future__ import annotations

import os

import pytest

from iaiabl_lib.data.locate import SeriesIndex, cell_uids, is_uid, uid_tokens

STUDY, SERIES = "1.3.6.1.4.1.9590.100.1.2.111", "1.3.6.1.4.1.9590.100.1.2.222"


def _series(root, *parts, files=("a.dcm",)):
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"x")
    return folder


def test_uids_in_names_and_cells():
    assert is_uid(SERIES) and not is_uid("00001") and not is_uid("1." + "2" * 70)
    assert uid_tokens(f"MG_{SERIES}") == {SERIES}                           # IDC's %Modality_%SeriesInstanceUID
    assert uid_tokens(SERIES) == {SERIES}                                   # NBIA (old): the UID itself
    assert uid_tokens("Mass-Training_P_00001_LEFT_CC") == set()
    assert uid_tokens("1.000000-full mammogram images-24515") == {"1.000000"}   # harmless: no CSV names it
    cell = f"Mass-Training_P_00001_LEFT_CC_1/{STUDY}/{SERIES}/000001.dcm\n"
    assert cell_uids(cell) == (STUDY, SERIES)
    assert cell_uids("000000.dcm") is None and cell_uids("a/not-a-uid/1.2.3/000000.dcm") is None


def test_index_finds_idc_and_nbia_folders_whatever_the_names(tmp_path):
    idc = _series(tmp_path, "cbis_ddsm", "Mass-Test_P_1", STUDY, f"MG_{SERIES}", files=("b.dcm", "a.DCM", "notes.txt"))
    index = SeriesIndex(tmp_path)
    found = index.find(STUDY, SERIES)
    assert found.path == idc and [f.name for f in found.files] == ["a.DCM", "b.dcm"]
    assert index.find(STUDY, "1.2.3.4") is None and index.ambiguous == {}


def test_index_prefers_the_copy_under_its_study_and_never_guesses(tmp_path):
    right = _series(tmp_path, "x", STUDY, f"MG_{SERIES}")
    _series(tmp_path, "stray", f"MG_{SERIES}")                              # not under the study
    index = SeriesIndex(tmp_path)
    assert index.find(STUDY, SERIES).path == right
    twin = _series(tmp_path, "y", STUDY, SERIES)                            # a second copy in the study
    index = SeriesIndex(tmp_path)
    assert index.find(STUDY, SERIES) is None
    assert sorted(index.ambiguous[SERIES]) == sorted([right, twin])


def test_index_never_leaves_the_root_through_a_link(tmp_path):
    outside = _series(tmp_path, "outside", STUDY, SERIES)
    root = tmp_path / "root"
    root.mkdir()
    try:
        os.symlink(outside.parent, root / "link", target_is_directory=True)
    except OSError:
        pytest.skip("symbolic links are not available here")
    assert SeriesIndex(root).find(STUDY, SERIES) is None
    assert SeriesIndex(tmp_path / "missing").find(STUDY, SERIES) is None
