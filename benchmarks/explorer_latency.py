"""Explorer latency: from setting a slider's value to the three figures and the HTML being updated.

Headless and on one torch thread: an `Explorer` on a 2,048-sample Pendulum-v1 snapshot with a 64×64
Gaussian policy (4,482 parameters), Fisher-vector products on the whole batch (`--fvp-fraction 1`,
the costliest case; the Pendulum-v1 preset trains with 0.25). Each sample sets one slider's `value`
(the trait the widgets observe) and times until the observer has returned, i.e. `trpo_step` has
re-run and every affected `FigureWidget` has been updated in place and its state serialised for the
frontend (ipywidgets' `DummyComm` stands in for a kernel's comm, so the browser's own redraw is not
included).

Sliders are dragged step by step, like a hand would: δ down and up its whole range (1e-4…1e-1 in
slider steps of 10^0.05), damping once across 1e-4…1 (every value new, so every sample solves CG
again), CG iterations 1…50, then the backtracking sliders. Targets: median ≤ 50 ms (δ), ≤ 250 ms
(damping).

    .venv/bin/python benchmarks/explorer_latency.py            # prints a table, writes JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_model  # benchmarks/ is on sys.path when a script here runs

TARGETS_MS = {"max_kl": 50.0, "damping": 250.0}
RESULTS = Path(__file__).parent / "results" / "explorer_latency.json"


def drag(lo_exp: float, hi_exp: float, step: float = 0.05) -> list[float]:
    """Slider positions 10^e from lo to hi in the slider's own steps."""
    n = round((hi_exp - lo_exp) / step)
    return [float(10 ** (lo_exp + k * step)) for k in range(n + 1)]


def measure(explorer, name: str, values: list) -> list[float]:
    """Milliseconds from `slider.value = v` to the figures being updated, for each new value."""
    slider, times = explorer.sliders[name], []
    for v in values:
        if slider.value == v:
            continue
        start = time.perf_counter()
        slider.value = v
        times.append((time.perf_counter() - start) * 1e3)
    return times


def stats(times: list[float]) -> dict[str, float]:
    a = np.array(times)
    return {"n": len(a), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "max_ms": float(a.max())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-steps", type=int, default=2048)
    parser.add_argument("--fvp-fraction", type=float, default=1.0,
                        help="Fisher subsample of the snapshot (1: all rows, the costliest CG; the "
                             "Pendulum-v1 preset trains with 0.25)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    from trpo_lab.explore import Explorer, make_snapshot

    snapshot = make_snapshot("Pendulum-v1", seed=args.seed, batch_steps=args.batch_steps,
                             hidden_sizes=(64, 64), fvp_fraction=args.fvp_fraction)
    t1 = time.perf_counter()
    torch.set_num_threads(1)
    explorer = Explorer(snapshot)
    t2 = time.perf_counter()
    comm = type(explorer.figures["cg"].comm).__name__

    # warm-up (not timed): one change of each kind
    explorer.set(max_kl=0.012)
    explorer.set(damping=0.09)
    explorer.set(max_kl=0.01, damping=0.1)

    results = {}
    down = list(reversed(drag(-4.0, -1.0)))  # from 1e-1 down to 1e-4, then back up
    results["max_kl"] = measure(explorer, "max_kl", down + down[::-1])
    results["damping"] = measure(explorer, "damping", drag(-4.0, 0.0))
    explorer.set(damping=0.1)
    results["cg_iters"] = measure(explorer, "cg_iters", list(range(1, 51)))
    explorer.set(cg_iters=10)
    results["backtrack_coef"] = measure(explorer, "backtrack_coef",
                                        [round(0.3 + 0.01 * k, 2) for k in range(66)])
    results["backtrack_iters"] = measure(explorer, "backtrack_iters", list(range(1, 31)))
    load_after = os.getloadavg()

    table = {name: stats(times) for name, times in results.items()}
    report = {
        "benchmark": "explorer_latency",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python benchmarks/explorer_latency.py",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "snapshot": {"env_id": "Pendulum-v1", "seed": args.seed, "batch": snapshot.batch_size,
                     "hidden_sizes": [64, 64], "params": snapshot.num_params,
                     "fvp_fraction": args.fvp_fraction},
        "explorer": {"grid_size": explorer.session.grid_size,
                     "curve_points": explorer.session.curve_points, "comm": comm},
        "setup_seconds": {"snapshot": t1 - t0, "explorer": t2 - t1},
        "targets_ms": TARGETS_MS,
        "latency": table,
        "meets_targets": {k: table[k]["median_ms"] <= v for k, v in TARGETS_MS.items()},
    }
    print(f"explorer latency · Pendulum-v1 snapshot, batch {snapshot.batch_size} (Fisher on "
          f"{args.fvp_fraction:g} of it), 64×64 policy ({snapshot.num_params} params), 1 torch "
          f"thread, headless ({comm})")
    print(f"{'slider':<16}{'n':>5}{'median ms':>12}{'p90 ms':>10}{'max ms':>10}{'target':>10}")
    for name, s in table.items():
        target = f"≤ {TARGETS_MS[name]:.0f}" if name in TARGETS_MS else ""
        print(f"{name:<16}{s['n']:>5}{s['median_ms']:>12.1f}{s['p90_ms']:>10.1f}{s['max_ms']:>10.1f}"
              f"{target:>10}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"(other processes on this machine make timings noisy)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
