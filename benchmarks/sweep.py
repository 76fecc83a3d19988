"""A sweep's wall-clock on local processes vs the same trials one after another.

Runs `trpo-lab sweep` (the issue-13 acceptance command: CartPole-v1, δ ∈ {0.003, 0.01, 0.03} ×
damping ∈ {0.01, 0.1, 1} × 3 seeds, 50,000 steps each = 27 trials) as separate commands, taking turns:
with `--workers 2` (both cores) and with `--workers 1` (the 27 trials one after another in one
worker process: the same code, so the ratio is the parallel speed-up alone). Both produce the same
table (checked, wall-clock aside). Worker utilisation = Σ trial wall-clock / (sweep wall-clock ×
workers): 1.0 means every worker was busy all the time.

    .venv/bin/python benchmarks/sweep.py                  # one round (about 4 minutes here)
    .venv/bin/python benchmarks/sweep.py --rounds 2    # 2, 1, 1, 2 workers: the pooled ratio
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, save, table

GRID = ["max_kl=0.003,0.01,0.03", "damping=0.01,0.1,1"]


def run(workers: int, steps: int, seeds: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "trpo_lab.cli", "sweep", "--preset", "CartPole-v1", "--grid", *GRID,
           "--seeds", str(seeds), "--total-steps", str(steps), "--workers", str(workers),
           "--out", str(out), "--no-progress"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = json.loads((out / "results.json").read_text())["rows"]
    busy = sum(r["wall_clock_s"] for r in rows)
    return {"workers": workers, "trials": len(rows), "wall_s": wall, "trial_s_sum": busy,
            "utilisation": busy / (wall * workers), "load_before": load,
            "mean_final_return": sum(r["final_return"] for r in rows) / len(rows), "_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trpo_lab_sweep_bench_"))
    results = []
    try:
        for k in range(args.rounds):
            for workers in ((2, 1) if k % 2 == 0 else (1, 2)):  # 2, 1, 1, 2, …: cancels a steady drift
                r = run(workers, args.steps, args.seeds, tmp / f"w{workers}-{k}")
                results.append(r)
                print(f"round {k}, {workers} worker(s): {r['wall_s']:.1f} s, utilisation "
                      f"{r['utilisation']:.2f}, load before {r['load_before']:.1f}", flush=True)
        same = all([{c: v for c, v in row.items() if c != "wall_clock_s"} for row in r["_rows"]]
                   == [{c: v for c, v in row.items() if c != "wall_clock_s"} for row in results[0]["_rows"]]
                   for r in results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [{k: v for k, v in r.items() if k != "_rows"} for r in results]
    par = [r["wall_s"] for r in rows if r["workers"] == 2]
    seq = [r["wall_s"] for r in rows if r["workers"] == 1]
    meta = machine()
    print()
    print(table(rows, ["workers", "trials", "wall_s", "trial_s_sum", "utilisation", "load_before",
                       "mean_final_return"]))
    ratio = sum(par) / sum(seq)
    print(f"\nparallel / one after another: {ratio:.3f}× (target ≤ 0.6×: "
          f"{'PASS' if ratio <= 0.6 else 'FAIL'}); same table both ways (wall-clock aside): {same}")
    print(f"{meta['cpu']}, {meta['cores']} cores, load average {meta['load_average']}")
    save("sweep", rows, {**meta, "ratio": ratio, "same_table": same})


if __name__ == "__main__":
    main()
