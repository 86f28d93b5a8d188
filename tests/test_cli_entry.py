"""The installed `layerinf` console script, run as a user runs it (a subprocess): `--help` of every command
works, and usage errors are one line on stderr, exit status 2, no traceback, nothing written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["prepare", "finetune", "grads", "score", "retrain", "run", "sweep", "report", "suspects", "advise",
            "demo"]


def _script() -> str:
    here = Path(sys.executable).parent / "layerinf"
    found = str(here) if here.exists() else shutil.which("layerinf")
    if not found:
        pytest.skip("the layerinf console script is not installed (pip install -e .)")
    return found


def layerinf(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LAYERINF_DEBUG": "0", "COLUMNS": "100"}
    return subprocess.run([_script(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_top_level_help_lists_every_command():
    res = layerinf("--help")
    assert res.returncode == 0, res.stderr
    for command in COMMANDS:
        assert command in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    res = layerinf(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "Usage" in res.stdout
    assert "--help" in res.stdout


def test_prepare_help_shows_bracketed_text_verbatim():
    res = layerinf("prepare", "--help")
    assert "hf:NAME[/CONFIG]" in res.stdout


def _one_error_line(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("args, match", [
    (["prepare", "{run}", "--no-such-option"], "no such option"),
    (["prepare", "{run}", "--noise-rate", "abc"], "noise-rate.*number"),
    (["prepare", "{run}", "--noise-rate", "1.5"], "noise_rate"),
    (["prepare", "{run}", "--max-train", "0"], "max_train"),
    (["prepare"], "missing argument"),
    (["prepare", "{run}", "--source", "/nonexistent/file.csv"], "does not exist|not found|no such"),
    (["finetune", "{run}"], "has not finished"),
    (["finetune", "{run}", "--epochs", "0"], "epochs"),
    (["finetune", "{run}", "--precision", "fp64"], "precision"),
    (["grads", "{run}", "--checkpoint", "final"], "checkpoint"),
    (["score", "{run}", "--vote-kappa", "2"], "vote_kappa"),
    (["score", "{run}", "--methods", "tracn"], "did you mean 'tracin'"),
    (["score", "{run}"], "has not finished"),
    (["run", "{tmp}/none.yaml"], "does not exist"),
    (["run", "{yaml}", "--set", "train.epochs=abc"], "train.epochs must be a whole number"),
    (["run", "{yaml}", "--set", "nope.x=1"], "unknown config field"),
    (["sweep", "{yaml}"], "missing option"),
    (["report", "{run}"], "no results|does not exist|has not finished"),
    (["suspects", "{run}"], "exactly one of"),
    (["suspects", "{run}", "--source", "demo", "--top", "0"], "top"),
    (["nonsense"], "no such command"),
])
def test_usage_errors_are_one_line_and_write_nothing(tmp_path, args, match):
    import re

    yaml = tmp_path / "c.yaml"
    yaml.write_text("name: c\ndata: {source: demo, max_train: 40, max_dev: 20}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(run=tmp_path / "run", tmp=tmp_path, yaml=yaml) for a in args]
    line = _one_error_line(layerinf(*args, cwd=tmp_path))
    assert re.search(match, line, flags=re.I), line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_debug_shows_the_traceback(tmp_path):
    res = layerinf("score", tmp_path / "run", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr
