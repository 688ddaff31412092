"""The book's verdicts, checked when it is built (issue 25: no sentence that the outputs beside it
contradict).

A chapter's numbers are computed by its cells and glued into the prose (myst-nb ``glue``); the words
around them are typed. Where a typed sentence states a verdict that rests on a glued figure ("the
book's tissue has the spectrum of real breast tissue" rests on the fitted exponent lying in
2.5-3.5), the Markdown cell that holds it declares the condition in a MyST comment line, which the
reader never sees::

    % verdict: 2.5 <= beta_median <= 3.5

The names are glue keys of the same page. When Sphinx has read the page (event ``doctree-read``,
after myst-nb executed the notebook and wrote its glue data to ``_build/jupyter_execute/PAGE.glue.json``),
:func:`check_page` evaluates every declaration on the glued values. A declaration that is false,
names a key the page did not glue, or is not a comparison is logged as a warning on the page and
cell, which the book's ``-W`` build turns into a failure: a build whose cells put a figure on the
other side of a threshold its prose states cannot pass.

Only comparisons, ``and``/``or``/``not``, arithmetic, numbers and strings are evaluated (parsed with
:mod:`ast`, never ``eval``). A glued value is read from its ``text/plain`` form: numbers and strings
as Python literals; anything else (an array, a figure) cannot be compared and is reported.
"""
from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

__all__ = ["DECLARATION", "Declaration", "declarations", "glue_values", "evaluate", "check_page",
           "NotALiteral", "setup"]

DECLARATION = re.compile(r"^\s*%\s*verdict:\s*(?P<expr>.+?)\s*$", re.MULTILINE)
"""A verdict declaration: a MyST comment line ``% verdict: EXPR`` in a Markdown cell."""

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv}


class Declaration(NamedTuple):
    """One ``% verdict:`` line: the notebook cell that holds it (0-based; 0 for a Markdown page)
    and its expression."""

    cell: int
    expr: str


def declarations(source: str | Path) -> list[Declaration]:
    """Every ``% verdict:`` declaration of a page: the Markdown cells of a notebook (``.ipynb``) or
    the whole text of a Markdown page."""
    path = Path(source)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts = [(i, "".join(c["source"])) for i, c in enumerate(cells)
                 if c.get("cell_type") == "markdown"]
    else:
        texts = [(0, path.read_text(encoding="utf-8"))]
    return [Declaration(i, m.group("expr")) for i, text in texts for m in DECLARATION.finditer(text)]


class NotALiteral(str):
    """The ``text/plain`` of a glued value that is no Python literal (an array, a figure)."""

    def __repr__(self) -> str:
        return f"<not a number or string: {str(self)[:40]}>"


def glue_values(glue_json: str | Path) -> dict[str, Any]:
    """The glued values of a page, from the ``PAGE.glue.json`` myst-nb writes: each key's
    ``text/plain`` read as a Python literal; a value that is no literal (an array, a figure) is kept
    as a :class:`NotALiteral` holding its text, so that a declaration naming it fails with a
    reason."""
    data = json.loads(Path(glue_json).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for key, output in data.items():
        text = output.get("data", {}).get("text/plain")
        if isinstance(text, list):
            text = "".join(text)
        try:
            out[key] = ast.literal_eval(text) if text is not None else None
        except (ValueError, SyntaxError):
            out[key] = NotALiteral(str(text))
    return out


def evaluate(expr: str, values: Mapping[str, Any]) -> bool:
    """Evaluate one declaration on the glued ``values``. Raises :class:`ValueError` naming the
    problem (syntax, a name not glued, a value that is no number or string, an expression that is
    not a comparison)."""
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {expr!r} ({exc.msg})") from None
    if not isinstance(tree, (ast.Compare, ast.BoolOp)) and not (
            isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.Not)):
        raise ValueError(f"{expr!r} is not a comparison: a verdict compares a glued figure with "
                         "a threshold or another figure")

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ValueError(f"{node.id!r} is not glued on this page (glued: "
                                 f"{', '.join(sorted(values)) or 'nothing'})")
            value = values[node.id]
            if isinstance(value, (bool, NotALiteral)) or not isinstance(value, (int, float, str)):
                raise ValueError(f"glue {node.id!r} = {value!r} is no number or string")
            return value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return _ARITH[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.BoolOp):
            results = [ev(v) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _COMPARE:
                    raise ValueError(f"{ast.unparse(op)!r} is not a comparison this check knows")
                right = ev(right_node)
                try:
                    holds = _COMPARE[type(op)](left, right)
                except TypeError:
                    raise ValueError(f"cannot compare {left!r} with {right!r}") from None
                if not holds:
                    return False
                left = right
            return True
        raise ValueError(f"{ast.unparse(node)!r}: only numbers, strings, glue names, arithmetic, "
                         "comparisons and and/or/not are allowed")

    return bool(ev(tree))


def check_page(decls: Iterable[Declaration], values: Mapping[str, Any]) -> list[str]:
    """One message per declaration that does not hold (``cell N: EXPR is false (name = value,
    ...)``) or cannot be evaluated; an empty list when every verdict of the page holds."""
    problems = []
    for d in decls:
        try:
            ok = evaluate(d.expr, values)
        except ValueError as exc:
            problems.append(f"cell {d.cell}: verdict {d.expr!r} cannot be checked: {exc}")
            continue
        if not ok:
            names = sorted({n.id for n in ast.walk(ast.parse(d.expr, mode="eval"))
                            if isinstance(n, ast.Name)})
            shown = ", ".join(f"{n} = {values[n]!r}" for n in names)
            problems.append(f"cell {d.cell}: verdict {d.expr!r} is false ({shown}): the prose "
                            "beside it states the opposite of what this build computed; rewrite "
                            "the sentence so that it follows the figure, or fix the figure")
    return problems


def _doctree_read(app, doctree) -> None:
    from sphinx.util import logging

    docname = app.env.docname
    source = Path(app.env.doc2path(docname))
    decls = declarations(source) if source.suffix in (".ipynb", ".md") else []
    if not decls:
        return
    glue = Path(app.outdir).parent / "jupyter_execute" / (docname + ".glue.json")
    logger = logging.getLogger(__name__)
    if not glue.is_file():
        logger.warning(f"{len(decls)} verdict declaration(s) but no glue data at {glue}: was the "
                       "page executed?", location=docname)
        return
    for problem in check_page(decls, glue_values(glue)):
        logger.warning(problem, location=docname)


def setup(app) -> dict:
    """Sphinx extension (``sphinx: extra_extensions: [iaiabl_lib.verdicts]`` in ``_config.yml``)."""
    app.connect("doctree-read", _doctree_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
