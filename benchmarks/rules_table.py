"""Every update rule on one documented batch: the README's "Update rules" table.

The batch: a Pendulum-v1 update problem, seed 0, iteration 3 of the default config (`make_snapshot`),
2,048 samples, a 64×64 Gaussian policy (4,482 parameters), Fisher products on the whole batch. Each rule
runs `update_step` from a fresh cache (its time is its whole cost: gradient, Fisher operator, CG, line
search or PPO's epochs), on one torch thread; times are the median of `--repeats` runs.

    .venv/bin/python benchmarks/rules_table.py [--max-kl 0.01 --damping 0.1] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from _common import machine, median, save, table  # benchmarks/ is on sys.path when a script here runs

from trpo_lab import StepSettings
from trpo_lab.explore import make_snapshot
from trpo_lab.explore.compare import compare_rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-kl", type=float, default=0.01)
    parser.add_argument("--damping", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    snap = make_snapshot("Pendulum-v1", iteration=3, seed=0, batch_steps=2048)
    problem = snap.problem()
    settings = StepSettings(max_kl=args.max_kl, damping=args.damping)
    runs = [compare_rules(problem, settings) for _ in range(args.repeats)]
    rows = []
    for rule, first in runs[0].results.items():
        assert all(torch.equal(r.results[rule].report.theta_new, first.report.theta_new) for r in runs)
        rows.append({"rule": rule, "accepted": first.report.accepted, "mean KL": first.mean_kl,
                     "max per-state KL": first.max_state_kl, "surrogate gain": first.gain,
                     "ms (median)": median([1e3 * r.results[rule].seconds for r in runs]),
                     "reason": first.report.reason})
    print(f"{snap.name}: {problem.batch_size} samples, {problem.num_params} parameters, "
          f"δ = {args.max_kl}, λ = {args.damping}")
    print(table(rows, list(rows[0]), digits=4))
    save("rules_table", rows, {**machine(), "snapshot": snap.name, **vars(args)})


if __name__ == "__main__":
    main()
