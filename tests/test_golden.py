"""Refactors keep results: the demo-sized run's score table, aggregated scores and retraining results are
pinned bitwise (tests/golden/demo_small, written by tests/golden/make_golden.py from the code before the
stage-spine refactor). A change here must be intended, regenerated with that script and documented."""

from pathlib import Path

import pandas as pd
import pytest

import layerinf as li
from golden_config import GOLDEN, PINNED, read

GOLDEN_DIR = Path(__file__).resolve().parent / "golden" / "demo_small"


@pytest.fixture
def two_torch_threads():
    """The pinned outputs were made with 2 torch threads; a float32 sum's rounding depends on how the threads split
    it, so the comparison runs with 2 whatever the test process has (``make test`` gives each xdist worker 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_demo_sized_run_is_bitwise_identical_to_the_pinned_outputs(tmp_path, two_torch_threads):
    run = tmp_path / "run"
    li.run(li.ExperimentConfig.from_dict(GOLDEN), run, progress=False, echo=None)
    for rel in PINNED:
        got, want = read(run / rel), read(GOLDEN_DIR / Path(rel).name)
        assert list(got.columns) == list(want.columns), rel
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=rel)
