"""The book: it builds with zero warnings, every chapter executes and shows its figures, the
committed notebooks are stripped, every setup cell is the one template, a browser renders a chapter,
and the setup cell installs the library in a fresh environment the way it does on Colab.

The build (minutes: it executes every chapter and, the first time, trains the book's models into
``.cache/book``) runs once per session. Set ``IAIABL_BOOK_HTML`` to an existing ``_build/html`` to
check a build you already have.
"""
from __future__ import annotations

import html as _html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from conftest import glued_name_patterns
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = Path("/usr/bin/chromium")


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_setup_cells", REPO / "scripts" / "sync_setup_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toc_files() -> list[str]:
    """Every file of _toc.yml, root first (paths relative to the repository, no suffix)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


def chapter_notebooks() -> list[Path]:
    """Every notebook of the book: chapters and their sections."""
    return sorted(BOOK.glob("*.ipynb"))


def top_level_chapters() -> list[Path]:
    """The chapters of _toc.yml's parts (not their sections), as notebook paths."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [REPO / f"{f}.ipynb" for f in files if (REPO / f"{f}.ipynb").is_file()]


# ---------------------------------------------------------------------------------------------
# the build, once per session
# ---------------------------------------------------------------------------------------------


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def _figure_images(page: Path) -> list[str]:
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    # figures made by cells land in _images/ (or inline as data URIs); the theme's logo does not
    return [s for s in parser.srcs if "_images/" in s or s.startswith("data:image")]


def _makes_figure(nb_path: Path) -> bool:
    nb = nbformat.read(nb_path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return bool(re.search(r"\bplots\.plot_\w+\(|\bplt\.(subplots|figure|imshow|show)\(|\.imshow\(", code))


# ---------------------------------------------------------------------------------------------
# static checks (no build needed)
# ---------------------------------------------------------------------------------------------


def test_toc_lists_every_chapter_and_only_existing_files():
    listed = toc_files()
    for f in listed:
        assert any((REPO / f"{f}{ext}").is_file() for ext in (".ipynb", ".md")), f"_toc.yml: {f} missing"
    for nb in chapter_notebooks():
        assert f"book/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml (it would not be built)"


def test_chapters_are_numbered_by_the_toc():
    """Issue 25: exercises are numbered per chapter ("Exercise 9.1"): every part that holds chapters
    numbers them (depth 1: chapters, not their sections), and a chapter's title carries no number of
    its own (Sphinx adds it; a typed one would show twice)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    for part in toc["parts"]:
        notebooks = [c for c in part["chapters"] if (REPO / f"{c['file']}.ipynb").is_file()]
        assert part.get("numbered") == 1 or not notebooks, f"part {part['caption']!r} is not numbered"
    for path in top_level_chapters():
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        assert not re.match(r"#\s+\d+\.", title), f"{path.name}: typed chapter number in {title!r}"


def test_notebooks_are_stripped():
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert all("id" in c for c in raw["cells"]), f"{path.name}: a cell without an id (nbformat 4.5)"
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert not cell.get("outputs"), f"{path.name} cell {i} has outputs: strip them " \
                                                "(python scripts/sync_setup_cells.py)"
                assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


def test_every_setup_cell_equals_the_template():
    sync = _sync_module()
    source = sync.setup_source()
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    assert url in source, "the setup cell must install from _config.yml's repository.url"
    assert chapter_notebooks(), "no chapters in book/"
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        i = sync.find_setup_cell(nb)
        assert i is not None, f"{path.name}: no code cell tagged 'setup'"
        assert nb.cells[i].source == source, f"{path.name}: setup cell differs from the template " \
                                             "(python scripts/sync_setup_cells.py)"
        assert not any(c.cell_type == "code" for c in nb.cells[:i]), f"{path.name}: code before setup"


def test_repository_url_written_once():
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    hits = [p for p in [REPO / "_config.yml", *BOOK.glob("*.md"), REPO / "scripts" / "sync_setup_cells.py"]
            if url in p.read_text(encoding="utf-8")]
    assert hits == [REPO / "_config.yml"], f"the repository URL is written outside _config.yml: {hits}"


def test_chapters_never_hard_code_cuda():
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not re.search(r"""device\s*=\s*["']cuda|\.cuda\(\)|["']cuda:\d["']""", cell.source), \
                    f"{path.name}: hard-coded CUDA device; use the setup cell's `device`"


def test_chapters_follow_the_template():
    """docs/DESIGN.md §6: objectives with a time estimate, summary, exercises with solutions, references
    (for the chapters; a chapter's sections share its objectives and exercises)."""
    assert len(top_level_chapters()) >= 14
    for path in top_level_chapters():
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert text.lstrip().startswith("# "), f"{path.name}: starts without a title"
        assert re.search(r"learning objectives", text, re.I), f"{path.name}: no learning objectives"
        assert re.search(r"\b\d+\s*(min|minutes|hours?)\b", text), f"{path.name}: no time estimate"
        assert re.search(r"^## Summary", text, re.M), f"{path.name}: no summary"
        assert "{exercise}" in text and re.search(r"\{solution(-start)?\}", text), \
            f"{path.name}: no exercise with solution"
        assert "{cite}" in text, f"{path.name}: cites nothing"


def test_code_solutions_are_executed_cells():
    """Issue 25: a solution with Python code is a gated solution (``{solution-start}`` … code cells …
    ``{solution-end}``), so that the build executes its code; a ``{solution}`` block holds prose only.
    Each start is closed in a later cell, with at least one code cell in between, and is a dropdown."""
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        open_at, codes = None, 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                codes += open_at is not None
                continue
            for block in re.findall(r"````\{solution\}.*?\n````", cell.source, re.S):
                assert "```python" not in block, f"{path.name}: a {{solution}} with code; make it gated"
            for m in re.finditer(r"\{solution-(start|end)\}( [\w-]+)?\n(:class: dropdown)?", cell.source):
                if m.group(1) == "start":
                    assert open_at is None, f"{path.name}: nested solution-start {m.group(2)}"
                    assert m.group(3), f"{path.name}: solution {m.group(2)} is not hidden (:class: dropdown)"
                    open_at, codes = m.group(2).strip(), 0
                else:
                    assert open_at is not None, f"{path.name}: solution-end without a start"
                    assert codes, f"{path.name}: gated solution {open_at} holds no code cell"
                    open_at = None
        assert open_at is None, f"{path.name}: solution {open_at} is never closed"


def test_paper_vs_book_tables():
    """Issue 25: a chapter that departs from the paper ends with a "Paper vs book" table (what, paper,
    book, why), before its references."""
    expected = {"03_prototype_similarity", "06_stage_a1", "07_fine_annotation", "08_projection",
                "09_last_layer_and_pruning"}
    for path in chapter_notebooks():
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        if path.stem in expected:
            assert "## Paper vs book" in text, f"{path.name}: no Paper vs book table"
        if "## Paper vs book" in text:
            section = text.split("## Paper vs book", 1)[1].split("\n## ", 1)[0]
            assert "| what | paper | book | why |" in section, f"{path.name}: the table lacks its columns"
            assert text.index("## Paper vs book") < text.index("## References"), path.name


# Numbers a chapter's prose may type because they are definitions, settings or references, not
# results: everything else (a measured AUROC, a precision, a count of cases) must be computed by the
# chapter's cells and shown with myst-nb's {glue} roles, so that prose cannot drift from the outputs.
DEFINITIONS = {
    "0.5": "chance level of an AUROC; a threshold or a pixel value of a definition",
    "99.5": "the 0.5-99.5 % intensity window of DICOM rendering (chapter 2)",
    "5 %": "τ = 0.95 keeps the top 5 % of pixels (Eq. 9)",
    "95 %": "confidence level of the intervals",
    "0.95": "τ, the paper's activation-precision threshold",
    "0.9": "the confounder setting --confounder 0.9, or a τ of an exercise",
    "0.001": "λf, the paper's fine-annotation weight",
    "0.8": "λc, the paper's cluster weight", "0.08": "λs, the paper's separation weight",
    "15 %": "the paper's split proportions 73 / 12 / 15 %",
    "3.0": "CC BY 3.0, the data licence", "10.7937": "a DOI prefix",
    "2.3": "a section number of the paper", "3.3": "a section number of the paper", "3.4": "a section number of the paper",
    "13.1": "the explorer's section number",
    "2.6 %": "k = 5 of 196 patches (Eq. 2)", "4.6 %": "k = 9 of 196 patches (the authors' code)",
    "0.947": "the paper's black-box average AUROC (its Table 1)", "0.911": "the paper's ProtoPNet average AUROC",
}
_NUMBER = re.compile(r"(?<![\w.{`])(\d+(?:\.\d+)?\s?%|\d+\.\d+)")


def typed_numbers(markdown: str) -> list[str]:
    """Decimal numbers and percentages typed in a Markdown cell's prose: math ($…$, $$…$$), code
    (inline and fenced, where exercises show code), roles ({glue:text}`…`, {cite}`…`) and link
    targets are left out."""
    text = re.sub(r"```.*?```|````.*?````", "", markdown, flags=re.S)
    text = re.sub(r"^\s*%.*$", "", text, flags=re.M)    # MyST comments (the `% verdict:` thresholds)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]*\$", "", text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return [n.replace("\u00a0", " ") for n in _NUMBER.findall(text)]


def results_typed_in(markdown: str) -> list[str]:
    return [n for n in typed_numbers(markdown) if n not in DEFINITIONS and n.replace(" ", "") not in
            {d.replace(" ", "") for d in DEFINITIONS}]


def test_typed_result_checker_finds_typed_results():
    """The check below can fail: a typed measurement is caught, a glued one and definitions are not."""
    assert results_typed_in("IAIA-BL reached 0.91 of its top activation on the lesion.") == ["0.91"]
    assert results_typed_in("The model got 62 % right.") == ["62 %"]
    assert results_typed_in("It fits.\n\n% verdict: 2.5 <= beta <= 3.5\n") == []   # a comment, never shown
    assert results_typed_in("It reached {glue:text}`ap_fine:.2f` at τ = 0.95, $\\lambda_f = 0.002$, "
                            "with `k = 0.3` and 95 % intervals.") == []


def test_chapters_state_no_typed_results():
    """Issue 11: every result a chapter's prose quotes is computed by its cells and glued
    (``myst_nb.glue``), never typed in; each {glue} name used in the prose is glued by a cell."""
    for path in [*chapter_notebooks(), *BOOK.glob("*.md")]:
        if path.suffix == ".md":
            cells, code = [path.read_text(encoding="utf-8")], ""
        else:
            nb = nbformat.read(path, as_version=4)
            cells = [c.source for c in nb.cells if c.cell_type == "markdown"]
            code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for text in cells:
            typed = results_typed_in(text)
            assert not typed, (f"{path.name}: typed result(s) {typed} in the prose; compute them in a cell "
                               "and show them with {glue:text}`name` (or add a definition to DEFINITIONS)")
            for doc, name in re.findall(r"\{glue(?::\w+)?\}`(?:([\w.-]+\.ipynb)::)?(\w+)", text):
                # {glue:text}`key`, or `other.ipynb::key` for a key another chapter glues
                source = code if not doc else "\n".join(
                    c.source for c in nbformat.read(path.parent / doc, as_version=4).cells if c.cell_type == "code")
                glued = glued_name_patterns(source)
                assert any(re.fullmatch(g, name) for g in glued), \
                    f"{path.name}: {{glue}}`{doc + '::' if doc else ''}{name}` is used in the prose but no cell glues it"


def test_bookcache_location_and_atomic_entries(tmp_path, monkeypatch):
    """book_dir honours IAIABL_BOOK_CACHE; an entry appears only when its build finished; a failed
    build leaves nothing; a build directory of a dead process is cleaned up; a stale entry of the
    same name is replaced."""
    from iaiabl_lib import bookcache

    monkeypatch.setenv("IAIABL_BOOK_CACHE", str(tmp_path / "cache"))
    assert bookcache.book_dir() == tmp_path / "cache"
    monkeypatch.delenv("IAIABL_BOOK_CACHE")
    assert bookcache.book_dir() == REPO / ".cache" / "book"      # inside the repository

    root = tmp_path / "entries"
    target = root / "thing-aaaa"

    def failing(tmp):
        tmp.mkdir(parents=True)
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        bookcache._build_once(target, failing, {})
    assert not target.exists() and not list(root.glob("*.tmp-*"))

    abandoned = root / "thing-bbbb.tmp-999999999"           # no such process
    abandoned.mkdir(parents=True)
    calls = []

    def ok(tmp):
        calls.append(tmp)
        tmp.mkdir(parents=True)
        (tmp / "data").write_text("done")

    assert bookcache._build_once(target, ok, {"a": 1}) == target
    assert (target / "data").read_text() == "done" and (target / "bookcache.json").is_file()
    assert not abandoned.exists()
    assert bookcache._build_once(target, ok, {"a": 1}) == target and len(calls) == 1   # cached
    newer = root / "thing-cccc"
    bookcache._build_once(newer, ok, {"a": 2})
    assert newer.is_dir() and not target.exists()             # the stale entry of that name is gone


def test_bookcache_keys_follow_code_and_parameters(monkeypatch):
    from iaiabl_lib import bookcache

    a = bookcache._key({"kind": "iaiabl"}, ("model.py",))
    assert a == bookcache._key({"kind": "iaiabl"}, ("model.py",))
    assert a != bookcache._key({"kind": "nofine"}, ("model.py",))
    assert a != bookcache._key({"kind": "iaiabl"}, ("model.py", "losses.py"))
    # no annotation at all: no Eq. 7, no lesion masks (so no lesion pull), no push onto lesion cells
    assert bookcache.BOOK_OVERRIDES["nofine"] == {"train.use_fine_loss": False, "train.use_lesion_masks": False,
                                                  "train.push_set": "all"}
    assert bookcache.BOOK_OVERRIDES["pretrained"] == {"model.pretrained": "synthetic"}   # the ablation
    assert bookcache.preset_for("cpu") == "tiny" and bookcache.preset_for("cpu", "protopnet") == "tiny-protopnet"
    # a GPU alone does not switch to the paper's scale (hours per model): the reader opts in
    monkeypatch.delenv("IAIABL_BOOK_PRESET", raising=False)
    assert bookcache.preset_for("cuda") == "tiny"
    monkeypatch.setenv("IAIABL_BOOK_PRESET", "paper")
    assert bookcache.preset_for("cuda") == "paper" and bookcache.preset_for("cuda", "protopnet") == "protopnet"
    assert bookcache.preset_for("cpu") == "tiny"                     # never the paper preset on a CPU
    monkeypatch.setenv("IAIABL_BOOK_PRESET", "huge")
    with pytest.raises(ValueError, match="IAIABL_BOOK_PRESET='huge'"):
        bookcache.preset_for("cuda")


# ---------------------------------------------------------------------------------------------
# the built book
# ---------------------------------------------------------------------------------------------


def source_title(f: str) -> str:
    """The first level-1 heading of a table-of-contents entry's source (notebook or Markdown)."""
    path = next(p for p in (REPO / f"{f}.ipynb", REPO / f"{f}.md") if p.is_file())
    if path.suffix == ".ipynb":
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    return re.search(r"^# (.+)$", text, re.M).group(1).strip()


def rendered_title_and_text(html: str) -> tuple[str, int]:
    """A built page's first <h1> (tags, the permalink sign and entities removed) and how many
    characters of visible text its main article holds."""
    h1 = re.search(r"<h1\b[^>]*>(.*?)</h1>", html, re.S)
    title = re.sub(r"<[^>]+>|#|¶", "", h1.group(1)) if h1 else ""
    title = " ".join(_html.unescape(title).split())
    title = title.translate(str.maketrans("‘’“”", "''\"\""))        # Sphinx's smart quotes
    article = re.search(r"<article\b.*?</article>", html, re.S)
    body = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", article.group(0) if article else "", flags=re.S)
    return title, len(" ".join(body.split()))


def test_rendered_page_check_can_fail():
    good = "<article><h1>Why <code>IAIA-BL</code>?<a class='headerlink' href='#'>#</a></h1>" + "<p>text</p>" * 50 + "</article>"
    title, chars = rendered_title_and_text(good)
    assert title == "Why IAIA-BL?" and chars > len(" ".join(["text"] * 50))
    assert rendered_title_and_text("<article></article>") == ("", 0)


@pytest.mark.slow
def test_every_toc_entry_rendered(book_html):
    """Each page of _toc.yml was rendered: its HTML exists, its first heading is the source's
    title, and its article holds the page's text (not an empty shell or an error page)."""
    for f in toc_files():
        page = book_html / f"{f}.html"
        assert page.is_file(), f"no HTML page for {f}"
        title, chars = rendered_title_and_text(page.read_text(encoding="utf-8"))
        expected = " ".join(re.sub(r"[`*]", "", source_title(f)).split())
        assert title == expected, f"{f}: the page's heading is {title!r}, its source's {expected!r}"
        assert chars >= 500, f"{f}: only {chars} characters of text rendered"


@pytest.mark.slow
def test_chapters_show_their_figures(book_html):
    for path in chapter_notebooks():
        if _makes_figure(path):
            page = book_html / "book" / f"{path.stem}.html"
            assert _figure_images(page), f"{path.name} makes a figure but its page shows no image"
            for src in _figure_images(page):
                if not src.startswith("data:"):
                    assert (page.parent / src).resolve().is_file(), f"{page.name}: broken image {src}"


@pytest.mark.slow
def test_every_chapter_figure_has_alt_text(book_html):
    """Issue 22: every figure a chapter draws has alt text that says what it shows (the cell's
    ``mystnb.image.alt`` metadata), not the file name Sphinx puts there by default."""
    for path in chapter_notebooks():
        page = (book_html / "book" / f"{path.stem}.html").read_text(encoding="utf-8")
        for tag in re.findall(r"<img\b[^>]*_images/[^>]*>", page):
            alt = re.search(r'alt="([^"]*)"', tag)
            text = alt.group(1) if alt else ""
            assert len(text.split()) >= 5 and not re.search(r"\.(png|svg|jpe?g)$", text), \
                f"{path.name}: a figure without alt text ({tag[:160]})"


@pytest.mark.slow
def test_no_error_output_in_any_page(book_html):
    stderr_block = re.compile(r'class="[^"]*\b(output_error|output error|traceback)\b|'
                              r'<div class="output stderr[^"]*">(.*?)</div>', re.S)
    for f in toc_files():
        text = (book_html / f"{f}.html").read_text(encoding="utf-8")
        assert "Traceback" not in text, f"{f}: a traceback in the page"
        for m in stderr_block.finditer(text):
            assert m.group(1) is None, f"{f}: an error output block"
            assert "Error" not in (m.group(2) or ""), f"{f}: stderr with an error: {m.group(2)[:300]}"


def markdown_tables_shown_as_text(html: str) -> list[str]:
    """Markdown table rules (|---|, or |—| once Sphinx's smart quotes have turned --- into a dash)
    left in a page's visible text, outside code listings: a table that was never parsed."""
    text = re.sub(r"<(script|style|pre|code)\b.*?</\1>", "", html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    return re.findall(r"\|\s*:?(?:-{3,}|[—–]+):?\s*\|", text)


def test_markdown_table_check_can_fail():
    assert markdown_tables_shown_as_text("<p>| model | AUROC |\n|—|—|\n| a | 0.9 |</p>") == ["|—|"]
    assert markdown_tables_shown_as_text("<p>| a |\n|---|</p>") == ["|---|"]
    assert markdown_tables_shown_as_text("<table><tr><td>a</td></tr></table><pre>|---|</pre>") == []


@pytest.mark.slow
def test_tables_render_as_html_tables(book_html):
    """Issue 22: every table a chapter computes is an HTML table in the built book, never Markdown
    shown as text; chapter 12 shows the paper's Tables 1-3 and chapter 14 its schedule as tables."""
    for f in toc_files():
        html = (book_html / f"{f}.html").read_text(encoding="utf-8")
        assert not markdown_tables_shown_as_text(html), f"{f}: a Markdown table shown as text"
    ch12 = (book_html / "book" / "12_baselines.html").read_text(encoding="utf-8")
    for n in (1, 2, 3):
        assert re.search(rf"Table {n}\.", ch12), f"chapter 12 lacks the paper's Table {n}"
    assert ch12.count("<table") >= 4, "chapter 12: the paper's Tables 1-3 and the science table as tables"
    assert "<table" in (book_html / "book" / "14_full_scale.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_colab_launch_and_repository_buttons(book_html):
    page = (book_html / "book" / f"{chapter_notebooks()[0].stem}.html").read_text(encoding="utf-8")
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    assert "colab.research.google.com/github/" in page, "no Colab launch button"
    assert url in page, "no repository button"


# ---------------------------------------------------------------------------------------------
# a browser renders a chapter
# ---------------------------------------------------------------------------------------------


def _screenshot(chromium: Path, url: str, out: Path) -> None:
    cmd = [str(chromium), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--hide-scrollbars", f"--screenshot={out}",
           f"--window-size={SCREENSHOT_SIZE}", url]
    subprocess.run(cmd, capture_output=True, timeout=120, env=dict(os.environ, HOME=str(out.parent)))
    assert out.is_file(), f"chromium wrote no screenshot for {url}"


def _ink(png: Path) -> tuple[float, float]:
    """(fraction of clearly non-white pixels, largest fraction of dark pixels in a 64 x 64 block).

    Text, code cells and the theme are light; a rendered mammogram figure has blocks that are mostly
    dark (the black background around the breast, the dark tissue of a crop)."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    dark = grey < 60
    h, w = dark.shape
    blocks = [dark[y:y + 64, x:x + 64].mean() for y in range(0, h - 64, 32) for x in range(0, w - 64, 32)]
    return float((grey < 200).mean()), float(max(blocks))


SCREENSHOT_CHAPTER = "02_mammograms_as_data"
SCREENSHOT_SIZE = "1280,4000"   # tall enough to reach the chapter's first figure ("A first look")


@pytest.mark.slow
def test_browser_shows_a_chapter_figure(book_html, chromium, tmp_path):
    """Headless Chromium renders chapter 2 and its first figure (a mammogram and three ROI panels);
    the references page, text only, is the control."""
    page = book_html / "book" / f"{SCREENSHOT_CHAPTER}.html"
    assert _figure_images(page), "chapter 2 has no figure image to render"
    with_fig, without_fig = tmp_path / "figure.png", tmp_path / "text.png"
    _screenshot(chromium, page.as_uri(), with_fig)
    _screenshot(chromium, (book_html / "book" / "references.html").as_uri(), without_fig)
    ink_fig, dark_fig = _ink(with_fig)
    ink_text, dark_text = _ink(without_fig)
    if os.environ.get("IAIABL_SCREENSHOT_DIR"):   # keep the screenshots to look at
        for png in (with_fig, without_fig):
            shutil.copy(png, Path(os.environ["IAIABL_SCREENSHOT_DIR"]) / png.name)
    assert ink_fig > 0.03, f"the chapter screenshot is nearly blank ({ink_fig:.1%} non-white pixels)"
    assert ink_fig > 1.5 * ink_text, (f"the chapter screenshot ({ink_fig:.1%} non-white) does not show more "
                                      f"than a text page ({ink_text:.1%})")
    # measured on a good build: a 64 x 64 block of the chapter ~88 % dark, of the text page ~14 %
    assert dark_fig > 0.6, f"no image-like dark region in the chapter screenshot (best block {dark_fig:.0%} dark)"
    assert dark_text < 0.4, f"the text-only control page has an image-like region ({dark_text:.0%} dark)"


# ---------------------------------------------------------------------------------------------
# Colab: the setup cell installs the library into a fresh environment
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_setup_cell_installs_the_library_in_a_fresh_venv(tmp_path):
    """What the setup cell does on Colab, in a fresh virtual environment: ``import iaiabl_lib``
    fails, so it ``%pip install``s the library, then imports it, picks the device and prints.

    Two honest shortcuts keep this offline and under a minute: the library is installed from a
    wheel built from this checkout (the cell's ``IAIABL_PIP_SPEC`` hook) instead of the git URL, and
    the fresh venv sees the already-installed third-party packages (torch, IPython, ...) through a
    ``.pth`` line naming this interpreter's site-packages, instead of downloading them. The library
    itself is NOT visible there until the cell installs it (checked)."""
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".cache", "_build", "build", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", "node_modules"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("iaiabl_lib-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "reuse_installed_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the venv's bundled setuptools is older than torch requires; let the reused, newer one count
    subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "setuptools"], capture_output=True, timeout=120)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(IAIABL_PIP_SPEC=str(wheel), IAIABL_BOOK_CACHE=str(tmp_path / "cache"),
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
    before = subprocess.run([str(py), "-c", "import iaiabl_lib"], cwd=work, env=env, capture_output=True)
    assert before.returncode != 0, "iaiabl_lib is importable in the fresh venv before the setup cell ran"
    cell = _sync_module().setup_source()
    (work / "cell.py").write_text(cell)
    driver = (
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "import json, pathlib\n"
        "shell = TerminalInteractiveShell.instance()\n"
        "result = shell.run_cell(pathlib.Path('cell.py').read_text())\n"
        "result.raise_error()\n"
        "import iaiabl_lib\n"
        "print('INSTALLED_AT', json.dumps(iaiabl_lib.__file__))\n"
    )
    proc = subprocess.run([str(py), "-c", driver], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    installed = json.loads(out.split("INSTALLED_AT", 1)[1].strip().splitlines()[0])
    assert Path(installed).resolve().is_relative_to(venv.resolve()), \
        f"the library was imported from {installed}, not from the fresh venv"
    assert "device: " in out and "preset: " in out, out[-2000:]
    # the note on the preset: tiny here, and how to opt into the paper's scale on a GPU (Colab)
    assert "runs the 'tiny' preset" in out and "IAIABL_BOOK_PRESET" in out, "the preset note is missing"


# --- chapter 14: the real-data cell, off by default ----------------------------------------------

def _real_data_cell() -> str:
    nb = nbformat.read(BOOK / "14_full_scale.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "USE_REAL_CBIS_DDSM" in c.source]
    assert len(cells) == 1, "chapter 14 needs exactly one real-data cell"
    source = cells[0].source
    assert len(re.findall(r"^USE_REAL_CBIS_DDSM = False\b", source, re.M)) == 1, "one switch, off by default"
    return source


def _run_cell(source: str, namespace: dict) -> None:
    from IPython.core.inputtransformer2 import TransformerManager
    exec(TransformerManager().transform_cell(source), namespace)


class _Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return _Described()
        return record


class _Described:
    def describe(self):
        return "ESTIMATE"


def test_chapter_14_real_data_cell_is_off_by_default(monkeypatch, capsys):
    from iaiabl_lib.data import idc

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cell downloaded while USE_REAL_CBIS_DDSM was False")
    monkeypatch.setattr(idc, "download_cbis_ddsm", must_not_run)
    _run_cell(_real_data_cell(), {"device": "cpu", "get_ipython": lambda: _Recorder()})
    out = capsys.readouterr().out
    assert "USE_REAL_CBIS_DDSM is False: nothing is downloaded" in out
    if idc.available():
        assert "3391 series" in out and "82.5 GB" in out       # the packaged CSVs and index, offline
    else:
        assert "pip install 'iaiabl_lib[real]'" in out


def test_chapter_14_real_data_cell_when_switched_on(monkeypatch, capsys, tmp_path):
    """Switched on: refuses without a GPU; on one, prints the size and the time estimate, then
    downloads, prepares, estimates on the real data and trains, in that order (all stubbed here)."""
    from iaiabl_lib.data import cbis_ddsm, idc

    source = _real_data_cell().replace("USE_REAL_CBIS_DDSM = False", "USE_REAL_CBIS_DDSM = True", 1)
    monkeypatch.setenv("HOME", str(tmp_path))
    steps = []
    monkeypatch.setattr(idc, "available", lambda: True)
    monkeypatch.setattr(idc, "download_cbis_ddsm", lambda out, dry_run=False: steps.append(("download", dry_run)))
    monkeypatch.setattr(cbis_ddsm, "prepare", lambda *a, **k: steps.append(("prepare", k["size"], k["split"])))
    train_lib = _Recorder()
    from types import SimpleNamespace
    schedule = {"a1_steps": 10000, "epochs": 50, "epoch_images": 15000}   # what the cell above computed
    common = {"train_lib": train_lib, "steps": schedule, "est": SimpleNamespace(step_seconds=0.03),
              "get_ipython": lambda: _Recorder()}
    with pytest.raises(RuntimeError, match="needs a GPU"):
        _run_cell(source, {**common, "device": "cpu"})
    assert steps == [] and train_lib.calls == []
    _run_cell(source, {**common, "device": "cuda"})          # a stand-in: nothing here touches a GPU
    assert steps == [("download", True), ("download", False), ("prepare", 224, "paper")]
    assert [(name, args[1]) for name, args, _ in train_lib.calls] == [("estimate", "paper"), ("train", "paper")]
    out = capsys.readouterr().out
    assert "training-time estimate: stage A1, 10000 steps (50 epochs of 15000 images) at the step time " \
           "measured above: 5 min" in out
    assert "ESTIMATE" in out
