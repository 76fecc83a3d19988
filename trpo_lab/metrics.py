"""A run's metrics file: one `IterationRecord` per iteration, written as it goes, read back typed,
and cut back to a checkpoint's iteration when the run resumes.

    RUN_DIR/metrics.csv      a header row, then one row per iteration (or metrics.jsonl: one JSON
                             object per line)

`runs` (run folders) writes and reads it through these functions; `read_metrics` is also what
notebooks and sweep figures use.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write
from .config import ConfigError
from .train import IterationRecord

METRICS_FORMATS = ("csv", "jsonl")
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(IterationRecord)}


class MetricsError(ValueError):
    """A metrics file that cannot be read back (truncated, damaged or not trpo_lab's); the message
    names the file, the line and the bad value."""


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
        refuse_other_metrics(run_dir, keep=self.path if append else None)
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


def refuse_other_metrics(run_dir: str | os.PathLike, keep: Path | None = None) -> None:
    """`ConfigError` when `run_dir` holds a metrics file other than `keep` (another run's)."""
    others = [p.name for p in _metrics_files(run_dir) if p != keep]
    if others:
        raise ConfigError(f"{str(run_dir)!r} already holds {' and '.join(others)} from another run; a "
                          "run never appends to another run's metrics: choose another directory")


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

