"""The IAIA-BL network (Barnett et al. 2021, Fig. 2; Eq. 1-2).

    image x (B, 3, S, S)
      └─ backbone f          VGG-16 conv layers, last max-pool removed   (B, 512, S/16, S/16)
      └─ add_on              1×1 conv, ReLU, 1×1 conv, sigmoid           (B, C, H, W) latent patches
      └─ prototype layer g   squared L2 to m prototypes                  sq_dist (B, m, H, W)
                             log similarity, Eq. 1                       similarity_maps (B, m, H, W)
                             top-k average pooling, Eq. 2                similarity (B, m)
      └─ margin head h1      linear, no bias, m → 3                      margin_logits (B, 3)
      └─ malignancy head h2  linear, 3 → 1 (Eq. 10), fitted in stage B   malignancy_logit (B,)

The pure functions ``squared_distances``, ``log_similarity``, ``topk_average``, ``bottomk_average``
and ``activation_map`` are what the book teaches; the module calls exactly these.
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig, Preset
from .errors import InputError, UserError
from .tiny_weights import load_tiny_weights

__all__ = ["squared_distances", "log_similarity", "topk_average", "bottomk_average", "activation_map", "minmax_01",
           "topk_for", "VGG16_FILENAME", "TinyBackbone", "tiny_backbone", "load_vgg16_state_dict", "vgg16_features",
           "build_backbone", "IAIABLOutput", "IAIABL", "resize_prototypes", "build_model"]

# ---------------------------------------------------------------------------------------------
# Pure functions (docs/DESIGN.md §4)
# ---------------------------------------------------------------------------------------------


def squared_distances(patches: Tensor, prototypes: Tensor) -> Tensor:
    """d_{j,l} = ||f(x)_l − p_j||² for every latent patch l and prototype j, as one batched
    matrix product: ||z||² − 2 z·p + ||p||² (clamped at 0 against rounding).

    patches (B, C, H, W), prototypes (m, C) -> (B, m, H, W)
    """
    b, c, h, w = patches.shape
    z = patches.reshape(b, c, h * w)                                   # (B, C, HW)
    z2 = (z * z).sum(dim=1, keepdim=True)                              # (B, 1, HW)
    p2 = (prototypes * prototypes).sum(dim=1)[None, :, None]           # (1, m, 1)
    zp = torch.matmul(prototypes.to(z.dtype), z)                       # (B, m, HW)
    d = (z2 - 2 * zp + p2).clamp_min(0)
    return d.reshape(b, prototypes.shape[0], h, w)


def log_similarity(sq_dist: Tensor, eps: float = 1e-4) -> Tensor:
    """Eq. 1: s = log((d + 1) / (d + ε)), elementwise. Large when d is small; ≈ 0 when d is large;
    at most log(1/ε) ≈ 9.21 for ε = 1e-4."""
    return torch.log((sq_dist + 1) / (sq_dist + eps))


def topk_average(maps: Tensor, k: int) -> Tensor:
    """Eq. 2: the mean of the k largest values of each (H, W) map. k = 1 is ProtoPNet's max pooling.

    maps (B, m, H, W) -> (B, m)
    """
    flat = maps.flatten(2)                                             # (B, m, HW)
    if not 1 <= k <= flat.shape[-1]:
        raise ValueError(f"top-k: k={k} must be between 1 and the number of patches {flat.shape[-1]}")
    return flat.topk(k, dim=-1).values.mean(dim=-1)


def bottomk_average(maps: Tensor, k: int) -> Tensor:
    """The mean of the k smallest values of each map: the min-k distance of Eq. 4-6.

    maps (B, m, H, W) -> (B, m)
    """
    return -topk_average(-maps, k)


def activation_map(similarity_maps: Tensor, size: int | tuple[int, int]) -> Tensor:
    """PAM_{i,j}: similarity maps bilinearly upsampled to the image (or mask) size.

    similarity_maps (B, m, H, W) -> (B, m, size, size)
    """
    if isinstance(size, int):
        size = (size, size)
    return F.interpolate(similarity_maps, size=size, mode="bilinear", align_corners=False)


def minmax_01(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation to [0, 1] (Appendix A's Eq. 11; GradCAM's display scale):
    maps (B, S, S) -> (B, S, S); a constant map -> 0."""
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values                             # (B,)
    span = (hi - lo)[:, None, None]
    out = (maps - lo[:, None, None]) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, out, torch.zeros_like(out))


def topk_for(cfg: ModelConfig, grid_cells: int) -> int:
    """k of Eq. 2 for a latent grid of ``grid_cells`` patches (9 of 196 at 224 px)."""
    if cfg.topk is not None:
        return int(min(cfg.topk, grid_cells))
    return max(1, int(round(cfg.topk_fraction * grid_cells)))


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------

VGG16_FILENAME = "vgg16-397923af.pth"
"""torchvision's ImageNet VGG-16 weights; the name carries the first 8 hex digits of its SHA-256."""


class TinyBackbone(nn.Sequential):
    """A small VGG-style backbone for the CPU preset: four 3×3 conv blocks, three 2×2 max-pools
    (stride 8: 64 px → an 8 × 8 latent grid).

    Replicate padding, not zeros: zero padding lets a small network recognise the border cells of
    the grid (their receptive fields reach into the black padding), and on 64 px crops it then
    parks prototypes on the image border. Replicate padding removes that position cue."""

    def __init__(self, width: int = 32):
        layers: list[nn.Module] = []
        chans = [3, width // 2, width, width * 2, width * 2]
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, padding_mode="replicate"),
                       nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)
        self.out_channels = chans[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


def _check_hash_prefix(path: Path) -> None:
    """A file named like torchvision's download (``vgg16-<8 hex>.pth``) must have a SHA-256 that
    starts with those 8 hex digits (torch.hub's convention); other names are the user's own files."""
    expected = VGG16_FILENAME.rsplit("-", 1)[-1].split(".")[0]
    if path.name != VGG16_FILENAME:
        return
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if not sha.startswith(expected):
        raise InputError(
            f"{path}: SHA-256 {sha[:8]}… does not match torchvision's VGG-16 ImageNet weights "
            f"({expected}…). Delete the file and fetch it again, or pass another path."
        )


def load_vgg16_state_dict(source: str) -> dict[str, Tensor]:
    """ImageNet VGG-16 weights: ``source`` is "imagenet" (torch's hub cache, then torchvision's
    weights API, which downloads when online) or the path of a state dict file. Files named like
    torchvision's are checked against the published hash prefix."""
    from torchvision.models import VGG16_Weights

    if source != "imagenet":
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"VGG-16 weights file {path} not found; pass an existing file "
                                    "or pretrained='imagenet'")
        _check_hash_prefix(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME
    if cached.is_file():
        _check_hash_prefix(cached)
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as err:  # offline, proxy, ...
        raise UserError(
            f"could not obtain ImageNet VGG-16 weights ({err}). Put {VGG16_FILENAME} into "
            f"{cached.parent} or pass pretrained=PATH; pretrained='none' trains from random "
            "initialisation (much worse, for smoke tests only)."
        ) from err


def vgg16_features(pretrained: str) -> nn.Sequential:
    """VGG-16's convolutional layers with the last max-pool removed (stride 16: 14 × 14 at 224 px).

    Built with torchvision's own layer recipe (``make_layers(cfgs["D"])``, the ``features`` part of
    ``torchvision.models.vgg16``) so that its parameter names match torchvision's state dict; the
    120 M-parameter classifier is never built. ImageNet weights: see ``load_vgg16_state_dict``.
    """
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)                    # (B, 512, S/32, S/32)
    if pretrained == "none":
        warnings.warn("VGG-16 backbone initialised at random (pretrained='none'): use ImageNet "
                      "weights for real training", stacklevel=3)
        for m in features.modules():   # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    else:
        state = load_vgg16_state_dict(pretrained)
        prefix = "features."
        features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    features = features[:-1]                                               # drop the last max-pool
    features.out_channels = 512
    return features


def tiny_backbone(pretrained: str) -> TinyBackbone:
    """The tiny backbone, at random initialisation (``pretrained="none"``, the default of the tiny
    IAIA-BL and ProtoPNet presets) or with pretrained weights: a name shipped with the library
    ("synthetic", the CPU analogue of ImageNet VGG-16: ``pretrain``; SHA-256 checked, offline; the
    tiny black box and the science check's ablation) or the path of a file ``iaiabl pretrain``
    wrote."""
    backbone = TinyBackbone()
    if pretrained != "none":
        backbone.load_state_dict(load_tiny_weights(pretrained))
    return backbone


def build_backbone(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone == "vgg16":
        return vgg16_features(cfg.pretrained)
    if cfg.backbone == "tiny":
        return tiny_backbone(cfg.pretrained)
    raise InputError(f"unknown backbone {cfg.backbone!r}; use 'vgg16' or 'tiny'")


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class IAIABLOutput(NamedTuple):
    margin_logits: Tensor      # (B, 3)  h1(g(f(x))), unnormalised
    malignancy_logit: Tensor   # (B,)    h2(margin_logits)
    similarity: Tensor         # (B, m)  s_j, Eq. 2
    similarity_maps: Tensor    # (B, m, H, W) s_{j,l}, Eq. 1
    min_k_dist: Tensor         # (B, m)  mean of the k smallest d_{j,l} (Eq. 4-6)
    sq_dist: Tensor            # (B, m, H, W) d_{j,l}


class IAIABL(nn.Module):
    """Backbone f, add-on layers, prototype layer g, margin head h1 and malignancy head h2."""

    def __init__(self, cfg: ModelConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg)
        cin, c = self.backbone.out_channels, cfg.prototype_channels
        self.add_on = nn.Sequential(
            nn.Conv2d(cin, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1), nn.Sigmoid()
        )
        for m in self.add_on.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        m = cfg.num_prototypes
        self.prototypes = nn.Parameter(torch.rand(m, c))                     # (m, C) ~ U[0, 1]
        self.register_buffer(
            "prototype_class", torch.arange(cfg.num_classes).repeat_interleave(cfg.prototypes_per_class)
        )                                                                    # (m,)
        self.margin_head = nn.Linear(m, cfg.num_classes, bias=False)         # h1
        self.malignancy_head = nn.Linear(cfg.num_classes, 1)                 # h2
        self.reset_margin_head()
        nn.init.zeros_(self.malignancy_head.weight)
        nn.init.zeros_(self.malignancy_head.bias)
        # h2 is fitted by stage B (train.stage_b.fit_malignancy_head) or loaded with a run that has
        # malignancy.json (rundir.load_run); until then it is a placeholder and predict.
        # malignancy_probability gives None, not σ(0) = 0.5
        self.malignancy_fitted = False

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def class_identity(self) -> Tensor:
        """One-hot (m, 3): 1 where prototype j belongs to class c."""
        return F.one_hot(self.prototype_class, self.cfg.num_classes).to(self.prototypes.dtype)

    @torch.no_grad()
    def reset_margin_head(self) -> None:
        """h1 init: +1 from a prototype to its own class, ``incorrect_class_weight`` (−1 in IAIA-BL,
        −0.5 in ProtoPNet) to the others."""
        own = self.class_identity().T                                        # (3, m)
        self.margin_head.weight.copy_(own + self.cfg.incorrect_class_weight * (1 - own))

    def features(self, images: Tensor) -> Tensor:
        """Latent patches f(x) after the add-on layers: (B, 3, S, S) -> (B, C, H, W)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, S, S), got {tuple(images.shape)}; "
                             "grey mammograms are repeated to 3 channels by iaiabl_lib.data.dataset.to_tensors")
        return self.add_on(self.backbone(images))

    def k_for(self, grid_hw: int) -> int:
        return topk_for(self.cfg, grid_hw)

    def prototype_layer(self, patches: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """g: patches (B, C, H, W) -> (similarity (B, m), maps (B, m, H, W), min_k_dist (B, m), sq_dist)."""
        sq_dist = squared_distances(patches.float(), self.prototypes.float())  # (B, m, H, W)
        maps = log_similarity(sq_dist, self.cfg.epsilon)
        k = self.k_for(maps.shape[-1] * maps.shape[-2])
        # log_similarity is decreasing in d: the top-k similarities sit at the k smallest distances
        return topk_average(maps, k), maps, bottomk_average(sq_dist, k), sq_dist

    def heads(self, similarity: Tensor) -> tuple[Tensor, Tensor]:
        margin_logits = self.margin_head(similarity)                         # (B, 3)
        malignancy_logit = self.malignancy_head(margin_logits).squeeze(-1)   # (B,)
        return margin_logits, malignancy_logit

    def forward(self, images: Tensor) -> IAIABLOutput:
        patches = self.features(images)            # under the caller's autocast, if any (bf16/fp16)
        # g, h1, h2 always in float32: ||z||² − 2 z·p + ||p||² cancels catastrophically in bf16
        with torch.autocast(device_type=patches.device.type, enabled=False):
            similarity, maps, min_k, sq_dist = self.prototype_layer(patches.float())
            margin_logits, malignancy_logit = self.heads(similarity)
        return IAIABLOutput(margin_logits, malignancy_logit, similarity, maps, min_k, sq_dist)

    def grid_size(self) -> int:
        """Side of the latent grid for the configured image size."""
        with torch.no_grad():
            dev = self.prototypes.device
            probe = torch.zeros(1, 3, self.cfg.image_size, self.cfg.image_size, device=dev)
            return int(self.backbone(probe).shape[-1])


@torch.no_grad()
def resize_prototypes(model: IAIABL, prototype_class: Tensor | list[int]) -> None:
    """Give ``model`` ``len(prototype_class)`` prototypes of these classes (uninitialised values):
    ``prototypes``, ``prototype_class`` and ``margin_head`` are replaced by tensors of the new size.
    Used to rebuild a pruned model before ``load_state_dict``."""
    pc = torch.as_tensor(prototype_class, dtype=torch.long, device=model.prototypes.device)
    m, c = pc.shape[0], model.prototypes.shape[1]
    dev, dtype = model.prototypes.device, model.prototypes.dtype
    model.prototypes = nn.Parameter(torch.zeros(m, c, device=dev, dtype=dtype))
    model.prototype_class = pc                                                 # registered buffer
    head = nn.Linear(m, model.cfg.num_classes, bias=False).to(device=dev, dtype=model.margin_head.weight.dtype)
    model.margin_head = head
    model.reset_margin_head()


def build_model(preset: Preset, prototype_class: list[int] | None = None, pretrained: bool = True) -> IAIABL:
    """IAIABL for ``preset``; ``pretrained=False`` skips loading ImageNet weights (they are about to
    be overwritten by a state dict); ``prototype_class``: the classes of a pruned model."""
    cfg = preset.model if pretrained else dataclasses.replace(preset.model, pretrained="none")
    with warnings.catch_warnings():
        if not pretrained:
            warnings.simplefilter("ignore")
        model = IAIABL(cfg)
    model.cfg = preset.model          # frozen: the model's settings cannot drift from the preset's
    if prototype_class is not None and list(prototype_class) != model.prototype_class.tolist():
        resize_prototypes(model, prototype_class)
    return model


