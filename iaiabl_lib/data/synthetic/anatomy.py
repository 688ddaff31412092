"""Anatomy renderer: the breast without its masses, as a projection image.

One view of one breast is a float32 image in [0, 1] (0 = black, MONOCHROME2 sense) in LEFT
orientation (chest wall at x = 0, nipple to the right; RIGHT breasts are mirrored when written).
What is drawn, in order:

* **Outline.** A half ellipse against the chest wall, with the nipple in profile at its tip; in MLO
  views the pectoral muscle, a bright triangle in the upper chest-wall corner.
* **Thickness fall-off.** A compressed breast is a slab whose edge is roughly a half cylinder of
  radius about half the compressed thickness, so the projected path length falls as
  ``sqrt(1 - (1 - e/E)^2)`` over the last ``E`` = :data:`FALLOFF_MM` mm before the skin (e: distance
  to the skin).
* **Parenchyma.** Fibroglandular tissue is a soft threshold of a Gaussian random field whose power
  spectrum falls as ``1/f^beta`` with ``beta`` = :data:`BETA` = 3 (mammographic backgrounds have
  power-law spectra: Heine et al. 1999, "On the statistical nature of mammograms", Med. Phys.
  26(11):2254; Burgess, Jacobson & Judy 2001, "Human observer detection experiments with mammograms
  and power-law noise", Med. Phys. 28(4):419, beta 1.5-3.5, about 2.8 on average; Chen et al.
  2012, Med. Phys. 39(3):1435, beta 3.17 (CC) and 3.30 (MLO)). Its amount, the glandular fraction
  of the breast, follows the BI-RADS ``breast_density`` 1-4 (fatty, scattered, heterogeneously
  dense, extremely dense).
* **Linear structures.** Ducts converging on the nipple, vessels crossing the breast, and Cooper's
  ligaments (short curved lines in the subcutaneous fat): thin tapered lines (Gaussian profiles,
  sigma about 0.15-0.9 mm) that, seen through a small window, look like the spicules of a
  spiculated mass. Half of the mass
  sites, whatever their margin, get a duct routed past them, so that a line near a mass is no
  margin cue by itself.
* **Skin line** (a thin brighter band just inside the outline), **detector blur** and **quantum
  noise** (signal-dependent, small enough not to whiten the texture's spectrum below 1/4 cycle per
  pixel).

The detector blur is a Gaussian of sigma :data:`DETECTOR_BLUR_PX` = 0.3 px (0.14 mm at the default
0.47 mm pixel: a screen-film system digitised and downsampled, whose own point spread is a fraction
of a pixel here). It was 0.5 px until the spectrum was measured band by band: the squared transfer
function of a 0.5 px blur falls from 0.86 at 1/8 to 0.54 at 1/4 cycle per pixel, which steepens the
spectrum there by about 0.7, so the measured exponent hinged on the fitted band (seed 7, 40 images:
2.69 between 1/64 and 1/8 cycle per pixel, 3.18 between 1/32 and 1/4, 3.34 between 1/10 and 2/5; an
independent fit read 3.52, above the 2.5-3.5 of real mammograms). At 0.3 px the same bands give
2.64, 3.02 and 2.90 (`python benchmarks/synthetic_realism.py` prints all three).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["BETA", "FALLOFF_MM", "BACKGROUND", "FAT", "GLAND", "DENSITY_OFFSET", "GLAND_SLOPE", "NOISE",
           "DETECTOR_BLUR_PX", "BreastGeometry", "breast_geometry", "power_law_field", "smooth_noise",
           "Curves", "draw_curves", "linear_structures", "Anatomy", "render_anatomy"]

BETA = 3.0                 # exponent of the parenchyma's power spectrum
FALLOFF_MM = 22.0          # width of the thickness fall-off band at the breast edge
BACKGROUND = 0.02          # outside the breast (before noise)
FAT = 0.30                 # full-thickness fatty tissue
GLAND = 0.34               # added by fully glandular tissue
#: Soft-threshold offset of the glandular field per BI-RADS density 1..4 (BI-RADS 4th edition:
#: < 25 %, 25-50 %, 51-75 %, > 75 % glandular; the fractions these give are printed by
#: tests/test_synthetic.py::test_density_sets_glandular_fraction).
DENSITY_OFFSET = {1: -2.2, 2: -1.0, 3: 0.0, 4: 1.1}
GLAND_SLOPE = 1.7          # steepness of the soft threshold (unit-variance field)
NOISE = 0.0035             # quantum noise standard deviation at intensity 0.5
DETECTOR_BLUR_PX = 0.3     # Gaussian sigma (px) of the detector's point spread function


@dataclass
class BreastGeometry:
    """Half-ellipse breast outline of one view: centre row cy, vertical semi-axis ay, depth bx
    (from the chest wall at x = 0); MLO views add a pectoral triangle (pw wide, ph high). All px."""

    cy: float
    ay: float
    bx: float
    pw: float = 0.0
    ph: float = 0.0

    def rho(self, y, x):
        """Normalised elliptic radius: < 1 inside the breast."""
        return np.sqrt(((y - self.cy) / self.ay) ** 2 + (x / self.bx) ** 2)

    def edge_distance(self, y, x):
        """Approximate distance (px) to the outline, positive inside: (1 - rho) / |grad rho|."""
        dy, dx = (y - self.cy) / self.ay, x / self.bx
        rho = np.sqrt(dy * dy + dx * dx)
        grad = np.sqrt((dy / self.ay) ** 2 + (dx / self.bx) ** 2) / np.maximum(rho, 1e-6)
        return (1.0 - rho) / np.maximum(grad, 1.0 / max(self.ay, self.bx))

    def in_pectoral(self, y, x, margin: float = 0.0):
        if self.pw <= 0:
            return np.zeros(np.broadcast(y, x).shape, bool)
        return x / (self.pw + margin) + y / (self.ph + margin) < 1.0

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        """(u depth fraction, v vertical fraction of the local half-height) -> (y, x) px."""
        return self.cy + v * self.ay * np.sqrt(max(1.0 - u * u, 1e-3)), u * self.bx

    @property
    def nipple(self) -> tuple[float, float]:
        return self.cy, self.bx


def breast_geometry(rng: np.random.Generator, view: str, H: int, W: int) -> BreastGeometry:
    """A random breast outline for a CC or MLO view of an (H, W) image."""
    if view == "CC":
        return BreastGeometry(cy=H * rng.uniform(0.47, 0.53), ay=H * rng.uniform(0.37, 0.44),
                              bx=W * rng.uniform(0.72, 0.92))
    return BreastGeometry(cy=H * rng.uniform(0.50, 0.56), ay=H * rng.uniform(0.42, 0.47),
                          bx=W * rng.uniform(0.75, 0.95), pw=W * rng.uniform(0.22, 0.40),
                          ph=H * rng.uniform(0.32, 0.55))


def power_law_field(rng: np.random.Generator, shape: tuple[int, int], beta: float = BETA,
                    f_low: float | None = None) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field (H, W) with power spectrum ~ 1/f^beta
    (FFT-filtered white noise; periodic). Frequencies below ``f_low`` cycles/px (default: one
    cycle over the image's larger side) are flattened, so the field's variance is finite."""
    H, W = shape
    fy = np.fft.fftfreq(H)[:, None]                                     # (H, 1)
    fx = np.fft.rfftfreq(W)[None, :]                                    # (1, W//2+1)
    f = np.maximum(np.hypot(fy, fx), f_low if f_low else 1.0 / max(H, W))
    spectrum = np.fft.rfft2(rng.standard_normal((H, W), dtype=np.float32))
    field = np.fft.irfft2(spectrum * f ** (-beta / 2.0), s=(H, W)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-12
    return field


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    """Unit-variance gaussian-filtered white noise (H, W) with correlation length ``sigma`` px
    (scalar or per axis), filtered at reduced resolution and bilinearly upsampled (fast)."""
    sigma = np.broadcast_to(np.asarray(sigma, float), (2,))
    factor = np.maximum(1, np.floor(sigma / 2.0)).astype(int)
    small_shape = tuple(int(np.ceil(s / f)) + 2 for s, f in zip(shape, factor))
    small = ndimage.gaussian_filter(rng.standard_normal(small_shape).astype(np.float32),
                                    sigma / factor, mode="wrap")
    small /= small.std() + 1e-8
    if np.all(factor == 1):
        return small[: shape[0], : shape[1]]
    big = ndimage.zoom(small, factor, order=1, grid_mode=False)
    return big[: shape[0], : shape[1]]


# ----------------------------------------------------------------------------------------------
# linear structures: random walks splatted onto the image and blurred to their width
# ----------------------------------------------------------------------------------------------

_WIDTH_CLASSES = np.array([0.45, 0.7, 1.0, 1.45, 2.1, 3.0])   # Gaussian sigmas (px) of the lines


@dataclass
class Curves:
    """Polylines to draw: start points, headings, lengths (px), pull towards a target, width
    (Gaussian sigma, px), peak amplitude and meander (heading noise per px)."""

    y: np.ndarray
    x: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    target_y: np.ndarray
    target_x: np.ndarray
    pull: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray
    meander: np.ndarray

    @staticmethod
    def concat(parts: list["Curves"]) -> "Curves":
        return Curves(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in Curves.__dataclass_fields__))


def _walk(rng: np.random.Generator, c: Curves) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step every curve forward 1 px at a time. -> (ys, xs, weights) of all samples, where the
    weight is the local amplitude (tapered over the first and last fifth of each curve)."""
    n = len(c.y)
    steps = int(np.ceil(c.length.max())) if n else 0
    y, x, h = c.y.astype(float), c.x.astype(float), c.heading.astype(float)
    ys = np.empty((steps, n))
    xs = np.empty((steps, n))
    for t in range(steps):
        to_target = np.arctan2(c.target_y - y, c.target_x - x)
        turn = np.angle(np.exp(1j * (to_target - h)))                 # wrapped to (-pi, pi]
        h = h + c.pull * turn + c.meander * rng.standard_normal(n)
        y = y + np.sin(h)
        x = x + np.cos(h)
        ys[t], xs[t] = y, x
    frac = np.arange(steps)[:, None] / np.maximum(c.length[None, :], 1.0)   # (steps, n)
    taper = np.clip(np.minimum(frac, 1.0 - frac) / 0.2, 0.0, 1.0)
    weight = np.where(frac < 1.0, taper, 0.0) * c.amplitude[None, :]
    return ys, xs, weight


def draw_curves(rng: np.random.Generator, curves: Curves, shape: tuple[int, int]) -> np.ndarray:
    """Render ``curves`` into an (H, W) float32 image: each sample is splatted bilinearly and the
    accumulated image of each width class is blurred with that class's Gaussian, scaled so that a
    straight line's peak equals its amplitude."""
    H, W = shape
    out = np.zeros(shape, np.float32)
    if not len(curves.y):
        return out
    ys, xs, weight = _walk(rng, curves)
    cls = np.abs(curves.sigma[:, None] - _WIDTH_CLASSES[None, :]).argmin(axis=1)     # (n,)
    for k in np.unique(cls):
        sel = cls == k
        y, x, w = ys[:, sel].ravel(), xs[:, sel].ravel(), weight[:, sel].ravel()
        ok = (w > 0) & (y >= 0) & (y < H - 1) & (x >= 0) & (x < W - 1)
        y, x, w = y[ok], x[ok], w[ok] * np.sqrt(2 * np.pi) * _WIDTH_CLASSES[k]
        y0, x0 = y.astype(np.intp), x.astype(np.intp)
        fy, fx = y - y0, x - x0
        acc = np.zeros(H * W)
        for dy, dx, ww in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            acc += np.bincount((y0 + dy) * W + x0 + dx, weights=w * ww, minlength=H * W)
        out += ndimage.gaussian_filter(acc.reshape(H, W).astype(np.float32), _WIDTH_CLASSES[k])
    return out


def linear_structures(rng: np.random.Generator, geom: BreastGeometry, H: int, W: int,
                      spacing: float, guides: list[tuple[float, float, float]] = ()) -> Curves:
    """Ducts (towards the nipple), vessels, Cooper's ligaments and, for each guide (y, x, radius)
    -- a mass site -- up to one duct passing it at 0.8-2 radii. Widths and amplitudes in px and
    image units; ``spacing`` mm per px."""
    ny, nx = geom.nipple
    mm = 1.0 / spacing                                                  # px per mm
    parts = []

    def curves(y, x, length, ty, tx, pull, sigma_mm, amp, meander):
        n = len(y)
        heading = np.arctan2(ty - y, tx - x) + rng.normal(0, 0.3, n)
        sigma = np.maximum(0.45, np.asarray(sigma_mm) * mm)
        # a line narrower than a pixel keeps its integrated density, not its peak
        amp = np.asarray(amp) * np.minimum(1.0, np.asarray(sigma_mm) * mm / 0.45)
        return Curves(np.asarray(y, float), np.asarray(x, float), heading,
                      np.asarray(length, float), np.asarray(ty, float), np.asarray(tx, float),
                      np.full(n, pull), sigma, amp, np.full(n, meander))

    # ducts: from the glandular body towards the nipple
    n = int(rng.integers(14, 26))
    u, v = rng.uniform(0.05, 0.7, n), rng.uniform(-0.85, 0.85, n)
    y = geom.cy + v * geom.ay * np.sqrt(1 - u ** 2)
    x = u * geom.bx
    dist = np.hypot(ny - y, nx - x)
    parts.append(curves(y, x, dist * rng.uniform(0.35, 0.95, n), np.full(n, ny), np.full(n, nx),
                        0.04, rng.uniform(0.25, 0.5, n), rng.uniform(0.012, 0.03, n), 0.06))
    # vessels: longer, wider, oblique, meandering
    n = int(rng.integers(2, 6))
    y = geom.cy + rng.uniform(-0.8, 0.8, n) * geom.ay
    x = rng.uniform(0.0, 0.15, n) * geom.bx
    ty = geom.cy + rng.uniform(-0.6, 0.6, n) * geom.ay
    tx = rng.uniform(0.6, 1.0, n) * geom.bx
    parts.append(curves(y, x, np.hypot(ty - y, tx - x) * rng.uniform(0.6, 1.0, n), ty, tx, 0.02,
                        rng.uniform(0.45, 0.9, n), rng.uniform(0.015, 0.035, n), 0.05))
    # Cooper's ligaments: short curved lines 4-25 mm inside the skin, roughly along it
    n = int(rng.integers(8, 20))
    theta = rng.uniform(-0.48 * np.pi, 0.48 * np.pi, n)                # position along the outline
    depth = rng.uniform(4, 25, n) * mm
    ey, ex = geom.cy + geom.ay * np.sin(theta), geom.bx * np.cos(theta)
    inward = np.arctan2(geom.cy - ey, 0.0 - ex)
    y, x = ey + depth * np.sin(inward), ex + depth * np.cos(inward)
    along = inward + np.pi / 2 * rng.choice([-1, 1], n) + rng.normal(0, 0.5, n)
    far = 40 * mm
    parts.append(curves(y, x, rng.uniform(8, 25, n) * mm, y + far * np.sin(along),
                        x + far * np.cos(along), 0.03, rng.uniform(0.15, 0.35, n),
                        rng.uniform(0.012, 0.03, n), 0.04))
    # ducts routed past each mass site
    for gy, gx, radius in guides:
        n = int(rng.integers(0, 2))
        away = np.arctan2(gy - ny, gx - nx)                              # from nipple to mass
        offset = rng.uniform(0.8, 2.0, n) * radius * rng.choice([-1, 1], n)
        back = rng.uniform(2.0, 4.0, n) * radius
        y = gy + back * np.sin(away) + offset * np.cos(away)
        x = gx + back * np.cos(away) - offset * np.sin(away)
        dist = np.hypot(ny - y, nx - x)
        parts.append(curves(y, x, np.minimum(dist, back + rng.uniform(2, 5, n) * radius),
                            np.full(n, ny), np.full(n, nx), 0.03, rng.uniform(0.25, 0.5, n),
                            rng.uniform(0.015, 0.035, n), 0.05))
    return Curves.concat(parts)


# ----------------------------------------------------------------------------------------------
# the anatomy of one view
# ----------------------------------------------------------------------------------------------

@dataclass
class Anatomy:
    """One rendered view without masses. image (H, W) float32; inside (H, W) bool: the breast;
    glandular (H, W) float32: the fibroglandular fraction (0..1) the texture came from."""

    image: np.ndarray
    inside: np.ndarray
    glandular: np.ndarray


def render_anatomy(rng: np.random.Generator, geom: BreastGeometry, density: int, H: int, W: int,
                   spacing: float, guides: list[tuple[float, float, float]] = ()) -> Anatomy:
    """The breast of one view on a black background (see the module docstring), with detector
    blur and quantum noise. ``guides`` (y, x, radius px): mass sites to route ducts past."""
    if density not in DENSITY_OFFSET:
        raise ValueError(f"breast_density must be 1..4, not {density!r}")
    mm = 1.0 / spacing
    y = np.arange(H, dtype=np.float32)[:, None]                         # (H, 1)
    x = np.arange(W, dtype=np.float32)[None, :]                         # (1, W)
    # outline: ellipse united with the nipple in profile (distance to the skin, px, > 0 inside)
    edge = geom.edge_distance(y, x)                                     # (H, W)
    nip = BreastGeometry(geom.cy, 4.5 * mm, 3.5 * mm)                   # nipple ellipse
    nip_edge = nip.edge_distance(y, x - (geom.bx - 1.5 * mm)) * np.float32(1.0)
    nip_edge = np.where(x >= geom.bx - 1.5 * mm, nip_edge, -1e3)
    edge = np.maximum(edge, nip_edge).astype(np.float32)
    inside = edge > 0
    # thickness fall-off over the last FALLOFF_MM
    s = np.clip(edge / (FALLOFF_MM * mm), 0.0, 1.0)
    thickness = np.sqrt(np.clip(1.0 - (1.0 - s) ** 2, 0.0, 1.0))
    # parenchyma: soft threshold of a 1/f^beta field, more glandular tissue centrally and
    # behind the nipple, less in the subcutaneous fat
    field = power_law_field(rng, (H, W))
    u = np.clip(x / geom.bx, 0.0, 1.0)
    v = (y - geom.cy) / geom.ay
    prior = 0.6 * (1.0 - v ** 2) - 0.5 * (u - 0.45) ** 2 - 1.2 * np.exp(-edge / (8.0 * mm))
    z = np.clip(GLAND_SLOPE * (field + DENSITY_OFFSET[density] + prior), -30.0, 30.0)
    glandular = 1.0 / (1.0 + np.exp(-z))
    tissue = (FAT + GLAND * glandular) * thickness
    # pectoral muscle (MLO): bright, with the same texture faintly, soft edge over ~1.5 px
    if geom.pw > 0:
        dist = (1.0 - x / geom.pw - y / geom.ph) / np.hypot(1 / geom.pw, 1 / geom.ph)
        pec = 1.0 / (1.0 + np.exp(-np.clip(dist / 1.5, -50, 50)))
        muscle = rng.uniform(0.55, 0.66) + 0.02 * field
        tissue = tissue * (1.0 - pec) + muscle * thickness * pec
    # linear structures, skin line
    curves = linear_structures(rng, geom, H, W, spacing, guides)
    tissue += draw_curves(rng, curves, (H, W)) * np.clip(edge / (3 * mm), 0, 1)
    tissue += 0.035 * np.exp(-0.5 * ((edge - 0.9 * mm) / max(0.7, 0.5 * mm)) ** 2)
    alpha = np.clip(edge + 0.5, 0.0, 1.0)                               # anti-aliased outline
    image = BACKGROUND + alpha * tissue
    image = ndimage.gaussian_filter(image.astype(np.float32), DETECTOR_BLUR_PX)
    noise = rng.standard_normal((H, W), dtype=np.float32)
    image += NOISE * np.sqrt(np.clip(image, 0.0, None) / 0.5) * noise
    return Anatomy(image.astype(np.float32), inside, glandular.astype(np.float32))
