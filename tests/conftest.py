"""Shared fixtures. Nothing here touches the network: the Hub is forced offline for every test.

Plain helpers (run configs, the console script, file snapshots) are in helpers.py; the batch-of-one gradient
reference is in grad_reference.py.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("LAYERINF_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE TSVs in ../shared/data/glue (skips, saying why, only when that folder is absent)."""
    if not (GLUE_DIR / "SST-2" / "train.tsv").exists():
        pytest.skip(f"GLUE data not found at {GLUE_DIR} (../shared/data/glue, or set LAYERINF_GLUE_DIR)")
    return GLUE_DIR


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def scored_small_run(tmp_path_factory) -> Path:
    """helpers.SMALL (MiniLM, fine-tuned) finished up to its scores, without retraining; built once per test
    session and shared: copy it before writing."""
    import layerinf as li
    from helpers import SMALL
    from layerinf.config import ExperimentConfig
    from layerinf.store.rundir import RunDir

    root = Path(tmp_path_factory.getbasetemp()) / "shared-scored-small-run"
    if not RunDir(root).is_finished("scores", verify=False):
        cfg = ExperimentConfig.from_dict({**SMALL, "filter": {**SMALL["filter"], "retrain": False}})
        li.run(cfg, root, progress=False, echo=None)
    return root
