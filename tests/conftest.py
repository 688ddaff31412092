"""Shared, session-scoped fixtures: one small synthetic CBIS-DDSM tree, its prepared dataset, and a
tiny trained run, built once per test session and reused by every test module."""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IAIABL_SHARED", REPO_ROOT.parent / "shared"))
REAL_CBIS = SHARED / "cbis-ddsm"
REPO = REPO_ROOT
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = Path("/usr/bin/chromium")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# ---------------------------------------------------------------------------------------------
# Test tiers (markers set here from what a test uses; `make test-fast` runs the unit tier):
#   unit         pure functions and small in-memory models: seconds
#   integration  a generated tree, a prepared dataset or a trained tiny run (the session fixtures)
#   book         builds or executes the book (``book_html``, or marked slow)
#   browser      drives headless Chromium (``chromium``)
# ---------------------------------------------------------------------------------------------

TIER_FIXTURES = {
    "browser": {"chromium"},
    "book": {"book_html"},
    "integration": {"synth_tree", "prepared", "tiny_run", "tiny_blackbox"},
}


def tier_of(fixturenames, slow: bool) -> str:
    """The tier of a test from its fixtures (the most expensive wins) and its slow mark."""
    names = set(fixturenames)
    if names & TIER_FIXTURES["browser"]:
        return "browser"
    if names & TIER_FIXTURES["book"] or slow:
        return "book"
    if names & TIER_FIXTURES["integration"]:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(t) for t in ("unit", *TIER_FIXTURES)):
            continue                       # a tier set by hand (a heavy test without those fixtures)
        item.add_marker(getattr(pytest.mark, tier_of(item.fixturenames, item.get_closest_marker("slow") is not None)))


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Path:
    """A small CBIS-DDSM-shaped tree (about 40 patients, 256 px full images)."""
    from iaiabl_lib.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synth") / "cbis"
    make_synthetic(out, patients=40, size=256, seed=0)
    return out


@pytest.fixture(scope="session")
def prepared(synth_tree, tmp_path_factory) -> Path:
    """``synth_tree`` run through the importer at 64 px."""
    from iaiabl_lib.data.cbis_ddsm import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(synth_tree, out, size=64, split="paper", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(prepared, tmp_path_factory) -> Path:
    """A tiny-preset IAIA-BL run with a short schedule (all stages, B and pruning included)."""
    from iaiabl_lib.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(prepared, "tiny", out, epochs=4, seed=0, device="cpu", progress=False,
          overrides={"train.warm_epochs": 1, "train.push_start": 2, "train.push_every": 2,
                     "train.last_layer_epochs": 3})
    return out


@pytest.fixture(scope="session")
def tiny_blackbox(prepared, tmp_path_factory) -> Path:
    """A tiny black-box margin classifier (``baselines.train_blackbox``, 2 epochs)."""
    from iaiabl_lib.baselines import train_blackbox

    out = tmp_path_factory.mktemp("runs") / "blackbox"
    return Path(train_blackbox(prepared, "tiny", out, task="margin", epochs=2, seed=0, device="cpu",
                               progress=False))


# The book, built once per session (tests/test_book.py, tests/test_widgets_browser.py)
@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    existing = os.environ.get("IAIABL_BOOK_HTML")
    if existing:
        html = Path(existing)
        if not (html / "index.html").is_file():
            pytest.fail(f"IAIABL_BOOK_HTML={existing} holds no index.html: point it at _build/html")
        return html
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(REPO), "-W", "-n", "--keep-going",
           "--path-output", str(out)]
    # the session's own book cache, so that the result never depends on what the checkout's
    # .cache/book holds (IAIABL_TEST_BOOK_CACHE=DIR reuses a cache on purpose, e.g. while iterating)
    cache = os.environ.get("IAIABL_TEST_BOOK_CACHE") or str(out / "bookcache")
    env = {k: v for k, v in os.environ.items() if k not in ("IAIABL_BOOK_REUSE",)}
    env["IAIABL_BOOK_CACHE"] = cache
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}); last lines:\n{log[-6000:]}")
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True)
        if not CHROMIUM.exists():
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True)
    if not CHROMIUM.exists():
        if ON_CI:
            pytest.fail("/usr/bin/chromium is missing on CI and could not be installed (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium) and not on CI")
    return CHROMIUM


# Headless Chromium through playwright, for the browser tier (tests/test_widgets_browser.py against the
# built book, tests/test_widgets_keyboard.py against a page of the explorers)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_directory(root) -> Iterator[str]:
    """``root`` served on 127.0.0.1 (an ephemeral port) from a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium (playwright): skipped without playwright, a failure on CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if ON_CI:
            pytest.fail("the playwright package is missing (requirements.txt)")
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_change(page, fn, before, timeout_ms: int = 10_000):
    """Poll ``fn()`` on a playwright ``page`` every 100 ms until it differs from ``before`` (or the
    time is up); returns its last value."""
    for _ in range(timeout_ms // 100):
        now = fn()
        if now != before:
            return now
        page.wait_for_timeout(100)
    return fn()


def glued_name_patterns(code: str) -> list[str]:
    """Regular expressions for the glue keys a chapter's code glues: ``glue("ap", ...)`` -> ``ap``,
    ``glue(f"ap_{key}", ...)`` -> ``ap_\\w+``, and the keys of ``bookcache.glue_run_time(...)``
    (tests/test_book.py and tests/test_verdicts.py)."""
    import re

    from iaiabl_lib.bookcache import RUN_TIME_KEYS

    library = list(RUN_TIME_KEYS) if "glue_run_time(" in code else []   # keys the library glues
    return library + [re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(n))
            for n in re.findall(r"glue\(\s*f?[\"']([^\"']+)[\"']", code)]
