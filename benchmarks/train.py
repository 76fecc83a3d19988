"""trpo_lab training alone: wall-clock, steps/s, peak memory, the time split (sampling / policy
step / value fit / the rest) and the deterministic evaluation return, per preset and seed.

Each run is its own process (worker.py), one torch thread. Needs only the lab's own venv:

    .venv/bin/python benchmarks/train.py     # CartPole-v1, Pendulum-v1, Hopper-v5; seeds 0 1 2
    .venv/bin/python benchmarks/train.py --envs CartPole-v1 --seeds 0
"""

from __future__ import annotations

import argparse

from _common import machine, run_isolated, save, table

STEPS = {"CartPole-v1": 100_000, "Pendulum-v1": 100_000, "Hopper-v5": 200_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(STEPS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override every env's step budget")
    args = parser.parse_args()
    rows = []
    for env in args.envs:
        for seed in args.seeds:
            r = run_isolated(["trpo_lab", env, seed, args.steps or STEPS[env]])
            r["other_s"] = r["wall_s"] - r["sample_s"] - r["policy_step_s"] - r["value_fit_s"]
            rows.append(r)
            print(f"{env:12s} seed {seed}: {r['wall_s']:6.2f} s, {r['steps_per_s']:7.0f} steps/s, "
                  f"{r['peak_rss_mb']:5.0f} MB, return {r['eval_mean']:8.1f}", flush=True)
    meta = machine()
    print()
    print(table(rows, ["env", "seed", "steps", "iterations", "wall_s", "steps_per_s", "peak_rss_mb",
                       "sample_s", "policy_step_s", "value_fit_s", "other_s", "eval_mean", "max_step_kl"]))
    print(f"\n{meta['cpu']}, {meta['cores']} cores, load average {meta['load_average']}, "
          f"torch {meta['torch']}, one thread")
    save("train", rows, meta)


if __name__ == "__main__":
    main()
