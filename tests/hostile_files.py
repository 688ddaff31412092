"""Generated hostile DICOM files for tests (issue 16): small files that declare or inflate to huge
images ("decompression bombs").

    deflate_bomb(path, rows=60000, cols=60000, inflated=2 << 30)
    rle_bomb(path, rows=30000, cols=30000)

Both are valid DICOM up to their size: a reader without a pixel budget allocates what they
declare (RLE) or what they inflate to (deflate). They are built without ever holding the inflated
bytes: the deflate stream repeats one block that encodes 1 MiB of zeros after a full flush (which
resets the compressor, so the block's bytes do not depend on what came before).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (DeflatedExplicitVRLittleEndian, DigitalMammographyXRayImageStorageForPresentation,
                         ExplicitVRLittleEndian, RLELossless, generate_uid)

MIB = 1 << 20


def _header(rows: int, cols: int, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


def _file(path: Path, ds: Dataset, transfer_syntax: str, body: bytes) -> Path:
    """Preamble + file meta (explicit VR LE) + ``body`` (the dataset as the syntax encodes it)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + buf.getvalue() + body)
    return path


def _explicit_le(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def deflate_bomb(path: Path, rows: int = 60000, cols: int = 60000, inflated: int | None = None,
                 bits: int = 8) -> Path:
    """A Deflated Explicit VR Little Endian file whose PixelData declares rows × cols pixels and
    whose deflate stream inflates to ``inflated`` bytes of zeros after the header (default: the
    declared size, capped at 4 GiB - 2, the largest value length DICOM can state). About 1 KiB of
    file per MiB inflated."""
    declared = min(rows * cols * bits // 8, 0xFFFFFFFE) & ~1
    inflated = declared if inflated is None else inflated
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, declared)
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [head.compress(_explicit_le(_header(rows, cols, bits)) + element) + head.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    one_mib = block.compress(bytes(MIB)) + block.flush(zlib.Z_FULL_FLUSH)
    stream.append(one_mib * (inflated // MIB))
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream.append(tail.compress(bytes(inflated % MIB)) + tail.flush())
    return _file(path, _header(rows, cols, bits), DeflatedExplicitVRLittleEndian, b"".join(stream))


def rle_bomb(path: Path, rows: int = 30000, cols: int = 30000, full: bool = False) -> Path:
    """An RLE Lossless file declaring rows × cols 8-bit pixels. ``full``: its one segment really
    encodes every pixel (runs of 128 zeros, 2 bytes each: about rows·cols/64 bytes, 14 MB at
    30000²); else a short segment (a decoder still allocates the declared size first)."""
    count = rows * cols // 128 if full else 512
    segment = b"\x81\x00" * count                        # 0x81: repeat the next byte 128 times
    rle = struct.pack("<16I", 1, 64, *([0] * 14)) + segment
    if len(rle) % 2:
        rle += b"\0"
    # encapsulated pixel data: empty basic offset table, one fragment, sequence delimiter
    fragments = (struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0xFFFE, 0xE000, len(rle)) + rle
                 + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    ds = _header(rows, cols, 8)
    body = _explicit_le(ds) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + fragments
    return _file(path, ds, RLELossless, body)


def plain_dicom(path: Path, rows: int = 8, cols: int = 8, transfer_syntax: str = ExplicitVRLittleEndian,
                value: int = 7) -> Path:
    """A small honest file (8-bit pixels all ``value``), native or deflated."""
    ds = _header(rows, cols, 8)
    pixel = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, rows * cols + (rows * cols) % 2)
    body = _explicit_le(ds) + pixel + bytes([value]) * (rows * cols) + b"\0" * ((rows * cols) % 2)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = c.compress(body) + c.flush()
    return _file(path, ds, transfer_syntax, body)
