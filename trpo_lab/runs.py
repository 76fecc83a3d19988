"""Run folders: what one training run leaves on disk, written and read in one place.

    RUN_DIR/config.json      the run's `TRPOConfig`
    RUN_DIR/metrics.csv      one `IterationRecord` per iteration, flushed as it goes (or metrics.jsonl;
                             written, read and cut by `metrics`)
    RUN_DIR/checkpoint.pt    everything needed to resume (see checkpoint.py)
    RUN_DIR/result.json      written last, when the run has finished: `summarize`'s numbers + wall-clock

Resuming continues from the checkpoint (or from iteration 0 when the run stopped before its first
one): the metrics file is first cut back to the checkpoint's iteration, so every iteration has one row.

The CLI (`trpo-lab train`), sweeps (one run folder per trial) and notebooks share these functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, checkpoint_callback, load_agent, load_checkpoint
from .config import ConfigError, TRPOConfig
from .metrics import METRICS_FORMATS, MetricsWriter, cut_metrics, metrics_format, refuse_other_metrics
from .metrics import MetricsError as MetricsError  # noqa: PLC0414  (re-exported: runs is where users look)
from .metrics import read_metrics as read_metrics  # noqa: PLC0414
from .train import IterationRecord, Trainer, train

CONFIG, CHECKPOINT, RESULT = "config.json", "checkpoint.pt", "result.json"
RUN_FILES = (CONFIG, CHECKPOINT)  # a folder holding either already holds a run

class RunInterrupted(KeyboardInterrupt):
    """Training into a run folder was interrupted (Ctrl-C). The iteration under way is dropped (no
    checkpoint is written from it); `iteration` is the last completed one, `checkpoint_iteration` the
    iteration of the folder's checkpoint (None when it has none yet: resuming starts from iteration 0)."""

    def __init__(self, run_dir: Path, iteration: int, checkpoint_iteration: int | None):
        self.run_dir, self.iteration, self.checkpoint_iteration = run_dir, iteration, checkpoint_iteration
        where = (f"its checkpoint {str(run_dir / CHECKPOINT)!r} is at iteration {checkpoint_iteration}"
                 if checkpoint_iteration is not None else "it has no checkpoint yet (resuming starts "
                 "from iteration 0)")
        super().__init__(f"training into {str(run_dir)!r} interrupted after iteration {iteration}; {where}; "
                         f"run_training(None, {str(run_dir)!r}, resume=True) continues it")


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
    """The run's config.json; `ConfigError` naming the file when it is not a JSON object."""
    path = Path(run_dir) / CONFIG
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object of config fields")
    return TRPOConfig.from_dict(data)


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


def make_run_dir(run_dir: str | os.PathLike) -> None:
    """Create the run folder; `ConfigError` naming the path and the reason when it cannot be made or
    written (an existing file, a path below a file, no permission)."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory {str(path)!r} is an existing file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"run directory {str(path)!r} cannot be created: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"run directory {str(path)!r} is not writable")


def saved_config(run_dir: str | os.PathLike) -> TRPOConfig:
    """The config of the run in `run_dir` (its config.json, else its checkpoint's); `ConfigError`
    when the folder holds no run."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).exists():
        return read_config(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return load_agent(run_dir / CHECKPOINT)[2]
    raise ConfigError(f"resume: {str(run_dir)!r} holds no {CHECKPOINT} or {CONFIG}: there is no run "
                      "to resume")


def _open_resumed(run_dir: Path, total_steps: int | None, metrics: str | None) -> tuple[Trainer, str]:
    """Rebuild a run's trainer (from its checkpoint, else from iteration 0 with its config.json), check
    the request, then cut its metrics back to the trainer's iteration and update config.json."""
    stored = saved_config(run_dir)  # config.json holds the latest total_steps asked for
    total_steps = stored.total_steps if total_steps is None else total_steps
    if (run_dir / CHECKPOINT).exists():
        trainer = load_checkpoint(run_dir / CHECKPOINT, total_steps)
    else:
        trainer = Trainer(stored.replace(total_steps=total_steps))
    if total_steps < trainer.steps:
        raise ConfigError(f"resume: total_steps = {total_steps} is fewer than the {trainer.steps} steps the "
                          f"run in {str(run_dir)!r} has already done; give more to continue it")
    if trainer.done and read_result(run_dir) is not None:
        step = max(trainer.config.batch_steps, trainer.last_sim_steps)
        raise ConfigError(f"resume: the run in {str(run_dir)!r} has finished ({trainer.steps} steps; "
                          f"total_steps = {total_steps}); give total_steps ≥ {trainer.steps + step} to "
                          "train it further")
    fmt = metrics_format(run_dir)
    if metrics is not None and fmt is not None and metrics != fmt:
        raise ConfigError(f"resume: metrics format = {metrics!r} is not allowed: the run in "
                          f"{str(run_dir)!r} writes metrics.{fmt}; resume it in {fmt!r} (or leave the "
                          "format out)")
    fmt = fmt or metrics or "csv"
    cut_metrics(run_dir, fmt, trainer.iteration)
    if not (run_dir / CONFIG).exists() or read_config(run_dir) != trainer.config:
        write_config(run_dir, trainer.config)
    (run_dir / RESULT).unlink(missing_ok=True)  # the run goes on: not finished any more
    return trainer, fmt


def run_training(config: TRPOConfig | None, run_dir: str | os.PathLike, *, resume: bool = False,
                 total_steps: int | None = None, metrics: str | None = None, checkpoint_every: int = 10,
                 progress: bool = True,
                 callback: Callable[[IterationRecord, Trainer], object] | None = None) -> Trainer:
    """Train one run into `run_dir`: config.json first, metrics (`metrics` 'csv', the default, or
    'jsonl') as it goes, checkpoints every `checkpoint_every` iterations and at the end, result.json
    last (with `wall_clock_s`, the time from building the trainer to the end, and `status`
    'finished', or 'stopped' when `callback` returned True).

    A new run refuses a folder that already holds one (or another run's metrics file).
    `resume=True` continues the run in `run_dir` with its saved config (`config` is not used) from its
    checkpoint, or from iteration 0 when it stopped before its first one: the metrics file is first
    cut back to that iteration and keeps its format (another `metrics` raises `ConfigError`); a new
    `total_steps` is written to config.json (fewer than the steps done raises `ConfigError`, as does
    resuming a finished run without more steps). Bad values raise `ConfigError` before anything is
    written. Ctrl-C raises `RunInterrupted` (a KeyboardInterrupt) saying where the run can resume.
    """
    run_dir = Path(run_dir)
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every = {checkpoint_every} is not allowed: must be ≥ 1")
    if metrics is not None and metrics not in METRICS_FORMATS:
        raise ConfigError(f"metrics format = {metrics!r} is not allowed: must be one of {METRICS_FORMATS}")
    start = time.perf_counter()
    if resume:
        trainer, metrics = _open_resumed(run_dir, total_steps, metrics)
        checkpoint_iteration = trainer.iteration if (run_dir / CHECKPOINT).exists() else None
    else:
        if config is None:
            raise ConfigError("run_training: a new run needs a config")
        if holds_run(run_dir):
            raise ConfigError(f"{str(run_dir)!r} already holds a run; resume it or choose another "
                              "directory")
        if total_steps is not None:
            config = config.replace(total_steps=total_steps)
        trainer = Trainer(config)  # fails on a bad env before anything is written
        make_run_dir(run_dir)
        refuse_other_metrics(run_dir)
        write_config(run_dir, config)
        checkpoint_iteration = None
    writer = MetricsWriter(run_dir, metrics or "csv", append=resume)
    stopped = False

    def on_iteration(record: IterationRecord, trainer: Trainer) -> object:
        nonlocal stopped
        writer.write(record.as_dict())
        stopped = callback(record, trainer) is True if callback is not None else False
        return stopped

    saver = checkpoint_callback(run_dir / CHECKPOINT, checkpoint_every, on_iteration)
    saver.saved_iteration = checkpoint_iteration
    try:
        trainer = train(trainer.config, trainer=trainer, progress=progress, callback=saver)
    except KeyboardInterrupt as e:  # the iteration under way is dropped; no checkpoint is written from it
        raise RunInterrupted(run_dir, trainer.iteration, saver.saved_iteration) from e
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
