"""The embedded demo set: short English product/movie/book/place reviews, positive vs negative.

Generated for this project by ``scripts/make_demo_data.py`` (templates written here; nothing copied) and
shipped as ``demo.jsonl`` (fields ``text``, ``label`` = negative|positive, ``split`` = train|dev).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from layerinf.errors import LayerinfError
from layerinf.data.raw import RawData, raw_frame

DEMO_FILE = "demo.jsonl"
DEMO_LABELS = ["negative", "positive"]


def demo_rows() -> list[dict]:
    """The raw rows of ``demo.jsonl``."""
    try:
        text = resources.files(__package__).joinpath(DEMO_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise LayerinfError("the embedded demo data (layerinf/data/demo.jsonl) is missing",
                            "reinstall layerinf, or run scripts/make_demo_data.py in a source checkout") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_demo() -> RawData:
    """The demo set as ``RawData`` (its own train/dev parts; ``source_idx`` = line number in the file)."""
    rows = demo_rows()
    lookup = {n: i for i, n in enumerate(DEMO_LABELS)}
    parts = {}
    for split in ("train", "dev"):
        pos = [i for i, r in enumerate(rows) if r["split"] == split]
        parts[split] = raw_frame(np.array(pos, dtype=np.int64), [rows[i]["text"] for i in pos], None,
                              [lookup[rows[i]["label"]] for i in pos])
    return RawData(train=parts["train"], dev=parts["dev"], label_names=list(DEMO_LABELS), task="demo",
                   source="demo", info={"dev_origin": "demo dev part"})
