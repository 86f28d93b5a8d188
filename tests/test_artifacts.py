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
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # the writer lock stays; no stage, no temp folder


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


def test_require_verifies_checksums_and_names_the_file(tmp_path):
    run = RunDir(tmp_path)
    with run.stage("grads", {"a": 1}) as st:
        st.out("train/x.npy").write_bytes(b"0123")
    assert run.require("grads") == tmp_path / "grads"
    (tmp_path / "grads" / "train" / "x.npy").write_bytes(b"0124")  # one flipped byte
    with pytest.raises(LayerinfError, match=r"x.npy is corrupted.*layerinf grads .* --force"):
        run.require("grads")
    (tmp_path / "grads" / "train" / "x.npy").unlink()
    with pytest.raises(LayerinfError, match="x.npy is missing"):
        run.require("grads")


def test_a_stage_made_from_an_older_upstream_is_refused(tmp_path):
    run = RunDir(tmp_path)
    with run.stage("data", {"v": 1}) as st:
        st.out("d.txt").write_text("one")
    with run.stage("finetune", {"m": 1}, inputs={"data": run.fingerprint("data")}) as st:
        st.out("f.txt").write_text("x")
    run.require("finetune")
    with run.stage("data", {"v": 2}) as st:  # data redone with other inputs
        st.out("d.txt").write_text("two")
    with pytest.raises(LayerinfError, match="made from an older 'data' stage"):
        run.require("finetune")
    # and the same stage key with the new input fingerprint is not reused
    assert not run.is_finished("finetune", {"m": 1, "inputs": {"data": run.fingerprint("data")}})


def test_inputs_from_other_runs_are_recorded_relative_to_the_run_root(tmp_path, monkeypatch):
    """A stage that read another run's stage (crossfit's folds inside OUT, `suspects --run` beside it) records it
    relative to its own run root and resolves it against that root: fresh whatever the working directory."""
    out, fold, other = RunDir(tmp_path / "out"), RunDir(tmp_path / "out" / "folds" / "fold-0"), RunDir(tmp_path / "run")
    for run in (fold, other):
        with run.stage("data", {"v": 1}) as st:
            st.out("d.txt").write_text("one")
    inputs = {out.layout.input_key(run.layout, "data"): run.fingerprint("data") for run in (fold, other)}
    assert list(inputs) == ["folds/fold-0/data", "../run/data"]
    with out.stage("suspects", {"k": 1}, inputs=inputs) as st:
        st.out("s.txt").write_text("x")
    for cwd, root in ((tmp_path, "out"), (tmp_path / "out", "."), (tmp_path / "out" / "folds", "..")):
        monkeypatch.chdir(cwd)
        RunDir(root).check_fresh("suspects")
    with fold.stage("data", {"v": 2}) as st:  # a fold redone: the suspects are stale, from anywhere
        st.out("d.txt").write_text("two")
    with pytest.raises(LayerinfError, match="made from an older 'data' stage"):
        RunDir("..").check_fresh("suspects")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerinfError, match="made from an older 'data' stage"):
        RunDir("out").check_fresh("suspects")


def test_a_stage_json_without_its_summary_is_a_broken_stage(tmp_path):
    """A summary key a stage wrote but its stage.json lacks (edited by hand) is one line naming the redo command."""
    from layerinf.stages.grads import GradsStage

    run = RunDir(tmp_path)
    with run.stage("grads", {"g": 1}) as st:
        st.out("train/x.npy").write_bytes(b"0")
        st.info["summary"] = {"num_layers": 6, "checkpoint": "best"}
    assert GradsStage(run).num_layers == 6
    info = read_json(tmp_path / "grads" / "stage.json")
    del info["summary"]
    atomic_write_json(tmp_path / "grads" / "stage.json", info)
    assert GradsStage(run).summary().get("checkpoint", "best") == "best"  # optional keys keep their defaults
    with pytest.raises(LayerinfError) as err:
        GradsStage(run).num_layers
    assert str(err.value) == (f"stage 'grads' in {tmp_path} is broken: its stage.json summary has no 'num_layers' — "
                              f"redo it: `layerinf grads {tmp_path} --force`")


def test_a_second_writer_fails_clearly_while_the_first_holds_the_lock(tmp_path):
    import subprocess
    import sys
    import textwrap

    run = RunDir(tmp_path)
    code = textwrap.dedent(f"""
        from layerinf.store.rundir import RunDir
        from layerinf.errors import LayerinfError
        try:
            with RunDir({str(tmp_path)!r}).locked():
                print("acquired")
        except LayerinfError as exc:
            print(exc)
    """)
    with run.locked():
        with run.locked():  # re-entrant within a process
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "another layerinf process" in out and "wait for it" in out
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "acquired"


def test_temporaries_of_a_killed_writer_are_swept_by_the_next_one(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / ".grads.abc.tmp").mkdir()
    (tmp_path / ".grads.abc.tmp" / "big.npy").write_bytes(b"x" * 100)
    (tmp_path / ".manifest.json.xyz.tmp").write_text("{")
    with run.stage("s", {}) as st:
        st.out("a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "manifest.json", "s"]


def test_guard_removes_what_a_failed_command_created(tmp_path):
    run = RunDir(tmp_path / "new")
    with pytest.raises(LayerinfError):
        with run.guard(), run.locked():
            atomic_write_json(run.layout.config, {})
            raise LayerinfError("bad input", "fix it")
    assert not (tmp_path / "new").exists()
    keep = RunDir(tmp_path / "old")
    with keep.stage("s", {}) as st:
        st.out("a.txt").write_text("a")
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    with pytest.raises(LayerinfError):
        with keep.guard(), keep.locked():
            atomic_write_json(keep.layout.config, {})
            raise LayerinfError("bad input", "fix it")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before


def test_identical_stages_write_identical_bytes_except_wall_clock_fields(tmp_path):
    from layerinf.store.rundir import WALL_CLOCK_FIELDS

    infos = []
    for name in ("a", "b"):
        run = RunDir(tmp_path / name)
        with run.stage("s", {"k": 1}, seed=1) as st:
            st.out("x.txt").write_text("same")
        info = run.stage_info("s")
        infos.append({k: v for k, v in info.items() if k not in WALL_CLOCK_FIELDS})
    assert infos[0] == infos[1]


def test_os_errors_in_a_stage_name_the_file_and_what_failed(tmp_path):
    import errno

    run = RunDir(tmp_path / "run")
    with pytest.raises(LayerinfError, match=r"cannot read /elsewhere/data\.csv \(Permission denied\)"):
        with run.stage("s", {}):
            raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/data.csv")
    with pytest.raises(LayerinfError, match=r"disk full while writing .*x\.npy"):
        with run.stage("s", {}) as st:
            raise OSError(errno.ENOSPC, "No space left on device", str(st.tmp / "x.npy"))
    with pytest.raises(LayerinfError, match=r"cannot write .*x\.npy \(Permission denied\)"):
        with run.stage("s", {}) as st:
            raise PermissionError(errno.EACCES, "Permission denied", str(st.tmp / "x.npy"))
    assert not (tmp_path / "run" / "s").exists()


def test_a_run_directory_inside_a_file_is_refused_before_anything_is_written(tmp_path):
    from layerinf.store.rundir import check_writable_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(LayerinfError, match="f is a file, not a folder"):
        check_writable_dir(tmp_path / "f" / "run")
    with pytest.raises(LayerinfError, match="f is a file, not a run directory"):
        check_writable_dir(tmp_path / "f")
    assert check_writable_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_guard_leaves_what_another_writer_created(tmp_path):
    """A command refused by the lock must not remove the temporary folder of the process that holds it."""
    import subprocess
    import sys
    import textwrap

    run = RunDir(tmp_path / "run")
    with run.stage("s", {}) as st:
        st.out("a.txt").write_text("a")
    code = textwrap.dedent(f"""
        from layerinf.store.rundir import RunDir
        from layerinf.errors import LayerinfError
        run = RunDir({str(tmp_path / "run")!r})
        try:
            with run.guard():
                (run.root / ".s.inprogress.tmp").mkdir()  # appears meanwhile: the lock holder's work in progress
                with run.locked():
                    pass
        except LayerinfError as exc:
            print("refused")
    """)
    with run.locked():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
        assert out.strip() == "refused"
        assert (tmp_path / "run" / ".s.inprogress.tmp").is_dir()


def test_guard_removes_parent_folders_it_created(tmp_path):
    run = RunDir(tmp_path / "runs" / "deep" / "name")
    with pytest.raises(LayerinfError):
        with run.guard(), run.locked():
            raise LayerinfError("bad input", "fix it")
    assert list(tmp_path.iterdir()) == []
