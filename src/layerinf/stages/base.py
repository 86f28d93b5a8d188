"""What every stage is: a config dataclass, the stages it reads, the files it writes, ``run`` and ``load``.

A stage subclass declares ``name`` (its folder in the run directory, from ``store.layout``), ``upstream``
(the stages it reads) and ``artifacts`` (the files it writes), and implements ``key`` (what makes its
results: its config, resolved), ``compute`` (write the artifacts into the temporary folder) and ``load``
(read them back). A stage's ``runtime`` (``RuntimeConfig``: batch and chunk sizes, gradient checkpointing) says
how fast to compute, never what: it is no part of the key. ``run`` does the rest for every stage alike: it
verifies each upstream stage (checksums, and that it is up to date with its own inputs), records the upstream
fingerprints as this stage's inputs, reuses a finished stage with the same key and inputs, takes the run's
writer lock, writes atomically and records the manifest. A workflow (``run``, ``sweep``, ``suspects``) is a sequence of stage runs.
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

from layerinf.config import RuntimeConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import STAGE_FILE
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


class StageBase:
    """One stage of one run directory. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    upstream: ClassVar[tuple[str, ...]] = ()
    artifacts: ClassVar[tuple[str, ...]] = ()

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

    def compute(self, st: Stage, *configs: Any, progress: bool = True, device: str = "cpu") -> dict:
        """Write the artifacts under ``st.tmp``; return a small summary for ``stage.json``."""
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
                st.info["summary"] = self.compute(st, *configs, progress=progress, device=device)
        return self.load()

    def summary(self) -> StageSummary:
        return StageSummary(self.run_dir, self.name)

    def config(self) -> dict:
        return self.run_dir.stage_info(self.name)["config"]
