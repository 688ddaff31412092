#!/usr/bin/env python
"""Write the one setup cell into every chapter of the book, and strip outputs.

Every chapter (``book/*.ipynb``) starts with the same *setup cell* (docs/DESIGN.md §6): it installs the
library from the book's repository only if ``import iaiabl_lib`` fails (Colab), picks the device with
``train.pick_device`` and the preset with ``config.default_preset_for``, and prints versions and a note
on switching Colab to a GPU. The cell is generated here, from ONE template; the repository URL is
read from ``_config.yml`` (``repository.url`` and ``repository.branch``), the one place it is written.

    python scripts/sync_setup_cells.py            # rewrite the setup cells, strip outputs
    python scripts/sync_setup_cells.py --check    # exit 1 if a chapter differs (used by the tests)

The setup cell is the first code cell tagged ``setup``; a chapter without one gets it inserted after
its first Markdown cell. The setup cell also starts the chapter's clock; a Markdown cell tagged
``run-time`` right after it states the chapter's run time, which the chapter's last cell (also
tagged ``run-time``) measures and glues (``bookcache.glue_run_time``; issue 25: each chapter states
its measured time).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK = REPO_ROOT / "book"
CONFIG = REPO_ROOT / "_config.yml"
SETUP_TAG = "setup"

TEMPLATE = '''\
# Setup: the same cell in every chapter (written by scripts/sync_setup_cells.py; edit it there).
# Installs the book's library only where it is missing (e.g. on Colab), then picks the device.
import os, sys, time
chapter_start = time.perf_counter()          # the chapter's run time is printed by its last cell
try:
    import iaiabl_lib
except ImportError:
    # IAIABL_PIP_SPEC lets a test install from a local wheel instead of the repository
    pip_spec = os.environ.get("IAIABL_PIP_SPEC", "{pip_spec}")
    %pip install --quiet {{pip_spec}}
    import importlib
    importlib.invalidate_caches()
    import iaiabl_lib

%matplotlib inline
import torch
from iaiabl_lib import config, train
from iaiabl_lib.bookcache import book_dir, start_clock

chapter_clock = start_clock(chapter_start)
device = train.pick_device()                 # "cuda" when a GPU is there, else "cpu"; never hard-coded
preset = config.default_preset_for(device)   # "tiny" unless you opt into "paper" (below)
torch.manual_seed(0)
print(f"python {{sys.version.split()[0]}}, torch {{torch.__version__}}, iaiabl_lib {{iaiabl_lib.__version__}}")
print(f"device: {{device}}; preset: {{preset!r}}; models and data cached in {{book_dir()}}")
if preset == "tiny":
    print("This chapter runs the 'tiny' preset (small synthetic data; minutes on a CPU; see the Run times page).\\n"
          "Paper scale (VGG-16 at 224 px; hours per model on a T4, an estimate: not yet run end to end): on a GPU,\\n"
          "run  os.environ['IAIABL_BOOK_PRESET'] = 'paper'  first, then this cell again.\\n"
          "On Colab, keep trained models across notebooks: from google.colab import drive;\\n"
          "drive.mount('/content/drive'); os.environ['IAIABL_BOOK_CACHE'] = '/content/drive/MyDrive/iaiabl-book'")'''


RUN_TIME_TAG = "run-time"

RUN_TIME_NOTE = """\
**Run time.** This chapter's cells ran in {glue:text}`chapter_seconds:.0f` s on
{glue:text}`chapter_machine` in the build that made this page, {glue:text}`chapter_building_seconds:.0f` s
of it generating data or training models for the book's cache (later chapters and later builds load
them instead). Every chapter's time: {doc}`run_times`."""

RUN_TIME_CELL = """\
# Run time of this chapter (written by scripts/sync_setup_cells.py), quoted under its title
from iaiabl_lib.bookcache import glue_run_time

glue_run_time(chapter_clock, device);"""


def read_repository(config_path: Path = CONFIG) -> tuple[str, str]:
    """(url, branch) of ``repository:`` in ``_config.yml``."""
    text = config_path.read_text(encoding="utf-8")
    try:
        import yaml

        repo = (yaml.safe_load(text) or {}).get("repository") or {}
        url, branch = repo.get("url"), repo.get("branch", "main")
    except ImportError:  # pragma: no cover - PyYAML comes with jupyter-book
        block = re.search(r"^repository:\n((?:[ \t]+.*\n?)+)", text, re.M)
        fields = dict(re.findall(r"^\s+(\w+):\s*(\S+)", block.group(1), re.M)) if block else {}
        url, branch = fields.get("url"), fields.get("branch", "main")
    if not url:
        raise SystemExit(f"{config_path}: no repository.url; the setup cell needs it")
    return str(url).rstrip("/"), str(branch)


def pip_spec(config_path: Path = CONFIG) -> str:
    url, branch = read_repository(config_path)
    return f"git+{url}@{branch}"


def setup_source(config_path: Path = CONFIG) -> str:
    """The setup cell's source, for the repository named in ``_config.yml``."""
    return TEMPLATE.format(pip_spec=pip_spec(config_path))


def chapters(book: Path = BOOK) -> list[Path]:
    return sorted(p for p in book.glob("*.ipynb") if not p.name.startswith("."))


def find_setup_cell(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SETUP_TAG in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def strip(nb) -> bool:
    """Remove outputs and execution counts; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.get("outputs"):
                cell.outputs = []
                changed = True
            if cell.get("execution_count") is not None:
                cell.execution_count = None
                changed = True
    return changed


def tagged(nb, kind: str) -> list[int]:
    """Indices of the cells of ``kind`` tagged :data:`RUN_TIME_TAG`."""
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == kind and RUN_TIME_TAG in c.get("metadata", {}).get("tags", [])]


def sync_run_time(nb) -> list[str]:
    """The run-time note right after the setup cell, the cell that measures it last of all."""
    problems = []
    note, code = tagged(nb, "markdown"), tagged(nb, "code")
    setup = find_setup_cell(nb)
    if note != [setup + 1] or nb.cells[setup + 1].source != RUN_TIME_NOTE:
        problems.append("run-time note missing or out of place")
        for i in reversed(note):
            del nb.cells[i]
        nb.cells.insert(find_setup_cell(nb) + 1, nbformat.v4.new_markdown_cell(
            RUN_TIME_NOTE, metadata={"tags": [RUN_TIME_TAG]}))
        code = tagged(nb, "code")
    if code != [len(nb.cells) - 1] or nb.cells[-1].source != RUN_TIME_CELL:
        problems.append("run-time cell missing or not last")
        for i in reversed(code):
            del nb.cells[i]
        nb.cells.append(nbformat.v4.new_code_cell(RUN_TIME_CELL, metadata={"tags": [RUN_TIME_TAG]}))
    return problems


def sync(path: Path, source: str, write: bool = True) -> list[str]:
    """Bring one chapter in line; returns what was (or would be) changed."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    i = find_setup_cell(nb)
    if i is None:
        problems.append("no setup cell")
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [SETUP_TAG]})
        first_md = next((k for k, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
        nb.cells.insert(first_md + 1, cell)
    elif nb.cells[i].source != source:
        problems.append("setup cell differs from the template")
        nb.cells[i].source = source
    problems += sync_run_time(nb)
    if strip(nb):
        problems.append("outputs or execution counts present")
    if problems and write:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    parser.add_argument("--book", type=Path, default=BOOK)
    args = parser.parse_args(argv)
    source = setup_source()
    bad = 0
    for path in chapters(args.book):
        problems = sync(path, source, write=not args.check)
        if problems:
            bad += 1
            print(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}: "
                  f"{'; '.join(problems)}{'' if args.check else ' (fixed)'}")
    if args.check and bad:
        print(f"{bad} chapter(s) out of date: run python scripts/sync_setup_cells.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
