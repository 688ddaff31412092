"""One breast, both views: anatomy, mass placement and the masses superimposed on it.

Masses are placed in breast coordinates (depth fraction u towards the nipple, vertical fraction v)
so that the MLO position follows the CC one (jittered); each view is rendered in LEFT orientation
(mirroring happens when written). A mass's peak added intensity is the CNR of its view's subtlety
(:data:`.lesions.SUBTLETY_CNR`) times the standard deviation of that view's background around it,
measured before any mass is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import lesions as lesion_renderer
from .anatomy import BreastGeometry, breast_geometry, render_anatomy
from .lesions import MassSpec, mass_spec, render_mass
from .markers import draw_view_label
from .plan import Breast

__all__ = ["TISSUE_MAX", "RenderedView", "place_lesions", "local_sigma", "render_breast", "render_example"]

TISSUE_MAX = 0.92          # tissue + masses are clipped here; confounder markers are 1.0


@dataclass
class RenderedView:
    """One rendered view. image (H, W) float32 in [0, 1]; per lesion (H, W) bool masks; inside
    (H, W) bool: the breast; masses (H, W) float32: the intensity the masses added; per lesion
    the peak added intensity (amplitude) and the background's local standard deviation."""

    image: np.ndarray
    lesion_masks: list[np.ndarray]
    fine_masks: list[np.ndarray]
    footprints: list[np.ndarray]
    inside: np.ndarray
    masses: np.ndarray
    amplitudes: list[float]
    sigmas: list[float]


def place_lesions(rng: np.random.Generator, geoms: dict[str, BreastGeometry],
                  specs: list[MassSpec]) -> dict[str, list[tuple[float, float]]]:
    """Centres (y, x) px of every mass in both views: inside the breast with room for the crop
    square, off the pectoral muscle, apart from each other; MLO position = CC position jittered."""

    def ok(geom, y, x, R, placed, relax):
        e = 2.0 * R * relax                 # crop-square half-side is about 2 R
        ys = np.array([y - e, y + e, y, y, y])
        xs = np.array([x, x, x - e, x + e, x])
        if (xs < 2).any() or (geom.rho(ys, xs) > 0.98).any():
            return False
        if geom.in_pectoral(np.array([y - e, y]), np.array([x, x - e]), margin=3.0).any():
            return False
        return all(max(abs(y - py), abs(x - px)) > 2.1 * relax * (R + pR) for py, px, pR in placed)

    out: dict[str, list[tuple[float, float]]] = {"CC": [], "MLO": []}
    placed: dict[str, list[tuple[float, float, float]]] = {"CC": [], "MLO": []}  # (y, x, R)
    for spec in specs:
        R = spec.boundary + 0.5 * (spec.extent - spec.boundary)
        for attempt in range(600):
            relax = 1.0 if attempt < 300 else 0.75
            u, v = rng.uniform(0.15, 0.8), rng.uniform(-0.7, 0.7)
            cc = geoms["CC"].to_pixel(u, v)
            um = float(np.clip(u + rng.normal(0, 0.07), 0.15, 0.8))
            vm = float(np.clip(v + rng.normal(0, 0.12), -0.7, 0.7))
            mlo = geoms["MLO"].to_pixel(um, vm)
            if (ok(geoms["CC"], *cc, R, placed["CC"], relax)
                    and ok(geoms["MLO"], *mlo, R, placed["MLO"], relax)):
                break
        # (after 600 tries the last candidate is kept: rare, only for extreme geometries)
        for view, pos in (("CC", cc), ("MLO", mlo)):
            out[view].append(pos)
            placed[view].append((pos[0], pos[1], R))
    return out


def local_sigma(image: np.ndarray, inside: np.ndarray, cy: float, cx: float,
                radius: float) -> float:
    """Standard deviation of ``image`` in the square of half-side 2 ``radius`` around (cy, cx),
    inside the breast, outside the disc of 1.2 ``radius`` (the surround of a mass site)."""
    H, W = image.shape
    e = 2.0 * radius
    y0, y1 = max(0, int(cy - e)), min(H, int(cy + e) + 1)
    x0, x1 = max(0, int(cx - e)), min(W, int(cx + e) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ring = inside[y0:y1, x0:x1] & ((yy - cy) ** 2 + (xx - cx) ** 2 > (1.2 * radius) ** 2)
    values = image[y0:y1, x0:x1][ring]
    return float(values.std()) if values.size >= 20 else float(image[inside].std())


def render_breast(seed: int, breast: Breast, H: int, W: int,
                  spacing: float) -> dict[str, RenderedView]:
    """Both views of one breast, in LEFT orientation (``spacing`` mm per px)."""
    side_idx = 0 if breast.side == "LEFT" else 1
    rng = np.random.default_rng([seed, 1, breast.number, side_idx])
    geoms = {view: breast_geometry(rng, view, H, W) for view in ("CC", "MLO")}
    cap = 0.055 * H if len(breast.lesions) > 1 else 0.09 * H           # two masses must fit
    specs = [mass_spec(rng, les.margin, les.shape, spacing, les.partner, les.blend, cap,
                       les.pathology) for les in breast.lesions]
    positions = place_lesions(rng, geoms, specs)
    views = {}
    for view in ("CC", "MLO"):
        guides = [(y, x, spec.radius) for spec, (y, x) in zip(specs, positions[view])]
        anatomy = render_anatomy(rng, geoms[view], breast.density, H, W, spacing, guides)
        img = anatomy.image
        rot = 0.0 if view == "CC" else rng.uniform(-0.35, 0.35)
        sigmas = [local_sigma(img, anatomy.inside, y, x, spec.boundary)
                  for spec, (y, x) in zip(specs, positions[view])]
        masks, fines, prints, amps = [], [], [], []
        added = np.zeros((H, W), np.float32)
        for les, spec, (cy, cx), sigma in zip(breast.lesions, specs, positions[view], sigmas):
            cnr = lesion_renderer.SUBTLETY_CNR[les.view_subtlety[view]]
            amplitude = cnr * lesion_renderer.CONTRAST_SCALE * sigma
            mass = render_mass(rng, spec, cy, cx, rot, amplitude, H, W)
            img[mass.window] += mass.intensity
            added[mass.window] += mass.intensity
            for store, local in ((masks, mass.lesion), (fines, mass.fine),
                                 (prints, mass.footprint)):
                full = np.zeros((H, W), bool)
                full[mass.window] = local
                store.append(full)
            amps.append(amplitude)
        np.clip(img, 0.0, TISSUE_MAX, out=img)
        draw_view_label(img, breast.side[0] + view, mirrored=breast.side == "RIGHT")
        views[view] = RenderedView(img, masks, fines, prints, anatomy.inside, added, amps, sigmas)
    return views


def render_example(margin: str, subtlety: int, shape: str = "IRREGULAR", density: int = 2,
                   size: int = 512, seed: int = 0, partner: str = "", blend: float = 0.0,
                   pathology: str = "BENIGN") -> dict[str, np.ndarray]:
    """One mass with the given CSV labels, rendered in the CC view of a breast of the given
    density exactly as the generator renders it, and cut out with the importer's crop square.
    -> {"full": (H, W) float32, "roi": (S, S), "mass": (S, S) float32 (the intensity the mass
    added), "lesion": (S, S) bool, "fine": (S, S) bool, "amplitude": float, "sigma": float}
    (crops zero-padded where the square leaves the image)."""
    from ..cbis_ddsm import crop_padded          # the importer's own crop (zero where it leaves the image)
    from .labels import LabelSet
    from .markers import crop_square
    from .plan import Lesion

    H, W = int(size), 2 * int(round(0.4 * size))
    labels = LabelSet(margin, shape, pathology, density, subtlety, 3)
    lesion = Lesion(1, labels, partner, blend, {"CC": margin, "MLO": margin},
                    {"CC": subtlety, "MLO": subtlety})
    breast = Breast(1, "train", "LEFT", density, [lesion])
    view = render_breast(seed, breast, H, W, 240.0 / H)["CC"]
    top, left, side = crop_square(view.lesion_masks[0], floor=64)
    out = {"full": view.image, "amplitude": view.amplitudes[0], "sigma": view.sigmas[0]}
    for key, a in (("roi", view.image), ("mass", view.masses), ("lesion", view.lesion_masks[0]),
                   ("fine", view.fine_masks[0])):
        out[key] = crop_padded(a, (top, left, side))
    return out
