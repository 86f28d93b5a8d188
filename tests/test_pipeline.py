"""The stage declaration is the wiring: a stage's ``compute`` gets its upstream results as ``inputs`` (``stages.base.
Inputs``: each loaded through the upstream stage's own ``load()``) and loads no other stage's outputs itself.

The check reads every class with a ``compute`` method, and the methods of the same class that ``compute`` calls
(``self.<method>(...)``, followed transitively): none may call a loader of another stage's files
(``load_data``, ``load_finetuned``, ``load_grads``, ``load_result``, ``read_parquet``, any ``.load()``), locate one
(``stage_path``, ``require``), or make a stage object (a call of ``...Stage(...)``).
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "layerinf"
LOADERS = {"load_data", "load_finetuned", "load_grads", "load_result", "read_parquet", "read_csv", "load",
           "stage_path", "require"}


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def compute_loads(src: Path = SRC) -> list[str]:
    """``path:line: Class.method calls name`` for every load of another stage's outputs reached from a ``compute``."""
    out = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            methods = {m.name: m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if "compute" not in methods:
                continue
            todo, seen = ["compute"], set()
            while todo:
                name = todo.pop()
                if name in seen or name not in methods:
                    continue
                seen.add(name)
                for node in ast.walk(methods[name]):
                    if not isinstance(node, ast.Call):
                        continue
                    called = _called(node)
                    f = node.func
                    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
                        todo.append(f.attr)
                        if f.attr in LOADERS:
                            out.append(f"{path.relative_to(src)}:{node.lineno}: {cls.name}.{name} calls self.{f.attr}")
                        continue
                    if called in LOADERS or (called or "").endswith("Stage"):
                        out.append(f"{path.relative_to(src)}:{node.lineno}: {cls.name}.{name} calls {called}")
    return out


def test_no_compute_loads_another_stages_outputs_itself():
    found = compute_loads()
    assert not found, ("a stage's compute loads upstream outputs itself: declare the stage in `upstream` (or return "
                       "it from `inputs()`) and read `inputs[...]`:\n" + "\n".join(found))


@pytest.mark.parametrize("body, expected", [
    ("prepared = load_data(self.run_dir)", "calls load_data"),
    ("train, infl = GradsStage(self.run_dir).load()", "calls load"),
    ("t = pd.read_parquet(self.run_dir.stage_path('scores') / 'table.parquet')", "calls read_parquet"),
    ("x = self._helper()", "_helper calls load_data"),
])
def test_the_check_catches_a_planted_load(tmp_path, body, expected):
    root = tmp_path / "layerinf"
    (root / "stages").mkdir(parents=True)
    (root / "stages" / "fine.py").write_text(
        "class Fine:\n    def compute(self, st, cfg, *, inputs):\n        return inputs['data']\n")
    (root / "stages" / "bad.py").write_text(
        "class Bad:\n"
        "    def compute(self, st, cfg, *, inputs):\n"
        f"        {body}\n"
        "    def _helper(self):\n"
        "        return load_data(self.run_dir)\n")
    found = compute_loads(root)
    assert len(found) >= 1 and all(f.startswith("stages/bad.py") for f in found) and expected in found[0], found


def test_inputs_load_each_declared_stage_once_through_its_load(tmp_path):
    from layerinf.stages.base import STAGES, Inputs, StageBase

    calls = []

    class Upstream(StageBase):
        name = "upstream-for-test"

        def load(self):
            calls.append(self.run_dir.root)
            return {"rows": 3}

    try:
        inputs = Inputs(tmp_path, ("upstream-for-test",))
        assert inputs["upstream-for-test"] == {"rows": 3} and inputs["upstream-for-test"]["rows"] == 3
        assert calls == [tmp_path.resolve()] or calls == [tmp_path]
        assert isinstance(inputs.stage("upstream-for-test"), Upstream)
        with pytest.raises(KeyError, match="not an upstream stage"):
            inputs["grads"]
    finally:
        STAGES.pop("upstream-for-test", None)


def test_every_pipeline_stage_is_provided_by_its_class():
    from layerinf.stages.base import stage_class
    from layerinf.store.layout import DATA, FINETUNE, GRADS, RETRAIN, SCORES, SUSPECTS

    names = {n: stage_class(n).__name__ for n in (DATA, FINETUNE, GRADS, SCORES, SUSPECTS, RETRAIN)}
    assert names == {DATA: "DataStage", FINETUNE: "FinetuneStage", GRADS: "GradsStage", SCORES: "ScoreStage",
                     SUSPECTS: "RankStage", RETRAIN: "RetrainStage"}
    for name in names:  # every declared upstream stage can be handed to compute
        for up in stage_class(name).upstream:
            stage_class(up)
