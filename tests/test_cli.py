import csv
import json
from pathlib import Path

import pytest
import torch

from trpo_lab.cli import main
from trpo_lab.config import ConfigError
from trpo_lab.runs import MetricsError, MetricsWriter, read_metrics, read_result, summarize
from trpo_lab.train import Trainer

SMALL = ["--total-steps", "1024", "--batch-steps", "512", "--num-envs", "4", "--no-progress"]


def test_train_writes_config_metrics_and_checkpoint_then_evaluate_reads_them(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "CartPole-v1", "--seed", "3", "--max-kl", "0.02",
                 "--hidden-sizes", "32", "32", "--out", str(run), *SMALL]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 3 and config["max_kl"] == 0.02 and config["hidden_sizes"] == [32, 32]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(float(r["kl"]) <= 0.02 for r in rows)
    assert (run / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == "CartPole-v1" and len(result["returns"]) == 3
    assert result["mean_return"] == pytest.approx(sum(result["returns"]) / 3)
    assert main(["evaluate", str(run), "--episodes", "2"]) == 0
    assert "±" in capsys.readouterr().out


def test_resume_continues_and_appends_metrics(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--metrics", "jsonl", *SMALL]) == 0
    assert main(["train", "--out", str(run), "--resume", "--metrics", "jsonl", "--total-steps", "2048",
                 "--no-progress"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4]


def test_errors_name_what_is_wrong_and_touch_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *SMALL]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(run), *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert main(["train", "--out", str(tmp_path / "x"), "--gamma", "1.5", *SMALL]) == 2
    assert "TRPOConfig.gamma = 1.5" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "y"), "--env-id", "Nope-v0", *SMALL]) == 2
    assert "'Nope-v0' is not a registered" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "z"), "--resume", *SMALL]) == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "Nope-v0", "--out", str(tmp_path / "w")])


def test_presets_are_listed(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1:" in out and "Pendulum-v1:" in out and "Hopper-v5:" in out
    # the vine overrides train --sampling vine puts on top of CartPole-v1's preset
    assert "  with --sampling vine, on top: total_steps=600000, batch_steps=512" in out


TIMING = {"sample_seconds", "update_seconds", "value_seconds"}
FIVE = ["--total-steps", "2560", "--batch-steps", "512", "--num-envs", "4", "--no-progress"]


def without_timings(run_dir):
    """The run's metrics rows, timings aside, NaN-safe for exact comparison."""
    return [repr({k: v for k, v in row.items() if k not in TIMING}) for row in read_metrics(run_dir)]


def interrupt_at_call(monkeypatch, n):
    """Ctrl-C at the start of the n-th `Trainer.iterate` call (mid-iteration for the CLI)."""
    iterate, calls = Trainer.iterate, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return iterate(self)

    monkeypatch.setattr(Trainer, "iterate", interrupted)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ctrl_c_says_where_to_resume_and_resuming_gives_each_iteration_once(tmp_path, capsys, monkeypatch,
                                                                             fmt):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main(["train", "--out", str(whole), "--metrics", fmt, *FIVE]) == 0
    interrupt_at_call(monkeypatch, 5)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--metrics", fmt, "--checkpoint-every", "3", *FIVE]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "stopped after iteration 4" in err and "(iteration 3)" in err
    assert f"resume with: trpo-lab train --out {run} --resume" in err
    assert [p.name for p in run.iterdir() if p.name.startswith("metrics")] == [f"metrics.{fmt}"]
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2, 3, 4]
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == 3  # none written from the dropped iteration
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0  # no --metrics: the run's
    assert [p.name for p in run.iterdir() if p.name.startswith("metrics")] == [f"metrics.{fmt}"]
    assert without_timings(run) == without_timings(whole)  # rows 4 and 5 once each, as never stopping
    result = read_result(run)
    assert {k: result[k] for k in ("steps", "iterations", "final_return")} == \
        {k: summarize(read_metrics(run))[k] for k in ("steps", "iterations", "final_return")}


def test_a_run_interrupted_before_its_first_checkpoint_resumes_from_the_start(tmp_path, capsys, monkeypatch):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main(["train", "--out", str(whole), *FIVE]) == 0
    interrupt_at_call(monkeypatch, 3)
    capsys.readouterr()
    assert main(["train", "--out", str(run), *FIVE]) == 130
    err = capsys.readouterr().err
    assert "stopped after iteration 2" in err and "no checkpoint yet" in err and "--resume" in err
    assert not (run / "checkpoint.pt").exists() and (run / "metrics.csv").exists()
    monkeypatch.undo()
    assert main(["train", "--out", str(run), *FIVE]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "starting it from iteration 0" in capsys.readouterr().err
    assert without_timings(run) == without_timings(whole)


def test_a_new_run_never_appends_to_metrics_left_by_another_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iteration": 7}\n')
    assert main(["train", "--out", str(run), *SMALL]) == 2
    assert "metrics.jsonl from another run" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"iteration": 7}\n' and not (run / "config.json").exists()
    with pytest.raises(ConfigError, match="never appends"):
        MetricsWriter(run, "jsonl")


def test_resume_keeps_the_runs_settings_and_metrics_format(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--metrics", "jsonl", *SMALL]) == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-kl", "0.5", "--update", "npg",
                 "--total-steps", "2048"]) == 2
    err = capsys.readouterr().err
    assert "--max-kl 0.5 differs from the run's max_kl = 0.01" in err
    assert "--update npg differs from the run's update = 'trpo'" in err
    assert "start a new run" in err
    assert main(["train", "--out", str(run), "--resume", "--preset", "Pendulum-v1"]) == 2
    assert "--preset Pendulum-v1 (its env_id = 'Pendulum-v1') differs" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--metrics", "csv", "--total-steps", "2048"]) == 2
    assert "writes metrics.jsonl" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--total-steps", "512"]) == 2
    assert "fewer than the 1024 steps" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume"]) == 2  # finished: nothing to continue
    assert "has finished" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # no refusal touched the run
    assert main(["train", "--out", str(run), "--resume", "--max-kl", "0.01", "--total-steps", "2048",
                 "--no-progress"]) == 0  # a flag equal to the run's value is fine
    assert json.loads((run / "config.json").read_text())["total_steps"] == 2048
    assert not (run / "metrics.csv").exists()
    assert [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4]


def test_bad_input_gives_clear_errors_not_tracebacks(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--seed", "-1"]) == 2
    assert "--seed = -1 is not allowed: must be ≥ 0" in capsys.readouterr().err
    config = tmp_path / "cfg.json"
    config.write_text("[1, 2]")
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--grid", "max_kl=0.01", "--out", str(sweep)]) == 2
    assert f"--config {str(config)!r} holds a JSON list" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("notes")
    assert main(["train", "--out", str(afile), *SMALL]) == 2
    assert f"{str(afile)!r} is an existing file" in capsys.readouterr().err
    assert main(["train", "--out", str(afile / "sub"), *SMALL]) == 2
    assert f"{str(afile / 'sub')!r} cannot be created: Not a directory" in capsys.readouterr().err
    assert afile.read_text() == "notes"


def test_an_unwritable_out_names_the_path_and_the_reason(tmp_path, capsys, monkeypatch):
    """(Simulated: the tests may run as root, who may write anywhere.)"""
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["train", "--out", str(tmp_path / "run"), *SMALL]) == 2
    assert f"{str(tmp_path / 'run')!r} cannot be created: Permission denied" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr("trpo_lab.runs.write_json", refuse)  # any other OSError: its file and reason
    assert main(["train", "--out", str(tmp_path / "run"), *SMALL]) == 2
    assert capsys.readouterr().err == \
        f"trpo-lab: error: {str(tmp_path / 'run' / 'config.json')!r}: Permission denied\n"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_truncated_or_corrupt_metrics_file_names_file_line_and_value(tmp_path, fmt):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--metrics", fmt, *SMALL]) == 0
    path = run / f"metrics.{fmt}"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last row cut off mid-write
    line = 3 if fmt == "csv" else 2
    with pytest.raises(MetricsError, match=rf"{path.name}' line {line}: .*truncated or damaged"):
        read_metrics(run)
    if fmt == "csv":
        rows = text.splitlines()
        path.write_text("\n".join([rows[0], rows[1] + ",extra", rows[2]]))
        with pytest.raises(MetricsError, match=r"line 2: values \['extra'\] are past the header's 19"):
            read_metrics(run)
        rows[1] = "1,x512" + rows[1][len("1,512"):]
        path.write_text("\n".join(rows))
        with pytest.raises(MetricsError, match=r"line 2: column 'steps' = 'x512' is not an int"):
            read_metrics(run)


def test_run_training_reports_an_interruption_and_cuts_metrics_atomically(tmp_path, monkeypatch):
    import os

    from trpo_lab.config import TRPOConfig
    from trpo_lab.runs import RunInterrupted, run_training

    def ctrl_c_at_5(record, trainer):
        if record.iteration == 5:  # its metrics row is written, its checkpoint is not
            raise KeyboardInterrupt

    run = tmp_path / "run"
    config = TRPOConfig(total_steps=2560, batch_steps=512, num_envs=4)
    with pytest.raises(RunInterrupted, match="after iteration 5; its checkpoint .* at iteration 3") as info:
        run_training(config, run, checkpoint_every=3, progress=False, callback=ctrl_c_at_5)
    assert (info.value.iteration, info.value.checkpoint_iteration) == (5, 3)
    before = (run / "metrics.csv").read_bytes()

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        run_training(None, run, resume=True, progress=False)
    assert (run / "metrics.csv").read_bytes() == before  # the cut happens whole or not at all
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv"]
    monkeypatch.undo()
    run_training(None, run, resume=True, progress=False)
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2, 3, 4, 5]


def _rewrite_csv(path: Path, drop: str | None = None, add: str | None = None) -> None:
    """metrics.csv as an older (or another) trpo_lab version would have written it."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c != drop] + ([add] if add else [])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval="1")
        writer.writeheader()
        writer.writerows(rows)


def test_resuming_a_csv_run_of_an_older_version_lines_its_rows_up_with_the_new_columns(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *SMALL]) == 0
    before = read_metrics(run)
    _rewrite_csv(run / "metrics.csv", drop="explained_variance")  # a float column added since
    with pytest.warns(UserWarning, match=r"the columns \['explained_variance'\] are new .* 2 earlier rows "
                                         "hold nan"):
        assert main(["train", "--out", str(run), "--resume", "--total-steps", "2048", "--no-progress"]) == 0
    rows = read_metrics(run)  # one header, every row readable
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert all(r["explained_variance"] != r["explained_variance"] for r in rows[:2])  # nan
    assert rows[2]["explained_variance"] == rows[2]["explained_variance"]
    assert [r["kl"] for r in rows[:2]] == [r["kl"] for r in before]


def test_resuming_a_csv_run_whose_columns_cannot_be_carried_over_is_refused_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *SMALL]) == 0
    _rewrite_csv(run / "metrics.csv", add="from_the_future")
    before = (run / "metrics.csv").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--total-steps", "2048", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "written by another trpo_lab version" in err and "['from_the_future']" in err
    assert (run / "metrics.csv").read_bytes() == before
