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
