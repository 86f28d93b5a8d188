import json

import pytest

from layerinf.store.rundir import RunDir, atomic_write_json, config_hash, read_json
from layerinf.errors import LayerinfError


def test_stage_is_atomic_and_reused(tmp_path):
    run = RunDir(tmp_path / "run")
    calls = []
    for _ in range(2):
        with run.stage("s", {"a": 1}, seed=3) as st:
            if not st.done:
                calls.append(1)
                st.out("x.json").write_text("{}")
    assert calls == [1]
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["stages"]["s"]["seed"] == 3 and "x.json" in man["stages"]["s"]["files"]
    assert "torch" in man["stages"]["s"]["versions"]


def test_changed_config_or_corrupted_file_redoes_stage(tmp_path):
    run = RunDir(tmp_path)
    with run.stage("s", {"a": 1}) as st:
        st.out("x.txt").write_text("one")
    assert run.is_finished("s", {"a": 1}) and not run.is_finished("s", {"a": 2})
    (tmp_path / "s" / "x.txt").write_text("tampered")
    assert not run.is_finished("s", {"a": 1})
    with run.stage("s", {"a": 1}) as st:
        assert not st.done
        st.out("x.txt").write_text("one")
    assert run.is_finished("s", {"a": 1})


def test_failed_stage_leaves_nothing(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RuntimeError):
        with run.stage("s", {}) as st:
            st.out("half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "s").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_failed_rerun_keeps_previous_finished_copy(tmp_path):
    run = RunDir(tmp_path)
    with run.stage("s", {"v": 1}) as st:
        st.out("x.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with run.stage("s", {"v": 2}) as st:
            raise RuntimeError("boom")
    assert (tmp_path / "s" / "x.txt").read_text() == "v1"


def test_json_helpers(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1})
    assert read_json(tmp_path / "a.json") == {"b": 1}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LayerinfError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(LayerinfError, match="missing file"):
        read_json(tmp_path / "none.json")
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
