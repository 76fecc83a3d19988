"""Sweeps: the local backend on a 2 × 2 × 2-seed sweep, resume after a kill, the results table,
bad input; run folders (runs.py)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy_envs import registering_module_source

from trpo_lab import TRPOConfig, train
from trpo_lab.cli import main
from trpo_lab.runs import read_metrics, run_training, summarize
from trpo_lab.sweep import SweepError, SweepSpec, read_table, run_sweep, trial_dirs

BASE = TRPOConfig.from_preset("CartPole-v1", total_steps=1536, batch_steps=512, num_envs=4)
GRID = {"max_kl": [0.005, 0.02], "damping": [0.01, 0.1]}
CLI = ["--preset", "CartPole-v1", "--total-steps", "1536", "--batch-steps", "512", "--num-envs", "4",
       "--grid", "max_kl=0.005,0.02", "damping=0.01,0.1", "--seeds", "2", "--no-progress"]


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_clock_s"} for r in rows]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "local"
    rows = run_sweep(SweepSpec(base=BASE, grid=GRID, seeds=2), out, workers=2, progress=False)
    return out, rows


def test_local_sweep_runs_every_trial_into_its_run_folder_and_writes_the_table(local_sweep):
    out, rows = local_sweep
    assert [(r["max_kl"], r["damping"], r["seed"]) for r in rows] == [
        (k, d, s) for k in (0.005, 0.02) for d in (0.01, 0.1) for s in (0, 1)]
    assert list(rows[0]) == ["trial", "max_kl", "damping", "seed", "status", "final_return", "best_return",
                             "auc_return", "steps", "iterations", "wall_clock_s", "history"]
    assert all(r["status"] == "finished" and r["steps"] == 1536 and r["iterations"] == 3 for r in rows)
    assert all(r["wall_clock_s"] > 0 for r in rows)
    assert read_table(out) == rows
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(rows[0]) and len(csv_lines) == 9
    for row, run_dir in zip(rows, trial_dirs(out, rows)):
        assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.csv", "checkpoint.pt",
                                                        "result.json"}
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["max_kl"], config["damping"], config["seed"]) == (row["max_kl"], row["damping"],
                                                                         row["seed"])
        history = read_metrics(run_dir)
        assert (out / row["history"]) == run_dir / "metrics.csv"
        assert summarize(history)["final_return"] == row["final_return"]
        assert all(h["kl"] <= row["max_kl"] for h in history)
    # different settings and seeds really differ
    assert len({r["final_return"] for r in rows}) > 1


def test_a_trial_gives_the_numbers_of_the_same_run_trained_directly(local_sweep):
    _, rows = local_sweep
    row = rows[5]
    trainer = train(BASE.replace(max_kl=row["max_kl"], damping=row["damping"], seed=row["seed"]),
                    progress=False)
    assert summarize(trainer.history) == {k: row[k] for k in ("final_return", "best_return",
                                                               "auc_return", "steps", "iterations")}


def test_resume_after_a_kill_reruns_only_the_unfinished_trials(tmp_path, local_sweep):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "trpo_lab.cli", "sweep", *CLI, "--workers", "1",
                             "--out", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # only catches a hang
    try:
        while not list(out.glob("trials/*/result.json")):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, as if the machine died
        proc.wait()
    finished = {p.parent.name: p.read_bytes() for p in out.glob("trials/*/result.json")}
    all_ids = [r["trial"] for r in local_sweep[1]]
    assert 1 <= len(finished) < len(all_ids)
    ran = []
    rows = run_sweep(SweepSpec(base=BASE, grid=GRID, seeds=2), out, workers=2, progress=False,
                     on_trial=lambda row: ran.append(row["trial"]))
    assert sorted(ran) == sorted(set(all_ids) - set(finished))
    assert {t: (out / "trials" / t / "result.json").read_bytes() for t in finished} == finished
    assert without_time(rows) == without_time(local_sweep[1])
    again = []
    assert without_time(run_sweep(SweepSpec(base=BASE, grid=GRID, seeds=2), out, progress=False,
                                  on_trial=lambda row: again.append(row))) == without_time(rows)
    assert again == []


def test_random_samples_are_drawn_from_their_seed_and_combine_with_the_grid():
    spec = SweepSpec(base=BASE, grid={"damping": [0.1, 1.0]}, sample={
        "max_kl": ["loguniform", 1e-3, 1e-1], "vf_epochs": ["randint", 1, 3],
        "update": ["choice", ["trpo", "npg"]]}, samples=4, seeds=2, sample_seed=7)
    settings = spec.settings()
    assert len(settings) == 8 and len(spec.trials()) == 16
    assert settings == SweepSpec.from_dict(spec.to_dict()).settings()
    assert all(1e-3 <= s["max_kl"] <= 1e-1 and s["vf_epochs"] in (1, 2, 3) and s["update"] in ("trpo", "npg")
               for s in settings)
    assert [s["max_kl"] for s in settings[:4]] == [s["max_kl"] for s in settings[4:]]
    assert len({s["max_kl"] for s in settings}) == 4
    assert spec.swept == ["damping", "max_kl", "vf_epochs", "update"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(grid={"max_kll": [0.01]}), "TRPOConfig has no field 'max_kll'"),
    (dict(grid={"max_kl": []}), "grid 'max_kl' has no values"),
    (dict(grid={"max_kl": [0.01, 0.0]}), "TRPOConfig.max_kl = 0.0 is not allowed"),
    (dict(grid={"damping": [-1.0]}), "TRPOConfig.damping = -1.0 is not allowed"),
    (dict(grid={"update": ["trpo", "sgd"]}), "TRPOConfig.update = 'sgd' is not allowed"),
    (dict(grid={"max_kl": [0.01]}, seeds=0), "SweepSpec.seeds = 0 is not allowed"),
    (dict(grid={"seed": [1, 2]}), "'seed' is not swept this way"),
    (dict(grid={"max_kl": 0.01}), "grid max_kl = 0.01 is not allowed: must be a list"),
    (dict(sample={"max_kl": ["loguniform", 0.0, 0.1]}, samples=2), "loguniform takes numbers lo < hi"),
    (dict(sample={"max_kl": ["normal", 0.0, 0.1]}, samples=2), "must start with one of"),
    (dict(sample={"max_kl": ["uniform", 0.01, math.inf]}, samples=2),
     "sample max_kl = ['uniform', 0.01, inf]: uniform takes numbers lo < hi (finite, and hi − lo finite)"),
    (dict(sample={"max_kl": ["uniform", -1e308, 1e308]}, samples=2), "uniform takes numbers lo < hi (finite"),
    (dict(sample={"max_kl": ["uniform", math.nan, 0.1]}, samples=2), "uniform takes numbers lo < hi"),
    (dict(sample={"max_kl": ["loguniform", 0.01, math.inf]}, samples=2),
     "sample max_kl = ['loguniform', 0.01, inf]: loguniform takes numbers lo < hi with lo > 0 (finite)"),
    (dict(sample={"max_kl": ["loguniform", 1e-3, 1e308 * 10]}, samples=2), "loguniform takes numbers"),
    (dict(sample={"vf_epochs": ["randint", 1, 2**63]}, samples=2),
     "randint takes whole numbers lo < hi with −2⁶³ ≤ lo and hi < 2⁶³ − 1"),
    (dict(sample={"vf_epochs": ["randint", 1.5, 4]}, samples=2),
     "sample vf_epochs = ['randint', 1.5, 4]: randint takes whole numbers lo < hi"),
    (dict(sample={"max_kl": ["uniform", 0.01, 0.1]}), "give both distributions and a number"),
])
def test_bad_specs_are_refused_naming_field_and_value(kwargs, message):
    with pytest.raises(SweepError, match=re.escape(message)):
        SweepSpec(base=BASE, **kwargs)


def test_a_folder_holding_another_sweep_or_other_files_is_refused_and_left_untouched(local_sweep, tmp_path):
    out, _ = local_sweep
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SweepError, match=r"holds another sweep \(grid max_kl = \[0.005, 0.02\] there, "
                                         r"\[0.005, 0.03\] here\)"):
        run_sweep(SweepSpec(base=BASE, grid={**GRID, "max_kl": [0.005, 0.03]}, seeds=2), out, progress=False)
    with pytest.raises(SweepError, match="seeds = 2 there, 3 here"):
        run_sweep(SweepSpec(base=BASE, grid=GRID, seeds=3), out, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="is not a sweep folder"):
        run_sweep(SweepSpec(base=BASE, grid=GRID), other, progress=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    spec = SweepSpec(base=BASE, grid=GRID)
    with pytest.raises(SweepError, match="backend = 'spark' is not allowed"):
        run_sweep(spec, tmp_path / "a", backend="spark")
    with pytest.raises(SweepError, match="workers = 0 is not allowed"):
        run_sweep(spec, tmp_path / "a", workers=0)
    with pytest.raises(SweepError, match="asha = True needs backend = 'ray'"):
        run_sweep(spec, tmp_path / "a", asha=True)
    with pytest.raises(SweepError, match="'Nope-v0' is not a registered"):
        run_sweep(SweepSpec(base=BASE.replace(env_id="Nope-v0"), grid=GRID), tmp_path / "a")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("text, message", [("[1, 2]", "holds a JSON list, not a sweep's spec"),
                                           ('{"base": {"env_id": "Cart', "cannot be read as JSON")])
def test_a_sweep_json_that_is_not_a_spec_is_named_and_left_untouched(tmp_path, text, message):
    (tmp_path / "sweep.json").write_text(text)
    with pytest.raises(SweepError, match=re.escape(f"{str(tmp_path / 'sweep.json')!r} {message}")):
        run_sweep(SweepSpec(base=BASE, grid=GRID), tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]
    assert (tmp_path / "sweep.json").read_text() == text


def test_cli_sweep_errors_name_the_field_and_value(tmp_path, capsys):
    out = str(tmp_path / "s")
    for args, message in [
        (["--grid", "max_kl=0,0.01"], "TRPOConfig.max_kl = 0.0 is not allowed"),
        (["--grid", "max_kl=abc"], "max_kl = 'abc' is not a float"),
        (["--grid", "foo=1"], "--grid: TRPOConfig has no field 'foo'"),
        (["--grid", "max_kl="], "--grid 'max_kl' has no values"),
        (["--grid", "max_kl"], "write FIELD=VALUES"),
        (["--grid", "max_kl=0.01", "--seeds", "0"], "SweepSpec.seeds = 0 is not allowed"),
        (["--grid", "normalize_obs=maybe"], "normalize_obs = 'maybe' is not a bool"),
        (["--sample", "max_kl=uniform:a:b", "--samples", "2"], "uniform takes numbers"),
        (["--sample", "max_kl=uniform:0.01:inf", "--samples", "2"], "max_kl = ['uniform', 0.01, inf]: uni"),
        (["--sample", "max_kl=loguniform:1e-3:1e400", "--samples", "2"], "loguniform takes numbers"),
        ([], "give --grid"),
        (["--grid", "sampling=single-path,vine"], "the vine trials would not get the preset's vine settings"),
        (["--sample", "sampling=choice:single-path,vine", "--samples", "2"], "sweep each sampling scheme"),
    ]:
        assert main(["sweep", "--preset", "CartPole-v1", "--out", out, *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not Path(out).exists()


def test_cli_sweep_parses_tuples_and_booleans(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--preset", "CartPole-v1", "--total-steps", "512", "--batch-steps", "512",
                 "--num-envs", "4", "--grid", "hidden_sizes=16,8x8", "normalize_obs=true",
                 "--workers", "1", "--no-progress", "--out", str(out)]) == 0
    rows = read_table(out)
    assert [(r["hidden_sizes"], r["normalize_obs"]) for r in rows] == [([16], True), ([8, 8], True)]
    assert '"8 8"' in (out / "results.csv").read_text()


SWEEP_TOY_MODULE = registering_module_source("TrpoLabSweepToy-v0")


def test_a_sweep_over_an_env_of_ones_own_module_runs_in_its_worker_processes(tmp_path, monkeypatch, capsys):
    import gymnasium as gym

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "trpo_lab_sweep_toy.py").write_text(SWEEP_TOY_MODULE)
    monkeypatch.syspath_prepend(str(mods))  # spawned workers inherit sys.path
    try:
        out = tmp_path / "s"
        assert main(["sweep", "--env-id", "trpo_lab_sweep_toy:TrpoLabSweepToy-v0", "--total-steps", "32",
                     "--batch-steps", "16", "--num-envs", "2", "--grid", "max_kl=0.01,0.02", "--workers", "2",
                     "--no-progress", "--out", str(out)]) == 0, capsys.readouterr().err
        assert [(r["status"], r["steps"]) for r in read_table(out)] == [("finished", 32)] * 2
        # evaluating a trial in a fresh process: the module comes from PYTHONPATH there
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mods), *sys.path])}
        command = [sys.executable, "-m", "trpo_lab.cli", "evaluate", str(out / "trials" / "000-s0"),
                   "--episodes", "2", "--json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["env_id"] == "trpo_lab_sweep_toy:TrpoLabSweepToy-v0"
    finally:
        sys.modules.pop("trpo_lab_sweep_toy", None)
        gym.registry.pop("TrpoLabSweepToy-v0", None)


def test_summarize_known_answer():
    nan = math.nan
    history = [{"iteration": 1, "steps": 100, "mean_return": nan},
               {"iteration": 2, "steps": 200, "mean_return": 10.0},
               {"iteration": 3, "steps": 400, "mean_return": 40.0},
               {"iteration": 4, "steps": 500, "mean_return": 30.0}]
    # (100·10 + 200·40 + 100·30) / 400 = 30
    assert summarize(history) == {"final_return": 30.0, "best_return": 40.0, "auc_return": 30.0,
                                  "steps": 500, "iterations": 4}
    empty = summarize(history[:1])
    assert math.isnan(empty["best_return"]) and math.isnan(empty["auc_return"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_run_folder_round_trip(tmp_path, fmt):
    config = BASE.replace(total_steps=1024)
    trainer = run_training(config, tmp_path / "run", metrics=fmt, progress=False)
    assert read_metrics(tmp_path / "run") == [r.as_dict() for r in trainer.history]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "finished" and result["steps"] == 1024
    stopped = run_training(config, tmp_path / "stop", progress=False, callback=lambda r, t: True)
    assert len(stopped.history) == 1
    assert json.loads((tmp_path / "stop" / "result.json").read_text())["status"] == "stopped"
    assert (tmp_path / "stop" / "checkpoint.pt").exists()


def test_cli_sweep_takes_its_base_config_from_a_config_file(tmp_path, local_sweep, capsys):
    out, rows = local_sweep
    run_dir = trial_dirs(out, rows)[3]  # max_kl 0.005, damping 0.1, seed 1
    assert main(["sweep", "--config", str(run_dir / "config.json"), "--grid", "damping=0.01",
                 "--workers", "1", "--no-progress", "--out", str(tmp_path / "s")]) == 0
    (row,) = read_table(tmp_path / "s")  # the config's seed 1, damping 0.01: the sweep's trial 000-s1
    expected = {k: v for k, v in rows[1].items() if k not in ("max_kl", "wall_clock_s")}
    assert {k: v for k, v in row.items() if k != "wall_clock_s"} == expected
    capsys.readouterr()
    assert main(["sweep", "--config", str(tmp_path / "nope.json"), "--grid", "damping=0.1",
                 "--out", str(tmp_path / "t")]) == 2
    assert f"--config {str(tmp_path / 'nope.json')!r} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
