"""Where the tasks of a run or sweep execute: in this process, in local worker processes, or on Ray.

A *task* is a module-level function and its arguments (a retraining, a shard of gradients, the chain of a
sweep unit up to its scores). Workers compute and *return* results; the driver (this process) is the only
writer of records and tables, so a finished task survives a killed driver and is reused by the rerun.

- ``LocalExecutor(workers=1)``: today's behaviour. One worker runs the tasks one by one in this process (an
  exception propagates at once, as it always did); ``workers > 1`` runs them in a pool of local processes.
- ``RayExecutor(address=None, num_cpus=None, num_gpus=None, max_retries=2)``: Ray tasks. ``address=None``
  starts a local Ray instance sized to the machine (``RAY_ADDRESS`` in the environment is honoured); give
  ``"auto"``, ``"host:port"`` or ``"ray://host:port"`` to join a cluster. ``num_cpus`` / ``num_gpus`` are per
  task (fractions allowed: ``num_gpus=0.25`` puts four retrainings on one GPU); a task whose worker dies is
  retried ``max_retries`` times. See docs/ray.md.

``Executor.run_tasks`` (``run_graph``) drives a set of tasks (a callback may add tasks as results arrive)
with one progress bar, and returns the failures, each naming its task (unit, configuration) and the log the
driver wrote for it. Stages take an executor instance and call ``run_tasks`` with tasks given as dicts (the
fields of ``Task``), so they need not import this module; names (``"local"``, ``"ray"``) are resolved here,
by ``make_executor``.
"""

from __future__ import annotations

import collections
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from layerinf.errors import LayerinfError

RAY_INSTALL = "pip install 'layerinf[ray]'"
EXECUTORS = ("local", "ray")


@dataclass
class Task:
    """One unit of work: ``fn(*args, **kwargs)`` in a worker; ``label`` names it in progress and errors."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = "task"
    key: Any = None  # the caller's handle (which record, which unit): what ``on_result`` receives
    log: Path | None = None  # where the driver writes the traceback if the task fails

    @classmethod
    def coerce(cls, task: "Task | dict") -> "Task":
        return task if isinstance(task, Task) else cls(**task)


@dataclass
class Outcome:
    task: Task
    ok: bool
    value: Any  # the task's result, or (when not ok) a dict: error, traceback, host, pid


@dataclass
class Failure:
    """A task that failed: ``str()`` is one line naming the task, the error and the log."""

    label: str
    error: str
    log: Path | None

    def __str__(self) -> str:
        return f"{self.label}: {self.error}" + (f" (log: {self.log})" if self.log else "")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _invoke(fn: Callable[..., Any], args: tuple, kwargs: dict, threads: int | None) -> dict:
    """Run a task in a worker; errors come back as values (the task's own errors are not retried)."""
    _set_threads(threads)
    try:
        return {"ok": True, "value": fn(*args, **kwargs)}
    except Exception as exc:  # noqa: BLE001 — reported to the driver, which names the task
        error = str(exc) if isinstance(exc, LayerinfError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "error": error, "traceback": traceback.format_exc(), "host": socket.gethostname(), "pid": os.getpid()}


def _pool_init(threads: int | None) -> None:
    _set_threads(threads)


class Executor:
    """Submit tasks, wait for outcomes. ``start`` is idempotent; ``close`` cancels what is still pending."""

    name = "executor"
    in_process = False  # True: tasks run in this process and their exceptions propagate unchanged

    def start(self) -> "Executor":
        return self

    def close(self) -> None:
        pass

    def submit(self, task: Task) -> None:
        raise NotImplementedError

    def pending(self) -> int:
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        """Block until at least one task finished; return every finished one."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Drop the pending tasks (after a driver-side error)."""

    def logs_hint(self) -> str:
        return ""

    def run_tasks(self, tasks: Iterable["Task | dict"], on_result: Callable[[Any, Any], Iterable | None], *,
                  progress: bool = True, desc: str = "tasks", echo: Callable[[str], None] | None = None
                  ) -> list[Failure]:
        """``run_graph`` on this executor (started here if need be; closed by whoever made it)."""
        return run_graph(self, tasks, on_result, progress=progress, desc=desc, echo=echo)

    def __enter__(self) -> "Executor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """``workers=1``: the tasks run one by one in this process; ``workers > 1``: a pool of local processes
    (spawned; each uses ``threads`` torch threads, by default the machine's cores divided among the workers)."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise LayerinfError(f"workers = {workers!r} must be a whole number of at least 1", "use 1 or more")
        self.workers = workers
        self.threads = threads if threads else (None if workers == 1 else max(1, (os.cpu_count() or 1) // workers))
        self.in_process = workers == 1
        self._queue: collections.deque[Task] = collections.deque()
        self._pool = None
        self._futures: dict = {}

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def start(self) -> "LocalExecutor":
        if not self.in_process and self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_pool_init, initargs=(self.threads,))
        return self

    def close(self) -> None:
        self.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, task: Task) -> None:
        if self.in_process:
            self._queue.append(task)
            return
        self.start()
        self._futures[self._pool.submit(_invoke, task.fn, task.args, task.kwargs, self.threads)] = task

    def pending(self) -> int:
        return len(self._queue) + len(self._futures)

    def wait(self) -> list[Outcome]:
        if self.in_process:
            task = self._queue.popleft()
            return [Outcome(task, True, task.fn(*task.args, **task.kwargs))]  # errors propagate, as they always did
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            task = self._futures.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 — a worker process died (BrokenProcessPool) or similar
                res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": "",
                       "host": socket.gethostname(), "pid": None}
            out.append(Outcome(task, res["ok"], res["value"] if res["ok"] else res))
        return out

    def cancel(self) -> None:
        self._queue.clear()
        for fut in list(self._futures):
            fut.cancel()
        self._futures.clear()


def _ray():
    try:
        import ray
    except ImportError:
        raise LayerinfError("the ray executor needs Ray, which is not installed", RAY_INSTALL) from None
    return ray


def _probe(address: str, timeout: float) -> None:
    """Fail fast (one line) when nothing listens at ``host:port`` / ``ray://host:port``."""
    if address == "auto":
        return  # Ray resolves it from the local node's records and fails at once when there is none
    hostport = address.split("://", 1)[1] if "://" in address else address
    hostport = hostport.split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LayerinfError(f"Ray address {address!r} is not host:port, ray://host:port or auto",
                            "give the address `ray start --head` printed, e.g. --ray-address 10.0.0.1:6379")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise LayerinfError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                            "start it (`ray start --head` on the head node) and check the address, or leave the "
                            "address empty to run on a local Ray instance") from None


class RayExecutor(Executor):
    """Tasks on Ray: a local instance sized to the machine (``address=None``), or a cluster.

    ``num_cpus`` / ``num_gpus``: resources of each task (fractions allowed); each task uses ``threads`` torch
    threads (default: its whole CPUs, at least 1). ``max_retries``: how often a task whose worker died is
    retried (its own errors are not retried: they would fail again). ``local_cpus``: CPUs of a local instance
    (default: the machine's). ``runtime_env``: passed to ``ray.init`` (e.g. ``{"py_modules": [...]}`` when
    the cluster's nodes lack layerinf). ``connect_timeout``: seconds to wait for a cluster's address.
    A process already connected to Ray (``ray.init`` called before) keeps that connection, and ``close``
    leaves it open; an instance this executor started is shut down by ``close``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None,
                 max_retries: int = 2, *, local_cpus: int | None = None, threads: int | None = None,
                 runtime_env: dict | None = None, connect_timeout: float = 5.0):
        _ray()  # fail at once, with the install command, when Ray is missing
        for what, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise LayerinfError(f"{what} = {v!r} must be a number ≥ 0 (fractions allowed)", f"e.g. {what}=0.25")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise LayerinfError(f"max_retries = {max_retries!r} must be a whole number ≥ 0", "e.g. max_retries=2")
        self.address = address
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, max_retries
        self.local_cpus = local_cpus
        self.threads = threads or max(1, int(num_cpus or 1))
        self.runtime_env = runtime_env
        self.connect_timeout = connect_timeout
        self.startup_seconds: float | None = None  # how long ray.init took (bench)
        self._owned = False
        self._started = False
        self._remote = None
        self._opts: dict = {}
        self._refs: dict = {}

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus}, "
                f"max_retries={self.max_retries})")

    @property
    def resolved_address(self) -> str | None:
        addr = self.address if self.address is not None else os.environ.get("RAY_ADDRESS") or None
        return None if addr in (None, "", "local") else addr

    def start(self) -> "RayExecutor":
        if self._started:
            return self
        ray = _ray()
        t0 = time.perf_counter()
        if not ray.is_initialized():
            addr = self.resolved_address
            kwargs = {"log_to_driver": False, "runtime_env": self.runtime_env} if self.runtime_env else \
                {"log_to_driver": False}
            if addr is None:
                cpus = self.local_cpus or os.cpu_count() or 1
                env = os.environ.pop("RAY_ADDRESS", None)  # address="local" with RAY_ADDRESS set: stay local
                try:
                    ray.init(address="local", num_cpus=cpus, include_dashboard=False, **kwargs)
                except Exception as exc:  # noqa: BLE001 — any start-up failure, one line
                    raise LayerinfError(f"could not start a local Ray instance ({type(exc).__name__}: {exc})",
                                        "check that `ray start --head` works on this machine, or use the local "
                                        "executor") from None
                finally:
                    if env is not None:
                        os.environ["RAY_ADDRESS"] = env
            else:
                _probe(addr, self.connect_timeout)
                try:
                    ray.init(address=addr, **kwargs)
                except Exception as exc:  # noqa: BLE001 — ConnectionError, RuntimeError, version mismatch…
                    raise LayerinfError(f"cannot connect to the Ray cluster at {addr} ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else ''})",
                                        "start it with `ray start --head`, check the address and that the "
                                        "cluster runs the same Ray and Python versions") from None
            self._owned = True
        self.startup_seconds = time.perf_counter() - t0
        opts = {"max_retries": self.max_retries, "retry_exceptions": False}
        if self.num_cpus is not None:
            opts["num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            opts["num_gpus"] = self.num_gpus
        self._remote, self._opts = ray.remote(_invoke), opts
        self._started = True
        return self

    def close(self) -> None:
        self.cancel()
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False
        self._started = False

    def submit(self, task: Task) -> None:
        self.start()
        remote = self._remote.options(**self._opts, name=_task_name(task.label))
        ref = remote.remote(task.fn, task.args, task.kwargs, self.threads)
        self._refs[ref] = task

    def pending(self) -> int:
        return len(self._refs)

    def wait(self) -> list[Outcome]:
        import ray

        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1)
        more, _ = ray.wait([r for r in refs if r not in set(ready)], num_returns=len(refs) - len(ready), timeout=0) \
            if len(refs) > len(ready) else ([], [])
        out = []
        for ref in list(ready) + list(more):
            task = self._refs.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 — the worker died more than max_retries times, or similar
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                res = {"ok": False, "error": f"{type(exc).__name__}: {first}", "traceback": str(exc), "host": "?",
                       "pid": None}
            out.append(Outcome(task, res["ok"], res["value"] if res["ok"] else res))
        return out

    def cancel(self) -> None:
        if self._refs:
            import ray

            for ref in list(self._refs):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 — already finished or gone
                    pass
            self._refs.clear()

    def logs_hint(self) -> str:
        try:
            import ray

            node = ray._private.worker._global_node  # the driver's node (a local instance: every worker's)
            where = node.get_logs_dir_path() if node is not None else None
        except Exception:  # noqa: BLE001 — private API moved; the generic place
            where = None
        return f"Ray worker logs: {where or '/tmp/ray/session_latest/logs'} on the node that ran it"


def _task_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "=,._-/" else "_" for c in label)[:80] or "task"


def make_executor(executor: "Executor | str | None" = None, *, workers: int = 1, ray_address: str | None = None,
                  num_cpus: float | None = None, num_gpus: float | None = None,
                  max_retries: int = 2) -> tuple[Executor, bool]:
    """An executor from a name (``local`` | ``ray``) or an instance; returns it and whether the caller owns it
    (and so must close it). ``None`` is ``local``."""
    if isinstance(executor, Executor):
        return executor, False
    name = "local" if executor is None else str(executor).lower()
    if name == "local":
        if ray_address is not None:
            raise LayerinfError(f"ray_address {ray_address!r} is given but the executor is local",
                                "add executor='ray' (--executor ray), or drop the address")
        return LocalExecutor(workers=workers), True
    if name == "ray":
        return RayExecutor(address=ray_address, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries), True
    raise LayerinfError(f"unknown executor {executor!r}", f"use one of {', '.join(EXECUTORS)}")


def _write_log(failure_value: dict, task: Task, hint: str) -> Path | None:
    if task.log is None:
        return None
    text = (f"task: {task.label}\nerror: {failure_value.get('error')}\nhost: {failure_value.get('host')}  "
            f"pid: {failure_value.get('pid')}\n{hint}\n\n{failure_value.get('traceback') or ''}\n")
    try:
        from layerinf.store.rundir import atomic_write_bytes

        atomic_write_bytes(task.log, text.encode())
        return task.log
    except Exception:  # noqa: BLE001 — a log that cannot be written must not hide the failure
        return None


def run_graph(executor: Executor, tasks: Iterable["Task | dict"],
              on_result: Callable[[Any, Any], Iterable | None], *, progress: bool = True,
              desc: str = "tasks", echo: Callable[[str], None] | None = None) -> list[Failure]:
    """Run ``tasks`` (``Task`` or dicts of its fields) on ``executor``; ``on_result(task.key, value)`` runs here,
    in the driver, as each result arrives (it writes the result and may return more tasks). One progress bar
    over all tasks, with an ETA.

    Returns the failed tasks (the others still run to the end, so their results are kept); an exception in
    ``on_result`` cancels the pending tasks and propagates. On an in-process executor, a task's exception
    propagates at once.
    """
    from tqdm.auto import tqdm

    tasks = [Task.coerce(t) for t in tasks]
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress, dynamic_ncols=True)
    failures: list[Failure] = []
    try:
        executor.start()
        for t in tasks:
            executor.submit(t)
        while executor.pending():
            for out in executor.wait():
                if out.ok:
                    more = [Task.coerce(t) for t in on_result(out.task.key, out.value) or ()]
                    if more:
                        bar.total += len(more)
                        bar.refresh()
                        for t in more:
                            executor.submit(t)
                else:
                    fail = Failure(out.task.label, out.value.get("error") or "failed",
                                   _write_log(out.value, out.task, executor.logs_hint()))
                    failures.append(fail)
                    if echo:
                        echo(f"failed: {fail}")
                    elif progress:
                        bar.write(f"failed: {fail}")
                bar.update(1)
    except BaseException:
        executor.cancel()
        raise
    finally:
        bar.close()
    return failures


__all__ = ["Task", "Outcome", "Failure", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "run_graph",
           "EXECUTORS", "RAY_INSTALL"]
