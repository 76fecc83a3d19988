import csv
import json

import pytest

from trpo_lab.cli import main

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
