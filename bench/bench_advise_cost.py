"""What ``layerinf advise`` costs next to ``layerinf suspects`` on the same data (issue #21's target: ≤ 3×).

Both commands run with their defaults on the built-in demo data (``--source demo``), one after the other, each in
a fresh output folder and a subprocess whose wall-clock and CPU time (user + system, children included) are
measured. Prints both and their ratios; appends a row to ``bench/results/advise_cost.csv``. Run it on an otherwise
idle machine: ``.venv/bin/python bench/bench_advise_cost.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one command (its output goes to ``log``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(log, "w") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="demo", help="the data both commands rank (default: the demo data)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "advise_cost")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "advise_cost.csv")
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).parent / "layerinf")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    times = {}
    for verb in ("suspects", "advise"):
        times[verb] = timed([exe, verb, str(args.work / verb), "--source", args.source],
                            args.work / f"{verb}.log")
        print(f"{verb}: {times[verb][0]:.0f} s wall, {times[verb][1]:.0f} CPU-s", flush=True)
    ratio_wall = times["advise"][0] / times["suspects"][0]
    ratio_cpu = times["advise"][1] / times["suspects"][1]
    print(f"advise / suspects: {ratio_wall:.2f}× wall-clock, {ratio_cpu:.2f}× CPU (target ≤ 3×)")
    new = not args.csv.is_file()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["date", "machine", "source", "suspects_wall_s", "suspects_cpu_s", "advise_wall_s",
                        "advise_cpu_s", "ratio_wall", "ratio_cpu"])
        w.writerow([dt.date.today().isoformat(), f"{platform.machine()} {os.cpu_count()} cores", args.source,
                    f"{times['suspects'][0]:.0f}", f"{times['suspects'][1]:.0f}", f"{times['advise'][0]:.0f}",
                    f"{times['advise'][1]:.0f}", f"{ratio_wall:.2f}", f"{ratio_cpu:.2f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
