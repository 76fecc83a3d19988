"""`trpo-lab`: train and evaluate from the shell.

    trpo-lab train --preset CartPole-v1 --seed 0 --out runs/cartpole [--update npg]
    trpo-lab train --out runs/cartpole --resume [--total-steps 200000]   # the same run, continued
    trpo-lab evaluate runs/cartpole --episodes 10 [--json]
    trpo-lab presets
    trpo-lab sweep --preset CartPole-v1 --grid max_kl=0.003,0.01 damping=0.1,1 --seeds 3 --out runs/sweep

Every `TRPOConfig` field is a flag (`--max-kl 0.02`, `--hidden-sizes 64 64`, `--normalize-obs`);
flags override the preset, the preset overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from .config import PRESETS, VINE_PRESETS, ConfigError, TRPOConfig, field_docs, preset_fields


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    docs = field_docs()
    group = parser.add_argument_group("TRPOConfig fields (default: the preset's, else the config's)")
    for f in dataclasses.fields(TRPOConfig):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict = dict(dest=f.name, default=None, help=f"{docs.get(f.name, '')} "
                            f"[default {getattr(TRPOConfig(), f.name)!r}]")
        options = getattr(f.metadata.get("setting"), "check", None)
        if getattr(options, "options", None):
            kwargs.update(type=str, choices=options.options)
        elif f.metadata.get("choices"):
            kwargs.update(type=str, choices=f.metadata["choices"])
        elif f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type.startswith("tuple"):
            kwargs.update(type=int, nargs="+", metavar="N")
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
        group.add_argument(flag, **kwargs)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trpo-lab", description="Trust Region Policy Optimization lab")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an agent; writes config, metrics and checkpoints")
    t.add_argument("--preset", choices=sorted(PRESETS), help="per-environment hyperparameters")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="directory for the run's files")
    t.add_argument("--metrics", choices=("csv", "jsonl"), default=None,
                   help="per-iteration metrics format [default csv; on --resume, the run's]")
    t.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                   help="iterations between checkpoints [default 10]")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR with its saved config (only --total-steps may change)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(t)
    e = sub.add_parser("evaluate", help="evaluate a trained run with deterministic actions")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=None, help="first episode seed [default seed+10000]")
    e.add_argument("--stochastic", action="store_true", help="sample actions instead")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("presets", help="list the presets")
    s = sub.add_parser("sweep", help="a grid / random sweep over config fields × seeds, resumable",
                       description="Every trial is a run folder in OUT/trials/; OUT/results.csv and "
                       "OUT/results.json hold the table. Run the same command again to resume.")
    base = s.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS), help="base config: a preset")
    base.add_argument("--config", metavar="FILE", help="base config: a config.json (or a run folder)")
    s.add_argument("--out", required=True, metavar="SWEEP_DIR", help="the sweep's folder")
    s.add_argument("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
                   help="values per field, every combination (tuples as 64x64)")
    s.add_argument("--sample", nargs="+", default=[], metavar="FIELD=DIST",
                   help="random values: uniform:LO:HI, loguniform:LO:HI, randint:LO:HI, choice:A,B")
    s.add_argument("--samples", type=int, default=0, metavar="N", help="random settings drawn")
    s.add_argument("--sample-seed", type=int, default=0, help="seed of the random draws [default 0]")
    s.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="seeds per setting: seed, seed+1, …, seed+N−1 [default 1]")
    s.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes, or Ray Tune (pip install 'trpo_lab[ray]') [default local]")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="trials at once [default: one per core]")
    s.add_argument("--address", default=None,
                   help="Ray cluster address (else RAY_ADDRESS, else a local Ray instance)")
    s.add_argument("--asha", action="store_true", help="Ray Tune's ASHA scheduler stops hopeless trials")
    s.add_argument("--asha-grace", type=int, default=2, metavar="N",
                   help="iterations every trial runs before ASHA may stop it [default 2]")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(s)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import CHECKPOINT, CONFIG, RunInterrupted, holds_run, run_training, saved_config

    run_dir = Path(args.out)
    overrides = _overrides(args)
    resume_command = f"trpo-lab train --out {shlex.quote(str(run_dir))} --resume"
    try:
        if args.resume:
            _check_resume_flags(args, overrides, saved_config(run_dir), run_dir)
            if not (run_dir / CHECKPOINT).exists():
                print(f"trpo-lab: {str(run_dir)!r} holds no {CHECKPOINT} yet (the run stopped before its "
                      f"first checkpoint): starting it from iteration 0 with its saved {CONFIG}",
                      file=sys.stderr)
            trainer = run_training(None, run_dir, resume=True, total_steps=overrides.get("total_steps"),
                                   metrics=args.metrics, checkpoint_every=args.checkpoint_every,
                                   progress=not args.no_progress)
        else:
            if holds_run(run_dir):
                raise ConfigError(f"--out {str(run_dir)!r} already holds a run; pass --resume to "
                                  "continue it or choose another directory")
            trainer = run_training(_base_config(args, overrides), run_dir, metrics=args.metrics,
                                   checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    except RunInterrupted as e:
        where = (f"its last checkpoint is {str(run_dir / CHECKPOINT)!r} (iteration {e.checkpoint_iteration})"
                 if e.checkpoint_iteration is not None else
                 "it has no checkpoint yet, so resuming starts it again from iteration 0")
        print(f"trpo-lab: interrupted: training of {str(run_dir)!r} stopped after iteration {e.iteration} "
              f"(the iteration under way was dropped); {where}; resume with: {resume_command}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside an iteration: while loading, preparing or finishing the run
        then = (f"resume with: {resume_command}" if holds_run(run_dir) else
                f"no run was written to {str(run_dir)!r}")
        print(f"trpo-lab: interrupted (no iteration was under way); {then}", file=sys.stderr)
        return 130
    config = trainer.config
    last = trainer.history[-1] if trainer.history else None
    if last is not None:
        print(f"{config.env_id}: {trainer.steps} steps, {trainer.iteration} iterations, "
              f"mean return (last 20 episodes) {last.mean_return:.1f}; run saved in {run_dir}")
    return 0


def _shown_flag(name: str, value: object) -> str:
    """A config flag as the user typed it: --max-kl 0.5, --hidden-sizes 32 32, --no-normalize-obs."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    if isinstance(value, (list, tuple)):
        return f"{flag} {' '.join(map(str, value))}"
    return f"{flag} {value}"


def _check_resume_flags(args: argparse.Namespace, overrides: dict, saved: TRPOConfig, run_dir: Path) -> None:
    """--resume continues the same run: a config flag (or --preset field) that differs from the saved
    config is an error naming it; only --total-steps may change."""
    given = {name: (_shown_flag(name, value), value) for name, value in overrides.items()}
    if args.preset:
        preset = preset_fields(args.preset, overrides.get("sampling"))
        given = {**{name: (f"--preset {args.preset} (its {name} = {value!r})", value)
                    for name, value in preset.items()}, **given}
    given.pop("total_steps", None)
    wanted = saved.replace(**{name: value for name, (_, value) in given.items()})  # validates the values
    conflicts = [f"{what} differs from the run's {name} = {getattr(saved, name)!r}"
                 for name, (what, _) in given.items() if getattr(wanted, name) != getattr(saved, name)]
    if conflicts:
        raise ConfigError(f"--resume continues the run in {str(run_dir)!r} with its saved config, but "
                          f"{'; '.join(conflicts)}. Only --total-steps may change on resume; start a new "
                          "run (another --out) to change settings")


def _overrides(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TRPOConfig)
            if getattr(args, f.name) is not None}


def _base_config(args: argparse.Namespace, overrides: dict) -> TRPOConfig:
    """The preset, else the --config file (a config.json), else the defaults; then the flags."""
    if getattr(args, "config", None):
        path = Path(args.config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"--config {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {str(path)!r} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"--config {str(path)!r} holds a JSON {type(data).__name__}, not an object "
                              "of TRPOConfig fields (like a run's config.json)")
        return TRPOConfig.from_dict({**data, **overrides})
    if args.preset:
        return TRPOConfig.from_preset(args.preset, **overrides)
    return TRPOConfig().replace(**overrides)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepSpec, parse_grid, parse_sample, run_sweep

    overrides = _overrides(args)
    if "seed" in overrides and overrides["seed"] < 0:
        raise ConfigError(f"--seed = {overrides['seed']} is not allowed: must be ≥ 0")
    grid, sample = parse_grid(args.grid), parse_sample(args.sample)
    if args.preset in VINE_PRESETS and "sampling" in {*grid, *sample}:
        # a trial's config is the base with its setting on top, so a vine trial would run with the
        # single-path preset's budget and δ, not the vine preset `train --sampling vine` uses
        raise ConfigError(f"--preset {args.preset} with 'sampling' in --grid/--sample: the vine trials would "
                          f"not get the preset's vine settings ({VINE_PRESETS[args.preset]}); sweep each "
                          f"sampling scheme on its own (--preset {args.preset} --sampling vine for the vine)")
    spec = SweepSpec(base=_base_config(args, overrides), grid=grid, seeds=args.seeds,
                     sample=sample, samples=args.samples, sample_seed=args.sample_seed)
    if not spec.grid and not spec.sample:
        raise ConfigError("trpo-lab sweep: give --grid FIELD=V1,V2 … and/or --sample FIELD=DIST "
                          "--samples N")
    rows = run_sweep(spec, args.out, backend=args.backend, workers=args.workers, address=args.address,
                     asha=args.asha, asha_grace=args.asha_grace, progress=not args.no_progress)
    print(f"{len(rows)} trials; table in {Path(args.out) / 'results.csv'} and results.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_agent
    from .rollout import evaluate_policy

    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed = {args.seed} is not allowed: must be ≥ 0")
    policy, normalizer, config = load_agent(Path(args.run_dir) / "checkpoint.pt")
    seed = config.seed + 10_000 if args.seed is None else args.seed
    returns, lengths = evaluate_policy(policy, config.env_id, args.episodes, seed, normalizer,
                                       deterministic=not args.stochastic)
    result = {"env_id": config.env_id, "episodes": args.episodes, "deterministic": not args.stochastic,
              "mean_return": float(returns.mean()), "std_return": float(returns.std()),
              "returns": returns.tolist(), "mean_length": float(lengths.mean())}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{config.env_id}: return {result['mean_return']:.1f} ± {result['std_return']:.1f} "
              f"over {args.episodes} episodes ({'deterministic' if not args.stochastic else 'sampled'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "presets":
            for name, values in PRESETS.items():
                print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
                if name in VINE_PRESETS:
                    print("  with --sampling vine, on top: "
                          + ", ".join(f"{k}={v}" for k, v in VINE_PRESETS[name].items()))
            return 0
        commands = {"train": cmd_train, "sweep": cmd_sweep, "evaluate": cmd_evaluate}
        return commands[args.command](args)
    except (ConfigError, ValueError, RuntimeError) as e:  # EnvError, CheckpointError included
        print(f"trpo-lab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be written or read: name it and say why
        where = f"{e.filename!r}: " if e.filename else ""
        print(f"trpo-lab: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
