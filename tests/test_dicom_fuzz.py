"""Issue 24: every failure of reading a damaged DICOM file is the library's DicomError.

A seeded mutation campaign (``tests/dicom_mutations.py``) over small valid files: byte flips
concentrated in the header, damaged elements, truncations, splices, hostile header values. Every
case must read cleanly (float32 (H, W), finite, displayable) or be refused with a DicomError that
names the file, within 5 s and 1 GiB. The fast tier here runs 400 cases (a few seconds);
``python benchmarks/dicom_fuzz.py --cases 10000 --seed S`` runs the long one.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest

import dicom_mutations as dm
from iaiabl_lib.data import dicom
from iaiabl_lib.data.dicom import DicomError, check_header, read_dicom

FAST_CASES = 400
SEED = 24


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, bytes]:
    return dm.base_files(tmp_path_factory.mktemp("fuzz_bases"))


def _refused(tmp_path, data: bytes, name: str = "case.dcm") -> DicomError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    assert str(path) in str(info.value) and info.value.reason in dicom.REASONS
    return info.value


def test_every_base_reads_cleanly_and_passes_the_header_check(bases, tmp_path):
    assert len(bases) >= 10
    for name, data in bases.items():
        outcome = dm.run_case(dm.Case(0, 0, name, "none", "unmutated", data), tmp_path)
        assert outcome.kind == "read" and not outcome.problems, outcome.describe()
        (tmp_path / "base.dcm").write_bytes(data)
        check_header(tmp_path / "base.dcm")


def test_the_campaign_is_deterministic_per_seed(bases):
    first = list(dm.make_cases(bases, 60, SEED))
    assert dm.fingerprint(first) == dm.fingerprint(dm.make_cases(bases, 60, SEED))
    assert dm.fingerprint(first) != dm.fingerprint(dm.make_cases(bases, 60, SEED + 1))
    alone = next(dm.make_cases(bases, 1, SEED, start=37))            # one case rebuilt by itself
    assert (alone.data, alone.describe()) == (first[37].data, first[37].describe())
    assert sum(c.data != bases[c.base] for c in first) >= 55          # (a few mutations change nothing)


def test_fast_campaign_every_case_reads_or_is_refused_in_time_and_memory(bases, tmp_path):
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        outcomes = [dm.run_case(case, tmp_path) for case in dm.make_cases(bases, FAST_CASES, SEED)]
    finally:
        if not tracing:
            tracemalloc.stop()
    bad = [o for o in outcomes if o.problems]
    assert not bad, f"{len(bad)} of {len(outcomes)} cases broke a rule:\n" + "\n".join(o.describe() for o in bad[:5])
    summary = dm.tally(outcomes)
    assert summary["escaped"] == 0 and summary["read"] > 0 and summary["refused"] > 0.3 * FAST_CASES
    assert {o.case.mutator for o in outcomes} == set(dm.MUTATORS)
    assert {o.kind for o in outcomes} == {"read", "refused"}
    assert {"dicom corrupt or truncated", "transfer syntax unknown", "image too large"} <= set(summary["reasons"])
    assert max(o.seconds for o in outcomes) < dm.CASE_SECONDS
    assert max(o.peak for o in outcomes) < dm.MEMORY_LIMIT


# --- the two errors of the issue, by hand ---------------------------------------------------------

def test_a_flipped_vr_byte_in_rows_is_refused_naming_the_element(bases, tmp_path):
    """``NotImplementedError: Unknown Value Representation '0x55 0x20' in tag (0028,0010)``, raised
    by pydicom at the first access of Rows, escaped the reader before issue 24."""
    err = _refused(tmp_path, dm.with_vr(bases["synth full"]))
    assert err.reason == dicom.CORRUPT
    assert "Rows (0028,0010)" in str(err) and "Unknown Value Representation" in str(err)
    assert "download it again" in str(err)


@pytest.mark.parametrize("where", [5, 18])
def test_a_flipped_byte_in_the_transfer_syntax_uid_is_refused(bases, tmp_path, where):
    """``ValueError: UID is not a transfer syntax.`` escaped the reader before issue 24 (and
    `iaiabl prepare` stopped with exit 2 and that sentence, naming no file)."""
    err = _refused(tmp_path, dm.with_syntax_byte(bases["synth full"], where, ord("9")))
    assert err.reason == dicom.UNKNOWN_SYNTAX and "TransferSyntaxUID" in str(err)
    with pytest.raises(DicomError, match="TransferSyntaxUID"):
        check_header(tmp_path / "case.dcm")


# --- hostile header values, each refused for what it is -------------------------------------------

@pytest.mark.parametrize("keyword, vr, value, reason, words", [
    ("Rows", "SS", -1, dicom.CORRUPT, "Rows"),
    ("Rows", "US", 0, dicom.EMPTY, "Rows=0"),
    ("Columns", "UL", 2 ** 32 - 1, dicom.TOO_LARGE, "megapixels"),
    ("Rows x Columns", "US", (65535, 65535), dicom.TOO_LARGE, "Rows 65535 x Columns 65535"),
    ("BitsAllocated", "US", 0, dicom.CORRUPT, "BitsAllocated is 0"),
    ("BitsAllocated", "US", 65535, dicom.CORRUPT, "BitsAllocated is 65535"),
    ("PhotometricInterpretation", "CS", b"RGB", dicom.NOT_2D, "'RGB'"),
    ("PhotometricInterpretation", "CS", b"MONOCHROME3 ", dicom.NOT_2D, "'MONOCHROME3'"),
    ("SamplesPerPixel", "US", 3, dicom.NOT_2D, "3 sample(s)"),
    ("RescaleSlope", "DS", b"NaN ", dicom.BAD_RESCALE, "RescaleSlope"),
    ("RescaleSlope", "DS", b"1e308 ", dicom.BAD_RESCALE, "float32"),
    ("RescaleIntercept", "DS", b"1e308 ", dicom.BAD_RESCALE, "RescaleIntercept"),
    ("NumberOfFrames", "IS", b"2 ", dicom.NOT_2D, "2 frame(s)"),
    ("NumberOfFrames", "IS", b"0 ", dicom.CORRUPT, "NumberOfFrames is 0"),
    ("NumberOfFrames", "IS", b"abc ", dicom.CORRUPT, "NumberOfFrames"),
    ("TransferSyntaxUID", "UI", b"1.2.3.4 ", dicom.UNKNOWN_SYNTAX, "'1.2.3.4'"),
    ("VOILUTSequence", "SQ", 2, dicom.CORRUPT, "VOI LUT"),
    ("PixelData", "OB", b"half", dicom.CORRUPT, "pixel data"),
])
def test_hostile_header_values_are_refused_for_what_they_are(bases, tmp_path, keyword, vr, value, reason, words):
    err = _refused(tmp_path, dm.rewrite_field(bases["synth full"], keyword, vr, value))
    assert err.reason == reason and words in str(err), str(err)


def test_hostile_window_values_read_and_display(bases, tmp_path):
    """A NaN or 1e308 window is ignored or used without overflow: the display is uint8."""
    for center, width in ((b"NaN ", b"100 "), (b"1e308 ", b"1e308 "), (b"0 ", b"1e-300")):
        data = dm.rewrite_field(bases["mono1 rescale window"], "WindowCenter", "DS", center)
        data = dm.rewrite_field(data, "WindowWidth", "DS", width)
        path = tmp_path / "w.dcm"
        path.write_bytes(data)
        pixels, info = read_dicom(path)
        shown = dicom.window_to_uint8(pixels, info)
        assert shown.dtype == np.uint8 and shown.shape == pixels.shape


def test_check_header_reads_no_pixels(bases, tmp_path):
    """check_header (iaiabl download's verification) refuses a damaged header but does not decode
    the pixel data: a file whose pixel data is cut short passes it, and read_dicom refuses it."""
    path = tmp_path / "short.dcm"
    path.write_bytes(dm.rewrite_field(bases["synth full"], "PixelData", "OB", b"half"))
    check_header(path)
    assert _refused(tmp_path, path.read_bytes()).reason == dicom.CORRUPT
    ds = pydicom.dcmread(path)
    assert ds.Rows == 128


def test_a_damaged_length_field_does_not_allocate_what_it_declares(bases, tmp_path):
    """A length field of 0xFFFFFFF0 in a 27 kB file: without the bounded reader Python allocated
    4 GiB for that one read (seen by tracemalloc in the campaign)."""
    data = bytearray(bases["synth full"])
    at = data.find(b"\x08\x00\x60\x00CS")                              # Modality, a short element
    data[at + 4:at + 8] = b"UT\x00\x00"                                # now a long VR: 4-byte length
    data[at + 8:at + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    tracemalloc.start()
    try:
        with pytest.raises(DicomError):
            (tmp_path / "len.dcm").write_bytes(bytes(data))
            read_dicom(tmp_path / "len.dcm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
