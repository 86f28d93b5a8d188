"""Scale-out: the executor abstraction, Ray (local instance), retrainings and sweeps as tasks, faults.

The fast tests need no Ray instance. The slow ones share one local Ray instance with 2 CPUs (module fixture)
and the scored SMALL run (conftest.py's ``scored_small_run``); each copies that run before writing.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from layerinf.config import ExperimentConfig
from layerinf.errors import LayerinfError
from layerinf.store.rundir import RunDir
from layerinf.workflows.sweep import sweep
from layerinf.workflows.executor import LocalExecutor, RayExecutor, Task, make_executor, run_graph

from helpers import SMALL

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _boom(x):
    if x == 2:
        raise ValueError(f"task {x} is broken")
    return x * 10


# ------------------------------------------------------------------------------------------ no Ray instance


def test_asking_for_ray_without_ray_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    for make in (lambda: RayExecutor(), lambda: make_executor("ray"),
                 lambda: sweep(ExperimentConfig.from_dict(SMALL), {"data.seed": [0]}, tmp_path / "sw",
                                  executor="ray", echo=None)):
        with pytest.raises(LayerinfError, match=r"pip install 'layerinf\[ray\]'"):
            make()
    assert not (tmp_path / "sw").exists()
    with pytest.raises(LayerinfError, match="unknown executor 'dask'"):
        make_executor("dask")


def test_an_unreachable_cluster_is_one_quick_error_and_writes_nothing(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected in this process")
    port = _free_port()
    out = tmp_path / "sweep"
    connects = []  # quick: the address is probed first, so Ray never starts its own (retrying) connection
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: connects.append((args, kwargs)))
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(LayerinfError) as err:
            sweep(ExperimentConfig.from_dict(SMALL), {"data.seed": [0, 1]}, out, executor="ray",
                     ray_address=address, echo=None)
        assert connects == [], f"ray.init was called for an unreachable address: {connects}"
        msg = str(err.value)
        assert "\n" not in msg and f"cannot reach the Ray cluster at {address}" in msg and "ray start --head" in msg
        assert not out.exists()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # the environment is honoured
    with pytest.raises(LayerinfError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        RayExecutor().start()
    assert not ray.is_initialized()
    with pytest.raises(LayerinfError, match="num_gpus"):
        RayExecutor(num_gpus=-1)


def test_local_pool_runs_every_task_and_names_the_failed_one_and_its_log(tmp_path):
    got = {}
    tasks = [Task(_boom, (i,), label=f"unit u{i}: retraining tracin/CL/mean", key=i, log=tmp_path / f"u{i}.log")
             for i in range(4)]
    with LocalExecutor(workers=2) as ex:
        failures = ex.run_tasks(tasks, got.__setitem__, progress=False)
    assert got == {0: 0, 1: 10, 3: 30}  # the others ran to the end
    assert len(failures) == 1
    line = str(failures[0])
    assert line.startswith("unit u2: retraining tracin/CL/mean: ValueError: task 2 is broken")
    assert f"(log: {tmp_path / 'u2.log'})" in line
    assert "Traceback" in (tmp_path / "u2.log").read_text()
    # in this process (one worker), an error propagates unchanged, as it always did
    with pytest.raises(ValueError, match="task 2"):
        run_graph(LocalExecutor(), tasks, lambda key, value: None, progress=False)


# ------------------------------------------------------------------------------------------ a local Ray instance


@pytest.fixture(scope="module")
def ray_instance():
    pytest.importorskip("ray")
    ex = RayExecutor(address="local", local_cpus=2).start()  # later RayExecutors in this process reuse it
    yield ex
    ex.close()


def _eval(run, executor=None):
    from layerinf.stages.retrain import RetrainStage

    cfg = ExperimentConfig.from_dict(SMALL)
    return RetrainStage(run, executor=executor).run(cfg.filter, cfg.model, cfg.train, progress=False, device="cpu")


def _records(run: Path) -> dict:
    out = {}
    for p in sorted((run / "retrain" / "records").glob("*.json")):
        out[p.name] = json.loads(p.read_text())["record"]  # no wall-clock fields: identical bytes expected
    return out


@pytest.fixture(scope="module")
def local_reference(scored_small_run, tmp_path_factory):
    """The retrainings with the local executor, one torch thread (as each Ray task of 1 CPU uses)."""
    import torch

    run = Path(tmp_path_factory.mktemp("local")) / "run"
    shutil.copytree(scored_small_run, run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _eval(run)
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.mark.slow
def test_retrainings_on_ray_give_the_same_bytes_as_local(ray_instance, scored_small_run, local_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    results = _eval(run, RayExecutor(num_cpus=1))
    assert len(results) == 4
    assert (run / "retrain" / "results.csv").read_bytes() == (local_reference / "retrain" / "results.csv").read_bytes()
    assert _records(run) == _records(local_reference)  # histories too, float for float
    stamps = {p: p.stat().st_mtime_ns for p in (run / "retrain" / "records").glob("*.json")}
    (run / "retrain" / "results.csv").unlink()  # a broken retrain stage is redone from the records, on Ray, retraining nothing
    _eval(run, make_executor("ray")[0])
    assert {p: p.stat().st_mtime_ns for p in (run / "retrain" / "records").glob("*.json")} == stamps


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_results_are_the_same(ray_instance, scored_small_run, local_reference,
                                                                 tmp_path):
    import psutil

    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    killed, stop = [], threading.Event()

    def killer():  # SIGKILL the first worker process seen running a retraining (a descendant of this process)
        while not stop.is_set() and not killed:
            for proc in psutil.Process().children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if title.startswith("ray::") and "retraining" in title:
                    time.sleep(1.0)  # well into the task
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    break
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        _eval(run, RayExecutor(num_cpus=1, max_retries=2))
    finally:
        stop.set()
        thread.join(5)
    assert killed, "no retraining worker was seen"
    assert (run / "retrain" / "results.csv").read_bytes() == (local_reference / "retrain" / "results.csv").read_bytes()
    assert _records(run) == _records(local_reference)


@pytest.mark.slow
def test_gradient_shards_on_ray_are_the_unsharded_bytes(ray_instance, scored_small_run, tmp_path):
    from layerinf.stages.grads import GradsStage

    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    cfg = ExperimentConfig.from_dict(SMALL)
    train, infl = GradsStage(run, executor=RayExecutor(num_cpus=1)).run(cfg.grads, shards=2, force=True,
                                                                        progress=False)
    ref_train, ref_infl = GradsStage(scored_small_run).load()
    assert len(train.shards) == 2
    for name in ref_train.dense_modules:
        assert ref_train.module(name).tobytes() == train.module(name).tobytes()
        assert ref_infl.module(name).tobytes() == infl.module(name).tobytes()
    assert ref_train.we_all().rows.tobytes() == train.we_all().rows.tobytes()
    assert not list(run.glob(".*.tmp"))


_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from layerinf.config import ExperimentConfig
from layerinf.workflows.sweep import sweep
from helpers import SMALL
sweep(ExperimentConfig.from_dict(SMALL), {grid!r}, {out!r}, executor="ray", num_cpus=1, echo=None, progress=False)
"""
GRID = {"filter.fraction": [0.3, 0.2]}  # two units sharing the scored run's stages: only the retrainings run


@pytest.mark.slow
def test_a_sweep_on_ray_resumes_after_its_driver_is_killed(ray_instance, scored_small_run, local_reference,
                                                           tmp_path):
    import psutil

    out = tmp_path / "sweep"
    for unit in ("fraction=0.3", "fraction=0.2"):  # the units' chains are done (their tasks reuse every stage)
        shutil.copytree(scored_small_run, out / "units" / unit)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER.format(tests=str(REPO / "tests"), grid=GRID, out=str(out))],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    family: set[int] = set()
    try:
        deadline = time.time() + 900  # a safety bound (a retraining takes seconds on an idle machine)
        while time.time() < deadline and proc.poll() is None:
            try:
                family |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            if list(out.glob("units/*/retrain/records/*.json")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the driver ended early: {proc.stderr.read().decode()[-2000:]}"
        assert list(out.glob("units/*/retrain/records/*.json")), "no retraining finished in time"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and what shares its session (GCS, raylet)
        except ProcessLookupError:
            pass
        proc.wait(30)
        for pid in family:  # what it started in sessions of their own (Ray workers)
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
    records = {p: p.stat().st_mtime_ns for p in out.glob("units/*/retrain/records/*.json")}
    finished = {}
    for unit in ("fraction=0.3", "fraction=0.2"):
        rd = RunDir(out / "units" / unit)
        finished[unit] = {s: rd.stage_info(s)["started"] for s in ("data", "finetune", "grads", "scores", "retrain")
                          if rd.is_finished(s, verify=False)}
    assert not all("retrain" in f for f in finished.values()), "the driver was killed too late"
    assert 0 < len(records) < 8

    results = sweep(ExperimentConfig.from_dict(SMALL), GRID, out, executor="ray", num_cpus=1, echo=None,
                    progress=False)
    for unit, stamps in finished.items():  # every finished stage and retraining was reused
        rd = RunDir(out / "units" / unit)
        assert {s: rd.stage_info(s)["started"] for s in stamps} == stamps
    assert all(p.stat().st_mtime_ns == t for p, t in records.items())
    assert sorted(results["unit"].unique()) == ["fraction=0.2", "fraction=0.3"] and len(results) == 2 * 4
    assert len(list(out.glob("units/*/retrain/records/*.json"))) == 8
    assert (out / "units" / "fraction=0.3" / "retrain" / "results.csv").read_bytes() == \
        (local_reference / "retrain" / "results.csv").read_bytes()
    assert (out / "results.csv").exists()
