"""The tiny backbone's shipped pretrained weights (``iaiabl_lib/pretrained/``): their names, their
SHA-256, and loading them offline (``model.pretrained``). ``iaiabl pretrain`` (``iaiabl_lib.pretrain``)
makes them; ``model.tiny_backbone`` loads them."""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from .errors import UserError

__all__ = ["TINY_WEIGHTS", "shipped_weights_dir", "load_tiny_weights"]

TINY_WEIGHTS = {
    "synthetic": ("tiny_synthetic.pt", "7b8e1686a8734a447820e36e63f7b5a7bc846a217d2ed85a0d89eea204f70963"),
}
"""The shipped tiny-backbone weights by ``model.pretrained`` name: (file in ``iaiabl_lib/pretrained/``,
its SHA-256). Each file's JSON twin records the command, seeds, time and scores that made it."""


def shipped_weights_dir() -> Path:
    """The folder of the shipped weights (``iaiabl_lib/pretrained/``) in this installation."""
    return Path(str(resources.files("iaiabl_lib").joinpath("pretrained")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_tiny_weights(source: str) -> dict[str, Tensor]:
    """The tiny backbone's state dict: ``source`` a name of :data:`TINY_WEIGHTS` (shipped, the
    SHA-256 checked; no download ever) or the path of a file written by ``iaiabl pretrain``."""
    if source in TINY_WEIGHTS:
        name, expected = TINY_WEIGHTS[source]
        ref = resources.files("iaiabl_lib").joinpath("pretrained", name)
        with resources.as_file(ref) as path:
            if not path.is_file():
                raise UserError(f"the shipped tiny-backbone weights {name} are missing from this "
                                f"installation ({path}); reinstall iaiabl_lib, or make them with "
                                f"`iaiabl pretrain --out FILE` and pass model.pretrained=FILE")
            sha = _sha256(path)
            if expected is not None and sha != expected:
                raise UserError(f"{path}: SHA-256 {sha[:12]}… is not the shipped weights' "
                                f"{expected[:12]}…; reinstall iaiabl_lib")
            return torch.load(path, map_location="cpu", weights_only=True)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"tiny-backbone weights {source!r}: neither a shipped name "
                        f"({', '.join(TINY_WEIGHTS)}) nor an existing file; make one with "
                        "`iaiabl pretrain --out FILE`, or use model.pretrained=none")
    return torch.load(path, map_location="cpu", weights_only=True)
