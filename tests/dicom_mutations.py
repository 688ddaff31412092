"""A seeded mutation fuzzer for the DICOM reader (issue 24): damaged copies of small valid files, and
the outcome every one of them must have.

    bases = base_files(folder)                       # name -> bytes of a small valid DICOM file
    for case in make_cases(bases, n=400, seed=0):    # case i depends on (seed, i) alone
        outcome = run_case(case, folder)             # read / refused / escaped, seconds, peak memory
        assert not outcome.problems, outcome.describe()

The bases are written by the project's own generator (``make_synthetic``: a full image, a cropped
image, an ROI mask) and by pydicom (MONOCHROME1 with rescale and window, an 8-bit mask, float
pixels, a VOI LUT sequence, a modality LUT sequence, implicit VR, deflated, RLE), all with fixed UIDs,
so that the same seed gives the same bytes on every run (:func:`fingerprint`).

Mutations (:data:`MUTATORS`, each with its weight):

* ``flip``: 1-8 bytes changed (one bit, a random byte, 0x00 or 0xFF); 90 % of them in the header
  (the bytes before the pixel data's value), the rest anywhere;
* ``element``: one element of the header damaged where it hurts: its VR (e.g. ``US`` -> ``U ``), its
  length, its tag, or the first byte of its value;
* ``truncate``: the file cut short, half the time inside the header;
* ``splice``: a run of bytes copied from another base (or this one) over or into the file, or a
  run deleted or repeated;
* ``field``: one header field rewritten with a hostile value (:data:`HOSTILE_FIELDS`: zero,
  negative and huge Rows/Columns/BitsAllocated, Rows x Columns up to and past the pixel budget, unknown photometric interpretations, NaN and 1e308
  rescale values, NumberOfFrames that disagrees with the data, unknown or wrong transfer syntaxes,
  damaged LUT sequences, pixel data of the wrong length ...);
* ``uid``: one byte of the transfer syntax UID changed (the second error of the issue).

Outcome classes (asserted by :func:`run_case`'s ``problems``): ``read`` (float32 (H, W) finite
pixels and a uint8 display of the same shape) or ``refused`` (a ``DicomError`` whose message names
the file and whose reason is one of ``dicom.REASONS``); never ``escaped`` (any other exception),
never slower than :data:`CASE_SECONDS`, never more than :data:`MEMORY_LIMIT` bytes at peak (traced
with ``tracemalloc`` when it is tracing).
"""
from __future__ import annotations

import hashlib
import io
import struct
import time
import tracemalloc
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (DeflatedExplicitVRLittleEndian, DigitalMammographyXRayImageStorageForPresentation,
                         ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)

from iaiabl_lib.data import dicom
from iaiabl_lib.data.dicom import DicomError, read_dicom, window_to_uint8

__all__ = ["MUTATORS", "HOSTILE_FIELDS", "CASE_SECONDS", "MEMORY_LIMIT", "Case", "Outcome", "base_files",
           "make_cases", "run_case", "fingerprint", "tally", "rewrite_field", "with_vr", "with_syntax_byte"]

CASE_SECONDS = 5.0
"""No case may take longer (a hang or a quadratic parse shows here)."""
MEMORY_LIMIT = 1 << 30
"""No case may allocate more at its peak (1 GiB; bases are tiny, so only a hostile header that
declares a large image could come near it)."""

MUTATORS = {"flip": 30, "element": 20, "truncate": 10, "splice": 10, "field": 25, "uid": 5}
"""Mutation -> weight (of 100)."""

_UID_ROOT = "1.2.826.0.1.3680043.10.1137.24."   # fixed UIDs: the same bytes on every run
_PIXEL_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

# --- the bases -----------------------------------------------------------------------------------


def _dataset(rows: int, cols: int, photometric: str = "MONOCHROME2", uid: str = "1") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = _UID_ROOT + uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = _UID_ROOT + uid
    ds.Modality, ds.PatientID, ds.PatientName = "MG", "P_FUZZ", "FUZZ^CASE"
    ds.SeriesDescription = "full mammogram images"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    return ds


def _image(rows: int, cols: int, seed: int, maximum: int = 4095) -> np.ndarray:
    """A toy mammogram: a bright half-disc against a dark background, with noise (uint16)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    breast = ((yy - rows / 2) / (rows / 2)) ** 2 + (xx / (0.9 * cols)) ** 2 < 1
    return np.where(breast, maximum // 3 + rng.integers(0, maximum // 3, (rows, cols)), 0).astype(np.uint16)


def _bytes(ds: Dataset, implicit: bool = False) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _pydicom_bases() -> dict[str, bytes]:
    """Small honest files written with pydicom, one per reader path."""
    out = {}
    ds = _dataset(40, 32, "MONOCHROME1", "2")
    ds.set_pixel_data(_image(40, 32, 2), "MONOCHROME1", 12, generate_instance_uid=False)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "2", "-100", "US"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = "4000", "6000", "LINEAR"
    out["mono1 rescale window"] = _bytes(ds)
    ds = _dataset(40, 32, uid="3")
    ds.set_pixel_data((_image(40, 32, 3) > 0).astype(np.uint8) * 255, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.SeriesDescription = "ROI mask images"
    out["mask u8"] = _bytes(ds)
    ds = _dataset(24, 20, uid="4")
    ds.BitsAllocated = 32
    ds.FloatPixelData = (_image(24, 20, 4) / 4095.0).astype(np.float32).tobytes()
    out["float pixels"] = _bytes(ds)
    ds = _dataset(24, 20, uid="5")
    ds.set_pixel_data(_image(24, 20, 5), "MONOCHROME2", 12, generate_instance_uid=False)
    ds.VOILUTSequence = Sequence([_lut_item([256, 0, 12], list(range(0, 4096, 16)))])
    out["voi lut"] = _bytes(ds)
    ds = _dataset(24, 20, uid="6")
    ds.set_pixel_data(_image(24, 20, 6, 255).astype(np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)
    item = _lut_item([256, 0, 16], list(range(0, 65536, 256)))
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    out["modality lut"] = _bytes(ds)
    ds = _dataset(24, 20, uid="7")
    ds.set_pixel_data(_image(24, 20, 7), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out["implicit vr"] = _bytes(ds, implicit=True)
    ds = _dataset(32, 24, uid="8")
    ds.set_pixel_data(_image(32, 24, 8), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out["deflated"] = _bytes(ds)
    ds = _dataset(32, 24, uid="9")
    ds.set_pixel_data(_image(32, 24, 9), "MONOCHROME2", 16, generate_instance_uid=False)
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    out["rle"] = _bytes(ds)
    return out


def _generator_bases(folder: Path) -> dict[str, bytes]:
    """A full image, a cropped image and an ROI mask from ``iaiabl synth`` (2 patients, 128 px,
    seed 0: deterministic)."""
    from iaiabl_lib.data.synthetic import make_synthetic

    tree = folder / "synth"
    if not (tree / "synthetic.json").is_file():
        make_synthetic(tree, patients=2, size=128, seed=0)
    files = sorted((tree / "CBIS-DDSM").rglob("*.dcm"))
    folder_of = {p: p.relative_to(tree / "CBIS-DDSM").parts[0] for p in files}   # Mass-Training_P_00003_LEFT_CC(_1)
    full = next(p for p in files if folder_of[p].endswith(("_CC", "_MLO")))
    roi = [p for p in files if folder_of[p].endswith("_1")]
    crop = max(roi, key=lambda p: p.stat().st_size)
    mask = min(roi, key=lambda p: p.stat().st_size)
    return {"synth full": full.read_bytes(), "synth crop": crop.read_bytes(), "synth mask": mask.read_bytes()}


def base_files(folder: Path) -> dict[str, bytes]:
    """Name -> bytes of every base file (each reads cleanly; checked by the tests)."""
    return {**_generator_bases(Path(folder)), **_pydicom_bases()}


# --- the layout of a file ------------------------------------------------------------------------

@dataclass
class _Layout:
    """Where things are in a file: the end of the file meta, the dataset's elements (offset, tag
    offset of the VR or None, offset and size of the length field, value offset), where the pixel
    data's value starts (the end of the "header")."""

    meta_end: int
    elements: list[tuple[int, int | None, int, int, int]]
    header_end: int


def _layout(data: bytes) -> _Layout:
    """Walk the meta and the dataset's top-level elements (explicit or implicit VR, little endian;
    a deflated body is not walked: its header is its first bytes)."""
    meta_end = 132
    if data[128:132] == b"DICM" and len(data) >= 144:
        meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    syntax = data[132:meta_end].split(b"\x10\x00UI", 1)[-1]
    implicit = ImplicitVRLittleEndian.encode() in syntax[:24]
    deflated = DeflatedExplicitVRLittleEndian.encode() in syntax[:30]
    elements, pos = [], 132
    while pos + 8 <= len(data):
        start = pos
        if pos >= meta_end and (implicit or deflated):
            if deflated:
                break
            length_at, length_size, value_at = pos + 4, 4, pos + 8
            vr_at = None
        else:
            vr = data[pos + 4:pos + 6]
            vr_at = pos + 4
            if vr in _LONG_VRS:
                length_at, length_size, value_at = pos + 8, 4, pos + 12
            else:
                length_at, length_size, value_at = pos + 6, 2, pos + 8
        if value_at > len(data):
            break
        length = int.from_bytes(data[length_at:length_at + length_size], "little")
        elements.append((start, vr_at, length_at, length_size, value_at))
        if data[start:start + 4] == _PIXEL_TAG or length == 0xFFFFFFFF:
            return _Layout(meta_end, elements, value_at)
        pos = value_at + length
    return _Layout(meta_end, elements, min(len(data), max(meta_end, 512)))


# --- mutations -----------------------------------------------------------------------------------

def _position(rng: np.random.Generator, layout: _Layout, size: int, header_share: float) -> int:
    if rng.random() < header_share:
        return int(rng.integers(0, max(layout.header_end, 1)))
    return int(rng.integers(0, size))


def _flip(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    out = bytearray(data)
    done = []
    for _ in range(int(rng.integers(1, 9))):
        at = _position(rng, layout, len(out), 0.9)
        how = int(rng.integers(0, 4))
        out[at] = (out[at] ^ (1 << int(rng.integers(0, 8))) if how == 0 else int(rng.integers(0, 256))
                   if how == 1 else 0 if how == 2 else 255)
        done.append(f"{at}")
    return bytes(out), "bytes changed at " + ",".join(done)


def _element(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    if not layout.elements:
        return _flip(data, rng, layout, bases)
    start, vr_at, length_at, length_size, value_at = layout.elements[int(rng.integers(0, len(layout.elements)))]
    out = bytearray(data)
    tag = "({:04X},{:04X})".format(*struct.unpack_from("<HH", data, start))
    what = int(rng.integers(0, 4))
    if what == 0 and vr_at is not None:
        vr = (bytes(rng.integers(0, 256, 2, dtype=np.uint8)) if rng.random() < 0.5
              else rng.choice(sorted(_LONG_VRS | {b"US", b"SS", b"DS", b"IS", b"CS", b"UI", b"LO", b"FD", b"AT"})))
        out[vr_at:vr_at + 2] = vr
        return bytes(out), f"VR of {tag} -> {bytes(vr)!r}"
    if what <= 1:
        new = int(rng.choice([0, 1, 3, 0xFF, 0xFFFF, 0xFFFFFFFF, int(rng.integers(0, 1 << 8 * length_size))]))
        new &= (1 << 8 * length_size) - 1
        out[length_at:length_at + length_size] = new.to_bytes(length_size, "little")
        return bytes(out), f"length of {tag} -> {new}"
    if what == 2:
        out[start + int(rng.integers(0, 4))] = int(rng.integers(0, 256))
        return bytes(out), f"tag {tag} changed"
    if value_at < len(out):
        out[value_at] = int(rng.integers(0, 256))
    return bytes(out), f"first value byte of {tag} changed"


def _truncate(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    at = _position(rng, layout, len(data), 0.5)
    return data[:at], f"truncated to {at} bytes"


def _splice(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    names = sorted(bases)
    donor_name = names[int(rng.integers(0, len(names)))]
    donor = bases[donor_name]
    n = int(rng.integers(1, 257))
    src = int(rng.integers(0, max(len(donor) - n, 1)))
    at = _position(rng, layout, len(data), 0.7)
    chunk = donor[src:src + n]
    how = int(rng.integers(0, 4))
    if how == 0:
        return data[:at] + chunk + data[at + len(chunk):], f"{n} bytes of {donor_name}@{src} over @{at}"
    if how == 1:
        return data[:at] + chunk + data[at:], f"{n} bytes of {donor_name}@{src} inserted @{at}"
    if how == 2:
        return data[:at] + data[at + n:], f"{n} bytes deleted @{at}"
    return data[:at] + data[at:at + n] + data[at:], f"{n} bytes repeated @{at}"


def _lut_item(descriptor, lut_data) -> Dataset:
    item = Dataset()
    item[0x00283002] = DataElement(0x00283002, "US", descriptor, validation_mode=config.IGNORE)
    item[0x00283006] = DataElement(0x00283006, "US", lut_data, validation_mode=config.IGNORE)
    return item


_BAD_LUTS = [([0, 0, 0], []), ([4, 0, 200], [1, 2, 3, 4]), ([4, 0, 65535], [1, 2, 3, 4]), ([4, 0, 8], []),
             ([2, 0], [1, 2]), ([65535, 65535, 16], [7])]

HOSTILE_FIELDS: list[tuple[str, list[tuple[str, object]]]] = [
    ("Rows", [("US", 0), ("US", 1), ("US", 65535), ("SS", -1), ("SS", -32768), ("UL", 2 ** 31),
              ("UL", 2 ** 32 - 1), ("US", [40, 32]), ("IS", b"-5"), ("DS", b"1e308")]),
    ("Rows x Columns", [("US", (10000, 10000)), ("US", (65535, 1525)), ("US", (1, 65535)), ("US", (65535, 65535))]),
    ("Columns", [("US", 0), ("US", 1), ("US", 65535), ("SS", -7), ("UL", 2 ** 32 - 1), ("FD", float("nan"))]),
    ("BitsAllocated", [("US", 0), ("US", 1), ("US", 3), ("US", 12), ("US", 17), ("US", 32), ("US", 64),
                       ("US", 255), ("US", 65535), ("SS", -16)]),
    ("BitsStored", [("US", 0), ("US", 1), ("US", 17), ("US", 64), ("US", 65535)]),
    ("HighBit", [("US", 0), ("US", 40), ("US", 65535)]),
    ("PixelRepresentation", [("US", 1), ("US", 2), ("US", 65535)]),
    ("SamplesPerPixel", [("US", 0), ("US", 3), ("US", 65535)]),
    ("PlanarConfiguration", [("US", 1), ("US", 7)]),
    ("PhotometricInterpretation", [("CS", b""), ("CS", b"MONOCHROME3 "), ("CS", b"RGB "), ("CS", b"PALETTE COLOR "),
                                   ("CS", b"YBR_FULL_422"), ("CS", b"\xff\xfe\x00garbage"),
                                   ("CS", b"MONOCHROME1\\MONOCHROME2 ")]),
    ("RescaleSlope", [("DS", b"NaN "), ("DS", b"1e308 "), ("DS", b"-1e308"), ("DS", b"inf "), ("DS", b"0 "),
                      ("DS", b"1e-308"), ("DS", b"1e39"), ("DS", b"1e30"), ("DS", b"abc "), ("DS", b"1\\2 "),
                      ("DS", b""), ("FD", float("nan"))]),
    ("RescaleIntercept", [("DS", b"NaN "), ("DS", b"1e308 "), ("DS", b"-1e308"), ("DS", b"inf "), ("DS", b"1e39"),
                          ("DS", b"abc "), ("DS", b"-3e38 ")]),
    ("WindowCenter", [("DS", b"NaN "), ("DS", b"1e308 "), ("DS", b"-1e308"), ("DS", b"inf "), ("DS", b"x "),
                      ("DS", b"")]),
    ("WindowWidth", [("DS", b"NaN "), ("DS", b"1e308 "), ("DS", b"-1 "), ("DS", b"0 "), ("DS", b"1e-300"),
                     ("DS", b"1 ")]),
    ("VOILUTFunction", [("CS", b"SIGMOID "), ("CS", b"LINEAR_EXACT"), ("CS", b"?? ")]),
    ("NumberOfFrames", [("IS", b"0 "), ("IS", b"-1"), ("IS", b"2 "), ("IS", b"3 "), ("IS", b"1000000 "),
                        ("IS", b"abc "), ("IS", b"1.5 "), ("IS", b"99999999999999999999"), ("IS", b"")]),
    ("Modality", [("CS", b""), ("CS", b"\x00\x00"), ("CS", b"CT")]),
    ("SpecificCharacterSet", [("CS", b"ISO_IR 999"), ("CS", b"\xff\xfe"), ("CS", b"ISO 2022 IR 87")]),
    ("PixelData", [("OB", b""), ("OB", b"\x01"), ("OB", b"half"), ("OB", b"double"), ("OW", b"odd")]),
    ("VOILUTSequence", [("SQ", i) for i in range(len(_BAD_LUTS))] + [("SQ", None)]),
    ("ModalityLUTSequence", [("SQ", i) for i in range(len(_BAD_LUTS))] + [("SQ", None)]),
    ("TransferSyntaxUID", [("UI", b"1.2.3.4 "), ("UI", b"1.2.840.10008.1.2.4.50"), ("UI", b"1.2.840.10008.1.2.5 "),
                           ("UI", b"1.2.840.10008.1.2.1.99"), ("UI", b"1.2.840.10008.1.2.2 "),
                           ("UI", b"1.2.840.10008.1.2 "), ("UI", b""), ("UI", b"\x00\x01"),
                           ("UI", b"1.2.840.10008.1.2.4.90")]),
]
"""Keyword -> (VR, hostile value) pairs that ``field`` writes into a base's header."""


def _pixel_value(ds: Dataset, how: bytes) -> bytes:
    raw = ds.get("PixelData", b"") or b""
    return {b"half": raw[:len(raw) // 2], b"double": raw + raw, b"odd": raw + b"\0"}.get(how, how)


def _hostile_element(ds: Dataset, keyword: str, vr: str, value) -> DataElement | RawDataElement:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if keyword in ("VOILUTSequence", "ModalityLUTSequence"):
        items = [] if value is None else [_lut_item(*_BAD_LUTS[value])]
        return DataElement(tag, "SQ", Sequence(items))
    if keyword == "PixelData":
        value = _pixel_value(ds, value)
    if isinstance(value, bytes) and vr not in ("OB", "OW"):     # text written as it is, unvalidated
        value += b" " * (len(value) % 2)
        return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _rewrite_meta(data: bytes, value: bytes) -> bytes:
    """The file with its TransferSyntaxUID replaced by ``value`` (meta rewritten, body kept)."""
    layout = _layout(data)
    meta = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True).file_meta
    meta[0x00020010] = DataElement(0x00020010, "UI", value, validation_mode=config.IGNORE)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=False)
    return data[:132] + buf.getvalue() + data[layout.meta_end:]


def rewrite_field(data: bytes, keyword: str, vr: str, value) -> bytes:
    """``data`` (a DICOM file) with one field of :data:`HOSTILE_FIELDS` set to ``value`` with
    ``vr`` (pydicom writes it without validating; text values are given as bytes)."""
    if keyword == "TransferSyntaxUID":
        return _rewrite_meta(data, value)
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if keyword == "Rows x Columns":          # both at once: an image up to the pixel budget and past it
        ds.Rows, ds.Columns = value
    else:
        ds[pydicom.datadict.tag_for_keyword(keyword)] = _hostile_element(ds, keyword, vr, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _field(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    keyword, choices = HOSTILE_FIELDS[int(rng.integers(0, len(HOSTILE_FIELDS)))]
    vr, value = choices[int(rng.integers(0, len(choices)))]
    what = f"{keyword} = {vr} {value!r}"
    try:
        return rewrite_field(data, keyword, vr, value), what
    except Exception as exc:          # pydicom cannot write it: damage the header by hand instead
        out, detail = _flip(data, rng, layout, bases)
        return out, f"{what} not writable ({type(exc).__name__}); {detail}"


def _uid(data: bytes, rng, layout: _Layout, bases) -> tuple[bytes, str]:
    at = data.find(b"\x02\x00\x10\x00UI")
    if at < 0:
        return _flip(data, rng, layout, bases)
    length = struct.unpack_from("<H", data, at + 6)[0]
    pos = at + 8 + int(rng.integers(0, max(length, 1)))
    out = bytearray(data)
    out[pos] = int(rng.integers(0, 256)) if rng.random() < 0.5 else out[pos] ^ (1 << int(rng.integers(0, 8)))
    return bytes(out), f"transfer syntax UID byte {pos - at - 8} changed"


def with_vr(data: bytes, group: int = 0x0028, element: int = 0x0010, vr: bytes = b"\x55\x20") -> bytes:
    """``data`` (explicit VR) with the VR of element (group, element) replaced: by default the
    issue's flipped byte in Rows, ``Unknown Value Representation '0x55 0x20' in tag (0028,0010)``."""
    out = bytearray(data)
    at = out.find(struct.pack("<HH", group, element), 132)
    assert at > 0, f"({group:04X},{element:04X}) not found"
    out[at + 4:at + 6] = vr
    return bytes(out)


def with_syntax_byte(data: bytes, offset: int = 5, value: int = ord("9")) -> bytes:
    """``data`` with byte ``offset`` of its transfer syntax UID set to ``value``: the issue's
    ``UID is not a transfer syntax.``"""
    out = bytearray(data)
    at = out.find(b"\x02\x00\x10\x00UI")
    assert at > 0, "no TransferSyntaxUID"
    out[at + 8 + offset] = value
    return bytes(out)


_MUTATE = {"flip": _flip, "element": _element, "truncate": _truncate, "splice": _splice, "field": _field,
           "uid": _uid}


# --- cases and outcomes --------------------------------------------------------------------------

@dataclass
class Case:
    """One mutated file: ``index`` within its campaign, the ``base`` it came from, the ``mutator``
    and what it did (``detail``), and the bytes."""

    index: int
    seed: int
    base: str
    mutator: str
    detail: str
    data: bytes = field(repr=False)

    def describe(self) -> str:
        return f"case {self.index} (seed {self.seed}): {self.base}, {self.mutator}: {self.detail}"


def make_cases(bases: dict[str, bytes], n: int, seed: int, start: int = 0):
    """Cases ``start`` .. ``start + n - 1`` of campaign ``seed`` (a generator). Case ``i`` is made by
    ``numpy.random.default_rng([seed, i])`` alone, so it can be rebuilt without the others."""
    names = sorted(bases)
    kinds, weights = zip(*MUTATORS.items())
    p = np.asarray(weights, float) / sum(weights)
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        base = names[int(rng.integers(0, len(names)))]
        kind = str(rng.choice(kinds, p=p))
        data = bases[base]
        with warnings.catch_warnings():          # pydicom's words about the damage it writes
            warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
            mutated, detail = _MUTATE[kind](data, rng, _layout(data), bases)
        yield Case(i, seed, base, kind, detail, mutated)


def fingerprint(cases) -> str:
    """sha256 over the cases' bytes and descriptions: equal for equal campaigns."""
    h = hashlib.sha256()
    for c in cases:
        h.update(c.describe().encode())
        h.update(c.data)
    return h.hexdigest()


@dataclass
class Outcome:
    """What reading one case gave: ``kind`` 'read' | 'refused' | 'escaped', the ``reason`` (a
    DicomError's reason, or the escaped exception's type), ``seconds``, ``peak`` bytes (None when
    tracemalloc is not tracing), and ``problems``: every property the case violates."""

    case: Case
    kind: str
    reason: str
    message: str
    seconds: float
    peak: int | None
    problems: list[str]

    def describe(self) -> str:
        return f"{self.case.describe()} -> {self.kind} {self.reason!r}: {'; '.join(self.problems) or 'ok'}\n{self.message}"


def _check_read(pixels, info) -> list[str]:
    """The properties of a clean read: float32 (H, W), finite, and a uint8 display of that shape."""
    problems = []
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.float32 or pixels.ndim != 2 or 0 in pixels.shape:
        return [f"pixels are {type(pixels).__name__} {getattr(pixels, 'dtype', '')} {np.shape(pixels)}"]
    if not np.all(np.isfinite(pixels)):
        problems.append("pixels not finite")
    shown = window_to_uint8(pixels, info)
    if shown.dtype != np.uint8 or shown.shape != pixels.shape:
        problems.append(f"display is {shown.dtype} {shown.shape}")
    return problems


def run_case(case: Case, folder: Path, max_pixels: int = dicom.DEFAULT_MAX_PIXELS) -> Outcome:
    """Write ``case`` to ``folder``, read it with ``read_dicom`` (and display a clean read with
    ``window_to_uint8``), and classify what happened. Exceptions other than DicomError are caught
    and reported as ``escaped`` (a problem), never raised."""
    path = Path(folder) / f"case{case.index:06d}.dcm"
    path.write_bytes(case.data)
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    kind, reason, message, problems = "read", "", "", []
    try:
        with warnings.catch_warnings():          # pydicom's words about the damage it reads past
            warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
            pixels, info = read_dicom(path, max_pixels=max_pixels)
        problems = _check_read(pixels, info)
    except DicomError as err:
        kind, reason, message = "refused", err.reason, str(err)
        if str(path) not in message:
            problems.append("the message does not name the file")
        if err.reason not in dicom.REASONS:
            problems.append(f"unknown reason {err.reason!r}")
    except Exception as exc:  # noqa: BLE001 -- exactly what the campaign looks for
        kind, reason = "escaped", type(exc).__name__
        message = "".join(traceback.format_exception(exc)[-6:])
        problems.append(f"{type(exc).__name__} escaped: {exc}")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else None
    if seconds > CASE_SECONDS:
        problems.append(f"took {seconds:.1f} s")
    if peak is not None and peak > MEMORY_LIMIT:
        problems.append(f"peak memory {peak / 2 ** 20:.0f} MiB")
    path.unlink()
    return Outcome(case, kind, reason, message, seconds, peak, problems)


def tally(outcomes: list[Outcome]) -> dict:
    """Counts by outcome class and by refusal reason, the slowest case and the largest peak."""
    kinds: dict[str, int] = {"read": 0, "refused": 0, "escaped": 0}
    reasons: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] += 1
        if o.kind != "read":
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
    slowest = max(outcomes, key=lambda o: o.seconds)
    peaks = [o for o in outcomes if o.peak is not None]
    return {"cases": len(outcomes), **kinds, "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "problems": sum(bool(o.problems) for o in outcomes),
            "slowest_seconds": slowest.seconds, "slowest": slowest.case.describe(),
            "peak_bytes": max((o.peak for o in peaks), default=None),
            "peak_case": max(peaks, key=lambda o: o.peak).case.describe() if peaks else None}

