"""A preset's return over many seeds, and variants of it side by side: how a preset is chosen here.

A preset is judged on seeds that no benchmark target uses (by default 10–29), so that it is not
fitted to the three seeds of benchmarks/compare.py. Each run is worker.py's trpo_lab run (its own
settings, one torch thread, the common evaluation protocol: 10 deterministic episodes), in this
process, `--jobs` at a time. Variants are `name=field:value,field:value` (values parsed as Python
literals), e.g.

    .venv/bin/python benchmarks/preset_seeds.py Pendulum-v1 --variant gamma0.9=gamma:0.9
    .venv/bin/python benchmarks/preset_seeds.py Pendulum-v1 --seeds 0 1 2   # compare.py's seeds
    .venv-bench/bin/python benchmarks/preset_seeds.py Pendulum-v1 --library sb3   # the peer, same seeds

`--library sb3` runs worker.py's Stable-Baselines3-contrib TRPO (rl-baselines3-zoo hyperparameters,
as in compare.py; needs .venv-bench, see setup_peers.sh) on the same seeds and evaluation instead, so
the preset's spread over held-out seeds can be set beside the peer's (no variants then).

Prints per variant: mean, median, worst seed, how many seeds end below `--fail-below`, and the
per-seed returns, and each variant's median wall-clock per run; writes
results/preset_seeds_<env>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import ast
import json
import multiprocessing as mp
import statistics

from _common import RESULTS, machine, one_thread


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    if not name or not spec:
        raise SystemExit(f"--variant {text!r}: write name=field:value[,field:value…]")
    fields = {}
    for item in spec.split(","):
        key, _, value = item.partition(":")
        try:
            fields[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise SystemExit(f"--variant {text!r}: {value!r} is not a Python literal") from None
    return name, fields


def one_run(args: tuple[str, str, int, int, dict]) -> tuple[float, float, float]:
    """(mean evaluation return, wall-clock s, of which value fitting s — NaN for sb3) of one run."""
    library, env_id, seed, steps, overrides = args
    one_thread()
    from worker import RUNNERS

    run = RUNNERS[library](env_id, seed, steps, **overrides)
    return float(sum(run["returns"]) / 10), run["wall_s"], run.get("value_fit_s", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10, 30)))
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--variant", action="append", default=[], help="name=field:value,...")
    parser.add_argument("--no-preset", action="store_true", help="only the variants")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fail-below", type=float, default=-200.0)
    parser.add_argument("--tag", default="", help="suffix of the JSON file's name")
    parser.add_argument("--library", choices=["trpo_lab", "sb3"], default="trpo_lab",
                        help="sb3: the peer's runs on the same seeds (no variants)")
    args = parser.parse_args()
    if args.library == "sb3":
        if args.variant or args.no_preset:
            parser.error("--library sb3 runs the peer's own settings: no --variant, no --no-preset")
        variants = [("sb3-contrib", {})]
        args.tag = "_".join(filter(None, ["sb3", args.tag]))
    else:
        variants = ([] if args.no_preset else [("preset", {})]) + [parse_variant(v) for v in args.variant]
    jobs = [(args.library, args.env, s, args.steps, fields) for _, fields in variants for s in args.seeds]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(one_run, jobs, chunksize=1)
    rows = []
    for k, (name, fields) in enumerate(variants):
        runs = results[k * len(args.seeds):(k + 1) * len(args.seeds)]
        mine = [r for r, _, _ in runs]
        rows.append(dict(variant=name, library=args.library, overrides=fields, seeds=args.seeds,
                         returns=mine,
                         mean=statistics.fmean(mine), median=statistics.median(mine), worst=min(mine),
                         below=sum(r < args.fail_below for r in mine),
                         wall_s=[w for _, w, _ in runs], value_fit_s=[v for _, _, v in runs]))
        print(f"{name:>14}  mean {rows[-1]['mean']:8.1f}  median {rows[-1]['median']:8.1f}  worst "
              f"{rows[-1]['worst']:8.1f}  below {args.fail_below:g}: {rows[-1]['below']}/{len(mine)}  "
              f"{fields}")
        fit = (f", of which value fit {statistics.median(rows[-1]['value_fit_s']):.1f} s"
               if args.library == "trpo_lab" else "")
        print(f"{'':>14}  per run: median wall-clock {statistics.median(rows[-1]['wall_s']):.1f} s{fit} "
              f"(compare wall-clocks only between runs of one invocation)")
        print("                " + " ".join(f"{r:.0f}" for r in mine))
    out = RESULTS / f"preset_seeds_{args.env}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(dict(machine=machine(), steps=args.steps, rows=rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
