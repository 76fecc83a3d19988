"""Training with every update rule, from the CLI: records are honest per rule, and CartPole is solved."""

import csv
import json
import math

import pytest

from trpo_lab.cli import main

SMALL = ["--total-steps", "1024", "--batch-steps", "512", "--num-envs", "4", "--no-progress"]


@pytest.mark.parametrize("rule", ["trpo", "npg", "pg", "ppo-clip"])
def test_each_rule_trains_and_its_records_say_what_applies(rule, tmp_path):
    run = tmp_path / rule
    assert main(["train", "--update", rule, "--out", str(run), *SMALL]) == 0
    assert json.loads((run / "config.json").read_text())["update"] == rule
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2 and all(r["update"] == rule for r in rows)
    backtracks = [float(r["backtracks"]) for r in rows]
    if rule == "trpo":
        assert all(b >= 0 and b == int(b) for b in backtracks)
    else:  # no line search: NaN, never a fake 0
        assert all(math.isnan(b) for b in backtracks)
    assert all(float(r["max_state_kl"]) >= float(r["kl"]) for r in rows if r["accepted"] == "True")


def test_options_are_flags_and_bad_values_name_the_choices(tmp_path, capsys):
    run = tmp_path / "opts"
    assert main(["train", "--accept-rule", "kl-1.5", "--kl-constraint", "max", "--fisher", "empirical",
                 "--kl-direction", "new-old", "--out", str(run), *SMALL]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["accept_rule"], config["kl_constraint"], config["fisher"], config["kl_direction"]) == (
        "kl-1.5", "max", "empirical", "new-old")
    with pytest.raises(SystemExit):
        main(["train", "--update", "sgd", "--out", str(tmp_path / "bad"), *SMALL])
    assert "invalid choice: 'sgd'" in capsys.readouterr().err
    assert main(["train", "--ppo-clip", "1.5", "--out", str(tmp_path / "bad2"), *SMALL]) == 2
    assert "ppo_clip = 1.5 is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "bad2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["npg", "ppo-clip"])
def test_npg_and_ppo_clip_solve_cartpole_with_the_preset(rule, tmp_path, capsys):
    """Issue 11's acceptance: `train --preset CartPole-v1 --seed 0 --update U`, then a deterministic
    evaluation over 10 episodes ≥ 475 (trpo's own is test_training's learning test)."""
    run = tmp_path / rule
    assert main(["train", "--preset", "CartPole-v1", "--seed", "0", "--update", rule, "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_return"] >= 475, result
