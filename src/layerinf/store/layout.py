"""Every folder and file name of a run directory and a sweep directory, defined once.

Stages write into a temporary copy of their folder, so names come in two forms: relative to a stage folder
(the ``*_FILE`` constants and helpers such as ``split_file``) and absolute (``RunLayout``), which joins them
to the run root. Nothing else in layerinf spells a run-directory name.

::

    RUN/
      manifest.json  .lock  config.json      run-level manifest, the writer lock, the experiment config
      data/          train|infl|test.parquet, meta.json
      finetune/      init|best|last.safetensors, infl_logits.npy, history.parquet|csv
      grads/         train/, infl/ (gradient stores: info.json + one .npy per module)
                     tracin/<checkpoint>/train|infl/ (TracInCP: the stores at grads.tracin_checkpoints)
      scores/        table.parquet|csv, aggregated.parquet, curves|modules|noise_rank.parquet, matrices/<method>/<module>.npy
      score_sets/    <hash>/ (earlier score sets with other options, each a complete scores/ folder with its stage.json)
      retrain/       results.parquet|csv, records/<key>.json (one checksummed record per retraining)
      suspects/      suspects.csv|jsonl, scores.parquet, summary.json, index.html
      report/        tables, figures, index.html
    SWEEP/
      sweep.json  results.parquet|csv  units/<unit>/ (a run directory each)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# run level
MANIFEST = "manifest.json"
STAGE_FILE = "stage.json"
LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"

# stage folders (the stage's name is its folder's name)
DATA = "data"
FINETUNE = "finetune"
GRADS = "grads"
SCORES = "scores"
RETRAIN = "retrain"  # filter & retrain: stage, folder, module (stages/retrain.py) and verb (`layerinf retrain`)
SUSPECTS = "suspects"
EMBED = "embed"  # suspects: the base model's sentence embeddings of the ranked rows
REPORT = "report"
STAGES = (DATA, FINETUNE, GRADS, SCORES, RETRAIN, SUSPECTS, EMBED)
LEGACY_EVAL = "eval"  # the retrain stage's folder before layerinf named it retrain/ (reported, not read)

# data/
SPLITS = ("train", "infl", "test")
DATA_META_FILE = "meta.json"

# finetune/
CHECKPOINTS = ("init", "best", "last")
INFL_LOGITS_FILE = "infl_logits.npy"
TEST_LOGITS_FILE = "test_logits.npy"  # finetune: the test split's logits at the best epoch (out of sample)
HISTORY = "history"

# grads/ (one gradient store per split)
GRAD_SPLITS = ("train", "infl")
TRACIN_DIR = "tracin"  # grads/tracin/<checkpoint>/<split>/: the stores of GradsConfig.tracin_checkpoints

# scores/
SCORE_TABLE = "table"
AGGREGATED_FILE = "aggregated.parquet"
SCORE_FRAMES = ("table", "curves", "modules", "noise_rank", "aggregated")
MATRICES_DIR = "matrices"
SCORE_SETS_DIR = "score_sets"  # score_sets/<config hash>/: a kept score set (a scores/ folder that was current once)

# report/
REPORT_TABLES = "tables"
REPORT_FIGURES = "figures"

# retrain/ and sweeps
RECORDS_DIR = "records"  # retrain/records/<key>.json: one record per retraining, written as each one finishes
RESULTS = "results"
SWEEP_FILE = "sweep.json"
# a study's committed inputs (reporting.claims_inputs): <folder>/inputs.json, results.csv, modules.csv
INPUTS_MANIFEST, INPUTS_RESULTS, INPUTS_MODULES = "inputs.json", "results.csv", "modules.csv"
UNITS_DIR = "units"

# suspects/
SUSPECTS_TABLE = "suspects"
SUSPECT_SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "summary.json"
PRED_PROBS_FILE = "pred_probs.npy"  # suspects (cross-fitted): out-of-sample class probabilities, cleanlab's input
EMBEDDINGS_FILE = "embeddings.npy"  # embed: one L2-normalised sentence embedding per ranked row
PAGE_FILE = "index.html"
ANSWER_FILE = "answer.txt"  # report/: the first screen's sentences, as plain text

# `layerinf advise` OUT/: advise/, noise/, probes/<seed>/, probes/fold<k>/, probes/source/
ADVISE, NOISE, PROBES_DIR, SOURCE_DIR = "advise", "noise", "probes", "source"
CROSSFIT_DIR = "crossfit"  # a run's fold models for out-of-sample probabilities (score.model_baselines)
ADVISE_TABLE, PROBE_TABLE = "table", "probes"
HEATMAP_FILE, RECOMMENDATION_FILE = "heatmap.png", "recommendation.json"
NOISE_PROBS_FILE, NOISE_FOLDS_FILE, NOISE_ESTIMATE_FILE = "probs.npy", "folds.npy", "estimate.json"


def split_file(split: str) -> str:
    """``data/<split>.parquet``, relative to the data folder."""
    return f"{split}.parquet"


def adapter_file(checkpoint: str) -> str:
    """``finetune/<checkpoint>.safetensors``, relative to the finetune folder."""
    return f"{checkpoint}.safetensors"


def tracin_store(checkpoint: str, split: str) -> str:
    """``grads/tracin/<checkpoint>/<split>/`` (a TracInCP checkpoint's gradient store), relative to grads/."""
    return f"{TRACIN_DIR}/{checkpoint}/{split}"


def matrix_file(method: str, module: str) -> str:
    """``scores/matrices/<method>/<module>.npy``, relative to the scores folder."""
    return f"{MATRICES_DIR}/{method}/{module}.npy"


def record_file(key: str) -> str:
    """``retrain/records/<key>.json`` (one retraining's record), relative to the retrain folder."""
    return f"{RECORDS_DIR}/{key}.json"


def table_file(name: str, ext: str = "parquet") -> str:
    """A table written as parquet (and often CSV too): ``<name>.<ext>``."""
    return f"{name}.{ext}"


@dataclass(frozen=True)
class RunLayout:
    """Absolute paths inside one run directory."""

    root: Path

    def __init__(self, root: "str | os.PathLike"):
        object.__setattr__(self, "root", Path(root))

    def stage(self, name: str) -> Path:
        return self.root / name

    def input_key(self, source: "RunLayout", name: str) -> str:
        """How a stage of this run records stage ``name`` of run ``source`` among its inputs: by name when it is
        this run's, else by the stage folder's path relative to this run's root (whatever the working directory)."""
        if source.root.resolve() == self.root.resolve():
            return name
        return os.path.relpath(source.stage(name).resolve(), self.root.resolve())

    def input_stage(self, key: str) -> tuple[Path, str]:
        """The run root and stage name an input key names, resolved against this run's root (older runs recorded
        another run's stage by its absolute path, which resolves to itself)."""
        if os.sep not in key:
            return self.root, key
        folder = self.root / key
        return folder.parent, folder.name

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    def split(self, split: str) -> Path:
        return self.root / DATA / split_file(split)

    def adapter(self, checkpoint: str) -> Path:
        return self.root / FINETUNE / adapter_file(checkpoint)

    def history(self, ext: str = "parquet") -> Path:
        return self.root / FINETUNE / table_file(HISTORY, ext)

    def grads(self, split: str) -> Path:
        return self.root / GRADS / split

    def tracin_grads(self, checkpoint: str, split: str) -> Path:
        return self.root / GRADS / tracin_store(checkpoint, split)

    def scores(self, name: str = SCORE_TABLE, ext: str = "parquet") -> Path:
        return self.root / SCORES / table_file(name, ext)

    @property
    def score_sets(self) -> Path:
        return self.root / SCORE_SETS_DIR

    def score_set(self, key_hash: str) -> Path:
        """``score_sets/<hash>/``: a kept score set, keyed by its stage's config hash."""
        return self.root / SCORE_SETS_DIR / key_hash

    @property
    def records(self) -> Path:
        """``retrain/records/``: the retraining records (kept across reruns; the stage checksums them when done)."""
        return self.root / RETRAIN / RECORDS_DIR

    def record(self, key: str) -> Path:
        return self.root / RETRAIN / record_file(key)

    def results(self, ext: str = "parquet") -> Path:
        return self.root / RETRAIN / table_file(RESULTS, ext)

    @property
    def report(self) -> Path:
        return self.root / REPORT


@dataclass(frozen=True)
class SweepLayout:
    """Absolute paths inside one sweep directory."""

    root: Path

    def __init__(self, root: "str | os.PathLike"):
        object.__setattr__(self, "root", Path(root))

    @property
    def sweep_file(self) -> Path:
        return self.root / SWEEP_FILE

    def unit(self, name: str) -> Path:
        return self.root / UNITS_DIR / name

    @property
    def units(self) -> Path:
        return self.root / UNITS_DIR

    def results(self, ext: str = "parquet") -> Path:
        return self.root / table_file(RESULTS, ext)

    @property
    def report(self) -> Path:
        return self.root / REPORT


def is_sweep(path: "str | os.PathLike") -> bool:
    """A sweep directory has ``sweep.json`` or a ``units/`` folder."""
    p = Path(path)
    return (p / SWEEP_FILE).exists() or (p / UNITS_DIR).is_dir()
