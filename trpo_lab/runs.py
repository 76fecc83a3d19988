"""Run folders: what one training run leaves on disk, written and read in one place.

    RUN_DIR/config.json      the run's `TRPOConfig`
    RUN_DIR/metrics.csv      one `IterationRecord` per iteration, flushed as it goes (or metrics.jsonl)
    RUN_DIR/checkpoint.pt    everything needed to resume (see checkpoint.py)
    RUN_DIR/result.json      written last, when the run has finished: `summarize`'s numbers + wall-clock

The CLI (`trpo-lab train`), sweeps (one run folder per trial) and notebooks share these functions.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, checkpoint_callback, load_checkpoint
from .config import ConfigError, TRPOConfig
from .train import IterationRecord, Trainer, train

CONFIG, CHECKPOINT, RESULT = "config.json", "checkpoint.pt", "result.json"
METRICS_FORMATS = ("csv", "jsonl")
RUN_FILES = (CONFIG, CHECKPOINT)  # a folder holding either already holds a run

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(IterationRecord)}


class MetricsWriter:
    """Appends one row per iteration to metrics.csv or metrics.jsonl, flushed at once."""

    def __init__(self, run_dir: str | os.PathLike, fmt: str = "csv"):
        if fmt not in METRICS_FORMATS:
            raise ConfigError(f"metrics format = {fmt!r} is not allowed: must be one of {METRICS_FORMATS}")
        self.path = Path(run_dir) / f"metrics.{fmt}"
        self.fmt = fmt
        self.file = self.path.open("a", newline="")
        self.csv: csv.DictWriter | None = None

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


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` already holds a run (a config or a checkpoint)."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically (temporary file + rename)."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_config(run_dir: str | os.PathLike, config: TRPOConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(run_dir) / CONFIG, config.to_dict())


def read_config(run_dir: str | os.PathLike) -> TRPOConfig:
    return TRPOConfig.from_dict(json.loads((Path(run_dir) / CONFIG).read_text()))


def metrics_path(run_dir: str | os.PathLike) -> Path:
    """The run's metrics file (metrics.csv, else metrics.jsonl); FileNotFoundError when it has none."""
    for fmt in METRICS_FORMATS:
        path = Path(run_dir) / f"metrics.{fmt}"
        if path.exists():
            return path
    raise FileNotFoundError(f"{str(run_dir)!r} holds no metrics.csv or metrics.jsonl")


def _typed(name: str, text: str) -> Any:
    kind = _FIELD_TYPES.get(name, "float")
    if kind == "bool":
        return text == "True"
    if kind == "int":
        return int(text)
    if kind == "str":
        return text
    return float(text)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's history, one dict per iteration with `IterationRecord`'s field types."""
    path = metrics_path(run_dir)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as f:
        return [{k: _typed(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def summarize(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A run's numbers for a results table, from its history (dicts or `IterationRecord`s):

    final_return   mean return of the last 20 episodes at the end of the run
    best_return    the highest value that running mean reached
    auc_return     area under the learning curve (mean return over environment steps, each iteration
                   weighted by its steps) divided by the steps it covers: the return averaged over
                   training (iterations before the first finished episode are left out)
    steps, iterations
    NaN where no episode finished.
    """
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in history]
    nan = float("nan")
    returns = [(r["steps"] - (rows[i - 1]["steps"] if i else 0), r["mean_return"])
               for i, r in enumerate(rows) if not math.isnan(r["mean_return"])]
    weight = sum(w for w, _ in returns)
    return {
        "final_return": rows[-1]["mean_return"] if rows else nan,
        "best_return": max((v for _, v in returns), default=nan),
        "auc_return": sum(w * v for w, v in returns) / weight if weight else nan,
        "steps": rows[-1]["steps"] if rows else 0,
        "iterations": rows[-1]["iteration"] if rows else 0,
    }


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The finished run's result.json, or None while the run has not finished."""
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.exists() else None


def run_training(config: TRPOConfig | None, run_dir: str | os.PathLike, *, resume: bool = False,
                 total_steps: int | None = None, metrics: str = "csv", checkpoint_every: int = 10,
                 progress: bool = True,
                 callback: Callable[[IterationRecord, Trainer], object] | None = None) -> Trainer:
    """Train one run into `run_dir`: config.json first, metrics as it goes, checkpoints every
    `checkpoint_every` iterations and at the end, result.json last (with `wall_clock_s`, the time
    from building the trainer to the end, and `status` 'finished', or 'stopped' when `callback`
    returned True).

    A new run refuses a folder that already holds one; `resume=True` continues the checkpoint in
    `run_dir` (optionally with a new `total_steps`). Bad values raise `ConfigError` before anything
    is written.
    """
    run_dir = Path(run_dir)
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every = {checkpoint_every} is not allowed: must be ≥ 1")
    if metrics not in METRICS_FORMATS:
        raise ConfigError(f"metrics format = {metrics!r} is not allowed: must be one of {METRICS_FORMATS}")
    start = time.perf_counter()
    if resume:
        if not (run_dir / CHECKPOINT).exists():
            raise ConfigError(f"resume: {str(run_dir)!r} holds no {CHECKPOINT} to resume from")
        trainer = load_checkpoint(run_dir / CHECKPOINT, total_steps)
        (run_dir / RESULT).unlink(missing_ok=True)  # the run goes on: not finished any more
    else:
        if config is None:
            raise ConfigError("run_training: a new run needs a config")
        if holds_run(run_dir):
            raise ConfigError(f"{str(run_dir)!r} already holds a run; resume it or choose another "
                              "directory")
        if total_steps is not None:
            config = config.replace(total_steps=total_steps)
        trainer = Trainer(config)  # fails on a bad env before anything is written
        write_config(run_dir, config)
    writer = MetricsWriter(run_dir, metrics)
    stopped = False

    def on_iteration(record: IterationRecord, trainer: Trainer) -> object:
        nonlocal stopped
        writer.write(record.as_dict())
        stopped = callback(record, trainer) is True if callback is not None else False
        return stopped

    try:
        trainer = train(trainer.config, trainer=trainer, progress=progress,
                        callback=checkpoint_callback(run_dir / CHECKPOINT, checkpoint_every, on_iteration))
    finally:
        writer.close()
    result = {**summarize(trainer.history), "wall_clock_s": time.perf_counter() - start,
              "status": "stopped" if stopped else "finished"}
    write_json(run_dir / RESULT, result)
    return trainer


def run_trial(config: TRPOConfig, run_dir: str, callback: Callable | None = None) -> dict[str, Any]:
    """Train one sweep trial into `run_dir` (cleared first if an earlier attempt left it unfinished)
    and return its result.json. Runs in a worker process (local backend) or a Ray task."""
    if read_result(run_dir) is None and Path(run_dir).exists():
        shutil.rmtree(run_dir)  # an interrupted attempt: start the trial afresh
    run_training(config, run_dir, progress=False, checkpoint_every=10**9, callback=callback)
    return read_result(run_dir)
