"""Display windows for mammograms: DICOM's VOI LUT or window (PS3.3 C.11.2) when the file holds
one, else a robust percentile window of the breast; float pixels (high = bright) to uint8 display
values (0 = black). :func:`.dicom.read_dicom` supplies the pixels and the file's VOI."""
from __future__ import annotations

import numpy as np

__all__ = ["robust_window", "window_to_uint8"]

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
