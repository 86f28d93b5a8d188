"""The task is an object: no code outside the task modules branches on which task a run holds.

``stages/task.py`` (``ClassificationTask``, ``InstructionTask``) and ``stages/task_folds.py`` own what differs
between classification and instruction data; every other module asks the run's ``Task``. A branch is: a
comparison with a task's name (``== "sft"``, ``!= "classification"``, ``in ("sft", ...)``), a comparison of
``task_type(...)`` or of a ``.task_type`` attribute, ``isinstance`` against a task's data or task class, and any
``is_sft``.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "layerinf"
TASK_MODULES = {"stages/task.py", "stages/task_folds.py"}
TASK_NAMES = {"sft", "classification"}
TASK_CLASSES = {"SFTPrepared", "ClassificationTask", "InstructionTask"}  # (a raw source vs a path is no task branch)


def _names(node: ast.AST) -> set:
    """The string constants of an operand (a constant, or a tuple/list/set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def _is_task_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Name) and node.id == "task_type") or (
        isinstance(node, ast.Attribute) and node.attr == "task_type")


def task_branches(src: Path = SRC) -> list[str]:
    """``path:line: code`` for every task branch outside the task modules of the tree at ``src``."""
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel in TASK_MODULES:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            bad = False
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                bad = any(_names(o) & TASK_NAMES or _is_task_type(o) for o in operands)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                bad = len(node.args) == 2 and bool({n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                                                   & TASK_CLASSES)
            elif isinstance(node, ast.Name):
                bad = node.id == "is_sft"
            elif isinstance(node, ast.Attribute):
                bad = node.attr == "is_sft"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad = node.name == "is_sft"
            elif isinstance(node, ast.alias):
                bad = node.name.rpartition(".")[2] == "is_sft"
            if bad:
                out.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()[:100]}")
    return out


def test_no_task_branch_outside_the_task_modules():
    found = task_branches()
    assert not found, ("branches on the task outside stages/task.py: ask the run's Task (task_of / task_for / "
                       "task_named) instead:\n" + "\n".join(found))


@pytest.mark.parametrize("code", [
    'if task_type(cfg) == "sft":\n    pass\n',
    'sft = plan.kind != "classification"\n',
    'ok = rec.get("task") in ("sft",)\n',
    'x = cfg.task_type == name\n',
    'from layerinf.stages.task import is_sft\n',
    'y = result.is_sft\n',
    'def is_sft(p):\n    return True\n',
    'z = isinstance(prepared, SFTPrepared)\n',
])
def test_the_check_catches_a_planted_branch(tmp_path, code):
    root = tmp_path / "layerinf"
    (root / "stages").mkdir(parents=True)
    (root / "stages" / "task.py").write_text('def task_of(p):\n    return p.task == "sft"\n')  # allowed here
    (root / "stages" / "rank.py").write_text("spec_is_we = spec.kind == 'we'\n" + code)
    found = task_branches(root)
    assert len(found) == 1 and found[0].startswith("stages/rank.py:2"), found


def test_each_task_is_found_by_its_name_its_data_and_its_config():
    from layerinf.config import DataConfig
    from layerinf.stages.task import CLASSIFICATION, INSTRUCTION, TASKS, task_for, task_named

    assert set(TASKS) == TASK_NAMES
    assert task_named(None) is CLASSIFICATION and task_named("sft") is INSTRUCTION
    assert task_for(DataConfig(source="demo")) is CLASSIFICATION
    assert task_for(DataConfig(source="demo-sft")) is INSTRUCTION
    assert INSTRUCTION.objective({"loss_reduction": "sum"}).reduction == "sum"
    assert CLASSIFICATION.objective().name == "classification"
