"""One case, "this looks like that" (paper Fig. 3): the prototypes that drive the margin call,
each with its similarity, weight and contribution, from one forward pass."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import MARGINS
from ..model import activation_map
from ..predict import eval_batches, malignancy_probability, margin_probabilities
from .cam import eq11, logit_contribution
from .inputs import dataset_for, prepare_image, prototype_record
from ..errors import InputError

__all__ = ["PrototypeEvidence", "CaseExplanation", "leading_prototype", "explain_case", "hot_box"]


@dataclass
class PrototypeEvidence:
    """One prototype's part in a decision (a row of the paper's Fig. 3)."""

    index: int                      # prototype j
    cls: int                        # its class (index into MARGINS)
    class_name: str
    similarity: float               # s_j, Eq. 2
    weight: float                   # h1[c, j] for the explained class c
    contribution: float             # similarity × weight
    activation: np.ndarray          # (S, S) PAM of prototype j over the case
    source_id: str | None           # the training case the prototype was projected onto
    source_index: int | None
    patch: tuple[int, int] | None   # latent-grid cell of the prototype in its source
    rf_box: tuple[int, int, int, int] | None          # receptive field of that cell (y0, x0, y1, x1)
    high_activation_box: tuple[int, int, int, int] | None  # 95th-percentile box of the self-activation
    source_image: np.ndarray | None  # (S, S) uint8 the source ROI
    self_activation: np.ndarray | None  # (S, S) the prototype's PAM on its own source

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """The box shown around the prototype: its high-activation box, else its receptive field."""
        return self.high_activation_box or self.rf_box

    @property
    def patch_image(self) -> np.ndarray | None:
        """The prototype as an image: the source ROI inside :attr:`box`."""
        if self.source_image is None or self.box is None:
            return None
        y0, x0, y1, x1 = self.box
        return self.source_image[y0:y1, x0:x1]

    @property
    def case_box(self) -> tuple[int, int, int, int]:
        """Where the prototype is found in the case: the 95th-percentile box of its PAM."""
        return hot_box(self.activation)


@dataclass
class CaseExplanation:
    """Why the model says what it says about one case."""

    case_id: str | None
    image: np.ndarray                  # (S, S) uint8 the ROI as the model saw it
    margin_logits: np.ndarray          # (3,)
    margin_prob: np.ndarray            # (3,)
    predicted_class: int               # argmax of margin_prob
    explained_class: int               # the class the contributions refer to (default: predicted)
    malignancy_prob: float | None
    similarity: np.ndarray             # (m,) s_j
    weights: np.ndarray                # (3, m) h1
    contributions: np.ndarray          # (3, m) similarity × weight; row c sums to margin logit c
    prototype_class: np.ndarray        # (m,)
    prototypes: list[PrototypeEvidence]  # the top prototypes, by contribution to explained_class
    lesion_mask: np.ndarray | None = None   # (S, S) when known
    true_margin: int | None = None
    true_malignant: int | None = None
    malignancy_equation: dict = field(default_factory=dict)   # run.malignancy (Eq. 10)
    similarity_maps: np.ndarray | None = None   # (m, H, W) Eq. 1 maps of the case (the latent grid)
    seconds: float = 0.0               # time taken by explain_case

    @property
    def predicted_margin(self) -> str:
        return MARGINS[self.predicted_class]

    @property
    def explained_margin(self) -> str:
        return MARGINS[self.explained_class]

    def class_activation(self, cls: int | None = None) -> np.ndarray:
        """Appendix A Eq. 11's class activation map of this case for ``cls`` (default: the true
        margin where the explanation knows it, as the paper draws it, else the predicted one), from
        the maps and scores the explanation already holds, no forward pass. (S, S) float32 in [0, 1]."""
        c = self._map_class(cls)
        return eq11(self._maps()[None], self.similarity[None], self.prototype_class, [c],
                    self.image.shape[-1])[0].numpy()

    def logit_contribution(self, cls: int | None = None) -> np.ndarray:
        """The logit-contribution map (``explain.logit_contribution_map``) for ``cls`` (default as
        :meth:`class_activation`): (S, S) float32, margin-logit points per pixel, signed."""
        c = self._map_class(cls)
        return logit_contribution(self._maps()[None], self.weights, self.prototype_class, [c],
                                  self.image.shape[-1])[0].numpy()

    def _map_class(self, cls: int | None) -> int:
        if cls is not None:
            return int(cls)
        return self.predicted_class if self.true_margin is None else int(self.true_margin)

    def _maps(self) -> np.ndarray:
        if self.similarity_maps is None:
            raise ValueError("this explanation holds no similarity maps; use explain.class_activation_map")
        return self.similarity_maps

    def evidence(self, cls: int | None = None) -> float:
        """Total evidence (the margin logit) for class ``cls`` (default: the explained class)."""
        return float(self.contributions[self.explained_class if cls is None else cls].sum())


def leading_prototype(expl: CaseExplanation) -> PrototypeEvidence:
    """What a reader of the case sees first: the most activated prototype (largest similarity,
    Eq. 2) of the predicted class, the same choice as ``evaluate.predicted_class_pam`` (the most
    activated prototype overall when pruning left that class without prototypes). ``expl`` must
    list that prototype: explain with ``top`` = the number of prototypes."""
    own = np.flatnonzero(expl.prototype_class == expl.predicted_class)
    pool = own if len(own) else np.arange(len(expl.similarity))
    j = int(pool[np.argmax(expl.similarity[pool])])
    for p in expl.prototypes:
        if p.index == j:
            return p
    raise ValueError(f"prototype {j} (the most activated of the predicted class) is not among the "
                     f"{len(expl.prototypes)} listed: explain the case with top={len(expl.similarity)}")


def hot_box(pam: np.ndarray, percentile: float = 95.0) -> tuple[int, int, int, int]:
    from ..push import high_activation_box

    return tuple(int(v) for v in high_activation_box(torch.as_tensor(pam)[None].float(), percentile)[0])


def _resolve_case(run, case, data):
    """(case_id, grey uint8, normalised tensor, lesion mask or None, margin or None, malignant or None)."""
    size = int(run.preset.model.image_size)
    if isinstance(case, (str, Path)) and (Path(case).suffix.lower() in (".dcm", ".dicom") or Path(case).is_file()):
        raise InputError(f"{case}: explain_case takes a prepared case (id or index) or an ROI crop; "
                         "for a raw DICOM cut the ROI first with report.crop_dicom_case (or use "
                         "`iaiabl explain --run RUN FILE.dcm --box ...`)")
    if isinstance(case, (int, np.integer, str)):
        ds = dataset_for(run, data)
        if isinstance(case, str):
            try:
                i = ds.ids.index(case)
            except ValueError:
                raise InputError(f"case {case!r} is not an id of the prepared dataset "
                                 f"{getattr(ds, 'path', '')} (ids look like {ds.ids[0]!r})") from None
        else:
            i = int(case)
            if not -len(ds) <= i < len(ds):
                raise IndexError(f"case index {i} out of range: the dataset has {len(ds)} cases")
            i %= len(ds)
        grey, x = prepare_image(ds.images[i], size)
        return (ds.ids[i], grey, x, ds.lesion_masks[i].astype(np.uint8), int(ds.labels[i]),
                int(ds.malignant[i]))
    grey, x = prepare_image(case, size)
    return None, grey, x, None, None, None


@torch.no_grad()
def explain_case(run, case, data=None, top: int = 3, explained_class: int | None = None,
                 case_id: str | None = None, lesion_mask: np.ndarray | None = None) -> CaseExplanation:
    """Explain one case.

    run: a loaded IAIA-BL/ProtoPNet run (``train.load_run``).
    case: an index or an id of the run's prepared dataset (or of ``data``: a path or a
        PreparedDataset), or a grey ROI crop (S, S) (uint8, or float in [0, 1]), or a normalised
        tensor (3, S, S).
    top: how many prototypes to report (by contribution to the explained class).
    explained_class: the class whose evidence is listed (default: the predicted class).
    """
    t0 = time.perf_counter()
    model = run.model
    cid, grey, x, mask, true_margin, true_malignant = _resolve_case(run, case, data)
    if lesion_mask is not None:
        mask = np.asarray(lesion_mask).astype(np.uint8)
    (_, out), = eval_batches(model, x, 1)                                 # one image (1, 3, S, S)
    size = grey.shape[-1]
    logits = out.margin_logits[0].float().cpu()
    prob = margin_probabilities(logits)
    sim = out.similarity[0].float().cpu().numpy()                         # (m,)
    weights = model.margin_head.weight.detach().float().cpu().numpy()     # (3, m)
    contrib = weights * sim[None, :]                                      # (3, m)
    pred = int(np.argmax(prob))
    c = pred if explained_class is None else int(explained_class)
    if not 0 <= c < weights.shape[0]:
        raise InputError(f"explained_class {c} out of range 0..{weights.shape[0] - 1}")
    order = np.argsort(-contrib[c], kind="stable")[:max(0, int(top))]
    maps = out.similarity_maps[0, torch.as_tensor(order, dtype=torch.long, device=out.similarity_maps.device)]   # (k, H, W)
    pams = activation_map(maps[None].float(), size)[0].cpu().numpy() if len(order) else np.zeros((0, size, size))
    arrays = getattr(run, "push_arrays", None) or {}
    src_imgs, self_act = arrays.get("source_image"), arrays.get("self_activation")
    pclass = model.prototype_class.cpu().numpy()
    evidence = []
    for r, j in enumerate(order):
        j = int(j)
        rec = prototype_record(run, j)
        evidence.append(PrototypeEvidence(
            index=j, cls=int(pclass[j]), class_name=MARGINS[int(pclass[j])],
            similarity=float(sim[j]), weight=float(weights[c, j]), contribution=float(contrib[c, j]),
            activation=pams[r],
            source_id=rec["source_id"], source_index=rec["source_index"], patch=rec["patch"],
            rf_box=rec["rf_box"], high_activation_box=rec["high_activation_box"],
            source_image=None if src_imgs is None or j >= len(src_imgs) else src_imgs[j],
            self_activation=None if self_act is None or j >= len(self_act) else self_act[j],
        ))
    mal = getattr(run, "malignancy", None) or {}
    expl = CaseExplanation(
        case_id=case_id if case_id is not None else cid, image=grey,
        margin_logits=logits.numpy(), margin_prob=prob, predicted_class=pred, explained_class=c,
        malignancy_prob=malignancy_probability(out.malignancy_logit[0].float(), model.malignancy_fitted),
        similarity=sim, weights=weights, contributions=contrib, prototype_class=pclass,
        prototypes=evidence, lesion_mask=mask, true_margin=true_margin, true_malignant=true_malignant,
        malignancy_equation=dict(mal), similarity_maps=out.similarity_maps[0].float().cpu().numpy())
    expl.seconds = time.perf_counter() - t0
    return expl


# ---------------------------------------------------------------------------------------------
