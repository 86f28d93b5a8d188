"""Ctrl-C as a terminal sends it (SIGINT to the whole process group): the console script prints one line, exits
with 130, leaves no half-written stage, and the same command run again resumes from the finished stages."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import layerinf as li
from helpers import layerinf_script
from layerinf.cli import EXIT_INTERRUPTED, INTERRUPTED
from layerinf.store.layout import STAGE_FILE, STAGES
from layerinf.store.rundir import RunDir

pytestmark = pytest.mark.slow  # runs the console script

TINY = ["--model", "shape:tiny-bert", "--max-length", "16"]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".old"))] if root.exists() else []


def _as_a_terminal_starts_it() -> None:
    """The child's Ctrl-C disposition as a shell gives it (default), whatever this process has: pytest-xdist's
    workers ignore SIGINT, and an ignored signal stays ignored across exec (the CLI then, rightly, cannot be
    interrupted)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args, ready, tmp_path: Path, debug: bool = False, limit: float = 300) -> tuple[int, str]:
    """Start ``layerinf ARGS`` in a new process group; once ``ready()`` (real work under way), SIGINT the group.
    Returns (exit status, stderr). Output goes to files, so that a full pipe never stalls the child."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LAYERINF_DEBUG": "1" if debug else "0", "COLUMNS": "120"}
    err_file = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen([layerinf_script(), *map(str, args)], stdout=out, stderr=err, env=env, cwd=tmp_path,
                                start_new_session=True, preexec_fn=_as_a_terminal_starts_it)
        try:
            deadline = time.monotonic() + limit
            while not ready():
                assert proc.poll() is None, f"finished (rc {proc.returncode}) before the interrupt: " \
                                            f"{err_file.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "the command never reached the point to interrupt"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 120 s after Ctrl-C; its stderr: {err_file.read_text()[-3000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return rc, err_file.read_text()


def _assert_interrupted(rc: int, err: str, out: Path) -> None:
    assert rc == EXIT_INTERRUPTED, f"exit status {rc}: {err[-2000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1] == INTERRUPTED, err
    assert sum("interrupted" in ln for ln in lines) == 1 and "Traceback" not in err, err
    assert not _temporaries(out), _temporaries(out)  # no half-written stage folder or file left behind
    rd = RunDir(out)
    for name in STAGES:  # a stage folder that exists is a finished, intact one
        if rd.stage_path(name).exists():
            assert rd.is_finished(name), name


def _stage_tmp(root: Path, name: str):
    return lambda: any(root.rglob(f".{name}.*.tmp"))


@pytest.mark.parametrize("debug", [False, True])
def test_ctrl_c_during_finetune(tmp_path, debug):
    run = tmp_path / "run"
    li.prepare(run, source="demo", max_train=40, max_dev=20, progress=False)
    rc, err = _interrupt(["finetune", run, *TINY, "--epochs", "500"], _stage_tmp(run, "finetune"), tmp_path, debug)
    _assert_interrupted(rc, err, run)
    assert RunDir(run).is_finished("data") and not (run / "finetune").exists()


def test_ctrl_c_during_suspects(tmp_path):
    out = tmp_path / "sus"
    args = ["suspects", out, "--source", "demo", "--max-train", "40", "--max-dev", "20", *TINY, "--epochs", "500"]
    rc, err = _interrupt(args, _stage_tmp(out, "finetune"), tmp_path)
    _assert_interrupted(rc, err, out)
    assert not (out / "suspects").exists()


def test_ctrl_c_during_run_then_a_rerun_resumes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\ndata: {source: demo, max_train: 40, max_dev: 20}\n"
                   "model: {name: 'shape:tiny-bert', max_length: 16}\ntrain: {epochs: 3, batch_size: 16}\n"
                   "score: {methods: [tracin], groups: [CL], aggregators: [mean]}\n"
                   "filter: {configs: [tracin/CL/mean], baselines: [none]}\n")
    out = tmp_path / "exp"

    def data_done_and_working():  # the data stage finished and a later stage is being written
        return (out / "data" / STAGE_FILE).is_file() and any(p.is_dir() for p in out.glob(".*.tmp"))

    rc, err = _interrupt(["run", cfg, "--out", out], data_done_and_working, tmp_path)
    _assert_interrupted(rc, err, out)
    assert not (out / "retrain").exists()
    data_record = json.loads((out / "data" / STAGE_FILE).read_text())
    again = subprocess.run([layerinf_script(), "run", str(cfg), "--out", str(out)], capture_output=True, text=True,
                           timeout=600, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "data" / STAGE_FILE).read_text()) == data_record  # reused, not redone
    assert RunDir(out).is_finished("retrain") and not _temporaries(out)


def test_ctrl_c_during_demo(tmp_path):
    out = tmp_path / "demo"
    rc, err = _interrupt(["demo", "--out", out, "--epochs", "1"], _stage_tmp(out, "finetune"), tmp_path)
    _assert_interrupted(rc, err, out)
    assert RunDir(out).is_finished("data") and not (out / "finetune").exists()


def test_a_ctrl_c_lost_in_a_destructor_is_not_printed_but_other_unraisable_errors_are(monkeypatch, capsys):
    """Ctrl-C landing in a ``__del__`` is swallowed by Python ("Exception ignored … Traceback" on stderr); the CLI's
    hook keeps that quiet once the interrupt flag is set (the flag raises it again at the next step), and reports
    every other unraisable error as Python does."""
    import sys

    from layerinf import errors

    def unraisable(exc):  # Python's own hook argument: recorded from a destructor that raises ``exc``
        seen = []

        class Raises:
            def __del__(self):
                raise exc

        monkeypatch.setattr(sys, "unraisablehook", seen.append)
        Raises()  # collected at once: its error is "unraisable"
        monkeypatch.undo()
        return seen[0]

    lost, real = unraisable(KeyboardInterrupt()), unraisable(ValueError("a real one"))
    monkeypatch.setattr(errors, "_interrupt_requested", True)
    errors.quiet_lost_interrupt(lost)
    assert capsys.readouterr().err == ""
    errors.quiet_lost_interrupt(real)
    assert "ValueError: a real one" in capsys.readouterr().err
    monkeypatch.setattr(errors, "_interrupt_requested", False)  # no Ctrl-C asked for: reported as usual
    errors.quiet_lost_interrupt(lost)
    assert "KeyboardInterrupt" in capsys.readouterr().err
