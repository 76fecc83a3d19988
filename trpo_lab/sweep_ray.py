"""The Ray Tune backend of `run_sweep` (the optional extra: `pip install trpo_lab[ray]`).

Each trial is a Tune trial with one CPU running the same `run_trial` as the local backend, into the
same run folder; it reports mean_return every iteration, so Tune's ASHA scheduler can stop hopeless
trials early. The driver connects to `address` (or RAY_ADDRESS; 'auto' finds a cluster started with
`ray start` on this machine), else starts a local Ray instance with `workers` CPUs — or uses the Ray
instance this process already started (`ray.init(...)` before `run_sweep`). On a multi-node
cluster the sweep folder must be on storage every node can write (an NFS path, say): trials write
their run folders there. Tune's own result loggers and console tables are turned off (the
TUNE_DISABLE_AUTO_CALLBACK_LOGGERS and RAY_AIR_NEW_OUTPUT variables, unless already set): the sweep
folder holds the table.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .metrics import read_metrics
from .runs import read_result, summarize, write_json


def check_ray() -> None:
    """Raise a clear error when Ray Tune is not installed."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as e:
        from .sweep_spec import SweepError
        raise SweepError("backend = 'ray' needs Ray Tune: pip install 'trpo_lab[ray]' "
                         f"(or pip install 'ray[tune]'): {e}") from e


def _trainable(params: dict[str, Any]) -> None:
    """One Tune trial: train the trial's config into its run folder, reporting each iteration."""
    import torch
    from ray import tune

    from .config import TRPOConfig
    from .runs import run_trial

    torch.set_num_threads(1)
    trial = params["trial"]

    def report(record, trainer) -> None:
        ret = record.mean_return
        tune.report({"mean_return": ret if math.isfinite(ret) else -math.inf, "steps": record.steps})

    run_trial(TRPOConfig.from_dict(trial["config"]), trial["run_dir"], callback=report)


def _trial_id(trial) -> str:
    return trial.config["trial"]["id"]


def run_ray(todo: list, out: Path, workers: int, address: str | None, asha: bool, asha_grace: int,
            done: Callable[[Any, dict[str, Any]], None]) -> None:
    """Run `todo` as Tune trials; `done(trial, result)` as each finishes (in this process). Trials
    ASHA stopped get a result.json with status 'stopped' from what they wrote so far."""
    # Tune's own result files (CSV, JSON, TensorBoard) and console tables: the sweep folder has the table
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    started = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        started = True
    by_id = {t.id: t for t in todo}
    reported: set[str] = set()

    def finish(trial_id: str) -> None:
        if trial_id in reported:
            return
        run_dir = out / "trials" / trial_id
        result = read_result(run_dir)
        if result is None:  # stopped by the scheduler between two iterations
            try:
                history = read_metrics(run_dir)
            except FileNotFoundError:
                return
            config = by_id[trial_id].config
            full = config.total_steps // config.batch_steps * config.batch_steps
            summary = summarize(history)  # stopped at its last report: maybe the run's last iteration
            result = {**summary, "wall_clock_s": math.nan,
                      "status": "finished" if summary["steps"] >= full else "stopped"}
            write_json(run_dir / "result.json", result)
        reported.add(trial_id)
        done(by_id[trial_id], result)

    class Finished(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            finish(trial.config["trial"]["id"])

    iterations = max(t.config.total_steps // t.config.batch_steps for t in todo)
    scheduler = None
    if asha:
        from ray.tune.schedulers import ASHAScheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=iterations + 1,
                                  grace_period=asha_grace, reduction_factor=2)
    space = [{"id": t.id, "config": t.config.to_dict(), "run_dir": str((out / "trials" / t.id).resolve())}
             for t in todo]
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 1}),
            param_space={"trial": tune.grid_search(space)},
            tune_config=tune.TuneConfig(metric="mean_return", mode="max", scheduler=scheduler,
                                        max_concurrent_trials=None if address else workers,
                                        reuse_actors=True, trial_name_creator=_trial_id,
                                        trial_dirname_creator=_trial_id),
            run_config=tune.RunConfig(name=time.strftime("tune-%Y%m%d-%H%M%S"),
                                      storage_path=str((out / "ray").resolve()), verbose=0,
                                      callbacks=[Finished()]),
        )
        grid = tuner.fit()
        errors = [r.error for r in grid if r.error is not None]
        for t in todo:
            finish(t.id)
        if errors:
            raise RuntimeError(f"{len(errors)} Ray trial(s) failed; the first: {errors[0]}")
    finally:
        if started:
            ray.shutdown()
