"""Lesion renderer: a mass from its CBIS-DDSM labels, superimposed on the breast in projection.

A mass adds attenuation to whatever tissue lies above and below it, so its intensity is *added* to
the anatomy image (the parenchyma's texture and the linear structures continue through it); it is
never pasted over the tissue. What each label does:

* **Size.** Equivalent diameter log-normal, median :data:`SIZE_MEDIAN_MM` mm, clipped to
  :data:`SIZE_RANGE_MM`. Source: the CBIS-DDSM tables carry no size; the range is an assumption
  (screen-detected masses of a few mm to a few cm), which ``benchmarks/synthetic_realism.py
  --cbis DIR`` checks against the ROI masks of any CBIS-DDSM-shaped tree, the real one included.
* **Contrast from ``subtlety``** (1 = subtle, 5 = obvious). The peak added intensity is
  :data:`SUBTLETY_CNR` times the standard deviation of the background around the mass site, so a
  subtlety-1 mass is about as bright as the tissue's own fluctuations at any breast density.
* **Shape from ``mass shape``**: ROUND, OVAL, LOBULATED (2-4 large undulations), IRREGULAR (many
  harmonics), ARCHITECTURAL_DISTORTION (radiating lines around a faint, small centre), LYMPH_NODE
  (oval with a fatty hilum notch), FOCAL_ASYMMETRIC_DENSITY / ASYMMETRIC_BREAST_TISSUE (textured
  tissue-like density without a definable border). A combined shape uses its first part's outline.
* **Margin from ``mass margins``**, as BI-RADS describes what a reader sees (ACR BI-RADS Atlas,
  5th ed., 2013): *circumscribed* -- sharp, well-defined border; *microlobulated* -- short
  undulations (10-20 around the border); *obscured* -- a part of the border hidden by superimposed
  fibroglandular tissue; *ill-defined (indistinct)* -- a blurred, infiltrating border that merges
  with the tissue; *spiculated* -- lines of varying length, width and contrast radiating from the
  mass. Each margin is a :class:`MarginStyle` (edge blur, infiltration, spiculation,
  microlobulation, obscuring); combined margins and borderline masses (see :mod:`.labels`) blend
  the styles of their parts. Malignant masses lean towards a spiculated border and benign ones
  towards a circumscribed one (:data:`SUSPICION`), so the margin's look, not only its name, carries
  some of the malignancy signal, as in the clinic.

Masks, true to what was drawn: the **lesion mask** is the outline a reader would draw, where the
mass's body adds at least 30 % of its peak, with the roots of its spicules (so the crop square's
scale does not depend on the margin); the **fine mask** (the margin-relevant region) is the
transition zone of the border (where the border blur and infiltration actually change the
intensity, at least 1.5 px either side, minus any part hidden by obscuring tissue) for every margin
but pure spiculation, plus the drawn spicules (each line widened by a small band). The fine mask
therefore reaches beyond the lesion mask where the evidence does: the fuzzy outer border of an
ill-defined mass, the tips of spicules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .anatomy import smooth_noise
from .labels import SINGLE_MARGINS

__all__ = ["SIZE_MEDIAN_MM", "SIZE_SIGMA_LOG", "SIZE_RANGE_MM", "SUBTLETY_CNR", "CONTRAST_SCALE",
           "SPICULE_ROOT", "SUSPICION", "MarginStyle", "STYLE_RANGES", "NA_STYLES", "draw_style",
           "margin_style", "diameter_mm", "MassSpec", "mass_spec", "RenderedMass", "render_mass"]

SIZE_MEDIAN_MM = 14.0          # median equivalent diameter of a mass
SIZE_SIGMA_LOG = 0.45          # log-normal spread
SIZE_RANGE_MM = (5.0, 45.0)
#: Peak contrast (in units of the background's local standard deviation) per CSV subtlety; 0 occurs
#: in the real tables (2 rows) and is drawn like 1.
SUBTLETY_CNR = {0: 2.0, 1: 2.0, 2: 3.0, 3: 4.5, 4: 6.0, 5: 8.0}
CONTRAST_SCALE = 1.0           # global factor on SUBTLETY_CNR (the difficulty calibration)
SPICULE_ROOT = 0.4             # part of each spicule (from its start) inside the lesion outline
#: How far (blend weight) a malignant mass's border leans towards a spiculated one, and a benign
#: mass's towards a circumscribed one, whatever its margin: BI-RADS reads margins as a scale of
#: suspicion (ACR BI-RADS Atlas 2013), and a malignant "circumscribed" mass is less smooth than a
#: cyst. So the margin's look, not only its name, carries some of the malignancy signal.
SUSPICION = (0.1, 0.3)


@dataclass
class MarginStyle:
    """How a border looks, each in [0, 1] or relative to the mass radius R."""

    blur: float            # logistic edge width / R
    infiltration: float    # amplitude of the irregular, fuzzy displacement of the border / R
    spicules: float        # 0 none .. 1 a full spiculated corona (number and length of lines)
    microlobules: float    # amplitude of 10-20 small undulations / R
    obscuring: float       # 0 none .. 1 superimposed tissue hiding up to half the border

    def blend(self, other: "MarginStyle", t: float) -> "MarginStyle":
        return MarginStyle(*((1 - t) * getattr(self, f.name) + t * getattr(other, f.name)
                             for f in fields(self)))


#: Ranges (low, high) of each style parameter per single margin.
STYLE_RANGES = {
    "CIRCUMSCRIBED": dict(blur=(0.005, 0.02), infiltration=(0.0, 0.0), spicules=(0.0, 0.0),
                          microlobules=(0.0, 0.0), obscuring=(0.0, 0.0)),
    "MICROLOBULATED": dict(blur=(0.015, 0.035), infiltration=(0.0, 0.0), spicules=(0.0, 0.0),
                           microlobules=(0.035, 0.06), obscuring=(0.0, 0.0)),
    "OBSCURED": dict(blur=(0.02, 0.08), infiltration=(0.0, 0.03), spicules=(0.0, 0.0),
                     microlobules=(0.0, 0.0), obscuring=(0.5, 1.0)),
    "ILL_DEFINED": dict(blur=(0.2, 0.45), infiltration=(0.12, 0.25), spicules=(0.0, 0.0),
                        microlobules=(0.0, 0.0), obscuring=(0.0, 0.0)),
    "SPICULATED": dict(blur=(0.03, 0.07), infiltration=(0.0, 0.04), spicules=(0.7, 1.0),
                       microlobules=(0.0, 0.0), obscuring=(0.0, 0.0)),
}
#: Margin-less findings (mass margins NA): style by shape.
NA_STYLES = {
    "ARCHITECTURAL_DISTORTION": "SPICULATED",
    "LYMPH_NODE": "CIRCUMSCRIBED",
    "FOCAL_ASYMMETRIC_DENSITY": "ILL_DEFINED",
    "ASYMMETRIC_BREAST_TISSUE": "ILL_DEFINED",
}


def draw_style(rng: np.random.Generator, margin: str) -> MarginStyle:
    """One style drawn from the ranges of a single margin."""
    if margin not in STYLE_RANGES:
        raise ValueError(f"unknown single margin {margin!r}; expected one of {SINGLE_MARGINS}")
    r = STYLE_RANGES[margin]
    return MarginStyle(*(float(rng.uniform(*r[f.name])) for f in fields(MarginStyle)))


def margin_style(rng: np.random.Generator, margin: str, shape: str, partner: str = "",
                 blend: float = 0.0, pathology: str = "BENIGN") -> MarginStyle:
    """The style of a mass with CSV margin cell ``margin``: a single margin's style; the mean of
    the parts' styles for a combined margin ("OBSCURED-ILL_DEFINED"); for a missing margin (NA or
    empty) the style its shape implies; blended towards ``partner`` by ``blend`` (borderline);
    finally leaning by :data:`SUSPICION` towards a spiculated border if malignant, towards a
    circumscribed one if benign."""
    if margin in ("", "NA"):
        first = shape.split("-")[0]
        parts = [NA_STYLES.get(first, NA_STYLES.get(shape.split("-")[-1], "ILL_DEFINED"))]
    else:
        parts = [p for p in margin.split("-")]
    styles = [draw_style(rng, p) for p in parts]
    style = styles[0]
    for k, s in enumerate(styles[1:], start=2):
        style = style.blend(s, 1.0 / k)                                # running mean
    if partner:
        style = style.blend(draw_style(rng, partner), blend)
    lean = "SPICULATED" if pathology == "MALIGNANT" else "CIRCUMSCRIBED"
    return style.blend(draw_style(rng, lean), float(rng.uniform(*SUSPICION)))


def diameter_mm(rng: np.random.Generator) -> float:
    """Equivalent diameter of a mass, mm (log-normal, clipped)."""
    d = SIZE_MEDIAN_MM * np.exp(SIZE_SIGMA_LOG * rng.standard_normal())
    return float(np.clip(d, *SIZE_RANGE_MM))


@dataclass
class MassSpec:
    """Physical parameters of one mass, shared by its CC and MLO views. Lengths in px."""

    radius: float                 # mean boundary radius along the major axis
    aspect: float                 # minor / major axis, (0, 1]
    orientation: float            # rad, major axis direction
    harmonics: np.ndarray         # (K, 3): frequency k, relative amplitude, phase
    style: MarginStyle
    edge_wobble: np.ndarray       # (K2, 3): angular modulation of the edge width
    spicules: np.ndarray          # (n, 4): angle, length beyond the boundary, width, rel. amplitude
    core: float = 1.0             # relative amplitude of the central mass (AD: faint)
    textured: bool = False        # asymmetry: tissue-like texture instead of a solid mass
    hilum: float = -1.0           # lymph node: angle of the fatty hilum (-1: none)
    obscure_angle: float = 0.0

    @property
    def boundary(self) -> float:
        """Largest boundary radius (px)."""
        return self.radius * (1.0 + np.abs(self.harmonics[:, 1]).sum())

    @property
    def extent(self) -> float:
        """Radius (px) of a disc that holds the mass, its blurred border and its spicules."""
        spic = self.spicules[:, 1].max() if len(self.spicules) else 0.0
        fuzz = self.radius * (6.0 * self.style.blur + 3.0 * self.style.infiltration)
        cover = self.radius * (0.9 + 3.0 * (0.45 + 0.5 * self.style.obscuring)) \
            if self.style.obscuring > 0 else 0.0                         # the obscuring tissue
        return max(self.boundary + max(fuzz, spic + 2.0, 0.5 * self.radius), cover) + 3.0


def mass_spec(rng: np.random.Generator, margin: str, shape: str, spacing: float,
              partner: str = "", blend: float = 0.0, max_radius: float | None = None,
              pathology: str = "BENIGN") -> MassSpec:
    """Geometry and appearance of a mass from its CSV margin cell, shape and pathology
    (``spacing`` mm per px; ``max_radius`` px caps the size where a breast holds two masses)."""
    style = margin_style(rng, margin, shape, partner, blend, pathology)
    R = 0.5 * diameter_mm(rng) / spacing
    if max_radius is not None:
        R = min(R, max_radius)
    R = max(R, 2.5)
    first = shape.split("-")[0]
    core, textured, hilum = 1.0, False, -1.0
    low, high = {"ROUND": (0.85, 1.0), "OVAL": (0.5, 0.8), "LYMPH_NODE": (0.45, 0.7),
                 "LOBULATED": (0.6, 0.95)}.get(first, (0.6, 1.0))
    aspect = rng.uniform(low, high)
    harm = [(2, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi))]
    if first == "LOBULATED":
        for k in rng.choice([2, 3, 4], size=int(rng.integers(1, 3)), replace=False):
            harm.append((int(k), rng.uniform(0.07, 0.14) * (0.7 if k == 4 else 1.0),
                         rng.uniform(0, 2 * np.pi)))
    elif first in ("IRREGULAR", "NA", "ARCHITECTURAL_DISTORTION") or "ASYMMETRIC" in first:
        for k in range(2, 8):
            harm.append((k, rng.uniform(0.3, 1.0) * 0.11 / k ** 0.7, rng.uniform(0, 2 * np.pi)))
    if style.microlobules > 0.005:
        harm.append((int(rng.integers(10, 21)), style.microlobules, rng.uniform(0, 2 * np.pi)))
    if first == "ARCHITECTURAL_DISTORTION":
        core = rng.uniform(0.25, 0.45)
        R *= 0.6
        style.spicules = max(style.spicules, 0.9)
    if "ASYMMETRIC" in first:
        textured = True
        style.blur = max(style.blur, 0.3)
    if first == "LYMPH_NODE":
        hilum = rng.uniform(0, 2 * np.pi)
    wobble = np.array([(k, rng.uniform(0.1, 0.3) * min(1.0, 4 * style.blur),
                        rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)])
    n = int(round(style.spicules * rng.uniform(12, 28)))
    spicules = np.zeros((0, 4))
    if n:
        length = R * style.spicules * np.clip(1.2 * np.exp(0.4 * rng.standard_normal(n)), 0.4, 2.5)
        spicules = np.stack([
            np.sort(rng.uniform(0, 2 * np.pi, n)),                       # angle
            length,
            np.maximum(0.9, rng.uniform(0.8, 1.8, n) / spacing),         # full width at the base
            rng.uniform(0.6, 1.0, n),                                    # amplitude / mass peak
        ], axis=1)
    return MassSpec(R, aspect, rng.uniform(0, np.pi), np.array(harm, float), style, wobble,
                    spicules, core, textured, hilum, rng.uniform(0, 2 * np.pi))


def _angular(series: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k theta + phi_k) for series (K, 3) rows (k, a, phi); theta any shape."""
    out = np.zeros_like(theta)
    for k, a, phi in series:
        out += a * np.cos(k * theta + phi)
    return out


@dataclass
class RenderedMass:
    """One mass in a window of the image: ``window`` (slices), intensity (h, w) float32 to add,
    lesion / fine masks and footprint (where it adds >= a quarter of its peak) (h, w) bool."""

    window: tuple[slice, slice]
    intensity: np.ndarray
    lesion: np.ndarray
    fine: np.ndarray
    footprint: np.ndarray


def render_mass(rng: np.random.Generator, spec: MassSpec, cy: float, cx: float, rot: float,
                amplitude: float, H: int, W: int) -> RenderedMass:
    """Render one mass of peak added intensity ``amplitude`` centred at (cy, cx), rotated by
    ``rot`` (the view's compression differs), in a window of an (H, W) image."""
    e = spec.extent
    y0, y1 = max(0, int(cy - e)), min(H, int(cy + e) + 2)
    x0, x1 = max(0, int(cx - e)), min(W, int(cx + e) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)                  # (h, w)
    dy, dx = yy - cy, xx - cx
    phi = spec.orientation + rot
    c, s = np.cos(phi), np.sin(phi)
    xr = c * dx + s * dy                                                # along the major axis
    yr = (-s * dx + c * dy) / spec.aspect
    r = np.hypot(xr, yr)
    theta = np.arctan2(yr, xr)
    R_theta = spec.radius * (1.0 + _angular(spec.harmonics, theta))
    # signed distance to the boundary, px: (r - R_theta) / |grad r| (exact for an ellipse along
    # the normal, ignores the small angular slope of the harmonics; no singularity at the centre)
    rs = np.maximum(r, 1e-3)
    grad_r = np.hypot((xr * c - yr * s / spec.aspect) / rs, (xr * s + yr * c / spec.aspect) / rs)
    d = (r - R_theta) / np.clip(grad_r, 1.0, 1.0 / spec.aspect)
    st = spec.style
    if st.infiltration > 0:                                             # fuzzy, irregular border
        d = d - spec.radius * st.infiltration * smooth_noise(rng, d.shape,
                                                             max(1.0, spec.radius / 4))
    width = np.maximum(0.5, spec.radius * st.blur * (1.0 + _angular(spec.edge_wobble, theta)))
    body = 1.0 / (1.0 + np.exp(np.clip(d / width, -50, 50)))           # 1 inside, 0 outside
    dome = 0.7 + 0.3 * np.sqrt(np.clip(1.0 - (r / np.maximum(R_theta, 1e-3)) ** 2, 0.0, 1.0))
    texture = 1.0 + 0.08 * smooth_noise(rng, d.shape, max(1.0, spec.radius / 5))
    if spec.textured:                                                   # asymmetry: tissue-like
        texture = 0.5 + 0.5 * np.clip(1.0 + smooth_noise(rng, d.shape, max(1.0, spec.radius / 3)),
                                      0.0, 2.0)
    intensity = amplitude * spec.core * body * dome * texture
    if spec.hilum >= 0:                                                 # fatty hilum notch
        hy = cy + 0.85 * spec.radius * spec.aspect * np.sin(spec.hilum)
        hx = cx + 0.85 * spec.radius * spec.aspect * np.cos(spec.hilum)
        notch = np.exp(-((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * (0.3 * spec.radius) ** 2))
        intensity *= 1.0 - 0.8 * notch
    # the margin zone: where the border's blur and infiltration change the intensity
    band = max(1.5, 0.06 * spec.radius)
    zone = (np.abs(d) <= np.maximum(band, 2.2 * width)) | ((body > 0.1) & (body < 0.9))
    hidden = np.zeros(d.shape, bool)
    if st.obscuring > 0:          # superimposed fibroglandular tissue over part of the border
        oy = cy + 0.9 * spec.radius * np.sin(spec.obscure_angle)
        ox = cx + 0.9 * spec.radius * np.cos(spec.obscure_angle)
        size = spec.radius * (0.45 + 0.5 * st.obscuring)
        blob = np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * size ** 2))
        patch = np.clip(1.0 + 0.6 * smooth_noise(rng, d.shape, max(1.0, spec.radius / 4)), 0, None)
        intensity = intensity + amplitude * rng.uniform(0.8, 1.2) * min(1.0, 1.5 * st.obscuring) \
            * blob * patch
        hidden = blob > 0.5
    fine = zone & ~hidden if st.spicules < 0.75 else np.zeros(d.shape, bool)
    if len(spec.spicules):
        spic, spic_fine, spic_root = _render_spicules(spec, phi, dx, dy, amplitude)
        intensity = np.maximum(intensity, spic)
        fine |= spic_fine
    footprint = intensity > 0.25 * amplitude
    # the outline a reader draws: where the body adds >= 30 % of its peak, with the spicules' roots
    lesion = body >= 0.3
    if len(spec.spicules):
        lesion |= spic_root
    return RenderedMass((slice(y0, y1), slice(x0, x1)), intensity.astype(np.float32), lesion,
                        fine, footprint)


def _render_spicules(spec: MassSpec, phi: float, dx: np.ndarray, dy: np.ndarray,
                     amplitude: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin tapered lines radiating from inside the boundary, each computed in its own bounding
    box. dx, dy (h, w): pixel offsets from the mass centre. -> (intensity, fine: each line
    widened by a band, root: the first :data:`SPICULE_ROOT` of each line), each (h, w)."""
    ang, length, base_w, amp = spec.spicules.T                          # (n,) each
    bend = 0.15 * np.sin(3.7 * ang + 1.3)                               # direction jitter
    Rb = spec.radius * (1.0 + _angular(spec.harmonics, ang))            # boundary radius at ang
    bx_, by_ = Rb * np.cos(ang), Rb * np.sin(ang) * spec.aspect         # mass frame
    c, s = np.cos(phi), np.sin(phi)
    px, py = c * bx_ - s * by_, s * bx_ + c * by_                       # image frame, (n,)
    out_ang = np.arctan2(py, px) + bend
    sx, sy = 0.7 * px, 0.7 * py                                         # start inside the core
    vx, vy = px + length * np.cos(out_ang) - sx, py + length * np.sin(out_ang) - sy
    band = max(1.0, 0.04 * spec.radius)                                 # fine-mask margin
    inten = np.zeros(dx.shape, np.float32)
    fine = np.zeros(dx.shape, bool)
    root = np.zeros(dx.shape, bool)
    ox, oy = dx[0, 0], dy[0, 0]                                         # offsets of pixel (0, 0)
    h, w = dx.shape
    for i in range(len(ang)):
        pad = base_w[i] + band + 2
        c0 = int(max(0, np.floor(min(sx[i], sx[i] + vx[i]) - pad - ox)))
        c1 = int(min(w, np.ceil(max(sx[i], sx[i] + vx[i]) + pad - ox) + 1))
        r0 = int(max(0, np.floor(min(sy[i], sy[i] + vy[i]) - pad - oy)))
        r1 = int(min(h, np.ceil(max(sy[i], sy[i] + vy[i]) + pad - oy) + 1))
        if c1 <= c0 or r1 <= r0:
            continue
        qx, qy = dx[r0:r1, c0:c1] - sx[i], dy[r0:r1, c0:c1] - sy[i]     # (bh, bw)
        t = np.clip((qx * vx[i] + qy * vy[i]) / (vx[i] ** 2 + vy[i] ** 2), 0.0, 1.0)
        dist = np.hypot(qx - t * vx[i], qy - t * vy[i])
        half = 0.5 * base_w[i] * (1.0 - 0.6 * t)                        # tapering half-width
        line = amplitude * amp[i] * (1.0 - 0.6 * t) * np.exp(-0.5 * (dist / (0.6 * half)) ** 2)
        np.maximum(inten[r0:r1, c0:c1], line, out=inten[r0:r1, c0:c1])
        on_line = (dist <= half + band) & (t > 0.0)
        fine[r0:r1, c0:c1] |= on_line
        root[r0:r1, c0:c1] |= on_line & (t <= SPICULE_ROOT)
    return inten, fine, root
