"""The shape of the code: dependencies point one way, no import cycles, the influence math imports no model
code, every run-directory name lives in store/layout.py, and modules stay small."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "layerinf"

# package → the layerinf packages it may import (function-level imports included; `if TYPE_CHECKING:` excluded)
BASE = {"errors", "spec", "config", "version", "ranks"}
ALLOWED = {
    "errors": set(), "spec": set(), "version": set(), "ranks": {"errors"}, "config": {"errors"},
    "store": {"errors", "spec", "version"},
    "data": BASE | {"store"},
    "model": BASE,
    "engine": BASE | {"model", "store"},
    "influence": {"errors", "config", "ranks"},
    "evaluation": {"errors", "ranks"},
    "stages": BASE | {"store", "data", "model", "engine", "influence", "evaluation"},
    "workflows": BASE | {"stages", "store", "data", "model", "influence", "evaluation", "reporting"},
    "reporting": BASE | {"evaluation", "store", "influence"},
    "terminal": set(),
    "api": BASE | {"stages", "workflows", "store", "reporting", "model"},
    "cli": BASE | {"api", "terminal", "store", "workflows", "reporting", "model"},
    "__init__": {"errors", "api", "config", "version"},
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    return rel.parts[0] if len(rel.parts) > 1 else rel.parts[0]


def _imports(tree: ast.AST, top_level_only: bool = False):
    """(layerinf module, line) pairs; skips `if TYPE_CHECKING:` blocks."""
    out = []

    def visit(node, depth):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and top_level_only:
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("layerinf"):
                mods = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
                out.append((mods, child.lineno))
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("layerinf"):
                        out.append(([a.name], child.lineno))
            visit(child, depth + 1)

    visit(tree, 0)
    return out


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_dependencies_point_one_way(path):
    pkg = _package(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for mods, line in _imports(tree):
        parts = mods[0].split(".")
        target = parts[1] if len(parts) > 1 else None
        if target is None:  # `from layerinf import X`: X is a module or the package's public API
            names = [m.split(".")[-1] for m in mods[1:] if m != "layerinf.__version__"]
            targets = {n if (SRC / n).is_dir() or (SRC / f"{n}.py").exists() else "__init__" for n in names}
        else:
            targets = {target}
        for t in targets - {pkg}:
            assert t in ALLOWED.get(pkg, set()), (
                f"{path.relative_to(SRC)}:{line} imports layerinf.{t}, which {pkg} may not depend on")


def test_influence_and_evaluation_import_no_model_code():
    for pkg in ("influence", "evaluation"):
        for path in (SRC / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(from|import) (transformers|peft)\b", text, flags=re.M), path


def test_no_import_cycles_at_module_level():
    graph = {}
    for path in _modules():
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(("layerinf", *rel.parts)).removesuffix(".__init__")
        deps = set()
        for mods, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True):
            for m in mods:
                if (SRC.parent / (m.replace(".", "/") + ".py")).exists() or (SRC.parent / m.replace(".", "/")).is_dir():
                    deps.add(m)
        graph[name] = deps - {name}
    state = {}

    def dfs(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep == "layerinf" or node.startswith(dep + "."):
                continue  # a package's __init__ re-exporting its own modules is not a cycle
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack + [dep]))
            if state.get(dep) is None:
                dfs(dep, stack + [dep])
        state[node] = 2

    for node in graph:
        if state.get(node) is None:
            dfs(node, [node])


def test_run_directory_names_are_defined_once():
    """Folder and file names of a run directory appear as literals only in store/layout.py."""
    files = r"(manifest|stage|sweep|meta|summary)\.json|(results|table|aggregated|history|curves|modules|noise_rank|suspects|train|infl|test)\.(parquet|csv|jsonl)|infl_logits\.npy|(init|best|last)\.safetensors"
    folders = r"(data|scores|eval|grads|finetune|retrain|suspects|units|report|matrices)/"
    pattern = re.compile(r"""["'][^"'\s]*(?:\b(?:""" + files + r""")["']|(?<![\w.])(?:""" + folders + r"""))""")
    offenders = []
    for path in _modules():
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


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
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
