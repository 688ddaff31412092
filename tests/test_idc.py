"""iaiabl_lib.data.idc: `iaiabl download cbis-ddsm` (selection from the packaged IDC index, dry run,
verification, resume, failures) and `iaiabl prepare` on IDC's download layout. Offline: the socket
layer refuses every connection in this module, and downloads go through a stand-in."""
from __future__ import annotations

import csv
import json
import socket
import sys
import types
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from cbis_fixtures import CSV_NAMES, REAL_CBIS, require_real_csvs
from idc_layout import BucketDownloader, relay_as_idc, subset_csvs
from iaiabl_lib import cli
from iaiabl_lib.data import idc
from iaiabl_lib.data.cbis_ddsm import classify_margin, prepare, read_mass_csv

PATH_COLUMNS = {"image_path", "mask_path", "fine_mask_path"}   # INTERFACES.md §2: files as found


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted in an offline test: {args[1:] or args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _require_index():
    pytest.importorskip("duckdb", reason="idc-index is not installed (pip install 'iaiabl_lib[real]')")
    pytest.importorskip("idc_index_data", reason="idc-index-data is not installed (pip install 'iaiabl_lib[real]')")


@pytest.fixture(scope="session")
def idc_tree(synth_tree, tmp_path_factory):
    """The session's synthetic tree re-laid as an IDC download, and its index entries."""
    out = tmp_path_factory.mktemp("idc") / "cbis"
    return out, relay_as_idc(synth_tree, out)


def _manifest(path: Path) -> list[dict]:
    with open(path / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _quiet(_msg: str) -> None:
    pass


# --- the real CSVs against the real packaged index -----------------------------------------------

def test_packaged_csvs_are_the_real_tables():
    require_real_csvs()
    for name in CSV_NAMES.values():
        assert (idc.CSV_DIR / name).read_bytes() == (REAL_CBIS / name).read_bytes(), name
    readme = (idc.CSV_DIR / "README.md").read_text()
    assert "CC BY 3.0" in readme and "10.7937/K9/TCIA.2016.7O02S9CY" in readme


def test_selection_of_the_real_csvs_in_the_packaged_index():
    require_real_csvs()
    _require_index()
    assert idc.index_version() == "25.0.5"
    sel = idc.select_series(REAL_CBIS)
    assert sel.n_rows == 1318 + 378
    assert sel.unresolved == []                              # every CSV row's three series are there
    assert len(sel.series) == 3391 and sum(s.instances for s in sel.series) == 4984
    full = sel.of_kind("full")
    roi = [s for s in sel.series if "full" not in sel.kinds[s.series_uid]]
    assert (len(full), sum(s.bytes for s in full)) == (1592, 53_619_355_836)
    assert (len(roi), sum(s.bytes for s in roi)) == (1799, 28_903_980_100)
    assert sel.total_bytes == 82_523_335_936
    assert {s.collection_id for s in sel.series} == {"cbis_ddsm"} and {s.modality for s in sel.series} == {"MG"}
    # IDC names each series' PatientID folder as the CSV names the path's first folder
    folders = {}
    for name in CSV_NAMES.values():
        for row in read_mass_csv(REAL_CBIS / name):
            for cell in (row.image_path, row.crop_path, row.mask_path):
                parts = cell.split("/")
                folders[parts[-2]] = parts[0]
    assert all(s.patient_id == folders[s.series_uid] for s in sel.series)
    assert "3391 series" in sel.describe() and "82.5 GB" in sel.describe()


def test_dry_run_prints_count_and_size_offline_and_writes_nothing(tmp_path, capsys):
    require_real_csvs()
    _require_index()
    out = tmp_path / "cbis"
    assert cli.main(["download", "cbis-ddsm", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3391 series" in text and "82.5 GB" in text and "1696 have all their series in the index" in text
    assert "to download: 3391 series, 82.5 GB" in text and "dry run: nothing downloaded" in text
    assert not out.exists()


def test_rois_only_is_refused_with_the_reason_and_the_sizes(tmp_path, capsys):
    require_real_csvs()
    _require_index()
    assert cli.main(["download", "cbis-ddsm", "--rois-only", "--dry-run", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--rois-only is not supported" in err and "full mammograms" in err
    assert "1799 series, 28.9 GB" in err and "3391 series, 82.5 GB" in err
    assert not (tmp_path / "x").exists()


def test_missing_idc_index_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "idc_index_data", None)      # import fails as if not installed
    assert not idc.available()
    with pytest.raises(idc.MissingDependency, match=r"pip install 'iaiabl_lib\[real\]'"):
        idc.select_series()
    assert cli.main(["download", "cbis-ddsm", "--out", str(tmp_path / "x")]) == 2
    assert "pip install 'iaiabl_lib[real]'" in capsys.readouterr().err


def test_requirement_pins_agree():
    repo = Path(__file__).resolve().parents[1]
    pyproject = (repo / "pyproject.toml").read_text()
    assert f'real = ["{idc.PIP_SPEC}"]' in pyproject
    assert idc.PIP_SPEC in (repo / "requirements.txt").read_text().splitlines()
    assert '"cbis_ddsm_csv/*.csv"' in pyproject                  # the CSVs ship in the wheel


def test_layout_is_the_librarys_default():
    """Our template and folder formula give exactly the path idc-index's own SQL builds."""
    _require_index()
    duckdb = pytest.importorskip("duckdb")
    IDCClient = pytest.importorskip("idc_index.index").IDCClient
    assert idc.DIR_TEMPLATE == IDCClient.DOWNLOAD_HIERARCHY_DEFAULT
    s = idc.IndexSeries("1.2.3.4", "1.2.3", "Mass-Training_P_00001_LEFT_CC_1", "MG", "cropped images", 2, 10)
    concat = IDCClient._generate_sql_concat_for_building_directory(dirTemplate=idc.DIR_TEMPLATE, downloadDir="/d")
    path = duckdb.execute(f"SELECT {concat} FROM (SELECT ? AS collection_id, ? AS PatientID, ? AS StudyInstanceUID, "
                          "? AS Modality, ? AS SeriesInstanceUID)",
                          [s.collection_id, s.patient_id, s.study_uid, s.modality, s.series_uid]).fetchone()[0]
    expected = Path("/d/cbis_ddsm/Mass-Training_P_00001_LEFT_CC_1/1.2.3/MG_1.2.3.4")
    assert Path(path) == idc.series_folder("/d", s) == expected


# --- prepare reads IDC's layout ------------------------------------------------------------------

def test_idc_layout_prepares_like_the_nbia_layout(synth_tree, prepared, idc_tree, tmp_path):
    """The same data in NBIA's and IDC's layout -> identical arrays, manifest (but for the file
    path columns) and summary (but for its source)."""
    tree, index = idc_tree
    assert not (tree / "CBIS-DDSM").exists() and any(tree.glob("cbis_ddsm/*/*/MG_*/*.dcm"))
    summary = prepare(tree, tmp_path / "data", size=64, split="paper", seed=0, verbose=False)
    for name in ("images.npy", "lesion_masks.npy", "fine_masks.npy"):
        assert np.array_equal(np.load(prepared / name), np.load(tmp_path / "data" / name)), name
    nbia, ours = _manifest(prepared), _manifest(tmp_path / "data")
    assert len(nbia) == len(ours) > 0
    for a, b in zip(nbia, ours):
        def rest(row):
            return {k: v for k, v in row.items() if k not in PATH_COLUMNS}
        assert rest(a) == rest(b)
        for k in PATH_COLUMNS:
            assert (a[k] == "") == (b[k] == "")
            if b[k]:
                assert b[k].startswith("cbis_ddsm/") and (tree / b[k]).is_file()
                uid = Path(a[k]).parent.name                      # the NBIA series folder
                assert Path(b[k]).parent.name == f"MG_{uid}"
    expected = json.loads((prepared / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k != "source"} == {k: v for k, v in expected.items() if k != "source"}


def test_prepare_skips_a_series_found_twice_and_says_where(synth_tree, idc_tree, tmp_path):
    tree, index = idc_tree
    work = tmp_path / "cbis"
    relay_as_idc(synth_tree, work)
    kept = next(r for r in read_mass_csv(tree / CSV_NAMES["train"]) if classify_margin(r.margin_raw)[0])
    victim = index[kept.image_path.split("/")[-2]]                # the full mammogram of an imported row
    copy = work / "elsewhere" / victim.study_uid / f"MG_{victim.series_uid}"   # a second copy, same study
    copy.mkdir(parents=True)
    for f in idc.series_folder(work, victim).glob("*.dcm"):
        (copy / f.name).write_bytes(f.read_bytes())
    summary = prepare(work, tmp_path / "data", size=32, verbose=False)
    assert any(victim.series_uid in note and "2 folders" in note for note in summary["notes"])
    its_rows = [s for s in summary["skipped"] if victim.series_uid in s["detail"]]
    assert its_rows and all(s["reason"] == "file missing" for s in its_rows)


# --- the download, with a stand-in for the network -----------------------------------------------

def _small(idc_tree, tmp_path, rows=4):
    """A selection of the first ``rows`` rows of each synthetic CSV: (csv_dir, index, bucket)."""
    bucket, index = idc_tree
    return subset_csvs(bucket, tmp_path / "csvs", rows), index, bucket


def test_download_verifies_writes_csvs_last_and_resumes(idc_tree, tmp_path):
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    out = tmp_path / "cbis"
    fetch = BucketDownloader(bucket)
    report = idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    sel = idc.select_series(csv_dir, index)
    assert fetch.calls == [[s.series_uid for s in sel.series]]
    assert all(st.complete for st in idc.check_tree(out, sel))
    for name in CSV_NAMES.values():
        assert (out / name).read_bytes() == (csv_dir / name).read_bytes()
    marker = json.loads((out / idc.MARKER).read_text())
    assert marker["n_series"] == len(sel.series) == report["n_series"] and marker["bytes"] == sel.total_bytes
    assert not list(out.glob(".*tmp-*"))
    summary = prepare(out, tmp_path / "data", size=32, verbose=False)   # the download is prepare's input
    assert summary["n_csv_rows"] == 8 and not any(s["reason"] == "file missing" for s in summary["skipped"])

    # resume: complete series are kept; only the damaged one is fetched again
    victim = sel.series[0]
    next(idc.series_folder(out, victim).glob("*.dcm")).unlink()
    idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    assert fetch.calls[-1] == [victim.series_uid]
    assert all(st.complete for st in idc.check_tree(out, sel)) and (out / idc.MARKER).is_file()
    # nothing to fetch: the downloader is not even called
    idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    assert len(fetch.calls) == 2


def _assert_nothing_looks_complete(out: Path):
    assert not (out / idc.MARKER).exists()
    assert not any((out / name).exists() for name in CSV_NAMES.values())
    assert not list(out.glob(".*tmp-*"))


Failure = namedtuple("Failure", "kind expected")


@pytest.mark.parametrize("failure", [
    Failure("skip", "missing"),
    Failure("short", "1 of 2 files"),
    Failure("truncate", "bytes (a file is truncated or differs)"),
], ids=lambda f: f.kind)
def test_a_missing_short_or_truncated_series_is_named_and_nothing_looks_complete(idc_tree, tmp_path, failure):
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    sel = idc.select_series(csv_dir, index)
    victim = next(s for s in sel.series if s.instances == 2)      # a crop + ROI mask series
    out = tmp_path / "cbis"
    fetch = BucketDownloader(bucket, **{failure.kind: [victim.series_uid]})
    with pytest.raises(idc.DownloadError) as err:
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    message = str(err.value)
    assert f"1 of {len(sel.series)} series are incomplete" in message
    assert f"{victim.patient_id} series {victim.series_uid}: " in message and failure.expected in message
    assert str(idc.series_folder(out, victim)) in message and "Rerun the same command to resume" in message
    _assert_nothing_looks_complete(out)
    # rerunning resumes: only the incomplete series is requested, and then the download completes
    idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=BucketDownloader(bucket), echo=_quiet)
    assert (out / idc.MARKER).is_file()


def test_a_damaged_file_of_the_right_size_is_named_and_fetched_again_once_deleted(idc_tree, tmp_path):
    """Verification reads every file's DICOM header (issue 24): a file with the index's size but a
    flipped VR byte in Rows is named with the reader's reason, nothing looks complete, and the
    same command fetches it again once it is deleted (the downloader, like s5cmd sync, keeps a
    file of the right size)."""
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    sel = idc.select_series(csv_dir, index)
    victim = sel.series[0]
    out = tmp_path / "cbis"
    with pytest.raises(idc.DownloadError) as err:
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index,
                               downloader=BucketDownloader(bucket, damage=[victim.series_uid]), echo=_quiet)
    damaged = sorted(idc.series_folder(out, victim).glob("*.dcm"))[0]
    message = str(err.value)
    assert f"1 of {len(sel.series)} series are incomplete" in message
    assert f"file {damaged.name} is damaged (dicom corrupt or truncated: the element Rows (0028,0010)" in message
    assert "delete it, then rerun" in message and str(damaged.parent) in message
    _assert_nothing_looks_complete(out)
    with pytest.raises(idc.DownloadError, match="is damaged"):       # rerun alone: the file is kept
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=BucketDownloader(bucket), echo=_quiet)
    damaged.unlink()
    fetch = BucketDownloader(bucket)
    idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    assert fetch.calls == [[victim.series_uid]] and (out / idc.MARKER).is_file()
    assert "DICOM header" in json.loads((out / idc.MARKER).read_text())["verified"]


def test_a_failed_rerun_withdraws_an_earlier_completion(idc_tree, tmp_path):
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    out = tmp_path / "cbis"
    idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=BucketDownloader(bucket), echo=_quiet)
    victim = idc.select_series(csv_dir, index).series[-1]
    for f in idc.series_folder(out, victim).glob("*.dcm"):
        f.unlink()
    with pytest.raises(idc.DownloadError, match=victim.series_uid):
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index,
                               downloader=BucketDownloader(bucket, skip=[victim.series_uid]), echo=_quiet)
    _assert_nothing_looks_complete(out)


def test_a_full_disk_stops_before_anything_moves(idc_tree, tmp_path, monkeypatch):
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    sel = idc.select_series(csv_dir, index)
    free = sel.total_bytes + idc.HEADROOM_BYTES - 1
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(idc.shutil, "disk_usage", lambda path: Usage(10 * free, 9 * free, free))
    out = tmp_path / "cbis"
    fetch = BucketDownloader(bucket)
    with pytest.raises(idc.DownloadError) as err:
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=fetch, echo=_quiet)
    message = str(err.value)
    assert "not enough free disk space" in message and str(tmp_path) in message
    assert f"{len(sel.series)} series still to download need {idc.format_bytes(sel.total_bytes)}" in message
    assert fetch.calls == [] and not out.exists()
    # the dry run says the same without failing
    lines = []
    report = idc.download_cbis_ddsm(out, dry_run=True, csv_dir=csv_dir, index=index, downloader=fetch,
                                    echo=lines.append)
    assert report["dry_run"] and "does NOT fit" in lines[-1] and not out.exists()


def _fake_idc_client(monkeypatch, error: Exception | None = None) -> list[dict]:
    """Put a stand-in ``idc_index.index`` module in place; returns the recorded calls."""
    calls: list[dict] = []

    class IDCClientInsufficientDiskSpaceError(Exception):
        pass

    class IDCClient:
        def download_from_selection(self, **kwargs):
            calls.append(kwargs)
            if error is not None:
                raise IDCClientInsufficientDiskSpaceError(str(error))

    module = types.ModuleType("idc_index.index")
    module.IDCClient, module.IDCClientInsufficientDiskSpaceError = IDCClient, IDCClientInsufficientDiskSpaceError
    monkeypatch.setitem(sys.modules, "idc_index.index", module)
    return calls


def test_the_idc_client_syncs_the_selected_series_into_the_default_layout(monkeypatch, tmp_path):
    calls = _fake_idc_client(monkeypatch)
    series = [idc.IndexSeries("1.2.3.4", "1.2.3", "Mass-Test_P_00002_LEFT_CC", "MG", "full mammogram images", 1, 9)]
    idc._idc_download(tmp_path, series, progress=False)
    assert calls == [{"downloadDir": str(tmp_path), "seriesInstanceUID": ["1.2.3.4"], "dirTemplate": idc.DIR_TEMPLATE,
                      "use_s5cmd_sync": True, "show_progress_bar": False, "quiet": True}]


def test_the_librarys_own_disk_check_reaches_the_user_with_what_to_do(idc_tree, tmp_path, monkeypatch):
    """idc-index checks the space again itself (against the series still to fetch)."""
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    _fake_idc_client(monkeypatch, error=RuntimeError("Insufficient disk space. Need 1 GB, but only 2 MB available."))
    with pytest.raises(idc.DownloadError, match=r"Insufficient disk space.*free space or choose another --out"):
        idc.download_cbis_ddsm(tmp_path / "cbis", csv_dir=csv_dir, index=index, echo=_quiet)
    _assert_nothing_looks_complete(tmp_path / "cbis")


def test_foreign_csvs_in_the_folder_are_not_overwritten(idc_tree, tmp_path):
    csv_dir, index, bucket = _small(idc_tree, tmp_path)
    out = tmp_path / "cbis"
    out.mkdir()
    mine = out / CSV_NAMES["train"]
    mine.write_text("patient_id\nmy own table\n")
    with pytest.raises(idc.DownloadError, match="differs from the CBIS-DDSM mass CSV"):
        idc.download_cbis_ddsm(out, csv_dir=csv_dir, index=index, downloader=BucketDownloader(bucket), echo=_quiet)
    assert mine.read_text() == "patient_id\nmy own table\n"
