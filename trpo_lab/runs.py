"""Run folders: what one training run leaves on disk, written and read in one place.

    RUN_DIR/config.json      the run's `TRPOConfig`
    RUN_DIR/metrics.csv      one `IterationRecord` per iteration, flushed as it goes (or metrics.jsonl)
    RUN_DIR/checkpoint.pt    everything needed to resume (see checkpoint.py)
    RUN_DIR/result.json      written last, when the run has finished: `summarize`'s numbers + wall-clock

Resuming continues from the checkpoint (or from iteration 0 when the run stopped before its first
one): the metrics file is first cut back to the checkpoint's iteration, so every iteration has one row.

The CLI (`trpo-lab train`), sweeps (one run folder per trial) and notebooks share these functions.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, checkpoint_callback, load_agent, load_checkpoint
from .config import ConfigError, TRPOConfig
from .train import IterationRecord, Trainer, train

CONFIG, CHECKPOINT, RESULT = "config.json", "checkpoint.pt", "result.json"
METRICS_FORMATS = ("csv", "jsonl")
RUN_FILES = (CONFIG, CHECKPOINT)  # a folder holding either already holds a run

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(IterationRecord)}


class MetricsError(ValueError):
    """A metrics file that cannot be read back (truncated, damaged or not trpo_lab's); the message
    names the file, the line and the bad value."""


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


class MetricsWriter:
    """Writes one row per iteration to metrics.csv or metrics.jsonl, flushed at once.

    A new run (`append=False`) creates the file and refuses one that exists (another run's: rows are
    never appended to it); `append=True` continues this run's file, which a resume has first cut back
    to its checkpoint (`cut_metrics`).
    """

    def __init__(self, run_dir: str | os.PathLike, fmt: str = "csv", append: bool = False):
        if fmt not in METRICS_FORMATS:
            raise ConfigError(f"metrics format = {fmt!r} is not allowed: must be one of {METRICS_FORMATS}")
        self.path = Path(run_dir) / f"metrics.{fmt}"
        self.fmt = fmt
        _refuse_other_metrics(run_dir, keep=self.path if append else None)
        self.file = self.path.open("a" if append else "x", newline="")
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


def _refuse_other_metrics(run_dir: str | os.PathLike, keep: Path | None = None) -> None:
    others = [p.name for p in _metrics_files(run_dir) if p != keep]
    if others:
        raise ConfigError(f"{str(run_dir)!r} already holds {' and '.join(others)} from another run; a "
                          "run never appends to another run's metrics: choose another directory")


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


def _metrics_files(run_dir: str | os.PathLike) -> list[Path]:
    return [p for p in (Path(run_dir) / f"metrics.{fmt}" for fmt in METRICS_FORMATS) if p.exists()]


def metrics_path(run_dir: str | os.PathLike) -> Path:
    """The run's metrics file (metrics.csv, else metrics.jsonl); FileNotFoundError when it has none."""
    files = _metrics_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{str(run_dir)!r} holds no metrics.csv or metrics.jsonl")
    return files[0]


def metrics_format(run_dir: str | os.PathLike) -> str | None:
    """The format of the run's metrics file ('csv' or 'jsonl'), None when it has none; `ConfigError`
    when it holds both (one run's history split over two files)."""
    files = _metrics_files(run_dir)
    if len(files) > 1:
        raise ConfigError(f"{str(run_dir)!r} holds both metrics.csv and metrics.jsonl; keep the run's "
                          "own history and move the other file away")
    return files[0].suffix[1:] if files else None


def _typed(name: str, text: str) -> Any:
    kind = _FIELD_TYPES.get(name, "float")
    if kind == "bool":
        if text not in ("True", "False"):
            raise ValueError(text)
        return text == "True"
    if kind == "int":
        return int(text)
    if kind == "str":
        return text
    return float(text)


def _bad_row(path: Path, line: int, what: str) -> MetricsError:
    return MetricsError(f"{str(path)!r} line {line}: {what}; the metrics file is truncated or damaged")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad_row(path, number, f"{line[:80]!r} is not JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise _bad_row(path, number, f"{line[:80]!r} is not a JSON object")
        rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                raise _bad_row(path, reader.line_num, f"values {row[None]!r} are past the header's "
                               f"{len(reader.fieldnames or ())} columns")
            typed = {}
            for name, text in row.items():
                if text is None:
                    raise _bad_row(path, reader.line_num, f"column {name!r} is missing (the row ends early)")
                try:
                    typed[name] = _typed(name, text)
                except ValueError as e:
                    raise _bad_row(path, reader.line_num, f"column {name!r} = {text!r} is not "
                                   f"{'an' if _FIELD_TYPES.get(name) == 'int' else 'a'} "
                                   f"{_FIELD_TYPES.get(name, 'float')}") from e
            rows.append(typed)
    return rows


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's history, one dict per iteration with `IterationRecord`'s field types. A row that
    cannot be read raises `MetricsError` naming the file, the line and the bad value."""
    path = metrics_path(run_dir)
    return _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)


def _row_iteration(line: str, fmt: str, header: list[str]) -> int | None:
    """The iteration of one complete metrics line, None when it is incomplete or unreadable."""
    if not line.endswith("\n"):
        return None  # the write of this row was cut off
    try:
        if fmt == "jsonl":
            row = json.loads(line)
            return int(row["iteration"]) if isinstance(row, dict) else None
        fields = next(csv.reader([line]))
        return int(fields[header.index("iteration")]) if len(fields) == len(header) else None
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def cut_metrics(run_dir: str | os.PathLike, fmt: str, iteration: int) -> None:
    """Keep only the rows of iterations 1…`iteration` in the run's metrics file (a resume redoes the
    later ones), atomically: an interruption leaves the old file or the cut one, never half of it.
    The kept lines are the file's own bytes; a warning says when they are not exactly 1…`iteration`."""
    path = Path(run_dir) / f"metrics.{fmt}"
    if not path.exists():
        return
    with path.open(newline="") as f:
        lines = f.readlines()
    header = next(csv.reader(lines[:1]), []) if fmt == "csv" else []
    kept = [(n, line) for line in lines[1 if fmt == "csv" else 0:]
            if (n := _row_iteration(line, fmt, header)) is not None and n <= iteration]
    if [n for n, _ in kept] != list(range(1, iteration + 1)):
        warnings.warn(f"{str(path)!r} does not hold exactly one row for each iteration 1…{iteration} of "
                      f"the checkpoint (it holds {len(kept)} such rows)", stacklevel=2)
    text = "".join((lines[:1] if fmt == "csv" and kept else []) + [line for _, line in kept])
    if fmt == "csv" and kept and header != list(_FIELD_TYPES):
        text = _in_this_versions_columns(path, header, [line for _, line in kept])
    mode = path.stat().st_mode
    atomic_write(path, lambda f: f.write(text.encode()))
    os.chmod(path, mode)  # keep the file's own permissions (the new file gets 0666 less the umask)


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


def _in_this_versions_columns(path: Path, header: list[str], lines: list[str]) -> str:
    """The csv `lines` (under `header`, written by another trpo_lab version) rewritten under this
    version's columns, so the resumed rows line up: a column this version added is 'nan' ("does not
    apply") in the earlier rows. A header that lacks a non-float column or has one this version does
    not know cannot be carried over without losing or faking values: `MetricsError`."""
    columns = list(_FIELD_TYPES)
    added = [c for c in columns if c not in header]
    unknown = [c for c in header if c not in _FIELD_TYPES]
    if unknown or any(_FIELD_TYPES[c] != "float" for c in added):
        raise MetricsError(
            f"{str(path)!r} was written by another trpo_lab version: its columns differ from this "
            f"version's (only there: {unknown}; only here: {added}), and its rows cannot be carried "
            "over without losing or inventing values; resume the run with the version that started it")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="nan")  # MetricsWriter's line ends
    writer.writeheader()
    writer.writerows(dict(zip(header, fields)) for fields in csv.reader(lines))
    warnings.warn(f"{str(path)!r}: the columns {added} are new in this trpo_lab version; the "
                  f"{len(lines)} earlier rows hold nan there", stacklevel=3)
    return out.getvalue()


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
        _refuse_other_metrics(run_dir)
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
