"""Hyperparameter sweeps: many runs of one base config, a results table, resumable.

    spec = SweepSpec(base=TRPOConfig.from_preset("CartPole-v1", total_steps=50_000),
                     grid={"max_kl": [0.003, 0.01, 0.03], "damping": [0.01, 0.1, 1.0]}, seeds=3)
    table = run_sweep(spec, "runs/sweep")                 # local processes, one per core
    table = run_sweep(spec, "runs/sweep", backend="ray")  # Ray Tune (pip install trpo_lab[ray])

A sweep is the product of a grid and (optionally) random samples over any `TRPOConfig` fields,
times `seeds` seeds (base.seed, base.seed + 1, …). Each trial is one run folder (runs.py) under
OUT/trials/; OUT/sweep.json holds the spec; OUT/results.csv and OUT/results.json hold the table,
rewritten as trials finish. Running the same spec into the same folder again resumes: finished
trials (those with a result.json) are not run again, unfinished ones start afresh.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import TRPOConfig
from .runs import CONFIG, read_result, run_trial, write_json
from .runs import summarize as summarize  # noqa: PLC0414  (re-exported: the table's definitions)
from .sweep_spec import (  # noqa: F401 (re-exported)
    DISTRIBUTIONS,
    SweepError,
    SweepSpec,
    Trial,
    _plain,
    parse_grid,
    parse_sample,
    parse_value,
)

SPEC_FILE, TABLE_CSV, TABLE_JSON, TRIALS = "sweep.json", "results.csv", "results.json", "trials"
BACKENDS = ("local", "ray")
NUMBERS = ("final_return", "best_return", "auc_return", "steps", "iterations", "wall_clock_s")


def _check_envs(spec: SweepSpec) -> None:
    """Every trial's env can be made: ids 'module:EnvId' import their module here (and again in each
    worker process, which `gymnasium.make` does; spawned workers inherit this process's sys.path)."""
    from .rollout import EnvError, check_env_id

    for env_id in sorted({t.config.env_id for t in spec.trials()}):
        try:
            check_env_id(env_id)
        except EnvError as e:
            raise SweepError(str(e)) from e


def prepare(spec: SweepSpec, out: str | os.PathLike) -> Path:
    """Check `out` (new, empty, or holding this same spec) and write the spec there."""
    out = Path(out)
    if (out / SPEC_FILE).exists():
        held = _read_spec_file(out / SPEC_FILE)
        mine = spec.to_dict()
        if held != mine:
            diff = _first_difference(held, mine)
            raise SweepError(f"{str(out)!r} holds another sweep ({diff}); run the same spec to resume "
                             "it, or choose another folder (nothing was changed)")
    elif out.exists() and any(out.iterdir()):
        raise SweepError(f"{str(out)!r} exists and is not a sweep folder (no {SPEC_FILE}); choose a new "
                         "or empty folder (nothing was changed)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SPEC_FILE, spec.to_dict())
    return out


def _read_spec_file(path: Path) -> dict[str, Any]:
    """The spec a sweep folder holds (its sweep.json, a JSON object), or a `SweepError` naming the file."""
    try:
        held = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SweepError(f"{str(path)!r} cannot be read as JSON ({e}); it should hold the sweep's spec: "
                         "restore it, or choose another folder (nothing was changed)") from e
    if not isinstance(held, dict):
        raise SweepError(f"{str(path)!r} holds a JSON {type(held).__name__}, not a sweep's spec (a JSON "
                         "object): restore it, or choose another folder (nothing was changed)")
    return held


def _first_difference(held: dict, mine: dict) -> str:
    for key in mine:
        a, b = held.get(key), mine[key]
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    return f"{key} {k} = {a.get(k)!r} there, {b.get(k)!r} here"
        elif a != b:
            return f"{key} = {a!r} there, {b!r} here"
    return "a spec written by another version"


def table_row(spec: SweepSpec, trial: Trial, result: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the results table: the trial, its swept values, seed, numbers, history path."""
    row = {"trial": trial.id, **{k: _plain(trial.setting[k]) for k in spec.swept}, "seed": trial.seed,
           "status": result["status"], **{k: result[k] for k in NUMBERS},
           "history": f"{TRIALS}/{trial.id}/metrics.csv"}
    return row


def write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    """results.json ({"columns", "rows"}) and results.csv, each written atomically."""
    columns = list(rows[0]) if rows else []
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
              for r in rows]  # strict JSON: null where a number is undefined
    write_json(out / TABLE_JSON, {"columns": columns, "rows": finite})
    lines = [",".join(columns)] + [",".join(_csv_cell(r[c]) for c in columns) for r in rows]
    from .checkpoint import atomic_write
    atomic_write(out / TABLE_CSV, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _csv_cell(value: Any) -> str:
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f'"{text}"' if "," in text or " " in text else text


def read_table(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The results table of a sweep folder (from results.json), one dict per finished trial."""
    rows = json.loads((Path(out) / TABLE_JSON).read_text())["rows"]
    return [{k: math.nan if k in NUMBERS and v is None else v for k, v in r.items()} for r in rows]


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, backend: str = "local",
              workers: int | None = None, address: str | None = None, asha: bool = False,
              asha_grace: int = 2, progress: bool = True,
              on_trial: Callable[[dict[str, Any]], object] | None = None) -> list[dict[str, Any]]:
    """Run every unfinished trial of `spec` into `out` and return the results table (one row per
    trial, in trial order). `backend` 'local': `workers` processes (default: one per core), one torch
    thread each; 'ray': Ray Tune on `address` (or RAY_ADDRESS, else a local Ray instance), with
    ASHA early stopping when `asha` (on mean_return, per iteration, grace `asha_grace` iterations).
    `on_trial(row)` runs in this process as each trial finishes."""
    if backend not in BACKENDS:
        raise SweepError(f"backend = {backend!r} is not allowed: must be one of {BACKENDS}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers = {workers!r} is not allowed: must be an integer ≥ 1")
    if asha and backend != "ray":
        raise SweepError("asha = True needs backend = 'ray' (Ray Tune's ASHA scheduler)")
    if backend == "ray":
        from .sweep_ray import check_ray
        check_ray()
    _check_envs(spec)
    out = prepare(spec, out)
    trials = spec.trials()
    results = {t.id: read_result(out / TRIALS / t.id) for t in trials}
    todo = [t for t in trials if results[t.id] is None]

    from tqdm.auto import tqdm
    bar = tqdm(total=len(trials), initial=len(trials) - len(todo), unit="trial", disable=not progress,
               desc=f"sweep ({backend})", dynamic_ncols=True)

    def done(trial: Trial, result: dict[str, Any]) -> None:
        results[trial.id] = result
        write_table(out, [table_row(spec, t, results[t.id]) for t in trials if results[t.id]])
        bar.update(1)
        if on_trial is not None:
            on_trial(table_row(spec, trial, result))

    try:
        if todo and backend == "local":
            _run_local(todo, out, workers, done)
        elif todo:
            from .sweep_ray import run_ray
            run_ray(todo, out, workers, address, asha, asha_grace, done)
    finally:
        bar.close()
    rows = [table_row(spec, t, results[t.id]) for t in trials if results[t.id]]
    write_table(out, rows)
    return rows


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # one thread per worker


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def _run_local(todo: list[Trial], out: Path, workers: int, done: Callable) -> None:
    """Each trial in a process of a pool of `workers` (spawned: safe beside torch's threads and in
    Jupyter). An interrupt (or a trial's error) cancels what has not started and ends the running
    trials; their folders are started afresh on resume."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})  # for the workers, spawned while the pool runs
    pool = ProcessPoolExecutor(min(workers, len(todo)), initializer=_init_worker,
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_trial, t.config, str(out / TRIALS / t.id)): t for t in todo}
        for future in as_completed(futures):
            done(futures[future], future.result())
    except BaseException:  # an interrupt or a failed trial: stop the running trials too
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trial_dirs(out: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """The run folders of the table's rows."""
    return [Path(out) / Path(r["history"]).parent for r in rows]


def config_of(out: str | os.PathLike, row: Mapping[str, Any]) -> TRPOConfig:
    """The config a row's trial ran with."""
    return TRPOConfig.from_dict(json.loads((Path(out) / Path(row["history"]).parent / CONFIG).read_text()))


