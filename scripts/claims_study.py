"""The claims study (issue #22), resumable: every sweep through the ordinary commands, then docs/claims.md.

    python scripts/claims_study.py                 # everything (or: make claims)
    python scripts/claims_study.py --only minilm-sst2 --seeds 0   # a part
    python scripts/claims_study.py --md-only       # rewrite docs/claims.md from the finished sweeps

Each run (sweep × seed) is ``layerinf sweep examples/claims/<name>.yaml --grid data.seed=<s> --out
runs/claims/<name>/seed=<s>``. When it has finished, what the claims need from it (one row per configuration,
NDR@30 per module kind, and the time it took) is added to ``docs/claims/inputs/<name>/``, which is committed:
a run found there is not run again, so the study continues across sessions and machines whose ``runs/`` folders
are gone. Within one machine, an interrupted run also reuses its finished stages and retrainings. docs/claims.md
is written from ``docs/claims/inputs/`` alone, with the summed time of the runs kept at its top.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "examples" / "claims"  # the sweep configs (examples/ is src/layerinf/examples)
SWEEPS = ["minilm-sst2", "minilm-mrpc", "minilm-qnli", "minilm-rte", "minilm-mrpc-class-conditional",
          "minilm-sst2-ambiguous", "smollm2-sst2", "smollm2-sft"]
# docs/claims.md: one verdict table per group, the runs of its sweeps pooled
GROUPS = {
    "MiniLM, 20 % uniform flips, four GLUE tasks (stratified subset of configurations)":
        ["minilm-sst2", "minilm-mrpc", "minilm-qnli", "minilm-rte"],
    "MiniLM, 20 % uniform flips, every configuration retrained (SST-2, MRPC)": ["minilm-sst2", "minilm-mrpc"],
    "MiniLM, class-conditional noise (MRPC)": ["minilm-mrpc-class-conditional"],
    "MiniLM, ambiguous noise (SST-2)": ["minilm-sst2-ambiguous"],
    "SmolLM2-135M, SST-2 (detection only)": ["smollm2-sst2"],
    "SmolLM2-135M, instruction data (detection only)": ["smollm2-sft"],
}
NOTES = HERE / "NOTES.md"  # appended to docs/claims.md: what was retrained, what does not carry over
# claim 8: `layerinf advise` on one seed's data, its pick judged on the other seeds' runs (held out). Only sweeps
# that retrain every configuration, so that whatever the advisor picks has an accuracy to compare.
ADVISE_SWEEPS = ("minilm-sst2", "minilm-mrpc")
ADVISE_SEED = "0"


def _layerinf() -> list[str]:
    exe = shutil.which("layerinf", path=str(Path(sys.executable).parent)) or shutil.which("layerinf")
    return [exe] if exe else [sys.executable, "-m", "layerinf.cli"]


def _fmt(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help=f"sweeps to run (default all: {', '.join(SWEEPS)})")
    ap.add_argument("--seeds", default="0,1,2", help="data seeds (the sweep grid data.seed)")
    ap.add_argument("--out", default="runs/claims", help="where the sweeps run (not kept: their results are "
                    "copied to --inputs)")
    ap.add_argument("--inputs", default="docs/claims/inputs", help="the study's result tables, one folder per "
                    "sweep and one run per seed, committed; a seed already there is not run again")
    ap.add_argument("--workers", type=int, default=1, help="layerinf sweep --workers")
    ap.add_argument("--device", default=None, help="layerinf sweep --device (e.g. cuda)")
    ap.add_argument("--md", default="docs/claims.md", help="the generated page")
    ap.add_argument("--md-only", action="store_true", help="only rewrite the page from the result tables")
    ap.add_argument("--no-advise", action="store_true", help=f"skip claim 8's `layerinf advise` run (on seed "
                    f"{ADVISE_SEED}'s data of {', '.join(ADVISE_SWEEPS)}, its pick judged on the other seeds)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field in every sweep (a one-value grid key: it shows in the unit "
                    "names, so a smoke test never mixes with the real runs), e.g. --set data.max_train=100")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # the configs name ../shared/data/glue relative to the repository root
    from layerinf.reporting.claims_inputs import export_study_inputs, inputs_manifest
    from layerinf.workflows.sweep import unit_name

    out, inputs = Path(args.out), Path(args.inputs)
    sets = dict(kv.split("=", 1) for kv in args.set)
    for name in ([] if args.md_only else (args.only or SWEEPS)):
        if name not in SWEEPS:
            ap.error(f"unknown sweep {name}; choose from {', '.join(SWEEPS)}")
        for seed in [x.strip() for x in args.seeds.split(",") if x.strip()]:
            unit = unit_name({"data.seed": seed, **sets})
            if unit in inputs_manifest(inputs / name)["units"]:
                print(f"= {name} {unit}: in {inputs / name}, not run again", flush=True)
                continue
            folder = out / name / unit
            cmd = [*_layerinf(), "sweep", f"examples/claims/{name}.yaml", "--grid", f"data.seed={seed}",
                   "--out", str(folder), "--workers", str(args.workers)]
            cmd += ["--device", args.device] if args.device else []
            for s in args.set:
                cmd += ["--grid", s]
            print("+", " ".join(cmd), flush=True)
            start = time.monotonic()
            rc = subprocess.call(cmd)
            seconds = _add_time(out / "times.json", f"{name}/{unit}", time.monotonic() - start)
            if rc != 0:
                print(f"sweep {name} ({unit}) stopped (exit {rc}); rerun the same command to continue",
                      file=sys.stderr)
                return rc
            export_study_inputs(folder, inputs / name, unit, seconds=round(seconds, 1),
                                command=" ".join(cmd[1:]), workers=args.workers, device=args.device or "cpu")
            print(f"→ {inputs / name} ({unit}, {_fmt(seconds)})", flush=True)
        seeds = [x.strip() for x in args.seeds.split(",") if x.strip()]
        if name in ADVISE_SWEEPS and not args.no_advise and len(seeds) > 1:
            advise_pick(name, out, inputs, seeds, args.set, args.device)
    from layerinf.reporting.claims_page import write_claims_md

    groups = {title: [str(inputs / s) for s in sweeps] for title, sweeps in GROUPS.items()}
    times = {s: sum(u.get("seconds", 0.0) for u in inputs_manifest(inputs / s)["units"].values()) for s in SWEEPS}
    times = {k: v for k, v in times.items() if v}
    total = sum(times.values())
    per = ", ".join(f"{k} {_fmt(v)}" for k, v in times.items())
    elapsed = (f"{_fmt(total)} of wall-clock time on this machine, summed over the runs kept ({per})"
               if times else None)
    notes = NOTES.read_text(encoding="utf-8") if NOTES.is_file() else ""
    md = write_claims_md(groups, args.md, command="python scripts/claims_study.py (make claims)", elapsed=elapsed,
                         notes=notes)
    print(f"wrote {md}")
    return 0


def advise_pick(name: str, out: Path, inputs: Path, seeds: list[str], overrides: list[str],
                device: str | None) -> None:
    """Claim 8: ``layerinf advise`` on seed ``ADVISE_SEED``'s training data as a user would hold them (the sweep's
    noise injected, its mask not shown), with the sweep's model and recipe; the pick is recorded for the other
    seeds' runs in ``inputs/<name>/advise_picks.csv`` (task, seed, config, chosen_on, seconds). Done once."""
    import pandas as pd
    import yaml

    from layerinf.config import ExperimentConfig
    from layerinf.reporting.claims import ADVISE_PICKS
    from layerinf.stages.data import DataStage
    from layerinf.store.rundir import RunDir, atomic_write_bytes
    from layerinf.workflows.advise import recommended_rank_config
    from layerinf.workflows.probe_data import write_source
    from layerinf.workflows.sweep import plan_units

    held = [s for s in seeds if s != ADVISE_SEED]
    sets = {k: [yaml.safe_load(v)] for k, v in (kv.split("=", 1) for kv in overrides)}
    unit, cfg, _ = plan_units(ExperimentConfig.from_yaml(HERE / f"{name}.yaml"),
                              {"data.seed": [int(ADVISE_SEED)], **sets})[0]
    picks_file = inputs / name / ADVISE_PICKS
    old = pd.read_csv(picks_file, dtype=str) if picks_file.is_file() else pd.DataFrame(columns=["chosen_on"])
    if (old["chosen_on"] == unit).any():
        print(f"= {name}: advise's pick (chosen on {unit}) in {picks_file}, not run again", flush=True)
        return
    folder = out / name / f"advise-{unit}"
    user = RunDir(folder / "user")
    with user.locked():  # the sweep's data at this seed: noisy labels as given (the mask stays in this folder)
        data = DataStage(user).run(cfg.data, progress=False)
    train = write_source(data, None, folder / "user" / "train.jsonl")
    dev = write_source(data, None, folder / "user" / "dev.jsonl", "dev")
    cmd = [*_layerinf(), "advise", str(folder / "advise"), "--source", str(train), "--dev-source", str(dev),
           "--text-column", "text", "--label-column", "label", "--model", cfg.model.name,
           "--max-length", str(cfg.model.max_length), "--epochs", str(cfg.train.epochs), "--seed", ADVISE_SEED]
    if data.train["text_pair"].notna().any():
        cmd += ["--text-pair-column", "text_pair"]
    for key in ("lr", "min_steps", "batch_size"):
        value = getattr(cfg.train, key)
        cmd += [f"--{key.replace('_', '-')}", str(value)] if value is not None else []
    cmd += ["--device", device] if device else []
    print("+", " ".join(cmd), flush=True)
    start = time.monotonic()
    if subprocess.call(cmd) != 0:
        print(f"advise for {name} stopped; rerun the same command to continue", file=sys.stderr)
        return
    rc = recommended_rank_config(folder / "advise")
    config = f"{rc['method']}/{rc['group']}/{rc['aggregator']}"
    rows = pd.DataFrame({"task": data.task, "seed": held, "config": config, "chosen_on": unit,
                         "seconds": round(time.monotonic() - start, 1)})
    table = pd.concat([old[old["chosen_on"] != unit], rows], ignore_index=True)
    picks_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(picks_file, table.to_csv(index=False).encode())
    print(f"→ {picks_file} (advise's pick {config}, chosen on {unit}, for seeds {', '.join(held)})", flush=True)


def _add_time(file: Path, key: str, seconds: float) -> float:
    """Add ``seconds`` to ``key`` in the JSON ``file`` (the time of every invocation of a unit, an interrupted
    one included, in this run folder); the new total."""
    times = json.loads(file.read_text()) if file.is_file() else {}
    times[key] = times.get(key, 0.0) + seconds
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(times, indent=1))
    os.replace(tmp, file)
    return times[key]


if __name__ == "__main__":
    sys.exit(main())
