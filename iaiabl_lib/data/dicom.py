"""Reading mammography DICOM files: rescale, MONOCHROME1, windowing, and PHI stripping.

The pipeline for one file (DICOM PS3.3 C.11, the "grayscale pipeline"):

    stored values --modality LUT (RescaleSlope/Intercept)--> modality values   (read_dicom)
                  --MONOCHROME1: invert so that high = bright-->                (read_dicom)
                  --VOI LUT / window, else robust 0.5-99.5 % window--> uint8    (window_to_uint8)

``read_dicom`` returns float32 pixels with high = bright and an ``info`` dict of non-identifying
tags only; ``window_to_uint8`` turns them into 0 = black, 255 = white display values. Every failure
is a :class:`DicomError` that names the file, says what is wrong and what to do, and carries a short
``reason`` code (:data:`REASONS`) the CBIS-DDSM importer counts in ``summary.json``.

Damaged files (issue 24): whatever a file's bytes make pydicom raise, and whenever (elements are
decoded lazily, at their first access), the reader turns it into a DicomError: pydicom parses and
decodes only inside one guard (``_from_the_file``), every element the pipeline reads is decoded
there first, one by one, so that the error names it, and the values computed with are checked
(whole-number geometry, one grayscale frame, a known transfer syntax, finite rescale and window
values). ``tests/dicom_mutations.py`` proves it with a seeded mutation campaign (byte flips,
truncations, splices, hostile header values); ``benchmarks/dicom_fuzz.py`` runs 10,000 cases.

Hostile files are read with bounded memory (a "decompression bomb" is a small file that declares or
inflates to a huge image): before anything is decoded, the file's size, the declared
Rows × Columns × frames and, for the deflate transfer syntax, the inflated size are held to a
pixel budget (``max_pixels``, default :data:`DEFAULT_MAX_PIXELS`, far above any mammogram);
deflated data is inflated in bounded chunks (pydicom would inflate it whole). A file over budget is
refused with reason ``image too large`` before any large allocation.

Nothing here keeps a pydicom ``Dataset`` around: the prepared dataset stores pixel arrays and a
manifest only. Code that must keep one (a report of a user's own DICOM file) passes it through
:func:`strip_phi` first. The PHI rules live in :mod:`.phi` and the display windows in :mod:`.window`
(both re-exported here, the names callers use).
"""
from __future__ import annotations

import io
import math
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..errors import InputError
from .phi import PHI_KEYWORDS, PHI_VRS, strip_phi
from .window import robust_window, window_to_uint8

__all__ = [
    "DicomError", "read_dicom", "check_header", "window_to_uint8", "robust_window", "strip_phi",
    "PHI_KEYWORDS", "PHI_VRS", "INFO_KEYWORDS", "DEFAULT_MAX_PIXELS", "max_file_bytes", "REASONS",
]

# reason codes (stable strings; the importer counts skipped rows by them)
MISSING = "file missing"
CORRUPT = "dicom corrupt or truncated"
NOT_DICOM = "not a DICOM file"
WRONG_MODALITY = "modality not MG"
NO_HANDLER = "compressed pixels without handler"
NOT_FINITE = "pixels not finite"
EMPTY = "pixel data empty"
NOT_2D = "not a single-frame grayscale image"
TOO_LARGE = "image too large"
BAD_RESCALE = "rescale slope invalid"
UNKNOWN_SYNTAX = "transfer syntax unknown"

REASONS = (MISSING, NOT_DICOM, CORRUPT, UNKNOWN_SYNTAX, WRONG_MODALITY, NO_HANDLER, EMPTY, NOT_2D,
           TOO_LARGE, BAD_RESCALE, NOT_FINITE)
"""Every ``DicomError.reason`` this module gives."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Pixel budget: Rows × Columns × frames a file may declare (100 MP; a full-field mammogram is
about 10-40 MP). ``iaiabl prepare --max-megapixels`` changes it."""

INFLATE_CHUNK = 1 << 20          # bytes inflated per step of a deflated file
HEADER_LIMIT = 16 << 20          # inflated bytes allowed before the pixel data element
TRAILER_SLACK = 1 << 20          # inflated bytes allowed after the declared pixel data
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)   # Float, DoubleFloat, PixelData

DECODER_INSTALL_HINT = ("install a decoder: `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` "
                        "(or `pip install python-gdcm`), or decompress the file first "
                        "(e.g. `gdcmconv --raw IN OUT`)")
"""What to do about a compressed pixel format no installed plugin decodes."""


class DicomError(InputError):
    """A DICOM file that cannot be used. ``path`` names the file, ``reason`` is a short code
    (one of the module constants, e.g. ``"modality not MG"``), the message says what to do."""

    def __init__(self, path: str | Path, reason: str, message: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {message}")


INFO_KEYWORDS = (
    "Modality", "SeriesDescription", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "ImageLaterality", "Laterality", "ViewPosition", "PixelSpacing", "ImagerPixelSpacing",
    "BodyPartExamined", "PresentationIntentType", "SOPClassUID",
)
"""The only tags :func:`read_dicom` copies into ``info`` (none identifies a patient)."""


# --- reading -------------------------------------------------------------------------------------
#
# A damaged file makes pydicom raise almost any exception type, and late: elements are decoded at
# their first access, long after the file was opened (a flipped VR byte in Rows raises
# NotImplementedError when Rows is read). So the reader calls pydicom only inside
# ``_from_the_file`` blocks: parsing (``_read_dataset``), removing identifying elements, decoding
# every element the pipeline reads, one by one, before anything uses them (``_decode_elements``),
# decoding the pixel data and the modality LUT. The values it then computes with are checked first
# (``_count``, ``_check_format``, ``_transfer_syntax``, ``_rescale_value``, ``_voi``), so that the
# library's own arithmetic runs outside those blocks and its bugs still surface as bugs.

_DAMAGED = "the file is damaged or truncated: download it again"


def max_file_bytes(max_pixels: int) -> int:
    """The largest file accepted under a pixel budget: 4 bytes per pixel (32-bit pixels, the
    widest a grayscale mammogram uses) plus 64 MiB of header. Read before parsing, so that a huge
    file is refused without being loaded."""
    return 4 * int(max_pixels) + (64 << 20)


def _too_large(path: Path, what: str, max_pixels: int) -> DicomError:
    return DicomError(path, TOO_LARGE,
                      f"{what}; the file was not decoded (pixel budget {max_pixels / 1e6:g} megapixels; "
                      "a mammogram has 10-40). The file is damaged or hostile; if it really is an image "
                      "this large, raise the budget (iaiabl prepare --max-megapixels)")


def _brief(value: Any, limit: int = 120) -> str:
    """One line of at most ``limit`` characters (an exception's text, a tag's value)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextmanager
def _from_the_file(path: Path, what: str) -> Iterator[None]:
    """Turn any exception raised inside the block into a :class:`DicomError` (``CORRUPT``) that
    names ``path``, ``what`` could not be read (an element, the pixel data) and pydicom's words.
    Only for pydicom parsing or decoding the file's own bytes (see the comment above): whatever it
    raises there is the file's doing. A DicomError raised inside passes through unchanged."""
    try:
        yield
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any type: NotImplementedError, struct.error, MemoryError...
        raise DicomError(path, CORRUPT, f"{what} cannot be read ({type(exc).__name__}: {_brief(exc)}); "
                         + _DAMAGED) from exc


class _BoundedReader(io.BufferedReader):
    """A DICOM file opened for parsing, whose ``read(n)`` never asks for more than what is left
    of the file: a damaged length field (up to 4 GiB) would otherwise make Python allocate that
    much for one read before finding the file shorter."""

    def __init__(self, path: Path):
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def _read_dataset(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                  header_only: bool = False) -> pydicom.Dataset:
    """Parse the file (pixel data not decoded; ``header_only``: not even read, but for deflated
    files) within the budget: file size first, then the deflate transfer syntax inflated by
    :func:`_inflate_dataset` instead of by pydicom."""
    if not path.is_file():
        raise DicomError(path, MISSING, "file not found; check the path (and that the download is complete)")
    size = path.stat().st_size
    if size > max_file_bytes(max_pixels):
        raise _too_large(path, f"the file is {size / 2 ** 20:.0f} MiB, more than any image within the "
                         "budget needs", max_pixels)
    with _from_the_file(path, "the DICOM header"):
        try:
            with _BoundedReader(path) as fp:
                preamble = read_preamble(fp, False)
                meta = _read_file_meta_info(fp)
                if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                    return _inflate_dataset(fp, path, preamble, meta, max_pixels)
                fp.seek(0)
                return pydicom.dcmread(fp, stop_before_pixels=header_only)
        except InvalidDicomError:
            raise DicomError(path, NOT_DICOM, "not a DICOM file (no 'DICM' header); "
                             "point the importer at the original DICOM download") from None


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is one whole number (an int, or a number written as text);
    None for anything else (several values, bytes, a fraction, NaN, text)."""
    if isinstance(value, (bytes, bytearray, list, tuple, MultiValue)):
        return None
    if isinstance(value, int):
        return int(value)
    try:
        number = float(str(value).strip())
    except (ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _count(ds: pydicom.Dataset, keyword: str, path: Path, default: int) -> int:
    """A whole-number header value (Rows, Columns, NumberOfFrames, SamplesPerPixel,
    BitsAllocated): ``default`` when the element is absent or empty; :class:`DicomError`
    (``CORRUPT``) naming the element when it holds anything but one number from 0 to 2**32 - 1."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes, list, tuple, MultiValue)) and len(value) == 0):
        return default
    number = _whole(value)
    if number is None or not 0 <= number < 2 ** 32:
        raise DicomError(path, CORRUPT, f"{keyword} is {_brief(repr(value), 60)}, not a whole number from 0 "
                         "to 4294967295; the header is damaged: download the file again")
    return number


def _geometry(ds: pydicom.Dataset, path: Path) -> tuple[int, int, int]:
    """``(Rows, Columns, frames)`` as the header declares them, each a checked :func:`_count`
    (absent Rows/Columns: 0, absent NumberOfFrames: 1; NumberOfFrames 0 is refused)."""
    rows, cols = _count(ds, "Rows", path, 0), _count(ds, "Columns", path, 0)
    frames = _count(ds, "NumberOfFrames", path, 1)
    if frames == 0:
        raise DicomError(path, CORRUPT, "NumberOfFrames is 0 although the file holds pixel data; the "
                         "header is damaged: download the file again")
    return rows, cols, frames


def _declared_pixels(ds: pydicom.Dataset, path: Path) -> tuple[int, int]:
    """``(Rows × Columns × frames, bytes of the decoded pixel data)`` as the header declares them."""
    rows, cols, frames = _geometry(ds, path)
    samples = max(_count(ds, "SamplesPerPixel", path, 1), 1)
    bits = max(_count(ds, "BitsAllocated", path, 16), 1)
    pixels = rows * cols * frames
    return pixels, math.ceil(pixels * samples * bits / 8)


def _inflate_dataset(fp: BinaryIO, path: Path, preamble: bytes | None, meta, max_pixels: int) -> pydicom.Dataset:
    """The dataset of a Deflated Explicit VR Little Endian file, inflated in chunks of
    ``INFLATE_CHUNK`` bytes: first up to the pixel data element (at most ``HEADER_LIMIT``), whose
    Rows × Columns × frames must fit ``max_pixels``; then at most the declared pixel bytes
    (+ ``TRAILER_SLACK``). A stream that inflates past that is refused: memory stays within the
    budget whatever the file holds."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    limit, header_done = HEADER_LIMIT, False
    while not inflater.eof:
        data = inflater.unconsumed_tail or fp.read(INFLATE_CHUNK)
        if not data:
            raise DicomError(path, CORRUPT, "the deflated data stream ends early; the file is "
                             "truncated: download it again")
        out += inflater.decompress(data, INFLATE_CHUNK)
        if not header_done:
            parsed = _header_of(bytes(out)) if len(out) >= INFLATE_CHUNK or inflater.eof else None
            if parsed is not None:
                header_done = True
                pixels, nbytes = _declared_pixels(parsed[0], path)
                if pixels > max_pixels:
                    raise _too_large(path, f"the header declares {pixels / 1e6:.0f} megapixels", max_pixels)
                limit = parsed[1] + nbytes + TRAILER_SLACK
        if len(out) > limit:
            what = (f"the deflated data inflates past the size its header declares (stopped at "
                    f"{len(out) / 2 ** 20:.0f} MiB)" if header_done else
                    f"the deflated data holds more than {HEADER_LIMIT >> 20} MiB before any pixel data")
            raise _too_large(path, what, max_pixels)
    dataset = read_dataset(DicomBytesIO(bytes(out)), is_implicit_VR=False, is_little_endian=True)
    ds = pydicom.FileDataset(str(path), dataset, preamble=preamble, file_meta=meta,
                             is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _header_of(prefix: bytes) -> tuple[pydicom.Dataset, int] | None:
    """``(elements before the pixel data, offset of the pixel data element)`` parsed from the
    start of an inflated dataset, or None when ``prefix`` does not reach the pixel data yet."""
    stop: list[int] = []
    buffer = DicomBytesIO(prefix)

    def at_pixels(tag, vr, length) -> bool:
        if int(tag) in _PIXEL_TAGS:
            stop.append(1)
            return True
        return False

    try:
        header = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True, stop_when=at_pixels)
    except Exception:      # the prefix ends inside an element: inflate more
        return None
    if not stop:
        return None
    return header, buffer.tell()


_PIPELINE_KEYWORDS = tuple(dict.fromkeys((
    "SpecificCharacterSet", *INFO_KEYWORDS, "NumberOfFrames", "HighBit", "PlanarConfiguration",
    "ModalityLUTSequence", "VOILUTSequence", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData")))
"""Every element the reader, or pydicom's pixel decoder, reads."""


def _decode_elements(ds: pydicom.Dataset, path: Path) -> None:
    """Decode the file meta's TransferSyntaxUID and every element of :data:`_PIPELINE_KEYWORDS`
    (and each element of a sequence's items), one by one: a damaged element (an unknown VR, a value
    its VR cannot hold) is refused here, by name, instead of raising from inside a later step.
    pydicom keeps what it decoded, so later reads are plain look-ups."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        with _from_the_file(path, "the file meta's TransferSyntaxUID (0002,0010)"):
            meta.get("TransferSyntaxUID")
    for keyword in _PIPELINE_KEYWORDS:
        tag = Tag(tag_for_keyword(keyword))
        if tag not in ds:
            continue
        with _from_the_file(path, f"the element {keyword} {tag}"):
            element = ds[tag]
            if element.VR == "SQ":
                for item in element.value:
                    for _ in item:          # iterating a Dataset decodes each of its elements
                        pass


def _transfer_syntax(ds: pydicom.Dataset, path: Path) -> UID | None:
    """The file meta's TransferSyntaxUID (None when absent); :class:`DicomError`
    (``UNKNOWN_SYNTAX``) when it names no transfer syntax that pydicom knows: a damaged header
    (one changed byte is enough) or a private encoding."""
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value is None:
        return None
    syntax = UID(str(value).strip(" \0"))
    if not syntax.is_transfer_syntax:
        raise DicomError(path, UNKNOWN_SYNTAX,
                         f"the file meta's TransferSyntaxUID is {_brief(repr(str(value)), 80)}, not a transfer "
                         "syntax that pydicom knows (a damaged header, or a private encoding); download the "
                         "file again, or convert it to a standard encoding (e.g. `gdcmconv --raw IN OUT`)")
    return syntax


def _check_decodable(syntax: UID | None, path: Path) -> None:
    """Raise a clear error for compressed pixel data that no installed plugin decodes."""
    if syntax is None or not syntax.is_compressed:
        return
    available, missing = True, ""
    try:  # pydicom >= 3
        from pydicom.pixels import get_decoder
        try:
            decoder = get_decoder(syntax)
            available = decoder.is_available
            missing = "; ".join(decoder.missing_dependencies)
        except NotImplementedError:
            available = False
    except ImportError:  # pydicom 2.x: let pixel_array decide
        return
    if not available:
        detail = f" (plugins: {missing})" if missing else ""
        raise DicomError(path, NO_HANDLER,
                         f"pixel data is compressed as '{syntax.name}' ({syntax}) and no installed "
                         f"plugin decodes it{detail}; {DECODER_INSTALL_HINT}")


def _has_pixels(ds: pydicom.Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


_BITS_ALLOCATED = (1, 8, 16, 32, 64)


def _photometric(ds: pydicom.Dataset) -> str:
    """PhotometricInterpretation, upper case; MONOCHROME2 when absent or empty."""
    value = ds.get("PhotometricInterpretation")
    text = "" if value is None else str(value).strip(" \0").upper()
    return text or "MONOCHROME2"


def _check_format(ds: pydicom.Dataset, path: Path, frames: int) -> None:
    """Refuse, before decoding, what is not one grayscale frame: several frames, several samples
    per pixel, a photometric interpretation other than MONOCHROME1/2, a BitsAllocated no decoder
    uses."""
    samples = _count(ds, "SamplesPerPixel", path, 1)
    photometric = _photometric(ds)
    if frames != 1 or samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(path, NOT_2D, f"the header declares {frames} frame(s) of {samples} sample(s) per "
                         f"pixel, PhotometricInterpretation {_brief(repr(photometric), 40)}; expected one "
                         "grayscale frame (MONOCHROME1 or MONOCHROME2): use the mammogram itself, or "
                         "download the file again if it should be one")
    bits = _count(ds, "BitsAllocated", path, 16)
    if bits not in _BITS_ALLOCATED:
        raise DicomError(path, CORRUPT, f"BitsAllocated is {bits}, not one of {_BITS_ALLOCATED}; the header "
                         "is damaged: download the file again")


def _stored_pixels(ds: pydicom.Dataset, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                   syntax: UID | None = None) -> np.ndarray:
    """Decoded stored values, (H, W). The declared size is checked against ``max_pixels``
    before decoding: decoders (RLE, JPEG) allocate the declared size up front."""
    if not _has_pixels(ds):
        raise DicomError(path, EMPTY, "the file holds no pixel data: it is truncated or damaged (download "
                         "it again), or it is not an image (a report or a header-only object: use the "
                         "image file instead)")
    rows, cols, frames = _geometry(ds, path)
    if rows * cols * frames > max_pixels:
        raise _too_large(path, f"the header declares {rows * cols * frames / 1e6:.0f} megapixels "
                         f"(Rows {rows} x Columns {cols} x {frames} frames)", max_pixels)
    raw = ds.get("PixelData", ds.get("FloatPixelData", ds.get("DoubleFloatPixelData")))
    if rows * cols == 0 or raw is None or (isinstance(raw, (bytes, bytearray)) and len(raw) == 0):
        raise DicomError(path, EMPTY, f"pixel data is empty (Rows={rows}, Columns={cols}); "
                         "the file is damaged: download it again")
    if not isinstance(raw, (bytes, bytearray)):
        raise DicomError(path, CORRUPT, f"the pixel data element holds {type(raw).__name__} values, not "
                         "bytes (its VR is damaged); download the file again")
    _check_format(ds, path, frames)
    _check_decodable(syntax, path)
    with _from_the_file(path, f"the pixel data ({rows} x {cols}, transfer syntax {syntax})"):
        arr = ds.pixel_array
    if not isinstance(arr, np.ndarray) or arr.shape != (rows, cols) or arr.dtype.kind not in "biuf":
        raise DicomError(path, NOT_2D, f"pixel array has shape {np.shape(arr)}; expected one grayscale "
                         f"frame of Rows x Columns ({rows} x {cols})")
    return arr


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _rescale_value(ds: pydicom.Dataset, keyword: str, default: float, path: Path) -> float:
    """RescaleSlope / RescaleIntercept as a finite float within float32's range; ``default`` when
    the tag is absent or empty (not when it is 0: a zero slope is an error, not "no slope")."""
    value = ds.get(keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise DicomError(path, BAD_RESCALE, f"{keyword} is {_brief(repr(str(value)), 40)}, not a finite number "
                         "within float32's range; the header is damaged: download the file again")
    return number


def _modality_lut(arr: np.ndarray, ds: pydicom.Dataset, path: Path | str = "") -> np.ndarray:
    """Stored values -> modality values, float32 (H, W) (exact for stored integers < 2**24); may
    hold NaN or infinities (an overflow of a huge slope): the caller checks."""
    path = Path(path)
    if ds.get("ModalityLUTSequence"):
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        with _from_the_file(path, "the Modality LUT Sequence (0028,3000)"):
            out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        if out.shape != arr.shape:
            raise DicomError(path, CORRUPT, f"the Modality LUT Sequence turns {arr.shape} pixels into "
                             f"{out.shape}; the header is damaged: download the file again")
        return out
    slope = _rescale_value(ds, "RescaleSlope", 1.0, path)
    intercept = _rescale_value(ds, "RescaleIntercept", 0.0, path)
    if slope == 0.0:
        raise DicomError(path, BAD_RESCALE, "RescaleSlope is 0: every pixel would become the "
                         "intercept (a blank image); the header is damaged: download the file again")
    pixels = arr.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        with np.errstate(over="ignore", invalid="ignore"):    # an overflow is refused as not finite
            pixels = pixels * np.float32(slope) + np.float32(intercept)
    return pixels


def _first(value: Any) -> float:
    """WindowCenter/Width may be multi-valued: use the first (the default) window."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _voi_lut(item: pydicom.Dataset, path: Path) -> dict:
    """The first item of the VOI LUT Sequence as ``{"kind": "lut", ...}``: LUTDescriptor (entries,
    first mapped value, bits 1-16) and non-empty, finite LUTData; :class:`DicomError` otherwise."""
    try:
        n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
        data = np.asarray(item.LUTData, dtype=np.float64).ravel()
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise DicomError(path, CORRUPT, f"unreadable VOI LUT Sequence ({type(exc).__name__}: {_brief(exc)}); "
                         "the file is damaged: download it again") from None
    if not 1 <= bits <= 16 or data.size == 0 or not np.all(np.isfinite(data)):
        raise DicomError(path, CORRUPT, f"the VOI LUT Sequence declares {bits} bits and holds {data.size} "
                         "entries (expected 1-16 bits and at least one finite entry); the file is damaged: "
                         "download it again")
    n_entries = n_entries or 65536
    return {"kind": "lut", "first": float(first), "data": data[:n_entries], "max": float(2 ** bits - 1)}


def _voi(ds: pydicom.Dataset, path: Path) -> dict | None:
    """The file's VOI transform in modality units: a window, a lookup table, or None."""
    sequence = ds.get("VOILUTSequence")
    if sequence:
        return _voi_lut(sequence[0], path)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if width > 0 and np.isfinite(center) and np.isfinite(width):
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
            return {"kind": "window", "center": center, "width": width, "function": function}
    return None


def _check_finite(pixels: np.ndarray, path: Path, after: str) -> None:
    if not np.all(np.isfinite(pixels)):
        bad = int(np.size(pixels) - np.count_nonzero(np.isfinite(pixels)))
        raise DicomError(path, NOT_FINITE, f"{bad} pixels are NaN or infinite (after {after}); "
                         "the file is damaged: download it again")


def _open(path: Path, max_pixels: int, header_only: bool = False) -> tuple[pydicom.Dataset, UID | None]:
    """Parse ``path``, remove its identifying elements, decode every element the pipeline reads and
    check its transfer syntax: ``(dataset, transfer syntax)``, or a :class:`DicomError`."""
    ds = _read_dataset(path, max_pixels, header_only)
    with _from_the_file(path, "an element with identifying data (removed before anything is read)"):
        strip_phi(ds)  # nothing identifying survives this module, even by accident
    _decode_elements(ds, path)
    return ds, _transfer_syntax(ds, path)


def check_header(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a damaged file without decoding its pixels: parse the header (the pixel data is not
    read, but for a deflated file, which is inflated within the budget), decode every element the
    reader uses, check the transfer syntax and the whole numbers Rows, Columns, NumberOfFrames.
    Raises :class:`DicomError` as :func:`read_dicom` does. A file that passes may still be refused
    by :func:`read_dicom` for what it holds (another modality, an image over the budget, damaged
    pixel data...). ``iaiabl download`` checks every downloaded file with it."""
    path = Path(path)
    ds, _ = _open(path, max_pixels, header_only=True)
    _geometry(ds, path)


def read_dicom(path: str | Path, modality: str | None = "MG",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Read one mammography DICOM file.

    Returns ``(pixels, info)``: ``pixels`` float32 (H, W), modality values with high = bright
    (MONOCHROME1 inverted), all finite; ``info`` holds :data:`INFO_KEYWORDS` that are present,
    plus ``path``, ``transfer_syntax``, ``inverted`` (bool) and ``voi`` (the window or VOI LUT to
    use with :func:`window_to_uint8`, or None). ``modality``: required Modality ('MG'); None
    accepts any. A file without a Modality tag is accepted. ``max_pixels``: the pixel budget
    (module docstring).

    Every failure is a :class:`DicomError` naming the file, with a ``reason`` of :data:`REASONS`:
    a missing, non-DICOM, damaged or truncated file (any element the pipeline reads that cannot be
    decoded, whatever pydicom raised), an unknown transfer syntax, another modality, compressed
    pixels without a decoder, empty or non-finite pixel data, more than one grayscale frame, a file
    over the pixel budget, a zero or non-finite RescaleSlope.
    """
    path = Path(path)
    ds, syntax = _open(path, max_pixels)
    found = str(ds.get("Modality", "") or "").strip().upper()
    if modality is not None and found and found != modality.upper():
        raise DicomError(path, WRONG_MODALITY,
                         f"Modality is '{_brief(found, 40)}', expected '{modality}' (mammography); this file "
                         "is not a mammogram: check that the path points at the mammography series")
    pixels = _modality_lut(_stored_pixels(ds, path, max_pixels, syntax), ds, path)  # (H, W) float32
    _check_finite(pixels, path, "RescaleSlope/Intercept")
    voi = _voi(ds, path)
    inverted = _photometric(ds) == "MONOCHROME1"
    if inverted:  # reflect about the data range: same range, high = bright
        offset = float(pixels.min()) + float(pixels.max())
        with np.errstate(over="ignore"):
            pixels = offset - pixels
        _check_finite(pixels, path, "the MONOCHROME1 inversion")
        if voi is not None:
            voi = dict(voi, inverted_offset=offset)
    info: dict[str, Any] = {k: _plain(ds.get(k)) for k in INFO_KEYWORDS if k in ds}
    info.update(path=str(path), inverted=inverted, voi=voi, transfer_syntax=str(syntax or ""))
    return pixels, info


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a tag value (IS -> int, DS -> float, UIDs and strings -> str)."""
    if isinstance(value, (list, tuple, MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
