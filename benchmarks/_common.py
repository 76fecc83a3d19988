"""Shared helpers of the benchmark scripts: machine facts, isolated runs, one evaluation protocol,
tables and result files. Nothing here is needed by the lab itself."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORKER = HERE / "worker.py"
EVAL_EPISODES = 10
EVAL_SEED_OFFSET = 10_000  # evaluation episodes use seeds seed+10000, seed+10001, ...


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Facts printed beside every table: what ran, where, when, and how busy the machine was."""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
        "python": platform.python_version(), "torch": version("torch"), "numpy": version("numpy"),
        "gymnasium": version("gymnasium"), "mujoco": version("mujoco"),
        "trpo_lab": version("trpo_lab"), "sb3_contrib": version("sb3_contrib"),
        "stable_baselines3": version("stable_baselines3"), "tianshou": version("tianshou"),
        "torch_threads": 1,
    }


def one_thread() -> None:
    """One torch (and BLAS) thread in every measured process."""
    import torch

    torch.set_num_threads(1)


def single_thread_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def run_isolated(args: Sequence[str], timeout: float = 3600) -> dict:
    """Run `worker.py *args` in its own process; returns its JSON result plus `peak_rss_mb`, the
    child's peak resident memory from `os.wait4` (the rusage of that child alone)."""
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=out,
                                stderr=err, text=True, env=single_thread_env())
        start = time.monotonic()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                raise TimeoutError(f"worker {' '.join(map(str, args))} ran over {timeout} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(map(str, args))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker {' '.join(map(str, args))} printed no result:\n{stdout[-2000:]}")
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def evaluate(act: Callable[[np.ndarray], np.ndarray | int], env_id: str, seed: int,
             episodes: int = EVAL_EPISODES) -> list[float]:
    """The one evaluation protocol for every library: `episodes` full episodes on a fresh
    `gym.make(env_id)`, reset with seeds seed+10000+k, deterministic actions from `act(raw_obs)`,
    Box actions clipped to the action bounds. Returns the undiscounted episode returns."""
    import gymnasium as gym

    env = gym.make(env_id)
    box = isinstance(env.action_space, gym.spaces.Box)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + k)
        total, done = 0.0, False
        while not done:
            action = act(obs)
            if box:
                action = np.clip(np.asarray(action, dtype=np.float64).reshape(env.action_space.shape),
                                 env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else float("nan")


def fmt(value, digits: int = 2) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str], digits: int = 2) -> str:
    """A GitHub-flavoured markdown table (also readable in a terminal)."""
    cells = [[fmt(row.get(c, "-"), digits) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def save(name: str, rows: Sequence[dict], meta: dict) -> tuple[Path, Path]:
    """Write results/NAME.csv (one row per record) and results/NAME.json (meta + rows)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = RESULTS / f"{name}.csv", RESULTS / f"{name}.json"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], (list, dict))]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"machine": meta, "rows": list(rows)}, indent=1, default=float))
    return csv_path, json_path
