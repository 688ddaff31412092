"""iaiabl_lib.data.dicom: rescale, MONOCHROME1, windowing, clear errors, PHI stripping."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEGLSLossless

from cbis_fixtures import PHI_BIRTH, PHI_INSTITUTION, PHI_NAME, write_dicom
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
