"""Reading mammography DICOM files: rescale, MONOCHROME1, windowing, and PHI stripping.

The pipeline for one file (DICOM PS3.3 C.11, the "grayscale pipeline"):

    stored values --modality LUT (RescaleSlope/Intercept)--> modality values   (read_dicom)
                  --MONOCHROME1: invert so that high = bright-->                (read_dicom)
                  --VOI LUT / window, else robust 0.5-99.5 % window--> uint8    (window_to_uint8)

``read_dicom`` returns float32 pixels with high = bright and an ``info`` dict of non-identifying
tags only; ``window_to_uint8`` turns them into 0 = black, 255 = white display values. Every failure
is a :class:`DicomError` that names the file, says what is wrong and what to do, and carries a short
``reason`` code the CBIS-DDSM importer counts in ``summary.json``.

Hostile files are read with bounded memory (a "decompression bomb" is a small file that declares or
inflates to a huge image): before anything is decoded, the file's size, the declared
Rows × Columns × frames and, for the deflate transfer syntax, the inflated size are held to a
pixel budget (``max_pixels``, default :data:`DEFAULT_MAX_PIXELS`, far above any mammogram);
deflated data is inflated in bounded chunks (pydicom would inflate it whole). A file over budget is
refused with reason ``image too large`` before any large allocation.

Nothing here keeps a pydicom ``Dataset`` around: the prepared dataset stores pixel arrays and a
manifest only. Code that must keep one (a report of a user's own DICOM file) passes it through
:func:`strip_phi` first.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = [
    "DicomError", "read_dicom", "window_to_uint8", "robust_window", "strip_phi",
    "PHI_KEYWORDS", "PHI_VRS", "INFO_KEYWORDS", "DEFAULT_MAX_PIXELS", "max_file_bytes",
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

DEFAULT_MAX_PIXELS = 100_000_000
"""Pixel budget: Rows × Columns × frames a file may declare (100 MP; a full-field mammogram is
about 10-40 MP). ``iaiabl prepare --max-megapixels`` changes it."""

INFLATE_CHUNK = 1 << 20          # bytes inflated per step of a deflated file
HEADER_LIMIT = 16 << 20          # inflated bytes allowed before the pixel data element
TRAILER_SLACK = 1 << 20          # inflated bytes allowed after the declared pixel data
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)   # Float, DoubleFloat, PixelData

INSTALL_HINT = ("install a decoder: `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` "
                "(or `pip install python-gdcm`), or decompress the file first "
                "(e.g. `gdcmconv --raw IN OUT`)")


class DicomError(ValueError):
    """A DICOM file that cannot be used. ``path`` names the file, ``reason`` is a short code
    (one of the module constants, e.g. ``"modality not MG"``), the message says what to do."""

    def __init__(self, path: str | Path, reason: str, message: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {message}")


# --- PHI -----------------------------------------------------------------------------------------

PHI_KEYWORDS = (
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate",
    "PatientBirthTime", "PatientAge", "PatientSex", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "CountryOfResidence", "RegionOfResidence", "PatientComments", "AdditionalPatientHistory",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "MedicalAlerts", "Allergies", "PregnancyStatus", "LastMenstrualDate", "SmokingStatus",
    # study / visit
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "ContentDate", "ContentTime",
    "InstanceCreationDate", "InstanceCreationTime", "StudyDescription", "AdmissionID",
    "AdmittingDiagnosesDescription", "RequestAttributesSequence", "RequestingPhysician",
    "ReferencedPatientSequence", "ReferencedStudySequence",
    # people and places
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "OperatorsName", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "StationName", "DeviceSerialNumber", "PlateID", "DetectorID",
    # free text that often carries names
    "ImageComments", "DerivationDescription", "TextValue",
)
"""Keywords :func:`strip_phi` removes (DICOM PS3.15 basic profile, the parts that occur in MG)."""

PHI_VRS = ("PN", "DA", "DT", "TM")
"""Value representations removed wherever they occur: person names, dates, date-times, times."""

INFO_KEYWORDS = (
    "Modality", "SeriesDescription", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "ImageLaterality", "Laterality", "ViewPosition", "PixelSpacing", "ImagerPixelSpacing",
    "BodyPartExamined", "PresentationIntentType", "SOPClassUID",
)
"""The only tags :func:`read_dicom` copies into ``info`` (none identifies a patient)."""


def _dictionary_vr(tag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def strip_phi(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Remove identifying elements from ``ds`` in place (and return it).

    Removes every keyword in :data:`PHI_KEYWORDS`, every element whose VR is in :data:`PHI_VRS`
    (names, dates, times), and all private tags, recursing into sequences. Pixel data and the
    geometry/grey-level tags are kept. Elements are inspected without decoding their values.
    """
    for tag in list(ds.keys()):
        if tag.is_private:
            del ds[tag]
            continue
        vr = getattr(ds.get_item(tag), "VR", None) or _dictionary_vr(tag)
        if keyword_for_tag(tag) in _PHI_SET or vr in PHI_VRS:
            del ds[tag]
        elif vr == "SQ":
            for item in ds[tag].value:
                strip_phi(item)
    return ds


_PHI_SET = frozenset(PHI_KEYWORDS)


# --- reading -------------------------------------------------------------------------------------

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


def _read_dataset(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> pydicom.Dataset:
    """Parse the file (pixel data not decoded) within the budget: file size first, then the
    deflate transfer syntax inflated by :func:`_inflate_dataset` instead of by pydicom."""
    if not path.is_file():
        raise DicomError(path, MISSING, "file not found; check the path (and that the download is complete)")
    size = path.stat().st_size
    if size > max_file_bytes(max_pixels):
        raise _too_large(path, f"the file is {size / 2 ** 20:.0f} MiB, more than any image within the "
                         "budget needs", max_pixels)
    try:
        with open(path, "rb") as fp:
            preamble = read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
            if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                return _inflate_dataset(fp, path, preamble, meta, max_pixels)
        return pydicom.dcmread(path)
    except DicomError:
        raise
    except InvalidDicomError:
        raise DicomError(path, NOT_DICOM, "not a DICOM file (no 'DICM' header); "
                         "point the importer at the original DICOM download") from None
    except Exception as exc:  # pydicom raises many types on damaged files
        raise DicomError(path, CORRUPT, f"cannot parse the DICOM file ({type(exc).__name__}: {exc}); "
                         "the file is damaged or truncated: download it again") from None


def _declared_pixels(ds: pydicom.Dataset) -> tuple[int, int]:
    """``(Rows × Columns × frames, bytes of the decoded pixel data)`` as the header declares them."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip() or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    pixels = max(rows, 0) * max(cols, 0) * max(frames, 1)
    return pixels, math.ceil(pixels * max(samples, 1) * max(bits, 1) / 8)


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
                pixels, nbytes = _declared_pixels(parsed[0])
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


def _check_decodable(ds: pydicom.Dataset, path: Path) -> None:
    """Raise a clear error for compressed pixel data that no installed plugin decodes."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None or not tsyntax.is_compressed:
        return
    available, missing = True, ""
    try:  # pydicom >= 3
        from pydicom.pixels import get_decoder
        try:
            decoder = get_decoder(tsyntax)
            available = decoder.is_available
            missing = "; ".join(decoder.missing_dependencies)
        except NotImplementedError:
            available = False
    except ImportError:  # pydicom 2.x: let pixel_array decide
        return
    if not available:
        detail = f" (plugins: {missing})" if missing else ""
        raise DicomError(path, NO_HANDLER,
                         f"pixel data is compressed as '{tsyntax.name}' ({tsyntax}) and no installed "
                         f"plugin decodes it{detail}; {INSTALL_HINT}")


def _has_pixels(ds: pydicom.Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _stored_pixels(ds: pydicom.Dataset, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decoded stored values, (H, W). The declared size is checked against ``max_pixels``
    before decoding: decoders (RLE, JPEG) allocate the declared size up front."""
    if not _has_pixels(ds):
        raise DicomError(path, EMPTY, "the file holds no pixel data (a report or a header-only "
                         "object?); use the image file instead")
    try:
        pixels, _ = _declared_pixels(ds)
    except (TypeError, ValueError) as exc:
        raise DicomError(path, CORRUPT, f"unreadable Rows/Columns/NumberOfFrames ({exc}); the file "
                         "is damaged: download it again") from None
    if pixels > max_pixels:
        raise _too_large(path, f"the header declares {pixels / 1e6:.0f} megapixels "
                         f"(Rows {ds.get('Rows')} x Columns {ds.get('Columns')}"
                         f" x {ds.get('NumberOfFrames', 1)} frames)", max_pixels)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    raw = ds.get("PixelData", ds.get("FloatPixelData", ds.get("DoubleFloatPixelData")))
    if rows * cols == 0 or raw is None or len(raw) == 0:
        raise DicomError(path, EMPTY, f"pixel data is empty (Rows={rows}, Columns={cols}); "
                         "the file is damaged: download it again")
    _check_decodable(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise DicomError(path, CORRUPT, f"cannot decode the pixel data ({type(exc).__name__}: {exc}); "
                         "the file is damaged or truncated: download it again") from None
    if arr.ndim != 2:
        raise DicomError(path, NOT_2D, f"pixel array has shape {arr.shape}; expected one grayscale "
                         "frame (Rows x Columns)")
    return arr


def _rescale_value(ds: pydicom.Dataset, keyword: str, default: float, path: Path) -> float:
    """RescaleSlope / RescaleIntercept as a finite float; ``default`` when the tag is absent or
    empty (not when it is 0: a zero slope is an error, not "no slope")."""
    value = ds.get(keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DicomError(path, BAD_RESCALE, f"{keyword} is {str(value)!r}, not a finite number; the "
                         "header is damaged: download the file again")
    return number


def _modality_lut(arr: np.ndarray, ds: pydicom.Dataset, path: Path | str = "") -> np.ndarray:
    """Stored values -> modality values, float32 (H, W) (exact for stored integers < 2**24)."""
    if "ModalityLUTSequence" in ds:
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    slope = _rescale_value(ds, "RescaleSlope", 1.0, path)
    intercept = _rescale_value(ds, "RescaleIntercept", 0.0, path)
    if slope == 0.0:
        raise DicomError(path, BAD_RESCALE, "RescaleSlope is 0: every pixel would become the "
                         "intercept (a blank image); the header is damaged: download the file again")
    pixels = arr.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        pixels = pixels * np.float32(slope) + np.float32(intercept)
    return pixels


def _first(value: Any) -> float:
    """WindowCenter/Width may be multi-valued: use the first (the default) window."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _voi(ds: pydicom.Dataset, path: Path) -> dict | None:
    """The file's VOI transform in modality units: a window, a lookup table, or None."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        try:
            n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
            data = np.asarray(item.LUTData, dtype=np.float64).ravel()
        except Exception as exc:
            raise DicomError(path, CORRUPT, f"unreadable VOI LUT Sequence ({exc}); "
                             "the file is damaged: download it again") from None
        n_entries = n_entries or 65536
        return {"kind": "lut", "first": float(first), "data": data[:n_entries],
                "max": float(2 ** bits - 1)}
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            return None
        if width > 0 and np.isfinite(center) and np.isfinite(width):
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
            return {"kind": "window", "center": center, "width": width, "function": function}
    return None


def read_dicom(path: str | Path, modality: str | None = "MG",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Read one mammography DICOM file.

    Returns ``(pixels, info)``: ``pixels`` float32 (H, W), modality values with high = bright
    (MONOCHROME1 inverted); ``info`` holds :data:`INFO_KEYWORDS` that are present, plus
    ``path``, ``transfer_syntax``, ``inverted`` (bool) and ``voi`` (the window or VOI LUT to use
    with :func:`window_to_uint8`, or None). ``modality``: required Modality ('MG'); None accepts
    any. A file without a Modality tag is accepted. ``max_pixels``: the pixel budget (module
    docstring).

    Raises :class:`DicomError` for a missing, non-DICOM, damaged or truncated file, another
    modality, compressed pixels without a decoder, empty or non-finite pixel data, a file over
    the pixel budget, a zero or non-finite RescaleSlope.
    """
    path = Path(path)
    ds = _read_dataset(path, max_pixels)
    strip_phi(ds)  # nothing identifying survives this function, even by accident
    found = str(ds.get("Modality", "") or "").strip().upper()
    if modality is not None and found and found != modality.upper():
        raise DicomError(path, WRONG_MODALITY,
                         f"Modality is '{found}', expected '{modality}' (mammography); this file is "
                         "not a mammogram: check that the path points at the mammography series")
    pixels = _modality_lut(_stored_pixels(ds, path, max_pixels), ds, path)  # (H, W) float32
    if not np.all(np.isfinite(pixels)):
        bad = int(np.size(pixels) - np.count_nonzero(np.isfinite(pixels)))
        raise DicomError(path, NOT_FINITE, f"{bad} pixels are NaN or infinite (after RescaleSlope/"
                         "Intercept); the file is damaged: download it again")
    voi = _voi(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    inverted = photometric == "MONOCHROME1"
    if inverted:  # reflect about the data range: same range, high = bright
        offset = float(pixels.min() + pixels.max())
        pixels = offset - pixels
        if voi is not None:
            voi = dict(voi, inverted_offset=offset)
    info: dict[str, Any] = {k: _plain(ds.get(k)) for k in INFO_KEYWORDS if k in ds}
    info.update(path=str(path), inverted=inverted, voi=voi,
                transfer_syntax=str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")))
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


# --- windowing -----------------------------------------------------------------------------------

def robust_window(pixels: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5),
                  max_samples: int = 4_000_000) -> tuple[float, float]:
    """``(low, high)`` percentiles of the non-background pixels (background: the minimum value,
    e.g. the air around the breast). Falls back to all pixels when the background dominates.
    Images above ``max_samples`` pixels are subsampled on a regular grid (same percentiles
    within noise, several times faster on full-field mammograms)."""
    step = int(np.ceil(np.sqrt(pixels.size / max_samples))) if pixels.size > max_samples else 1
    pixels = pixels[::step, ::step]
    lowest = float(pixels.min())
    foreground = pixels[pixels > lowest]
    values = foreground if foreground.size >= 0.01 * pixels.size else pixels.ravel()
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def _apply_voi(pixels: np.ndarray, voi: dict) -> np.ndarray:
    """VOI transform -> [0, 1] with high = bright (float64)."""
    offset = voi.get("inverted_offset")
    x = pixels.astype(np.float64)
    if offset is not None:  # the VOI is defined on the stored (MONOCHROME1) values
        x = offset - x
    if voi["kind"] == "lut":
        index = np.clip(np.rint(x - voi["first"]), 0, len(voi["data"]) - 1).astype(np.int64)
        y = voi["data"][index] / max(voi["max"], 1.0)
    else:
        c, w = voi["center"], voi["width"]
        if voi["function"] == "SIGMOID":
            y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        elif voi["function"] == "LINEAR_EXACT":
            y = (x - (c - w / 2)) / w
        else:  # LINEAR (PS3.3 C.11.2.1.2.1)
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) if w > 1 else (x >= c).astype(np.float64)
    y = np.clip(y, 0.0, 1.0)
    return 1.0 - y if offset is not None else y


def window_to_uint8(pixels: np.ndarray, info: dict | None = None,
                    percentiles: tuple[float, float] = (0.5, 99.5),
                    window: tuple[float, float] | None = None) -> np.ndarray:
    """Display values, uint8 (H, W), 0 = black: the file's VOI LUT or window when ``info['voi']``
    holds one, else ``window = (low, high)`` when given (e.g. computed on the whole mammogram and
    applied to a part of it), else the robust ``percentiles`` window of :func:`robust_window`."""
    voi = (info or {}).get("voi")
    if voi is not None:
        y = _apply_voi(pixels, voi)
    else:
        low, high = window if window is not None else robust_window(pixels, percentiles)
        if high <= low:
            return np.zeros(pixels.shape, dtype=np.uint8)
        y = np.clip((pixels.astype(np.float32) - np.float32(low)) * np.float32(1.0 / (high - low)), 0.0, 1.0)
    return np.rint(y * 255.0).astype(np.uint8)
