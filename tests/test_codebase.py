"""The codebase's own rules (issue 15): one reader of the environment, `__all__` in every public
module, one rule from scores to probabilities, chapters that call the library instead of copying it."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from scipy.special import expit, softmax

from iaiabl_lib import config

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "iaiabl_lib"
BOOK = ROOT / "book"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts
        if any(p.startswith("_") and p != "__init__" for p in parts) or parts[-1] == "__main__":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def test_environment_is_read_in_one_place():
    """Only config.py reads os.environ / os.getenv (the README lists what it reads)."""
    readers = []
    for name, path in _modules():
        if path == LIB / "config.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                    and node.attr in ("environ", "getenv", "putenv"):
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not readers, f"the environment is read outside config.py: {readers}"


def test_readme_lists_every_environment_variable():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Environment variables"):]
    listed = set(re.findall(r"^\| `(IAIABL_\w+)` \|", table, re.M))
    assert listed == set(config.ENVIRONMENT)
    used = set()
    for path in [*LIB.rglob("*.py"), *BOOK.glob("*.ipynb")]:
        used |= set(re.findall(r"\bIAIABL_[A-Z_]+\b", path.read_text()))
    assert used <= set(config.ENVIRONMENT), f"read but not listed: {sorted(used - set(config.ENVIRONMENT))}"


def test_environment_readers(monkeypatch, tmp_path):
    monkeypatch.setenv("IAIABL_BOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("IAIABL_BOOK_REUSE", "1")
    monkeypatch.setenv("IAIABL_STATIC_WIDGETS", "live")
    assert (config.env_book_cache(), config.env_book_reuse(), config.env_static_widgets()) == (tmp_path, True, False)
    for var in ("IAIABL_BOOK_CACHE", "IAIABL_BOOK_REUSE", "IAIABL_STATIC_WIDGETS"):
        monkeypatch.delenv(var)
    assert (config.env_book_cache(), config.env_book_reuse(), config.env_static_widgets()) == (None, False, None)
    config.set_static_widgets_default(True)
    assert config.env_static_widgets() is True
    config.set_static_widgets_default(False)          # already set: the environment wins
    assert config.env_static_widgets() is True


def test_every_public_module_declares_all():
    missing, dangling = [], []
    for name, _ in _modules():
        mod = importlib.import_module(name)
        if not hasattr(mod, "__all__"):
            missing.append(name)
            continue
        dangling += [f"{name}.{n}" for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"modules without __all__: {missing}"
    assert not dangling, f"__all__ names that do not exist: {dangling}"


def test_one_rule_from_scores_to_probabilities():
    """Softmax and sigmoid against scipy; an unfitted malignancy head gives None, never σ(0) = 0.5,
    in predict, in an explanation and in a dismissal alike."""
    from iaiabl_lib.explain import dismissed_probabilities
    from iaiabl_lib.model import build_model
    from iaiabl_lib.predict import malignancy_probability, margin_probabilities, predict

    z = np.random.default_rng(0).normal(size=(7, 3)) * 5
    assert np.allclose(margin_probabilities(z), softmax(z, axis=1))
    assert np.allclose(margin_probabilities(torch.as_tensor(z[0])), softmax(z[0]))
    assert np.allclose(malignancy_probability(z[:, 0], fitted=True), expit(z[:, 0]))
    assert isinstance(malignancy_probability(torch.tensor(0.3), fitted=True), float)
    assert malignancy_probability(z[:, 0], fitted=False) is None

    torch.manual_seed(0)
    model = build_model(config.get_preset("tiny"), pretrained=False).eval()
    assert model.malignancy_fitted is False
    out = predict(model, torch.rand(2, 3, 64, 64))
    assert out["malignancy_prob"] is None and out["margin_prob"].shape == (2, 3)

    class Run:                       # what dismissed_probabilities reads of a run
        pass
    run = Run()
    run.model = model
    sim = np.ones(model.num_prototypes, np.float32)
    assert dismissed_probabilities(run, sim, sim)["malignancy_prob"] is None
    model.malignancy_fitted = True
    assert dismissed_probabilities(run, sim, sim)["malignancy_prob"] == pytest.approx(0.5)   # h2 = 0 here


def _notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _library_exports() -> dict[str, str]:
    out = {}
    for name, _ in _modules():
        for n in getattr(importlib.import_module(name), "__all__", ()):
            out.setdefault(n, name)
    return out


def test_notebooks_define_no_function_the_library_exports():
    """A chapter that defines `make_batch` or `glue` is copying the library, and drifts from it."""
    exports = _library_exports()
    found = []
    for path in sorted(BOOK.glob("*.ipynb")):
        for node in ast.walk(ast.parse(_notebook_code(path))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in exports:
                found.append(f"{path.name}: {node.name} (the library's {exports[node.name]}.{node.name})")
    assert not found, found


def test_no_chapter_shadows_a_module():
    """`train = ds.subset("train")` after `from iaiabl_lib import train` hides the module."""
    found = []
    for path in sorted(BOOK.glob("*.ipynb")):
        tree = ast.parse(_notebook_code(path))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iaiabl_lib"):
                for alias in node.names:
                    if _is_package(node.module) and importlib.util.find_spec(f"{node.module}.{alias.name}"):
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
            for n in _bound_names(targets):
                if n in modules:
                    found.append(f"{path.name}: {n} = … hides the module {n}")
    assert not found, found


def _bound_names(targets) -> list[str]:
    """The names an assignment rebinds: plain names, also inside tuples, lists and starred targets;
    not the names read inside a subscript or attribute target (``d[i, torch.arange(n)] = x`` binds
    nothing)."""
    out = []
    for t in targets:
        if isinstance(t, ast.Name):
            out.append(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            out += _bound_names(t.elts)
        elif isinstance(t, ast.Starred):
            out += _bound_names([t.value])
    return out


def test_bound_names_are_the_rebound_ones():
    tree = ast.parse("a, (b, *c) = x\nd[torch.arange(3)] = 0\ne.torch = 1\nfor f in y: pass")
    targets = [t for node in tree.body for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    assert _bound_names(targets) == ["a", "b", "c", "f"]


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def test_readme_science_table_is_the_recorded_run():
    """The README's science table quotes the recorded `iaiabl science` run that chapter 12 shows
    (science.load_recorded): every per-seed figure, rounded as printed."""
    from iaiabl_lib import science

    per_seed, recorded = science.load_recorded()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The science check"):]
    assert recorded["command"] in section and recorded["date"] in section
    rows = {"IAIA-BL": "IAIA-BL", "IAIA-BL without the fine-annotation loss": "IAIA-BL without fine-annotation loss",
            "ProtoPNet": "ProtoPNet", "black-box CNN + Grad-CAM": "black-box VGG-style CNN + Grad-CAM",
            dict(science.ROWS)["pretrained"]: dict(science.ROWS)["pretrained"]}
    seeds = sorted(per_seed)
    for label, name in rows.items():
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        for col, key in ((1, "average_auroc"), (3, "lesion_ap")):
            want = " / ".join(f"{per_seed[s][name][key]:.2f}" for s in seeds)
            assert cells[col] == want, (label, key, cells[col], want)


def test_readme_off_patch_counts_are_the_recorded_run():
    from iaiabl_lib import science

    per_seed, _ = science.load_recorded()
    seeds = sorted(per_seed)
    readme = (ROOT / "README.md").read_text()
    counts = {name: " / ".join(str(per_seed[s][name]["prototypes_off_patch"]) for s in seeds)
              for name in ("IAIA-BL", "IAIA-BL without fine-annotation loss", "ProtoPNet")}
    text = " ".join(readme[readme.index("## The science check"):].split())
    assert (f"{counts['IAIA-BL']} of IAIA-BL's 15 prototypes" in text
            and "had left every training patch" in text
            and f"{counts['IAIA-BL without fine-annotation loss']} without the fine-annotation loss" in text
            and f"{counts['ProtoPNet']} for ProtoPNet" in text), counts


def test_readme_marker_figures_are_the_recorded_run():
    """The README's 'Does the model read the marker?' quotes the record's marker figures, per seed."""
    from iaiabl_lib import science

    per_seed, _ = science.load_recorded()
    seeds = sorted(per_seed)
    text = " ".join((ROOT / "README.md").read_text().split())
    text = text[text.index("**Does the model read the marker?**"):]
    text = text[:text.index("**Claims**")]
    rows = dict(science.ROWS)
    for key, name in (("iaiabl", rows["iaiabl"]), ("nofine", rows["nofine"]), ("protopnet", rows["protopnet"]),
                      ("blackbox", rows["blackbox"] + " + Grad-CAM"), ("pretrained", rows["pretrained"])):
        for figure in ("marker_probability_drop", "marker_auroc_drop"):
            if key == "pretrained" and figure == "marker_auroc_drop":
                continue                                    # the README quotes the ablation's drop only
            quoted = " / ".join(f"{per_seed[s][name][figure]:.2f}" for s in seeds)
            assert quoted in text, (name, figure, quoted)


def test_off_patch_count_reads_prune_json(tmp_path):
    import json

    from iaiabl_lib import science

    (tmp_path / "prune.json").write_text(json.dumps({"sq_distance_before_push": [0.2, 0.9, 1.5, 40.0]}))
    assert science._off_patch(tmp_path) == 2                     # above OFF_PATCH_SQ_DISTANCE = 1
    (tmp_path / "prune.json").write_text(json.dumps({}))
    assert science._off_patch(tmp_path) is None


# --- the import graph ----------------------------------------------------------------------------

def _module_files() -> dict[str, Path]:
    """Every module of the package, private ones included: dotted name -> file."""
    out = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(module imported, line) for each import statement of ``path``, at any depth (module level
    and inside functions) except under ``if TYPE_CHECKING:``. ``from X import y`` names the
    submodule X.y when there is one, else X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in modules else base, child.lineno))
            else:
                visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}, within iaiabl_lib. Importing ``a.b.c`` runs the
    packages ``a.b`` and ``a`` first, so the edge also goes to each package above the target,
    except the packages that hold the importer itself (already being imported, Python's own
    parent-before-child order)."""
    modules = _module_files()
    graph = {}
    for name, path in modules.items():
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for target, line in _imported(name, path, modules):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                t = ".".join(parts[:i])
                if t in modules and t != name and not (own == t or own.startswith(t + ".")):
                    edges.setdefault(t, line)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a closed path, first module repeated last) per strongly connected component
    larger than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(set(comp))
    cycles = []
    for comp in comps:                                      # a closed path inside the component
        start = min(comp)
        path, seen = [start], {start: 0}
        while True:
            nxt = min(w for w in graph[path[-1]] if w in comp)
            if nxt in seen:
                cycles.append(path[seen[nxt]:] + [nxt])
                break
            seen[nxt] = len(path)
            path.append(nxt)
    return cycles


def test_no_import_cycles():
    """No circle in the package's import graph (issue 23). Every import counts: at module level
    and inside functions (a deferred import only hides a circle until the function runs), except
    under ``if TYPE_CHECKING:``; importing a submodule also imports the packages above it."""
    graph = import_graph()
    cycles = _cycles(graph)
    shown = ["  " + " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
             for c in cycles]
    assert not cycles, "import cycles in iaiabl_lib:\n" + "\n".join(shown)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_each_public_constant_name_is_defined_once():
    """One meaning per name (issue 23: two different ``RUN_FILES``): an upper-case public name is
    assigned at module level in one module only; re-exports (imports) do not count."""
    defined: dict[str, list[str]] = {}
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_"):
                    defined.setdefault(t.id, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    twice = {name: where for name, where in defined.items() if len(where) > 1}
    assert not twice, f"constants defined in several modules: {twice}"


def test_docstrings_cite_design_notes_in_the_repository():
    """Every ``DESIGN.md`` a module cites is ``docs/DESIGN.md``, which exists."""
    assert (ROOT / "docs" / "DESIGN.md").is_file()
    stray = [f"{path.relative_to(ROOT)}:{n}" for path in sorted(LIB.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"(?<!docs/)DESIGN\.md", line)]
    assert not stray, f"citations of a DESIGN.md outside docs/: {stray}"
