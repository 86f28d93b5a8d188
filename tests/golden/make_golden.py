"""Regenerate the golden outputs pinned by tests/test_golden.py (only when a change of results is intended,
and say so in the commit and the docs).

    .venv/bin/python tests/golden/make_golden.py

Copies the demo-sized run's ``scores/table.csv``, ``scores/aggregated.parquet`` and ``retrain/results.csv``
into tests/golden/demo_small/.
"""

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from golden_config import GOLDEN, PINNED  # noqa: E402

if __name__ == "__main__":
    import layerinf as li

    with tempfile.TemporaryDirectory() as tmp:
        li.run(li.ExperimentConfig.from_dict(GOLDEN), Path(tmp) / "run", progress=False, echo=None)
        out = HERE / "demo_small"
        out.mkdir(exist_ok=True)
        for rel in PINNED:
            shutil.copyfile(Path(tmp) / "run" / rel, out / Path(rel).name)
            print("pinned", rel)
