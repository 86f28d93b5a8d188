"""The claims study (issue #22), resumable: every sweep through the ordinary commands, then docs/claims.md.

    python scripts/claims_study.py                 # everything (or: make claims)
    python scripts/claims_study.py --only minilm-sst2 --seeds 0   # a part
    python scripts/claims_study.py --md-only       # rewrite docs/claims.md from the finished sweeps

Each sweep is ``layerinf sweep examples/claims/<name>.yaml --grid data.seed=0,1,2 --out runs/claims/<name>``
followed by ``layerinf report runs/claims/<name>``; a finished stage or retraining is reused, so an interrupted
study continues where it stopped when the same command is run again. The time each sweep took (this
invocation) is added to ``runs/claims/times.json``, and their sum is stated at the top of docs/claims.md.
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
    ap.add_argument("--out", default="runs/claims", help="where the sweeps go")
    ap.add_argument("--workers", type=int, default=1, help="layerinf sweep --workers")
    ap.add_argument("--device", default=None, help="layerinf sweep --device (e.g. cuda)")
    ap.add_argument("--md", default="docs/claims.md", help="the generated page")
    ap.add_argument("--md-only", action="store_true", help="only rewrite the page from finished sweeps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field in every sweep (a one-value grid key: it shows in the unit "
                    "names, so a smoke test never mixes with the real runs), e.g. --set data.max_train=100")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # the configs name ../shared/data/glue relative to the repository root
    out = Path(args.out)
    times_file = out / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    for name in ([] if args.md_only else (args.only or SWEEPS)):
        if name not in SWEEPS:
            ap.error(f"unknown sweep {name}; choose from {', '.join(SWEEPS)}")
        cmd = [*_layerinf(), "sweep", f"examples/claims/{name}.yaml", "--grid", f"data.seed={args.seeds}",
               "--out", str(out / name), "--workers", str(args.workers)]
        cmd += ["--device", args.device] if args.device else []
        for s in args.set:
            cmd += ["--grid", s]
        print("+", " ".join(cmd), flush=True)
        start = time.monotonic()
        rc = subprocess.call(cmd)
        times[name] = times.get(name, 0.0) + time.monotonic() - start  # summed over resumed invocations
        out.mkdir(parents=True, exist_ok=True)
        tmp = times_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(times, indent=1))
        os.replace(tmp, times_file)
        if rc != 0:
            print(f"sweep {name} stopped (exit {rc}); rerun the same command to continue", file=sys.stderr)
            return rc
        subprocess.call([*_layerinf(), "report", str(out / name)])
    from layerinf.reporting.claims_page import write_claims_md

    groups = {title: [str(out / s) for s in sweeps] for title, sweeps in GROUPS.items()}
    total = sum(times.values())
    per = ", ".join(f"{k} {_fmt(v)}" for k, v in times.items())
    elapsed = f"{_fmt(total)} of wall-clock time on this machine ({per})" if times else None
    notes = NOTES.read_text(encoding="utf-8") if NOTES.is_file() else ""
    md = write_claims_md(groups, args.md, command="python scripts/claims_study.py (make claims)", elapsed=elapsed,
                         notes=notes)
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
