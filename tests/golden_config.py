"""The demo-sized run whose outputs are pinned bitwise (tests/test_golden.py, tests/golden/make_golden.py)."""

from pathlib import Path

import pandas as pd

GOLDEN = {
    "name": "golden",
    "data": {"source": "demo", "max_train": 160, "max_dev": 80, "noise_rate": 0.2, "seed": 0},
    "model": {"name": "minilm", "max_length": 32},
    "train": {"epochs": 2, "batch_size": 16},
    "score": {"methods": ["tracin", "cosine", "datainf"], "aggregators": ["mean", "rank", "vote"]},
    "filter": {"fraction": 0.3, "baselines": ["none", "random", "oracle"],
               "configs": ["datainf/02-03/vote", "tracin/CL/mean", "cosine/WE/rank"]},
}
PINNED = ("scores/table.csv", "scores/aggregated.parquet", "retrain/results.csv")  # eval/ before the stage was named retrain


def read(path: Path) -> pd.DataFrame:
    """A pinned table, floats read back exactly."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, float_precision="round_trip")
