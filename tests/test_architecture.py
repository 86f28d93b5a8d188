"""The shape of the code: dependencies point one way (shared/architecture.md's "may import" table), no import
cycles, the influence math imports no model code, every run-directory name lives in store/layout.py, and modules
stay small.

Every import counts: at module level or inside a function, under ``if TYPE_CHECKING:`` (no import is exempt),
``import x``, ``from x import y`` and relative imports. A package's ``__init__``, which Python runs before any of its
modules, counts only where an import names it.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "layerinf"

# shared/architecture.md's "may import" table as written, by package (the table's `report` is `reporting`). A package
# may also import what those packages may import ("stages → all below", "workflows → stages (and below)"), and the
# ground floor. Where the table is silent or loose, the choice made (docs/internals.md says the same):
# * model, evaluation ("—") and influence ("nothing model-facing", read strictly: pure math) import the ground floor
#   only; workflows may not import the report, nor the report a stage or workflow;
# * `api` (not in the table) is the Python API over workflows and the report; `cli` is "a thin layer over the API";
#   `terminal` (rich tables) and `cli_options` (options made from the config) are the CLI's; `__init__` is the package face, which offers the API.
MAY_IMPORT = {
    "store": set(),
    "data": {"store"},
    "model": set(),
    "engine": {"model", "data"},
    "influence": set(),
    "evaluation": set(),
    "stages": {"store", "data", "model", "engine", "influence", "evaluation"},
    "workflows": {"stages"},
    "reporting": {"evaluation", "store"},
    "api": {"workflows", "reporting"},
    "terminal": set(),
    "cli_options": set(),
    "cli": {"api", "workflows", "terminal", "cli_options"},
    "__init__": {"api"},
}
# The ground floor: top-level modules that every package may import and that import only each other: the one
# exception type, the version, ModuleSpec, every option (config), and the one definition of a rank.
GROUND = {"errors", "version", "spec", "config", "ranks"}


def _allowed() -> dict[str, set[str]]:
    """Package → every package it may import: the table's entries, theirs in turn, and the ground floor."""
    closed = {}
    for pkg in MAY_IMPORT:
        todo, seen = list(MAY_IMPORT[pkg]), set()
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(MAY_IMPORT[dep])
        closed[pkg] = seen | GROUND
    return closed | {g: set(GROUND) for g in GROUND}


ALLOWED = _allowed()


def _modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name → file (a package is its ``__init__.py``)."""
    top = src.name
    return {".".join((top, *p.relative_to(src).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in sorted(src.rglob("*.py"))}


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    """Module → {module it imports: the line of the first such import}, for the modules of the tree at ``src``."""
    mods = _modules(src)
    top = src.name

    def existing(name: str) -> str | None:  # the module itself, or the package that holds the name
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                if name == top or name.startswith(top + "."):
                    target = existing(name)
                    if target is not None and target != mod:
                        deps.setdefault(target, node.lineno)
        graph[mod] = deps
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: dict[str, dict[str, int]], src: Path = SRC) -> list[str]:
    """One line per import of a package that the importer may not import (unknown packages included)."""
    mods = _modules(src)
    out = []
    for mod, deps in graph.items():
        pkg = _package(mod)
        for dep, line in sorted(deps.items()):
            target = _package(dep)
            if target != pkg and target not in ALLOWED.get(pkg, set()):
                where = f"{mods[mod].relative_to(src)}:{line}"
                out.append(f"{where} imports {dep}: {pkg} may not import {target}")
    return out


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or around a circle (Tarjan's strongly connected
    components of size > 1), each as a sorted list."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_every_package_has_a_place_in_the_layering():
    packages = {_package(m) for m in _modules()}
    assert packages <= set(MAY_IMPORT) | GROUND, f"not in MAY_IMPORT or GROUND: {packages - set(MAY_IMPORT) - GROUND}"


def test_no_package_imports_one_it_may_not():
    bad = layer_violations(import_graph())
    assert not bad, "imports against shared/architecture.md's table:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = import_graph()
    cycles = import_cycles(graph)
    lines = [" ↔ ".join(c) + ": " + "; ".join(f"{a}:{graph[a][b]} → {b}" for a in c for b in graph[a] if b in c)
             for c in cycles]
    assert not cycles, "modules that import each other (imports inside functions count):\n" + "\n".join(lines)


def test_the_checks_catch_a_planted_violation_and_cycle(tmp_path):
    """The checks can fail: a synthetic tree whose store imports the engine inside a function (an arrow up) and whose
    engine imports the store back through a relative import under TYPE_CHECKING (a circle)."""
    root = tmp_path / "layerinf"
    for pkg in ("store", "engine"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "store" / "gradstore.py").write_text(
        "from layerinf.errors import X\n\n\ndef add(batch):\n    from layerinf.engine.collect import GradBatch\n")
    (root / "engine" / "collect.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..store import gradstore\n")
    graph = import_graph(root)
    assert graph["layerinf.store.gradstore"] == {"layerinf.errors": 1, "layerinf.engine.collect": 5}
    assert graph["layerinf.engine.collect"] == {"layerinf.store.gradstore": 4}
    assert layer_violations(graph, root) == [
        "store/gradstore.py:5 imports layerinf.engine.collect: store may not import engine"]
    assert import_cycles(graph) == [["layerinf.engine.collect", "layerinf.store.gradstore"]]


def test_influence_and_evaluation_import_no_model_code():
    for pkg in ("influence", "evaluation"):
        for path in (SRC / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(from|import) (transformers|peft)\b", text, flags=re.M), path


def test_run_directory_names_are_defined_once():
    """Folder and file names of a run directory appear as literals only in store/layout.py."""
    files = r"(manifest|stage|sweep|meta|summary)\.json|(results|table|aggregated|history|curves|modules|noise_rank|suspects|train|infl|test)\.(parquet|csv|jsonl)|infl_logits\.npy|(init|best|last)\.safetensors"
    folders = r"(data|scores|eval|grads|finetune|retrain|suspects|units|report|matrices)/"
    pattern = re.compile(r"""["'][^"'\s]*(?:\b(?:""" + files + r""")["']|(?<![\w.])(?:""" + folders + r"""))""")
    offenders = []
    for path in _modules().values():
        if path.relative_to(SRC).as_posix() == "store/layout.py":
            continue
        text = path.read_text(encoding="utf-8")
        docs = set()  # docstring lines (examples there may spell paths)
        for node in ast.walk(ast.parse(text)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                docs.update(range(body[0].lineno, body[0].end_lineno + 1))
        for i, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if i not in docs and pattern.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{i}: {line.strip()[:100]}")
    assert not offenders, "run-directory names spelled outside store/layout.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", list(_modules().values()), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path


def test_the_cli_starts_without_torch():
    """`layerinf --help` and option errors answer at once: importing the CLI loads no torch, pandas or scipy."""
    import subprocess
    import sys

    code = ("import sys, layerinf.cli; heavy = sorted({'torch', 'pandas', 'scipy', 'transformers'} & set(sys.modules));"
            " print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing layerinf.cli loaded {out}: import them inside the command that needs them"
