import dataclasses
import math

import pytest

from trpo_lab.config import PRESETS, ConfigError, TRPOConfig, field_docs


def test_defaults_follow_the_literature():
    c = TRPOConfig()
    assert (c.max_kl, c.damping, c.cg_iters, c.backtrack_coef, c.backtrack_iters) == (0.01, 0.1, 10, 0.8, 10)
    assert (c.gamma, c.lam) == (0.99, 0.97)


def test_every_field_has_a_docstring():
    docs = field_docs()
    assert {f.name for f in dataclasses.fields(TRPOConfig)} == set(docs)
    assert all(len(d) > 10 for d in docs.values())


@pytest.mark.parametrize("name,value,allowed", [
    ("env_id", "", "gymnasium"), ("seed", -1, "≥ 0"), ("seed", 1.5, "integer"),
    ("total_steps", 0, "≥ 1"), ("num_envs", 0, "≥ 1"), ("batch_steps", 0, "≥ 1"),
    ("batch_steps", 1001, "multiple of num_envs"), ("gamma", 1.5, "[0, 1]"), ("gamma", -0.1, "[0, 1]"),
    ("lam", 2.0, "[0, 1]"), ("max_kl", 0.0, "> 0"), ("max_kl", -0.01, "> 0"),
    ("max_kl", math.nan, "finite"), ("max_kl", "big", "number"), ("damping", -1e-3, "≥ 0"),
    ("cg_iters", 0, "≥ 1"), ("cg_tol", 0.0, "> 0"), ("backtrack_coef", 1.0, "(0, 1)"),
    ("backtrack_coef", 0.0, "(0, 1)"), ("backtrack_iters", 0, "≥ 1"), ("fvp_fraction", 0.0, "(0, 1]"),
    ("fvp_fraction", 1.5, "(0, 1]"), ("normalize_advantages", 1, "True or False"),
    ("hidden_sizes", (64, 0), "positive integers"), ("hidden_sizes", "64", "positive integers"),
    ("activation", "sigmoid", "'tanh' or 'relu'"), ("init_log_std", math.inf, "finite"),
    ("vf_hidden_sizes", (-1,), "positive"),
    ("vf_optimizer", "sgd", "'adam' or 'lbfgs'"), ("vf_lr", 0.0, "> 0"), ("vf_epochs", 0, "≥ 1"),
    ("vf_lbfgs_iters", 0, "≥ 1"), ("vf_minibatch_size", 0, "≥ 1"),
    ("normalize_obs", "yes", "True or False"), ("obs_clip", 0.0, "> 0"),
    ("torch_threads", 0, "≥ 1"),
])
def test_every_bad_value_names_field_value_and_rule(name, value, allowed):
    with pytest.raises(ConfigError) as info:
        TRPOConfig().replace(**{name: value})
    message = str(info.value)
    assert f"TRPOConfig.{name}" in message and repr(value) in message and allowed in message


def test_unknown_field_and_preset_are_named():
    with pytest.raises(ConfigError, match="no field 'max_kll'"):
        TRPOConfig().replace(max_kll=0.1)
    with pytest.raises(ConfigError, match="'Nope-v0' is not known"):
        TRPOConfig.from_preset("Nope-v0")


def test_presets_exist_validate_and_round_trip():
    for name in ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "Hopper-v5"):
        assert name in PRESETS
        c = TRPOConfig.from_preset(name)
        assert c.env_id == name
        assert TRPOConfig.from_dict(c.to_dict()) == c
    assert TRPOConfig.from_preset("CartPole-v1", seed=3).seed == 3


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TRPOConfig().max_kl = 0.5  # type: ignore[misc]
