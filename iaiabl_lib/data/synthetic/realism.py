"""Realism measurements of a CBIS-DDSM-shaped tree, from the files alone.

Everything here reads what an importer reads (the CSVs and the DICOM files, through
:func:`iaiabl_lib.data.dicom.read_dicom`), never the generator's internals, so the same functions
measure the synthetic tree and, where it is at hand, the real CBIS-DDSM download.

* **Background spectrum.** Square patches (:data:`PATCH` px) inside the breast (the breast eroded
  by a margin, so no patch touches the skin line or the thickness fall-off) and off every
  lesion (each ROI mask dilated by half its equivalent diameter) and off saturated pixels
  (burned-in labels); each patch minus its mean
  plane, times a Hann window, Fourier transformed; the power radially averaged in 1-px frequency
  bins; one image's spectrum is the mean over its patches. ``beta`` is minus the slope of
  log power on log frequency between 1/32 and 1/4 cycles per pixel (least squares), the measure of
  Burgess, Jacobson & Judy (2001) and Chen et al. (2012), who find 2.8 and 3.2-3.3 on mammograms.
  The same spectrum is also fitted over a lower and a higher band (:data:`CHECK_BANDS`): a spectrum
  that is a power law gives the same exponent in each, while one bent by blur or noise gives
  exponents that hinge on the band (the synthetic detector blur was set by this check).
* **Lesion contrast.** Per CSV row, ``(mean inside the ROI mask - mean of the surround) / standard
  deviation of the surround``, the surround being the importer's crop square (docs/INTERFACES.md
  §1) inside the breast and outside the mask dilated by a tenth of its equivalent diameter (>= 2 px):
  a contrast-to-noise ratio in units of the background's own fluctuation.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["PATCH", "BAND", "CHECK_BANDS", "EDGE_MARGIN", "radial_power_spectrum", "fit_beta", "breast_mask",
           "background_patches", "dilate", "lesion_contrast", "RealismReport", "measure_tree"]

PATCH = 64                  # px, side of the spectrum patches
BAND = (1 / 32, 1 / 4)      # cycles per pixel, the fitted frequency band
#: The band of record and two others, lower and higher, over which the same spectra are fitted.
CHECK_BANDS = ((1 / 64, 1 / 8), BAND, (1 / 10, 2 / 5))
EDGE_MARGIN = 24            # px eroded from the breast before patches are placed


@functools.lru_cache(maxsize=8)
def _spectrum_tools(n: int):
    """Per patch size: plane-fit design (n*n, 3) and its pseudo-inverse, Hann window (n, n),
    radial bin of every frequency (n*n,), counts per bin."""
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    design = np.stack([np.ones(n * n), yy.ravel(), xx.ravel()], axis=1)
    hann = np.hanning(n)
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]
    k = np.rint(np.hypot(fy, fx) * n).astype(int).ravel()              # radial bin per frequency
    return design, np.linalg.pinv(design), np.outer(hann, hann), k, np.bincount(k)


def radial_power_spectrum(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of one square patch (n, n): mean plane removed, Hann
    window. -> (frequencies (n//2,) cycles/px, power (n//2,)); bin k holds |f| in [k-0.5, k+0.5)/n."""
    n = patch.shape[0]
    if patch.shape != (n, n):
        raise ValueError(f"patch must be square, got {patch.shape}")
    design, pinv, window, k, counts = _spectrum_tools(n)
    values = patch.ravel().astype(float)
    detrended = (values - design @ (pinv @ values)).reshape(n, n)
    power = np.abs(np.fft.fft2(detrended * window)) ** 2
    sums = np.bincount(k, weights=power.ravel())
    bins = np.arange(1, n // 2 + 1)
    return bins / n, sums[bins] / counts[bins]


def fit_beta(freqs: np.ndarray, power: np.ndarray, band: tuple[float, float] = BAND) -> float:
    """Minus the least-squares slope of log(power) on log(frequency) inside ``band``."""
    sel = (freqs >= band[0] - 1e-9) & (freqs <= band[1] + 1e-9) & (power > 0)
    if sel.sum() < 3:
        raise ValueError(f"fewer than 3 frequencies inside the band {band}")
    slope = np.polyfit(np.log(freqs[sel]), np.log(power[sel]), 1)[0]
    return float(-slope)


def breast_mask(pixels: np.ndarray) -> np.ndarray:
    """The breast of a full mammogram (high = bright): pixels above a tenth of the way from the
    background level (the 1st percentile) to the 99th percentile, largest component, holes filled."""
    lo, hi = np.percentile(pixels, [1, 99])
    mask = pixels > lo + 0.1 * (hi - lo)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def background_patches(pixels: np.ndarray, inside: np.ndarray, exclude: np.ndarray,
                       size: int = PATCH, margin: int = EDGE_MARGIN) -> list[np.ndarray]:
    """Non-overlapping ``size`` patches on a grid, each wholly inside ``inside`` eroded by
    ``margin`` px and touching no pixel of ``exclude`` (both (H, W) bool). The image's border
    counts as outside (so a field with no background still has distances to erode by)."""
    depth = ndimage.distance_transform_cdt(np.pad(inside, 1), metric="chessboard")[1:-1, 1:-1]
    allowed = (depth > margin) & ~exclude
    H, W = pixels.shape
    out = []
    for top in range(0, H - size + 1, size):
        for left in range(0, W - size + 1, size):
            if allowed[top:top + size, left:left + size].all():
                out.append(pixels[top:top + size, left:left + size])
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` (H, W) bool dilated by ``radius`` px (3x3 steps), computed in its bounding box."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask, dtype=bool)
    if not len(ys) or radius <= 0:
        return mask.astype(bool) | out
    H, W = mask.shape
    y0, y1 = max(0, ys.min() - radius), min(H, ys.max() + radius + 1)
    x0, x1 = max(0, xs.min() - radius), min(W, xs.max() + radius + 1)
    out[y0:y1, x0:x1] = ndimage.binary_dilation(mask[y0:y1, x0:x1], iterations=radius)
    return out


def lesion_contrast(pixels: np.ndarray, inside: np.ndarray, mask: np.ndarray) -> float:
    """(mean inside ``mask`` - mean of the surround) / std of the surround (see module doc)."""
    from ..cbis_ddsm import crop_geometry

    top, left, side = crop_geometry(mask)[1]                           # the importer's square
    square = np.zeros_like(mask, dtype=bool)
    square[max(0, top):top + side, max(0, left):left + side] = True
    radius = max(2, int(round(0.1 * np.sqrt(4 * mask.sum() / np.pi))))
    ring = square & inside & ~dilate(mask, radius)
    if ring.sum() < 20:
        return float("nan")
    bg = pixels[ring]
    return float((pixels[mask].mean() - bg.mean()) / (bg.std() + 1e-12))


@dataclass
class RealismReport:
    """Per full image: beta (NaN without patches) and its patch count; per CSV row: subtlety,
    margin cell and lesion contrast; the mean spectrum over all patches; lesion equivalent
    diameters (mm where PixelSpacing is present, else px)."""

    betas: list[float] = field(default_factory=list)
    band_betas: dict[tuple[float, float], list[float]] = field(
        default_factory=lambda: {band: [] for band in CHECK_BANDS})
    patches: list[int] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    freqs: np.ndarray | None = None
    mean_power: np.ndarray | None = None

    def beta_summary(self, band: tuple[float, float] = BAND) -> dict:
        """Median and quartiles of the per-image exponent fitted over ``band`` (one of
        :data:`CHECK_BANDS`; default the band of record), images and patches measured."""
        if band not in self.band_betas:
            raise ValueError(f"no exponent was fitted over the band {band}; choose one of {CHECK_BANDS}")
        b = np.array([x for x in self.band_betas[band] if np.isfinite(x)])
        q = np.percentile(b, [25, 50, 75]) if len(b) else [np.nan] * 3
        return {"images": len(b), "median": float(q[1]), "q25": float(q[0]), "q75": float(q[2]),
                "patches": int(sum(self.patches))}

    def contrast_by_subtlety(self) -> dict[int, dict]:
        out = {}
        for level in sorted({r["subtlety"] for r in self.rows}):
            c = np.array([r["contrast"] for r in self.rows
                          if r["subtlety"] == level and np.isfinite(r["contrast"])])
            if len(c):
                q = np.percentile(c, [25, 50, 75])
                out[level] = {"n": int(len(c)), "median": float(q[1]), "q25": float(q[0]),
                              "q75": float(q[2])}
        return out


def measure_tree(root: str | Path, max_images: int | None = None,
                 splits: tuple[str, ...] = ("train", "test")) -> RealismReport:
    """Measure a CBIS-DDSM-shaped tree (the folder holding the mass CSVs and ``CBIS-DDSM/``): the
    first ``max_images`` full images in CSV order (all by default) and every row on them."""
    import pydicom

    from ..cbis_ddsm import DicomLocator, SkipRow, one_file
    from ..dicom import read_dicom
    from ..cbis_format import CSV_NAMES

    root = Path(root)
    locator = DicomLocator(root)        # the importer's lookup: NBIA, IDC and synthetic layouts
    by_image: dict[str, list[dict]] = {}
    for split in splits:
        with open(root / CSV_NAMES[split], newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                by_image.setdefault(row["image file path"], []).append(row)
    report = RealismReport()
    spectra = []
    for i, (cell, rows) in enumerate(by_image.items()):
        if max_images is not None and i >= max_images:
            break
        try:
            path = one_file(locator, cell, "full mammogram")     # the importer's rule: one file
        except SkipRow:                 # missing, ambiguous, or a path outside the tree: not measured
            continue
        pixels, _ = read_dicom(path)
        inside = breast_mask(pixels)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        spacing = float(header.PixelSpacing[0]) if "PixelSpacing" in header else None
        masks = []
        for row in rows:
            mask = _lesion_mask(locator, row, pixels.shape)
            if mask is None:
                continue
            masks.append(mask)
            diameter = np.sqrt(4 * mask.sum() / np.pi)
            report.rows.append({
                "subtlety": int(row["subtlety"]), "margin": row["mass margins"],
                "contrast": lesion_contrast(pixels, inside, mask),
                "diameter": float(diameter * spacing) if spacing else float(diameter),
                "unit": "mm" if spacing else "px"})
        # saturated pixels (burned-in labels, the synthetic confounder marker) are no background
        exclude = dilate(pixels >= pixels.max(), 3)
        for mask in masks:
            exclude |= dilate(mask, max(4, int(round(0.5 * np.sqrt(4 * mask.sum() / np.pi)))))
        patches = background_patches(pixels, inside, exclude)
        if patches:
            image_spectra = np.stack([radial_power_spectrum(p)[1] for p in patches])
            freqs = radial_power_spectrum(patches[0])[0]
            mean = image_spectra.mean(axis=0)
            for band in CHECK_BANDS:
                report.band_betas[band].append(fit_beta(freqs, mean, band))
            report.betas.append(report.band_betas[BAND][-1])
            spectra.append(mean / mean[np.argmin(np.abs(freqs - BAND[0]))])
            report.freqs = freqs
        else:
            report.betas.append(float("nan"))
            for band in CHECK_BANDS:
                report.band_betas[band].append(float("nan"))
        report.patches.append(len(patches))
    if spectra:
        report.mean_power = np.exp(np.log(np.stack(spectra)).mean(axis=0))   # geometric mean
    return report


def _lesion_mask(locator, row: dict, shape: tuple[int, int]) -> np.ndarray | None:
    """The ROI mask of a CSV row: whichever file of the crop / mask series is binary and of the
    full image's size (the two are swapped in some rows)."""
    import pydicom

    from ..cbis_ddsm import SkipRow

    for col in ("ROI mask file path", "cropped image file path"):
        try:
            files = locator.files(row[col])
        except SkipRow:
            continue
        for path in files:
            a = pydicom.dcmread(path).pixel_array
            if a.shape == shape and len(np.unique(a)) <= 2 and a.max() > 0:
                return a > 0
    return None
