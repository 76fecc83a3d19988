"""trpo_lab against Stable-Baselines3-contrib TRPO, tianshou TRPO and the simulation floor, side by side.

Every run is its own process (`worker.py`), with one torch thread, and the libraries take turns
within each seed (floor, trpo_lab, sb3, tianshou, then the next seed: A B C A B C ...), so a change
in machine load hits all of them alike. For every run: wall-clock of training, steps/s, peak memory
(`os.wait4` of that process), deterministic evaluation return (10 episodes, the same protocol for
every library, `_common.evaluate`); for trpo_lab also the time split sampling / policy step / value fit.
Then the ratios and the issue's targets, and the one-update benchmark (update.py).

Peers need the benchmark extra (benchmarks/requirements-peers.txt), installed by
benchmarks/setup_peers.sh into .venv-bench:

    bash benchmarks/setup_peers.sh && .venv-bench/bin/python benchmarks/compare.py
    .venv-bench/bin/python benchmarks/compare.py --envs CartPole-v1 --seeds 0   # one quick row
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _common import HERE, RESULTS, machine, mean, run_isolated, save, table

STEPS = {"CartPole-v1": 100_000, "Pendulum-v1": 100_000, "Hopper-v5": 200_000}
LIBS = ["floor", "trpo_lab", "sb3", "tianshou"]

# The issue's targets: trpo_lab wall-clock ≤ ratio × peer's (or × the floor's), return ≥ peers'.
WALL_TARGETS = {
    "CartPole-v1": {"sb3": 0.2, "tianshou": 0.4},
    "Pendulum-v1": {"sb3": 0.2, "tianshou": 0.4},
    "Hopper-v5": {"sb3": 0.4, "floor": 1.3},
}
RETURN_TARGETS = {"Hopper-v5": 3000.0}
EVERY_SEED = {"CartPole-v1": 475.0}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for env in dict.fromkeys(r["env"] for r in runs):
        for lib in dict.fromkeys(r["lib"] for r in runs if r["env"] == env):
            mine = [r for r in runs if r["env"] == env and r["lib"] == lib]
            row = dict(env=env, lib=lib, seeds=len(mine), steps=mean([r["steps"] for r in mine]),
                       wall_s=mean([r["wall_s"] for r in mine]),
                       steps_per_s=mean([r["steps_per_s"] for r in mine]),
                       peak_mb=max(r["peak_rss_mb"] for r in mine))
            if lib != "floor":
                per_seed = [r["eval_mean"] for r in mine]
                row.update(return_mean=mean(per_seed), return_min_seed=min(per_seed),
                           returns_by_seed=" / ".join(f"{x:.0f}" for x in per_seed))
            if lib == "trpo_lab":
                row.update(sample_s=mean([r["sample_s"] for r in mine]),
                           policy_step_s=mean([r["policy_step_s"] for r in mine]),
                           value_fit_s=mean([r["value_fit_s"] for r in mine]),
                           max_step_kl=max(r["max_step_kl"] for r in mine), max_kl=mine[0]["max_kl"])
            rows.append(row)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """trpo_lab's wall-clock as a fraction of each other entry's (mean over seeds of each)."""
    out = []
    for env in dict.fromkeys(r["env"] for r in rows):
        by_lib = {r["lib"]: r for r in rows if r["env"] == env}
        if "trpo_lab" not in by_lib:
            continue
        ours = by_lib["trpo_lab"]
        for lib, other in by_lib.items():
            if lib == "trpo_lab":
                continue
            target = WALL_TARGETS.get(env, {}).get(lib)
            ratio = ours["wall_s"] / other["wall_s"]
            out.append(dict(env=env, versus=lib, ratio=ratio, target=target if target else float("nan"),
                            met="-" if target is None else ("yes" if ratio <= target else "NO")))
    return out


def checks(rows: list[dict], runs: list[dict]) -> list[str]:
    """One line per target of the issue: what was measured and whether it holds."""
    lines = []
    for r in ratios(rows):
        if r["met"] != "-":
            lines.append(f"[{'PASS' if r['met'] == 'yes' else 'FAIL'}] {r['env']}: wall-clock "
                         f"{r['ratio']:.3f}× {r['versus']} (target ≤ {r['target']}×)")
    for env in dict.fromkeys(r["env"] for r in rows):
        by_lib = {r["lib"]: r for r in rows if r["env"] == env}
        ours = by_lib.get("trpo_lab")
        if ours is None:
            continue
        if env in RETURN_TARGETS:
            ok = ours["return_mean"] >= RETURN_TARGETS[env]
            lines.append(f"[{'PASS' if ok else 'FAIL'}] {env}: mean return {ours['return_mean']:.1f} "
                         f"(target ≥ {RETURN_TARGETS[env]:.0f})")
        else:
            for lib in ("sb3", "tianshou"):
                if lib in by_lib:
                    ok = ours["return_mean"] >= by_lib[lib]["return_mean"]
                    lines.append(f"[{'PASS' if ok else 'FAIL'}] {env}: mean return {ours['return_mean']:.1f}"
                                 f" vs {lib} {by_lib[lib]['return_mean']:.1f} (target ≥ {lib}'s)")
        if env in EVERY_SEED:
            ok = ours["return_min_seed"] >= EVERY_SEED[env]
            lines.append(f"[{'PASS' if ok else 'FAIL'}] {env}: every seed ≥ {EVERY_SEED[env]:.0f} "
                         f"(seeds: {ours['returns_by_seed']})")
        if "sb3" in by_lib:
            ok = ours["peak_mb"] <= by_lib["sb3"]["peak_mb"]
            lines.append(f"[{'PASS' if ok else 'FAIL'}] {env}: peak memory {ours['peak_mb']:.0f} MB vs sb3 "
                         f"{by_lib['sb3']['peak_mb']:.0f} MB (target ≤ sb3's)")
        ok = ours["max_step_kl"] <= ours["max_kl"]
        lines.append(f"[{'PASS' if ok else 'FAIL'}] {env}: every accepted step KL ≤ δ "
                     f"(largest {ours['max_step_kl']:.4f}, δ = {ours['max_kl']})")
    return lines


def markdown(rows: list[dict], lines: list[str], meta: dict) -> str:
    """The report as markdown (results/compare.md), for README.md and benchmarks/RESULTS.md."""
    out = [f"Measured {meta['date'][:10]} on {meta['cpu']} ({meta['cores']} cores, load average "
           f"{meta['load_average_before'][0]:.1f} before / {meta['load_average'][0]:.1f} after), "
           f"Python {meta['python']}, torch {meta['torch']} (one thread), gymnasium {meta['gymnasium']}, "
           f"mujoco {meta['mujoco']}, sb3-contrib {meta['sb3_contrib']}, tianshou {meta['tianshou']}. "
           f"Means over seeds; return = deterministic, 10 episodes per seed.", ""]
    out.append(table(rows, ["env", "lib", "seeds", "steps", "wall_s", "steps_per_s", "peak_mb",
                            "return_mean", "returns_by_seed", "sample_s", "policy_step_s", "value_fit_s"]))
    out += ["", table(ratios(rows), ["env", "versus", "ratio", "target", "met"], digits=3), ""]
    out += [f"- {line}" for line in lines]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(STEPS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--libs", nargs="*", default=LIBS, choices=LIBS)
    parser.add_argument("--steps", type=int, default=None, help="override every env's step budget")
    parser.add_argument("--no-update", action="store_true", help="skip the one-update benchmark")
    args = parser.parse_args()
    meta_before = machine()
    runs = []
    for env in args.envs:
        steps = args.steps or STEPS[env]
        for seed in args.seeds:
            for lib in args.libs:
                result = run_isolated([lib, env, seed, steps])
                runs.append(result)
                extra = "" if lib == "floor" else f"  return {result['eval_mean']:9.1f}"
                print(f"{env:12s} seed {seed}  {lib:9s} {result['wall_s']:7.2f} s "
                      f"{result['steps_per_s']:8.0f} steps/s {result['peak_rss_mb']:6.0f} MB{extra}",
                      flush=True)
    rows = summarise(runs)
    meta = machine()
    meta["load_average_before"] = meta_before["load_average"]
    meta["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print()
    print(table(rows, ["env", "lib", "seeds", "steps", "wall_s", "steps_per_s", "peak_mb", "return_mean",
                       "returns_by_seed", "sample_s", "policy_step_s", "value_fit_s"]))
    print()
    print(table(ratios(rows), ["env", "versus", "ratio", "target", "met"], digits=3))
    lines = checks(rows, runs)
    print()
    print("\n".join(lines))
    print(f"\n{meta['cpu']}, {meta['cores']} cores; load average before {meta_before['load_average']}, "
          f"after {meta['load_average']}; torch {meta['torch']}, one thread")
    save("compare_runs", runs, meta)
    save("compare", rows, {**meta, "ratios": ratios(rows), "checks": lines})
    (RESULTS / "compare.md").write_text(markdown(rows, lines, meta))
    if not args.no_update:
        print()
        subprocess.run([sys.executable, str(HERE / "update.py")], check=True)
    print(f"\nresults written under {RESULTS}")


if __name__ == "__main__":
    main()
