"""iaiabl_lib.data.dicom: rescale, MONOCHROME1, windowing, clear errors, PHI stripping."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLSLossless

from cbis_fixtures import PHI_BIRTH, PHI_INSTITUTION, PHI_NAME, write_dicom
from hostile_files import deflate_bomb, plain_dicom, rle_bomb
from iaiabl_lib.data import dicom
from iaiabl_lib.data.dicom import DicomError, read_dicom, robust_window, strip_phi, window_to_uint8


@pytest.fixture
def ramp() -> np.ndarray:
    return np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)  # (H, W), all distinct


def test_reads_pixels_and_only_safe_info(tmp_path, ramp):
    path = write_dicom(tmp_path / "a.dcm", ramp, description="full mammogram images")
    pixels, info = read_dicom(path)
    assert pixels.dtype == np.float32 and pixels.shape == (64, 48)
    np.testing.assert_array_equal(pixels, ramp)
    assert info["Modality"] == "MG" and info["Rows"] == 64 and info["Columns"] == 48
    assert info["SeriesDescription"] == "full mammogram images" and info["inverted"] is False
    text = repr(info)
    for secret in (PHI_NAME, PHI_BIRTH, PHI_INSTITUTION, "PatientID", "P_00000"):
        assert secret not in text


def test_rescale_slope_intercept(tmp_path, ramp):
    pixels, _ = read_dicom(write_dicom(tmp_path / "a.dcm", ramp, slope=2.0, intercept=-100.0))
    np.testing.assert_allclose(pixels, ramp * 2.0 - 100.0)


def test_monochrome1_is_inverted_high_is_bright(tmp_path, ramp):
    mono2, _ = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp))
    mono1, info = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))
    assert info["inverted"] is True
    # the stored maximum is the darkest pixel: after inversion it is the minimum
    assert np.unravel_index(np.argmin(mono1), mono1.shape) == np.unravel_index(np.argmax(mono2), mono2.shape)
    # same display, mirrored (±1 grey level: the background pixel excluded by the robust window moves)
    diff = window_to_uint8(mono1, info).astype(int) - (255 - window_to_uint8(mono2).astype(int))
    assert np.abs(diff).max() <= 1


def test_window_tags_are_used(tmp_path):
    values = np.array([[0, 900, 1000, 1100, 4000]], dtype=np.uint16).repeat(4, 0)
    pixels, info = read_dicom(write_dicom(tmp_path / "w.dcm", values, window=(1000, 200)))
    assert info["voi"]["kind"] == "window"
    out = window_to_uint8(pixels, info)[0]
    assert out[0] == 0 and out[-1] == 255 and abs(int(out[2]) - 128) <= 1
    assert out[1] < out[2] < out[3]


def test_monochrome1_window_matches_inverted_display(tmp_path):
    values = np.array([[0, 900, 1000, 1100, 4000]], dtype=np.uint16).repeat(4, 0)
    p2, i2 = read_dicom(write_dicom(tmp_path / "w2.dcm", values, window=(1000, 200)))
    p1, i1 = read_dicom(write_dicom(tmp_path / "w1.dcm", values, window=(1000, 200), photometric="MONOCHROME1"))
    np.testing.assert_array_equal(window_to_uint8(p1, i1), 255 - window_to_uint8(p2, i2))


def test_voi_lut_sequence(tmp_path):
    values = np.array([[10, 11, 12, 13]], dtype=np.uint16).repeat(2, 0)
    path = write_dicom(tmp_path / "lut.dcm", values)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 10, 8])     # LUTDescriptor: 4 entries, first value 10, 8 bits
    item.add_new(0x00283006, "US", [0, 51, 204, 255])  # LUTData
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    pixels, info = read_dicom(path)
    assert info["voi"]["kind"] == "lut"
    np.testing.assert_array_equal(window_to_uint8(pixels, info)[0], [0, 51, 204, 255])


def test_robust_window_ignores_background():
    img = np.zeros((100, 100), np.float32)
    img[40:60, 40:60] = np.linspace(100, 200, 400).reshape(20, 20)
    low, high = robust_window(img)
    assert 100 <= low < 102 and 198 < high <= 200
    out = window_to_uint8(img)
    assert out[0, 0] == 0 and out[59, 59] == 255
    assert window_to_uint8(np.full((4, 4), 7.0)).max() == 0  # constant image: no division by zero


# --- errors --------------------------------------------------------------------------------------

def _error(path) -> DicomError:
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


def test_missing_file(tmp_path):
    assert _error(tmp_path / "nope.dcm").reason == dicom.MISSING


def test_not_dicom(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_text("hello")
    assert _error(path).reason == dicom.NOT_DICOM


def test_truncated(tmp_path, ramp):
    path = write_dicom(tmp_path / "t.dcm", ramp)
    path.write_bytes(path.read_bytes()[:-1000])
    err = _error(path)
    assert err.reason == dicom.CORRUPT and "download it again" in str(err)


def test_truncated_header(tmp_path, ramp):
    path = write_dicom(tmp_path / "t.dcm", ramp)
    path.write_bytes(path.read_bytes()[:200])
    assert _error(path).reason in (dicom.CORRUPT, dicom.EMPTY)


def test_wrong_modality_names_it(tmp_path, ramp):
    err = _error(write_dicom(tmp_path / "ct.dcm", ramp, modality="CT"))
    assert err.reason == dicom.WRONG_MODALITY and "'CT'" in str(err)
    pixels, info = read_dicom(tmp_path / "ct.dcm", modality=None)  # explicitly allowed
    assert info["Modality"] == "CT"


def test_compressed_without_handler_names_syntax_and_fix(tmp_path, ramp):
    err = _error(write_dicom(tmp_path / "c.dcm", ramp, transfer_syntax=JPEGLSLossless))
    assert err.reason == dicom.NO_HANDLER
    assert "JPEG-LS" in str(err) and "pip install pylibjpeg pylibjpeg-libjpeg" in str(err)


def test_nan_pixels(tmp_path):
    pixels = np.ones((8, 8), np.float32)
    pixels[3, 3] = np.nan
    assert _error(write_dicom(tmp_path / "n.dcm", pixels, float_pixels=True)).reason == dicom.NOT_FINITE


def test_empty_pixel_data(tmp_path, ramp):
    path = write_dicom(tmp_path / "e.dcm", ramp)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert _error(path).reason == dicom.EMPTY
    ds.add_new(0x7FE00010, "OB", b"")
    ds.Rows = 0
    ds.save_as(path)
    assert _error(path).reason == dicom.EMPTY


# --- PHI -----------------------------------------------------------------------------------------

def test_strip_phi_removes_identifiers_everywhere(tmp_path, ramp):
    ds = pydicom.dcmread(write_dicom(tmp_path / "p.dcm", ramp))
    ds.OtherPatientIDs = "X123"
    ds.PatientBirthTime = "101010"
    ds.InstitutionAddress = "2 High Street"
    nested = Dataset()
    nested.PersonName = "Someone^Else"
    nested.ObservationDateTime = "20010101120000"
    nested.CodeValue = "keep-me"
    ds.ContentSequence = Sequence([nested])
    ds.add_new(0x00291010, "LO", "private note")
    strip_phi(ds)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
                    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "AccessionNumber",
                    "StudyDate", "PatientAddress"):
        assert keyword not in ds, keyword
    assert "PersonName" not in ds.ContentSequence[0] and "ObservationDateTime" not in ds.ContentSequence[0]
    assert ds.ContentSequence[0].CodeValue == "keep-me"
    assert 0x00291010 not in ds
    assert ds.Modality == "MG" and ds.Rows == 64 and "PixelData" in ds
    for keyword in ("PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName",
                    "AccessionNumber", "StudyDate", "OtherPatientIDs", "PatientAddress"):
        assert keyword in dicom.PHI_KEYWORDS


# --- hostile files: decompression bombs, the pixel budget, bad rescale (issue 16) ----------------

BOMB_READER = r"""
import json, resource, sys
mode, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))     # before any import: everything counts
out = {}
try:
    if mode == "read_dicom":
        from iaiabl_lib.data.dicom import DicomError, read_dicom
        try:
            read_dicom(path)
            out["result"] = "read"
        except DicomError as err:
            out["result"], out["message"] = err.reason, str(err)
    else:                                                  # the control: plain pydicom
        import logging
        import pydicom
        failed = []                                        # pydicom logs a plugin's exception, then
        handler = logging.Handler()                        # raises RuntimeError without its cause
        handler.emit = lambda record: failed.append(record.exc_info[0].__name__ if record.exc_info else "")
        logging.getLogger("pydicom").addHandler(handler)
        try:
            pydicom.dcmread(path).pixel_array
            out["result"] = "read"
        except RuntimeError as err:
            out["result"] = "MemoryError" if "MemoryError" in failed else f"RuntimeError: {err}"
except MemoryError:
    out["result"] = "MemoryError"
# VmHWM: this program's peak resident memory (ru_maxrss would include the forked parent's)
status = open("/proc/self/status").read()
out["peak_rss_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(out))
"""
MEMORY_LIMIT = 1 << 30          # address space of the reading process: 1 GiB


def _read_limited(mode: str, path) -> dict:
    """Read ``path`` in a fresh process whose address space is capped at MEMORY_LIMIT."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", BOMB_READER, mode, str(path), str(MEMORY_LIMIT)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bomb", ["deflate 60000²", "rle 30000²", "deflate 64² inflating to 3 GiB"])
def test_decompression_bombs_refused_before_decoding_in_bounded_memory(tmp_path, bomb):
    """Small files that declare (or inflate to) gigabytes: refused as 'image too large', with a
    peak memory far below the 1 GiB the process may use; the control shows that plain pydicom
    runs out of that memory on the same file (so the file really is a bomb)."""
    if bomb == "deflate 60000²":
        path = deflate_bomb(tmp_path / "b.dcm", 60000, 60000)            # 3.4 GiB of zeros, 3.5 MB
    elif bomb == "rle 30000²":
        path = rle_bomb(tmp_path / "b.dcm", 30000, 30000, full=True)     # 900 MP, 14 MB
    else:
        path = deflate_bomb(tmp_path / "b.dcm", 64, 64, inflated=3 << 30)   # declares 4 KiB
    assert path.stat().st_size < 16 << 20
    ours = _read_limited("read_dicom", path)
    assert ours["result"] == dicom.TOO_LARGE, ours
    assert str(path) in ours["message"] and "not decoded" in ours["message"]
    assert ours["peak_rss_mib"] < 300, ours                               # measured: about 60 MiB
    control = _read_limited("pydicom", path)
    assert control["result"] == "MemoryError", control


def test_deflated_file_within_the_budget_reads_like_the_native_one(tmp_path):
    native = read_dicom(plain_dicom(tmp_path / "n.dcm", 9, 7, value=5))[0]
    deflated, info = read_dicom(plain_dicom(tmp_path / "d.dcm", 9, 7, DeflatedExplicitVRLittleEndian, value=5))
    assert info["transfer_syntax"] == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(native, deflated)
    big, _ = read_dicom(deflate_bomb(tmp_path / "z.dcm", 700, 500))      # an honest deflated image
    assert big.shape == (700, 500) and not big.any()


def test_pixel_budget_is_settable_and_checks_the_file_size_first(tmp_path, ramp):
    path = write_dicom(tmp_path / "a.dcm", ramp)                          # 64 x 48 = 3072 px
    assert read_dicom(path, max_pixels=3072)[0].shape == (64, 48)
    err = _error_with(path, max_pixels=3071)
    assert err.reason == dicom.TOO_LARGE and "Rows 64 x Columns 48" in str(err)
    huge = tmp_path / "huge.dcm"                                          # sparse: no disk used
    with open(huge, "wb") as f:
        f.truncate(dicom.max_file_bytes(1000) + 1)
    err = _error_with(huge, max_pixels=1000)
    assert err.reason == dicom.TOO_LARGE and "MiB" in str(err)


@pytest.mark.parametrize("slope", [0.0, "nan"])
def test_rescale_slope_zero_or_not_finite_is_refused(tmp_path, ramp, slope):
    path = write_dicom(tmp_path / "s.dcm", ramp, slope=1.0, intercept=5.0)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope = slope
    ds.save_as(path)
    err = _error(path)
    assert err.reason == dicom.BAD_RESCALE and "RescaleSlope" in str(err)


def test_rescale_slope_absent_or_empty_means_one(tmp_path, ramp):
    path = write_dicom(tmp_path / "s.dcm", ramp, slope=1.0, intercept=5.0)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope = None
    ds.save_as(path)
    np.testing.assert_allclose(read_dicom(path)[0], ramp + 5.0)


def _error_with(path, **kwargs) -> DicomError:
    with pytest.raises(DicomError) as info:
        read_dicom(path, **kwargs)
    return info.value
