"""Does the model learn each claims sweep's task? One fine-tuning per sweep (seed 0), before hours of retraining.

    python scripts/claims_health.py [--only minilm-mrpc minilm-rte] [--out runs/claims-health]

For each sweep config in examples/claims/, the data stage and the fine-tuning stage run exactly as the sweep's
first unit would (``data.seed`` 0, the config's model and recipe), and the fine-tuning's health check is printed:
influence-set accuracy against the majority class (95 % Wilson interval), whether it learned, and the seconds it
took. A sweep whose model does not learn its task would be left out of the claims (the study excludes such runs),
so its hours are better spent elsewhere. Writes ``OUT/health.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "examples" / "claims"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="sweep names (default: every examples/claims/minilm-*.yaml)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "claims-health")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (as claims_study.py --set), e.g. --set data.max_train=100")
    args = ap.parse_args(argv)
    import os

    os.chdir(ROOT)  # the configs name ../shared/data/glue relative to the repository root
    import pandas as pd
    import yaml

    from layerinf.config import ExperimentConfig
    from layerinf.stages.data import DataStage
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.store.layout import FINETUNE
    from layerinf.store.rundir import RunDir

    names = args.only or sorted(p.stem for p in HERE.glob("minilm-*.yaml"))
    rows = []
    for name in names:
        sets = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        cfg = ExperimentConfig.from_yaml(HERE / f"{name}.yaml").with_overrides({"data.seed": 0, **sets})
        run = RunDir(args.out / name)
        start = time.monotonic()
        with run.guard(), run.locked():
            DataStage(run).run(cfg.data, progress=False)
            FinetuneStage(run, runtime=cfg.runtime).run(cfg.model, cfg.train, progress=False)
        health = run.stage_info(FINETUNE).get("summary", {}).get("health") or {}
        infl = health.get("infl") or {}
        row = {"sweep": name, "model": cfg.model.name, "learned": health.get("learned"),
               "accuracy": infl.get("accuracy"), "majority": infl.get("majority"),
               "ci_low": (infl.get("ci95") or [None])[0], "seconds": round(time.monotonic() - start, 1)}
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "health.csv", index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
