"""One cache for the book: every data set is generated and every model trained once, then reused by
all chapters (docs/DESIGN.md §6).

    from iaiabl_lib import bookcache
    data = bookcache.ensure_data("confounded", device)   # synthetic tree -> prepared data set (path)
    ds = bookcache.dataset(device, size=64)              # the same, loaded (data.dataset.PreparedDataset)
    run = bookcache.ensure_run("iaiabl", device)         # a trained run directory (path)

Where: :func:`book_dir` — ``$IAIABL_BOOK_CACHE`` if set; ``<repo>/.cache/book`` when the library is
used from a checkout of the book's repository (the editable install the book is built with); else
``~/.cache/iaiabl-book`` (e.g. on Colab).

What is cached, and under which name: each entry's directory name ends in a short hash of everything
that decides its content: the parameters (preset, overrides, seed, data set) and the whole package
(:func:`package_sources`: every .py file and the shipped weights and tables). Change any library
code or a preset and the next build rebuilds; keep them and it loads (``IAIABL_BOOK_REUSE=1``, for
editing chapters while the library changes, reuses any complete entry of the same name regardless
of the hash). Entries are built in ``<name>.tmp-<pid>`` and renamed into place, so a crash never
leaves a half-written entry that a later chapter would load.

Data sets (``ensure_data``):
    "default"     ``iaiabl synth`` defaults.
    "confounded"  ``iaiabl synth --confounder 0.9``: a marker that agrees with the margin class in
                  90 % of the training cases (and not in the test cases): the trap that the
                  fine-annotation loss is meant to avoid (chapter 7).
    "unmarked"    the confounded set's cases without the marker: the "default" tree of the same seed
                  (the generator's random streams make it the same images, markers left out),
                  prepared with the confounded set's split, so its validation split holds the same
                  cases; for selecting a model on marker-free validation data (``train(...,
                  val_data=)``, ``benchmarks/prototype_stability.py --val-data unmarked``).

Runs (``ensure_run``), all on the "confounded" set by default, with the book's preset
(``config.default_preset_for``: "tiny", or "paper" on a GPU when ``IAIABL_BOOK_PRESET=paper``):
    "iaiabl"     IAIA-BL as in the paper (fine-annotation loss on).
    "nofine"     the same without the fine-annotation loss and without lesion masks (so without the
                 lesion pull and the push onto lesion cells either: no annotation at all).
    "protopnet"  the ProtoPNet baseline (k = 1, no fine-annotation loss).
    "blackbox"   the VGG-style black box of ``baselines.train_blackbox``.
    "pretrained" IAIA-BL with the shipped pretrained tiny backbone ("synthetic", ``pretrain``, the
                 CPU analogue of the paper's ImageNet VGG-16) instead of the tiny preset's backbone
                 from scratch: the ablation that shows what pretraining does (chapter 7).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .atomic import abandoned
from .config import env_book_cache, env_book_reuse
from .errors import InputError

__all__ = [
    "DATASETS", "SPLIT_MODES", "RUN_KINDS", "BOOK_OVERRIDES", "NOT_INPUTS", "package_sources",
    "repo_root", "book_dir", "preset_for",
    "ensure_synth", "ensure_data", "dataset", "ensure_run", "ensure_metrics", "load", "glue", "clear",
    "start_clock", "glue_run_time", "RUN_TIME_KEYS",
]

PACKAGE = Path(__file__).resolve().parent

DATASETS: dict[str, dict[str, Any]] = {
    "default": {},
    "confounded": {"confounder": 0.9},
    "unmarked": {},
}
"""Synthetic data sets by name: keyword arguments for ``data.synthetic.make_synthetic`` on top of its
defaults (the defaults of ``iaiabl synth``)."""

SPLIT_MODES: dict[str, str] = {"default": "paper", "confounded": "official", "unmarked": "official"}
"""``prepare --split`` per data set. The confounded set keeps the CSVs' own train/test split
("official"; validation carved from the train CSV by patient): the generator puts markers only in
train-CSV rows, so the test split is marker-free, as the confounding experiment needs. The paper's
patient-level random split would mix marked rows into the test split. "unmarked" is split as
"confounded" is, so that the two hold the same cases in each split."""

TREES: dict[str, str] = {"unmarked": "default"}
"""Data sets drawn from another's tree (its parameters are the same): only prepared differently."""

RUN_KINDS = ("iaiabl", "nofine", "protopnet", "blackbox", "pretrained")

BOOK_OVERRIDES: dict[str, dict[str, Any]] = {
    "iaiabl": {},
    # no annotation at all: neither Eq. 7 nor the lesion pull nor the push onto lesion cells
    "nofine": {"train.use_fine_loss": False, "train.use_lesion_masks": False, "train.push_set": "all"},
    "protopnet": {},
    "blackbox": {},
    "pretrained": {"model.pretrained": "synthetic"},
}
"""Overrides of the preset per run kind (``train.train(..., overrides=...)``)."""

SEED = 0

_BUILT_SECONDS = [0.0]
"""Seconds this process has spent building cache entries (generating data sets, training runs):
what a chapter's run time mostly is the first time it needs them, and not at all later."""

NOT_INPUTS = ("science_runs",)
"""Package folders that no cached computation reads: the recorded results of ``iaiabl science``."""


# ---------------------------------------------------------------------------------------------
# where
# ---------------------------------------------------------------------------------------------


def repo_root() -> Path | None:
    """The book's repository when the library is used from a checkout of it, else None."""
    root = PACKAGE.parent
    if (root / "_toc.yml").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def book_dir() -> Path:
    """The cache directory (created on first use)."""
    env = env_book_cache()
    if env is not None:
        path = env
    elif repo_root() is not None:
        path = repo_root() / ".cache" / "book"
    else:
        path = Path.home() / ".cache" / "iaiabl-book"
    path.mkdir(parents=True, exist_ok=True)
    return path


def preset_for(device: Any = None, kind: str = "iaiabl") -> str:
    """The preset a chapter uses on ``device`` (``config.default_preset_for``), and for the
    ProtoPNet baseline its ProtoPNet twin ("tiny-protopnet", "protopnet")."""
    from . import config
    from .fastpath import pick_device

    name = config.default_preset_for(str(device if device is not None else pick_device()))
    if kind == "protopnet":
        return config.protopnet_name(name)
    return name


# ---------------------------------------------------------------------------------------------
# cache mechanics
# ---------------------------------------------------------------------------------------------


def package_sources() -> tuple[str, ...]:
    """Every file of the package that can decide the content of a cache entry, relative to the
    package and sorted: each .py file and each file the package ships beside them (the pretrained
    weights, the synthetic generator's label counts...), not ``__pycache__`` nor :data:`NOT_INPUTS`.
    Derived from the package itself, so that no edit to the library can leave a stale entry."""
    files = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc" \
                and rel.parts[0] not in NOT_INPUTS:
            files.append(rel.as_posix())
    return tuple(files)


def _source_hash(files: tuple[str, ...]) -> str:
    """Hash of the named files; a folder stands for every file in it (.py and data, sorted)."""
    h = hashlib.sha256()
    for rel in files:
        path = PACKAGE / rel
        members = ([p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
                    and p.suffix != ".pyc"] if path.is_dir() else [path])
        for member in members:
            h.update(member.relative_to(PACKAGE).as_posix().encode())
            h.update(member.read_bytes() if member.is_file() else b"<missing>")
    return h.hexdigest()


def _key(params: dict[str, Any], sources: tuple[str, ...]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str) + _source_hash(sources)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _remove_abandoned(parent: Path) -> None:
    """Delete ``*.tmp-<pid>`` build directories whose process is gone (a killed build)."""
    for tmp, _ in abandoned(parent, r".+\.tmp-(?P<pid>\d+)", "dir"):
        shutil.rmtree(tmp, ignore_errors=True)


def _build_once(target: Path, build: Callable[[Path], Any], params: dict[str, Any]) -> Path:
    """Build ``target`` with ``build(tmp)`` unless it exists; ``tmp`` is renamed into place, so a
    directory at ``target`` is always complete. Stale entries of the same name stem are removed."""
    if (target / "bookcache.json").is_file():
        return target
    if env_book_reuse():      # development: keep whatever is cached
        stem = target.name.rsplit("-", 1)[0]
        for old in sorted(target.parent.glob(f"{stem}-*")):
            if old.name.rsplit("-", 1)[0] == stem and (old / "bookcache.json").is_file():
                return old
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target.parent)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    start = time.perf_counter()
    try:
        build(tmp)
        if not tmp.is_dir():
            raise RuntimeError(f"bookcache: building {target.name} wrote nothing at {tmp}")
        seconds = time.perf_counter() - start
        _BUILT_SECONDS[0] += seconds
        (tmp / "bookcache.json").write_text(json.dumps(
            {"params": params, "seconds": round(seconds, 1)}, indent=2, default=str))
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "bookcache.json").is_file():   # not a concurrent winner: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stem = target.name.rsplit("-", 1)[0]
    for old in target.parent.glob(f"{stem}-*"):
        if old != target and old.is_dir() and ".tmp-" not in old.name and \
                old.name.rsplit("-", 1)[0] == stem:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _call(func: Callable, *args, **kwargs):
    """``func(*args, **kwargs)``, refusing a keyword argument ``func`` does not take with a
    TypeError that names it: dropped silently, the entry would be built with the default and cached
    under the parameters it was asked for."""
    params = inspect.signature(func).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(f"bookcache: {func.__module__}.{func.__qualname__} takes no keyword "
                            f"argument {', '.join(map(repr, unknown))}; the cache entry cannot be built as asked")
    return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _dataset_params(name: str, seed: int = SEED) -> dict[str, Any]:
    if name not in DATASETS:
        raise InputError(f"unknown book data set {name!r}; choose one of {', '.join(DATASETS)}")
    return dict(DATASETS[name], seed=int(seed))


def ensure_synth(name: str = "confounded", seed: int = SEED) -> Path:
    """The synthetic CBIS-DDSM-shaped tree of data set ``name`` drawn with ``seed`` (generated once)."""
    from .data.synthetic import make_synthetic

    params = _dataset_params(name, seed)
    target = book_dir() / "synth" / f"{name}-s{seed}-{_key(params, package_sources())}"
    return _build_once(target, lambda tmp: _call(make_synthetic, tmp, **params), params)


def ensure_data(name: str = "confounded", device: Any = None, size: int | None = None,
                seed: int = SEED) -> Path:
    """The prepared data set ``name`` (drawn and split with ``seed``) at the image size of the
    device's preset (or ``size``)."""
    from . import config
    from .data.cbis_ddsm import prepare

    if size is None:
        size = config.get_preset(preset_for(device)).model.image_size
    tree = ensure_synth(TREES.get(name, name), seed)
    params = dict(_dataset_params(name, seed), size=size, split=SPLIT_MODES[name])
    target = book_dir() / "data" / f"{name}-s{seed}-{size}px-{_key(params, package_sources())}"
    return _build_once(target, lambda tmp: _call(prepare, tree, tmp, size=size, split=SPLIT_MODES[name],
                                                 seed=seed, verbose=False), params)


def dataset(device: Any = None, size: int | None = None, name: str = "confounded", seed: int = SEED):
    """The book's data set, loaded: ``data.dataset.load_prepared(ensure_data(name, device, seed=seed),
    size=size)``, a ``PreparedDataset`` (every chapter's one loading line)."""
    from .data.dataset import load_prepared

    return load_prepared(ensure_data(name, device, seed=seed), size=size)


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------


def ensure_run(kind: str = "iaiabl", device: Any = None, data: str = "confounded",
               progress: bool = False, seed: int = SEED) -> Path:
    """A trained run of ``kind`` (one of ``RUN_KINDS``) on book data set ``data``, with the preset of
    ``device``; trained on first use, loaded afterwards. ``seed`` draws the data set and seeds the
    training (the book uses seed 0; ``iaiabl science --seeds`` repeats the experiment over several).
    Returns the run directory."""
    from . import train as train_mod
    from .fastpath import pick_device

    if kind not in RUN_KINDS:
        raise InputError(f"unknown run kind {kind!r}; choose one of {', '.join(RUN_KINDS)}")
    device = str(device if device is not None else pick_device())
    preset = preset_for(device, kind)
    data_path = ensure_data(data, device, seed=seed)
    # the preset's own schedule, never shortened (config._tiny says how it was chosen; a shortened
    # one is another experiment, not the book's)
    overrides = dict(BOOK_OVERRIDES[kind])
    params = {"kind": kind, "preset": preset, "data": data_path.name, "overrides": overrides,
              "seed": int(seed), "device_type": device.split(":")[0]}
    target = book_dir() / "runs" / f"{kind}-{data}-s{seed}-{preset}-{_key(params, package_sources())}"

    def build(tmp: Path) -> None:
        if kind == "blackbox":
            from .baselines import train_blackbox

            _call(train_blackbox, data_path, out=tmp, preset=preset, seed=seed, device=device,
                  progress=progress, overrides=overrides or None)
        else:
            _call(train_mod.train, data_path, preset, tmp, seed=seed, device=device,
                  progress=progress, overrides=overrides or None)

    return _build_once(target, build, params)


def load(kind: str = "iaiabl", device: Any = None, data: str = "confounded", seed: int = SEED):
    """The loaded run of :func:`ensure_run`: ``rundir.load_run`` (IAIA-BL, no-fine, ProtoPNet) or
    ``baselines.load_blackbox`` (black box)."""
    from .rundir import load_run

    if kind == "blackbox":
        from .baselines import load_blackbox

        return load_blackbox(ensure_run(kind, device, data, seed=seed), device=device)
    return load_run(ensure_run(kind, device, data, seed=seed), device=device)


def ensure_metrics(kind: str = "iaiabl", device: Any = None, data: str = "confounded",
                   seed: int = SEED) -> dict:
    """``evaluate.evaluate_run`` of :func:`ensure_run` on its test split, once: the metrics are
    written into the run directory (``metrics.json``) and read back on later calls."""
    from . import evaluate

    run_dir = ensure_run(kind, device, data, seed=seed)
    stamp = run_dir / "metrics.source"          # the evaluation code that wrote metrics.json
    key = _source_hash(package_sources())
    if (run_dir / "metrics.json").is_file() and stamp.is_file() and stamp.read_text() == key:
        return evaluate.load_metrics(run_dir)
    result = _call(evaluate.evaluate_run, run_dir, data_dir=ensure_data(data, device, seed=seed),
                   device=device)
    stamp.write_text(key)
    return result


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Hand ``value`` to the chapter's prose: ``myst_nb.glue`` when myst-nb is installed (the book's
    build, where {glue:text}`name` in a Markdown cell shows it), nothing elsewhere (Colab, plain
    Jupyter: the value is printed by the cell instead). Returns ``value``. A result quoted in a
    chapter's prose always comes through here, never typed in (tests/test_book.py checks it)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value


RUN_TIME_KEYS = ("chapter_seconds", "chapter_building_seconds", "chapter_machine")
"""The glue keys :func:`glue_run_time` sets."""


def start_clock(since: float | None = None) -> tuple[float, float]:
    """A chapter's clock, started by its setup cell: (``since``, a ``time.perf_counter()`` reading
    taken before the setup cell's imports, or now; cache-building seconds so far)."""
    return (time.perf_counter() if since is None else since), _BUILT_SECONDS[0]


def glue_run_time(clock: tuple[float, float], device: Any = None) -> dict[str, Any]:
    """The chapter's run time since :func:`start_clock`, glued for its prose: ``chapter_seconds``
    (all of it), ``chapter_building_seconds`` (the part spent generating data or training models
    for the cache, which later chapters and builds load instead) and ``chapter_machine`` (the
    device and, on a CPU, how many threads torch used). Printed as well, for readers without the book."""
    import torch

    from .fastpath import device_name

    seconds = time.perf_counter() - clock[0]
    building = _BUILT_SECONDS[0] - clock[1]
    dev = torch.device(device if device is not None else "cpu")
    out = dict(zip(RUN_TIME_KEYS, (round(seconds, 1), round(building, 1), device_name(dev))))
    for name, value in out.items():
        glue(name, value)
    print(f"this chapter ran in {seconds:.0f} s on {out['chapter_machine']}, {building:.0f} s of it "
          "generating data or training models for the book's cache")
    return out


def clear() -> None:
    """Delete the whole cache (the next chapter regenerates what it needs)."""
    shutil.rmtree(book_dir(), ignore_errors=True)
