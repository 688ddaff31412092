"""The build-time check of the book's verdicts (iaiabl_lib.verdicts): a typed sentence that declares
the condition it rests on (``% verdict: EXPR``) fails the book's build when the figures its cells
glued put that condition the other way."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import glued_name_patterns
from iaiabl_lib import verdicts

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_evaluate_comparisons_chains_and_words():
    values = {"ap": 0.86, "base": 0.32, "word": "fades", "n": 3}
    assert verdicts.evaluate("ap >= 0.8", values)
    assert not verdicts.evaluate("ap >= 0.9", values)
    assert verdicts.evaluate("0.8 <= ap <= 0.9 and ap - base > 0.2", values)
    assert verdicts.evaluate("word == 'fades' or n < 0", values)
    assert not verdicts.evaluate("not n == 3", values)
    assert verdicts.evaluate("-ap < 0", values)


@pytest.mark.parametrize("expr, message", [
    ("ap", "not a comparison"),
    ("missing > 1", "'missing' is not glued"),
    ("array > 1", "no number or string"),
    ("ap > __import__('os').getpid()", "only numbers"),
    ("ap >", "not an expression"),
    ("ap in [1]", "not a comparison this check knows"),
    ("word < 1", "cannot compare 'fades' with 1"),
])
def test_evaluate_refuses_what_it_cannot_check(expr, message):
    with pytest.raises(ValueError, match=message):
        verdicts.evaluate(expr, {"ap": 0.5, "word": "fades",
                                   "array": verdicts.NotALiteral("array([1, 2])")})


def test_check_page_names_the_cell_the_expression_and_the_values():
    decls = [verdicts.Declaration(2, "ap >= 0.8"), verdicts.Declaration(5, "ap < base")]
    problems = verdicts.check_page(decls, {"ap": 0.86, "base": 0.32})
    assert len(problems) == 1
    assert problems[0].startswith("cell 5: verdict 'ap < base' is false")
    assert "ap = 0.86" in problems[0] and "base = 0.32" in problems[0]
    assert verdicts.check_page(decls[:1], {"ap": 0.86}) == []


def _notebook(path: Path, value: float, claim: str) -> None:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "id": "t", "source": "# Page\n"},
        {"cell_type": "code", "metadata": {}, "id": "c", "execution_count": None, "outputs": [],
         "source": f"from myst_nb import glue\nglue('x', {value!r}, display=False)\n"},
        {"cell_type": "markdown", "metadata": {}, "id": "m",
         "source": f"The figure {{glue:text}}`x` is below one.\n\n% verdict: {claim}\n"},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("value, passes", [(0.5, True), (2.0, False)])
def test_a_sphinx_build_fails_on_a_verdict_its_cells_contradict(tmp_path, value, passes):
    """A real myst-nb build of one page (the notebook executed, its glue written): the page's
    verdict `x < 1` passes with x = 0.5 and fails the -W build with x = 2.0."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = ['myst_nb', 'iaiabl_lib.verdicts']\n"
                                 "nb_execution_mode = 'force'\nnb_execution_raise_on_error = True\n")
    (src / "index.md").write_text("# Test\n\n```{toctree}\npage\n```\n")
    _notebook(src / "page.ipynb", value, "x < 1")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src),
                           str(tmp_path / "_build" / "html")], capture_output=True, text=True,
                          timeout=300)
    if passes:
        assert proc.returncode == 0, proc.stderr
        glue = tmp_path / "_build" / "jupyter_execute" / "page.glue.json"
        assert verdicts.glue_values(glue) == {"x": 0.5}
    else:
        assert proc.returncode != 0
        assert "verdict 'x < 1' is false (x = 2.0)" in proc.stderr


def test_every_declaration_in_the_book_names_keys_its_page_glues():
    """Each `% verdict:` of a chapter parses and names only keys that the chapter's cells glue (the
    values themselves are checked by the build)."""
    import ast
    import re

    found = 0
    for path in sorted(BOOK.glob("*.ipynb")):
        decls = verdicts.declarations(path)
        if not decls:
            continue
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                       if c["cell_type"] == "code")
        glued = glued_name_patterns(code)
        for d in decls:
            names = {n.id for n in ast.walk(ast.parse(d.expr, mode="eval")) if isinstance(n, ast.Name)}
            for name in names:
                assert any(re.fullmatch(g, name) for g in glued), (path.name, d)
            found += 1
    assert found >= 5
