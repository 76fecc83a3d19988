"""One TRPO update on a 2,048-step batch, timed in its two parts:

  * policy step: `trpo_step` (policy gradient, Fisher-vector products, conjugate gradient, line
    search), with a fresh `StepCache` every time (nothing reused between repeats);
  * value fit: `fit_value` with the preset's settings, from the same value network and optimiser
    state every time.

For each preset (64×64 tanh policy and value networks) a trainer first runs two iterations so the
batch comes from a policy that has moved, then one 2,048-step update problem is timed `--repeats`
times. Prints medians and writes results/update.{csv,json}.

    .venv-bench/bin/python benchmarks/update.py
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import machine, median, one_thread, save, table

PRESETS = ["CartPole-v1", "Pendulum-v1", "Hopper-v5"]
TARGET_MS = 50.0


def time_update(preset: str, repeats: int, batch_steps: int = 2048) -> dict:
    from trpo_lab import TRPOConfig
    from trpo_lab.train import Trainer
    from trpo_lab.trust_region import StepCache, update_step
    from trpo_lab.value import fit_value

    config = TRPOConfig.from_preset(preset, batch_steps=batch_steps, hidden_sizes=(64, 64),
                                    vf_hidden_sizes=(64, 64))
    trainer = Trainer(config)
    for _ in range(2):
        trainer.iterate()
    problem, obs, targets, _, _ = trainer.collect_problem()
    value0 = copy.deepcopy(trainer.value.state_dict())
    optim0 = copy.deepcopy(trainer.value_optimizer.state_dict())
    c = config
    policy_ms, value_ms = [], []
    for k in range(repeats + 1):  # the first repeat warms up and is dropped
        start = time.perf_counter()
        report = update_step(problem, c.step_settings(), cache=StepCache())
        middle = time.perf_counter()
        trainer.value.load_state_dict(value0)
        trainer.value_optimizer.load_state_dict(optim0)
        restored = time.perf_counter()
        fit_value(trainer.value, obs, targets, trainer.value_optimizer, c.vf_epochs,
                  c.vf_minibatch_size, torch.Generator().manual_seed(k))
        end = time.perf_counter()
        if k:
            policy_ms.append((middle - start) * 1e3)
            value_ms.append((end - restored) * 1e3)
    total = [p + v for p, v in zip(policy_ms, value_ms)]
    return dict(preset=preset, batch_steps=problem.batch_size, fvp_rows=(
        problem.batch_size if problem.fvp_rows is None else int(problem.fvp_rows.numel())),
        cg_iters=len(report.cg.residual_norms) - 1 if report.cg else 0, trials=len(report.trials),
        vf=f"{c.vf_epochs}x{c.vf_minibatch_size}", policy_step_ms=median(policy_ms),
        value_fit_ms=median(value_ms), update_ms=median(total), target_ms=TARGET_MS,
        meets_target=median(total) <= TARGET_MS, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=PRESETS)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    one_thread()
    rows = [time_update(p, args.repeats) for p in args.presets]
    meta = machine()
    print(table(rows, ["preset", "batch_steps", "fvp_rows", "cg_iters", "trials", "vf", "policy_step_ms",
                       "value_fit_ms", "update_ms", "meets_target"], digits=1))
    print(f"\nmedian of {args.repeats}; target: update (CG + line search + value fit) ≤ {TARGET_MS:.0f} ms."
          f"\n{meta['cpu']}, {meta['cores']} cores, load average {meta['load_average']}")
    save("update", rows, meta)


if __name__ == "__main__":
    main()
