"""Reliability of a run directory under the real console script: kill -9 and resume, corrupted files, two
writers at once, determinism of two identical runs, stale stages, and a full disk.

One tiny experiment (demo data, 60 training examples, 1 epoch, 2 retrainings) is run twice, side by side, by
`layerinf run` (module fixture ``reference``): run A is the reference every other test compares with, run B
checks determinism. The other tests work on copies of A or on their own small run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from layerinf.store.rundir import WALL_CLOCK_FIELDS, RunDir
from helpers import flip_byte, layerinf_env, layerinf_script, one_error_line, run_cli, snapshot

pytestmark = pytest.mark.slow

CONFIG = """\
name: tiny
data: {source: demo, max_train: 60, max_dev: 40, noise_rate: 0.2, seed: 0}
model: {name: minilm, max_length: 24}
train: {epochs: 1, batch_size: 16}
grads: {include_we: false}
score: {methods: [tracin, datainf], groups: ["02-03", CL], aggregators: [mean, vote]}
filter: {fraction: 0.3, configs: [tracin/CL/mean], baselines: [none]}
runtime: {grad_batch_size: 4}
"""
PINNED = ("scores/table.csv", "scores/aggregated.parquet", "retrain/results.csv")  # compared bitwise with run A
STAGES = ("data", "finetune", "grads", "scores", "retrain")


def start(args, log: Path, cwd: Path) -> subprocess.Popen:
    """The console script as a child process (output to ``log``)."""
    with open(log, "ab") as fh:
        return subprocess.Popen([layerinf_script(), *map(str, args)], stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                env=layerinf_env())


def leftovers(run: Path) -> list[str]:
    """Temporary folders/files of a writer (``.*.tmp``, ``.*.old``) anywhere in ``run``."""
    return sorted(p.relative_to(run).as_posix() for p in run.rglob(".*") if p.name.endswith((".tmp", ".old")))


def assert_intact(run: Path) -> None:
    rd = RunDir(run)
    for stage in STAGES:
        if (run / stage).exists():
            rd.require(stage)  # checksums and freshness
    assert not leftovers(run), leftovers(run)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("robust")
    (folder / "tiny.yaml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def reference(workdir) -> tuple[Path, Path]:
    """Runs A and B: the same config, two folders, run at the same time by two processes."""
    procs = [start(["run", workdir / "tiny.yaml", "--out", workdir / name], workdir / f"{name}.log", workdir)
             for name in ("A", "B")]
    for name, proc in zip(("A", "B"), procs):
        assert proc.wait(timeout=900) == 0, (workdir / f"{name}.log").read_text()[-3000:]
    return workdir / "A", workdir / "B"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ kill -9


KILL_POINTS = [  # (what, a file pattern in the run directory that shows the point was reached)
    ("after the data stage", "data/stage.json"),
    ("during fine-tuning", ".finetune.*.tmp"),
    ("during gradient collection", ".grads.*.tmp/**/*.npy"),
    ("during scoring", ".scores.*.tmp/**/*.npy"),
    ("after the first retraining record", "retrain/records/[!.]*.json"),
]


def _kill_when(proc: subprocess.Popen, run: Path, pattern: str, timeout: float = 900) -> bool:
    """SIGKILL ``proc`` as soon as ``pattern`` exists under ``run``; False when it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.exists() and next(iter(run.glob(pattern)), None) is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"timed out waiting for {pattern}")


def test_kill_9_at_five_points_then_resume(workdir, reference):
    """kill -9 at five points of one `layerinf run` (each restart resumes and is killed at the next point);
    the last restart finishes: nothing temporary is left and the results equal the uninterrupted run's."""
    a, _ = reference
    run = workdir / "killed"
    log = workdir / "killed.log"
    for what, pattern in KILL_POINTS:
        proc = start(["run", workdir / "tiny.yaml", "--out", run], log, workdir)
        assert _kill_when(proc, run, pattern), f"the run ended before {what}: {log.read_text()[-2000:]}"
        assert proc.returncode == -signal.SIGKILL
        if pattern.startswith("."):  # killed inside a stage: its temporary folder is left behind
            assert leftovers(run), what
    assert not RunDir(run).is_finished("retrain")
    res = run_cli("run", workdir / "tiny.yaml", "--out", run, cwd=workdir, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_intact(run)
    for rel in PINNED:
        assert (run / rel).read_bytes() == (a / rel).read_bytes(), rel
    for folder in ("retrain", "retrain/records"):
        assert sorted(p.name for p in (run / folder).iterdir()) == sorted(p.name for p in (a / folder).iterdir())


# ------------------------------------------------------------------------------------------------ determinism


def _json_diff(x, y, path: str = "") -> set[str]:
    """Dotted key paths where two JSON values differ."""
    if isinstance(x, dict) and isinstance(y, dict):
        out = set()
        for k in set(x) | set(y):
            out |= _json_diff(x.get(k), y.get(k), f"{path}.{k}" if path else str(k))
        return out
    return set() if x == y else {path}


def _differences(a: Path, b: Path) -> dict[str, set[str]]:
    """File → what differs between two run folders (JSON: key paths; other files: {'bytes'}), with the
    wall-clock fields of stage.json / manifest.json (WALL_CLOCK_FIELDS) left out."""
    files_a, files_b = snapshot(a), snapshot(b)
    assert set(files_a) == set(files_b), sorted(set(files_a) ^ set(files_b))
    out = {}
    for rel in sorted(files_a):
        if files_a[rel] == files_b[rel]:
            continue
        if rel.endswith(".json"):
            keys = _json_diff(json.loads((a / rel).read_text()), json.loads((b / rel).read_text()))
            if rel.endswith("stage.json") or rel == "manifest.json":
                keys = {k for k in keys if k.split(".")[-1] not in WALL_CLOCK_FIELDS}
            if keys:
                out[rel] = keys
        else:
            out[rel] = {"bytes"}
    return out


def test_identical_runs_write_identical_files(reference):
    """Two identical runs write byte-identical files, except the wall-clock fields of stage.json / manifest.json
    (WALL_CLOCK_FIELDS): no time stamps in gradient stores or retraining records."""
    a, b = reference
    assert _differences(a, b) == {}


# ------------------------------------------------------------------------------------------------ corruption


@pytest.mark.parametrize("target", ["grads/train/L03.value.B.npy", "finetune/best.safetensors",
                                    "scores/table.parquet", "retrain/records/*.json"])
def test_run_redoes_a_corrupted_stage(workdir, reference, target):
    """`layerinf run` owns its stages: a flipped byte in one of their files makes it redo that stage (or the
    one retraining), and the results are those of the intact run — never a silent wrong number."""
    a, _ = reference
    run = _copy(a, workdir / f"corrupt-{target.split('/')[0]}")
    path = sorted(run.glob(target))[0]
    flip_byte(path)
    bad = path.read_bytes()
    res = run_cli("run", workdir / "tiny.yaml", "--out", run, cwd=workdir, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert path.read_bytes() != bad  # redone
    assert_intact(run)
    for rel in PINNED:
        assert (run / rel).read_bytes() == (a / rel).read_bytes(), rel
    if target.startswith("retrain"):
        from layerinf.stages.retrain import read_record

        assert all(read_record(p) is not None for p in (run / "retrain" / "records").glob("*.json"))


# ------------------------------------------------------------------------------------------------ two writers


SCORE_ARGS = ["--methods", "tracin,datainf", "--groups", "02-03,CL", "--aggregators", "mean,vote", "--force"]


def test_two_score_writers_started_together(workdir, reference):
    """Two `layerinf score RUN --force` at once: one writes, the other is refused with one line (or, if the
    first was already done, writes after it); the stage is intact afterwards."""
    a, _ = reference
    run = _copy(a, workdir / "two-writers")
    procs = [subprocess.Popen([layerinf_script(), "score", run, *SCORE_ARGS], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=workdir, env=layerinf_env()) for _ in range(2)]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    assert codes in ([0, 0], [0, 2]), outs
    for code, out, err in outs:
        if code == 2:
            line = one_error_line(subprocess.CompletedProcess([], code, out, err))
            assert "another layerinf process" in line and "is writing" in line
    assert_intact(run)
    assert (run / "scores/table.csv").read_bytes() == (a / "scores/table.csv").read_bytes()


def test_a_second_writer_is_refused_while_the_first_writes(workdir, reference):
    """Deterministic overlap: the first writer is paused (SIGSTOP) inside its stage while the second starts."""
    a, _ = reference
    run = _copy(a, workdir / "paused-writer")
    first = start(["score", run, *SCORE_ARGS], workdir / "paused.log", workdir)
    try:
        deadline = time.monotonic() + 600
        while not list(run.glob(".scores.*.tmp")):
            assert first.poll() is None and time.monotonic() < deadline, (workdir / "paused.log").read_text()
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)
        before = snapshot(run)
        second = run_cli("score", run, *SCORE_ARGS, cwd=workdir)
        line = one_error_line(second)
        assert "another layerinf process" in line and f"pid {first.pid}" in line
        assert snapshot(run) == before  # the refused writer touched nothing, not even the other's temp folder
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0, (workdir / "paused.log").read_text()[-3000:]
    assert_intact(run)
    assert (run / "scores/table.csv").read_bytes() == (a / "scores/table.csv").read_bytes()


# ------------------------------------------------------------------------------------------------ staleness


def test_changed_inputs_never_reuse_stale_stages(workdir):
    """Each stage's input changes in turn; every downstream command redoes its stage or refuses with
    'made from an older' — nothing stale is read."""
    import pandas as pd

    import layerinf as li
    from layerinf.data import load_demo
    from layerinf.errors import LayerinfError

    folder = workdir / "stale"
    folder.mkdir()
    data = folder / "data.csv"
    demo = load_demo().train.iloc[:80]
    frame = pd.DataFrame({"text": demo["text"], "label": demo["label"].map({0: "neg", 1: "pos"})})
    frame.to_csv(data, index=False)
    run = folder / "run"
    opts = dict(source=str(data), max_train=30, max_dev=20, progress=False)
    ft = dict(epochs=1, batch_size=16, max_length=12, progress=False)
    li.prepare(run, **opts)
    li.finetune(run, **ft)
    li.grads(run, include_we=False, progress=False)
    li.score(run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    rd = RunDir(run)

    def refused(fn, *args, **kwargs):
        with pytest.raises(LayerinfError, match="made from an older"):
            fn(*args, **kwargs)

    def stamp(stage):
        return rd.stage_info(stage)["started"], rd.fingerprint(stage)

    # 1. new data file content → prepare redoes data; every later command refuses until its upstream is redone
    frame.assign(label=frame["label"].iloc[::-1].to_numpy()).to_csv(data, index=False)
    old = stamp("data")
    li.prepare(run, **opts)
    assert stamp("data") != old
    refused(li.grads, run, include_we=False, progress=False)
    refused(li.score, run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    refused(li.suspects, folder / "sus", run=run, method="tracin", group="CL", progress=False)
    refused(li.report, run)
    line = one_error_line(run_cli("grads", run, cwd=folder))  # the same through the console script
    assert "made from an older 'data' stage" in line and f"layerinf finetune {run}" in line
    # 2. finetune redone on the new data (and then with new options): grads redoes, score refuses until then
    li.finetune(run, **ft)
    refused(li.score, run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    li.grads(run, include_we=False, progress=False)
    li.finetune(run, **{**ft, "lr": 1e-3})
    refused(li.score, run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    old = stamp("grads")
    li.grads(run, include_we=False, progress=False)  # same command, new inputs → redone, not reused
    assert stamp("grads") != old
    # 3. new grads options → score refuses the old scores' inputs and redoes
    li.score(run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    li.grads(run, include_we=False, grad_dtype="bfloat16", progress=False)  # a grads option (batch size: runtime)
    refused(li.report, run)
    old = stamp("scores")
    li.score(run, methods=["tracin"], groups=["CL"], aggregators=["mean"], progress=False)
    assert stamp("scores") != old
    # 4. new score options → scores redone, the report reads the new ones
    li.score(run, methods=["tracin"], groups=["CL"], aggregators=["mean", "vote"], progress=False)
    table = pd.read_csv(run / "scores" / "table.csv")
    assert set(table["aggregator"]) - {"-"} == {"mean", "vote"}  # '-': rows that are not an aggregation
    for stage in ("data", "finetune", "grads", "scores"):
        rd.require(stage)


def test_run_redoes_what_follows_a_changed_option(workdir, reference):
    """`layerinf run` with another runtime option (how fast, not what) reuses every stage; with new grads options
    it redoes grads and every stage after it (retrainings of the same kept subsets are reused); all stages are up
    to date afterwards."""
    a, _ = reference
    run = _copy(a, workdir / "regrads")
    rd = RunDir(run)
    before = {s: rd.fingerprint(s) for s in STAGES}
    res = run_cli("run", workdir / "tiny.yaml", "--out", run, "--set", "runtime.grad_batch_size=8",
                  "--set", "runtime.chunk_size=7", "--set", "runtime.eval_batch_size=5", cwd=workdir, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {s: rd.fingerprint(s) for s in STAGES} == before  # speed knobs are no part of any key
    res = run_cli("run", workdir / "tiny.yaml", "--out", run, "--set", "grads.include_we=true", cwd=workdir,
                  timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {s: rd.fingerprint(s) == before[s] for s in STAGES} == {
        "data": True, "finetune": True, "grads": False, "scores": False, "retrain": False}
    assert rd.stage_info("scores")["inputs"]["grads"] == rd.fingerprint("grads")
    assert rd.stage_info("retrain")["inputs"]["scores"] == rd.fingerprint("scores")
    assert_intact(run)


# ------------------------------------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (skips when mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_grads_is_one_clear_line(workdir, reference, small_disk):
    """`layerinf grads` into a nearly full disk: one 'disk full' line, exit 2, no SIGBUS, no half stage."""
    a, _ = reference
    run = small_disk / "run"
    run.mkdir()
    for name in ("data", "finetune", "manifest.json", "config.json"):
        (shutil.copytree if (a / name).is_dir() else shutil.copy)(a / name, run / name)
    before = snapshot(run)
    res = run_cli("grads", run, "--no-include-we", cwd=workdir)
    assert res.returncode not in (-signal.SIGBUS, 128 + signal.SIGBUS), "SIGBUS: the gradient memmaps are sparse"
    line = one_error_line(res)
    assert "disk full" in line
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == before and not leftovers(run)
    assert not (run / "grads").exists()
