"""`trpo-lab`: train and evaluate from the shell.

    trpo-lab train --preset CartPole-v1 --seed 0 --out runs/cartpole [--update npg]
    trpo-lab evaluate runs/cartpole --episodes 10 [--json]
    trpo-lab presets

Every `TRPOConfig` field is a flag (`--max-kl 0.02`, `--hidden-sizes 64 64`, `--normalize-obs`);
flags override the preset, the preset overrides the defaults.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

from .config import PRESETS, ConfigError, TRPOConfig, field_docs

RUN_FILES = ("config.json", "checkpoint.pt")


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
    t.add_argument("--metrics", choices=("csv", "jsonl"), default="csv",
                   help="per-iteration metrics format [default csv]")
    t.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                   help="iterations between checkpoints [default 10]")
    t.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(t)
    e = sub.add_parser("evaluate", help="evaluate a trained run with deterministic actions")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=None, help="first episode seed [default seed+10000]")
    e.add_argument("--stochastic", action="store_true", help="sample actions instead")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("presets", help="list the presets")
    return p


class MetricsWriter:
    """Appends one row per iteration to metrics.csv or metrics.jsonl, flushed at once."""

    def __init__(self, run_dir: Path, fmt: str):
        self.path = run_dir / f"metrics.{fmt}"
        self.fmt = fmt
        self.file = self.path.open("a", newline="")
        self.csv = None

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.file.write(json.dumps(row) + "\n")
        else:
            if self.csv is None:
                self.csv = csv.DictWriter(self.file, fieldnames=list(row))
                if self.file.tell() == 0:
                    self.csv.writeheader()
            self.csv.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .train import Trainer, train

    run_dir = Path(args.out)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TRPOConfig)
                 if getattr(args, f.name) is not None}
    if args.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every = {args.checkpoint_every} is not allowed: must be ≥ 1")
    trainer = None
    if args.resume:
        if not (run_dir / "checkpoint.pt").exists():
            raise ConfigError(f"--resume: {str(run_dir)!r} holds no checkpoint.pt to resume from")
        trainer = load_checkpoint(run_dir / "checkpoint.pt", overrides.get("total_steps"))
        config = trainer.config
    else:
        if any((run_dir / f).exists() for f in RUN_FILES):
            raise ConfigError(f"--out {str(run_dir)!r} already holds a run; pass --resume to "
                              "continue it or choose another directory")
        config = (TRPOConfig.from_preset(args.preset, **overrides) if args.preset
                  else TRPOConfig().replace(**overrides))
        trainer = Trainer(config)  # fails on a bad env before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    writer = MetricsWriter(run_dir, args.metrics)
    try:
        trainer = train(config, trainer=trainer, progress=not args.no_progress,
                        callback=lambda record, _: writer.write(record.as_dict()),
                        checkpoint_path=str(run_dir / "checkpoint.pt"),
                        checkpoint_every=args.checkpoint_every)
    finally:
        writer.close()
    last = trainer.history[-1] if trainer.history else None
    if last is not None:
        print(f"{config.env_id}: {trainer.steps} steps, {trainer.iteration} iterations, "
              f"mean return (last 20 episodes) {last.mean_return:.1f}; run saved in {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_agent
    from .rollout import evaluate_policy

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
            return 0
        return cmd_train(args) if args.command == "train" else cmd_evaluate(args)
    except (ConfigError, ValueError, RuntimeError) as e:  # EnvError, CheckpointError included
        print(f"trpo-lab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
