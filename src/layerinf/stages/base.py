"""What every stage is: a config dataclass, the stages it reads, the files it writes, ``run`` and ``load``.

A stage subclass declares ``name`` (its folder in the run directory, from ``store.layout``), ``upstream``
(the stages it reads) and ``artifacts`` (the files it writes), and implements ``key`` (what makes its
results: its config, resolved), ``compute`` (write the artifacts into the temporary folder) and ``load``
(read them back). The declaration is the wiring: ``run`` hands ``compute`` its ``inputs`` (``Inputs``): each
upstream stage's result, loaded on first use through that stage's own ``load()`` (``inputs[DATA]``), and the
upstream stage itself for its other readers (``inputs.stage(GRADS).num_layers``); no ``compute`` loads another
stage's outputs itself (``tests/test_pipeline.py``). A stage's ``runtime`` (``RuntimeConfig``: batch and chunk
sizes, gradient checkpointing) says how fast to compute, never what: it is no part of the key. ``run`` does the
rest for every stage alike: it verifies each upstream stage (checksums, and that it is up to date with its own
inputs), records the upstream fingerprints as this stage's inputs, reuses a finished stage with the same key and
inputs, takes the run's writer lock, writes atomically and records the manifest. A workflow (``run``, ``sweep``,
``suspects``) is a sequence of stage runs.
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

from layerinf.config import RuntimeConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import DATA, FINETUNE, GRADS, RETRAIN, SCORES, STAGE_FILE, SUSPECTS
from layerinf.store.rundir import RunDir, Stage, redo_command


class StageSummary(dict):
    """A finished stage's summary (``summary`` in its stage.json). A key the stage wrote but the file lacks (edited
    by hand, or cut short) is a broken stage: one line that names the command redoing it, not a KeyError."""

    def __init__(self, run_dir: RunDir, name: str):
        summary = run_dir.stage_info(name).get("summary")
        super().__init__(summary if isinstance(summary, dict) else {})
        self.run_dir, self.name = run_dir, name

    def __missing__(self, key: str):
        raise LayerinfError(f"stage '{self.name}' in {self.run_dir.root} is broken: its {STAGE_FILE} summary has no "
                            f"'{key}'", f"redo it: {redo_command(self.name, self.run_dir.root)}")


STAGES: dict[str, type["StageBase"]] = {}  # stage name → the class that makes and loads it (``provides``)
_MODULES = {DATA: "data", FINETUNE: "finetune", GRADS: "grads", SCORES: "score", SUSPECTS: "rank",
            RETRAIN: "retrain"}  # the module of each stage of the pipeline (imported on first use)


def stage_class(name: str) -> type["StageBase"]:
    """The stage class that provides stage ``name`` (its module imported on first use)."""
    if name not in STAGES and name in _MODULES:
        import importlib

        importlib.import_module(f"layerinf.stages.{_MODULES[name]}")
    if name not in STAGES:
        raise KeyError(f"no stage class provides '{name}'")
    return STAGES[name]


class Inputs:
    """A stage's upstream results, as its ``upstream`` declares them: ``inputs[name]`` is the upstream stage's
    ``load()`` (loaded once, on first use), ``inputs.stage(name)`` the upstream stage (its summary and other
    readers). ``stages`` gives stage objects that need more than a run directory to be made; ``parts`` are the
    inputs a stage reads from other run directories (cross-fitting's folds, the advisor's probes); ``verify``:
    each stage is verified (``RunDir.require``) before it is loaded, for inputs that ``check_upstream`` does not
    verify."""

    def __init__(self, source: RunDir, names: tuple[str, ...], stages: dict[str, "StageBase"] | None = None,
                 parts: "list[Inputs] | tuple[Inputs, ...]" = (), *, verify: bool = False):
        self.source, self.names, self.parts, self.verify = RunDir(source), tuple(names), list(parts), verify
        self._stages, self._loaded = dict(stages or {}), {}

    def stage(self, name: str) -> "StageBase":
        if name not in self.names:
            raise KeyError(f"'{name}' is not an upstream stage here (upstream: {', '.join(self.names) or 'none'})")
        if name not in self._stages:
            if self.verify:
                self.source.require(name)
            self._stages[name] = stage_class(name)(self.source)
        return self._stages[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            self._loaded[name] = self.stage(name).load()
        return self._loaded[name]


class StageBase:
    """One stage of one run directory. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    upstream: ClassVar[tuple[str, ...]] = ()
    artifacts: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, provides: bool = True, **kwargs):
        """A class that sets ``name`` provides that stage to its downstream stages' ``Inputs`` (the first one
        does; ``provides=False``: a variant, e.g. cross-fitting's combined suspects)."""
        super().__init_subclass__(**kwargs)
        if provides and "name" in cls.__dict__:
            STAGES.setdefault(cls.name, cls)

    def __init__(self, run_dir: "str | os.PathLike | RunDir", echo: Callable[[str], None] | None = None, *,
                 source: "str | os.PathLike | RunDir | None" = None, runtime: RuntimeConfig | None = None):
        self.run_dir = RunDir(run_dir)
        self.source = self.run_dir if source is None else RunDir(source)  # where the upstream stages live
        self.echo = echo  # where progress lines go (None: nowhere)
        self.runtime = RuntimeConfig() if runtime is None else runtime  # how fast, not what: not in the key

    # ---------------------------------------------------------------------------------------- to implement

    def key(self, *configs: Any) -> dict:
        """The stage's identity: everything that shapes its results (JSON-serialisable)."""
        raise NotImplementedError

    def compute(self, st: Stage, *configs: Any, inputs: Inputs, progress: bool = True, device: str = "cpu") -> dict:
        """Write the artifacts under ``st.tmp`` from ``inputs`` (the upstream results); return a small summary for
        ``stage.json``."""
        raise NotImplementedError

    def load(self) -> Any:
        """The stage's result, read back from its finished folder."""
        raise NotImplementedError

    def seed(self, *configs: Any) -> int | None:
        return None

    # ---------------------------------------------------------------------------------------- shared

    @property
    def path(self):
        return self.run_dir.stage_path(self.name)

    def inputs(self) -> Inputs:
        """What ``compute`` reads: the upstream stages of ``source`` (override for inputs from elsewhere)."""
        return Inputs(self.source, self.upstream)

    def check_upstream(self) -> dict[str, str]:
        """Verify every upstream stage and return their fingerprints (this stage's inputs).

        Inputs from another run directory (``source=``) are keyed by their folder's path relative to this run's root
        (``RunLayout.input_key``).
        """
        inputs = {}
        for up in self.upstream:
            self.source.require(up)
            inputs[self.run_dir.layout.input_key(self.source.layout, up)] = self.source.fingerprint(up)
        return inputs

    def run(self, *configs: Any, force: bool = False, progress: bool = True, device: str = "cpu") -> Any:
        """Compute the stage (or reuse a finished one with the same key and inputs) and return ``load()``."""
        inputs = self.check_upstream()
        key = self.key(*configs)
        with self.run_dir.stage(self.name, key, seed=self.seed(*configs), force=force, inputs=inputs,
                                device=str(device)) as st:
            if not st.done:
                st.info["summary"] = self.compute(st, *configs, inputs=self.inputs(), progress=progress,
                                                  device=device)
        return self.load()

    def summary(self) -> StageSummary:
        return StageSummary(self.run_dir, self.name)

    def config(self) -> dict:
        return self.run_dir.stage_info(self.name)["config"]

    def files(self) -> dict[str, str]:
        """The finished stage's files and their SHA-256 (``stage.json``)."""
        return self.run_dir.stage_info(self.name)["files"]
