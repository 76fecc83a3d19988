"""Training: determinism, checkpoints and resume, and learning CartPole."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from trpo_lab import Trainer, TRPOConfig, train
from trpo_lab.checkpoint import (
    CheckpointError,
    checkpoint_callback,
    load_agent,
    load_checkpoint,
    save_checkpoint,
)

TIMING = {"sample_seconds", "update_seconds", "value_seconds"}


def numbers(history):
    """The records without wall-clock timings, NaN-safe for exact comparison."""
    return [tuple(repr(v) for k, v in dataclasses.asdict(r).items() if k not in TIMING) for r in history]


SMALL = dict(total_steps=5 * 512, batch_steps=512, num_envs=4)


@pytest.mark.parametrize("preset", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_gives_a_bitwise_identical_history(preset):
    config = TRPOConfig.from_preset(preset, **SMALL)
    a = train(config, progress=False)
    b = train(config, progress=False)
    assert numbers(a.history) == numbers(b.history)
    assert all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters()))
    c = train(config.replace(seed=1), progress=False)
    assert numbers(c.history) != numbers(a.history)


@pytest.mark.parametrize("preset", ["CartPole-v1", "Pendulum-v1", "Hopper-v5"])
def test_resuming_from_a_checkpoint_gives_the_same_numbers_as_never_stopping(preset, tmp_path):
    config = TRPOConfig.from_preset(preset, **SMALL)
    whole = train(config, progress=False)
    first = train(config.replace(total_steps=2 * 512), progress=False,
                  callback=checkpoint_callback(tmp_path / "c.pt"))
    resumed = train(config, trainer=load_checkpoint(tmp_path / "c.pt", total_steps=config.total_steps),
                    progress=False)
    assert first.iteration == 2
    assert numbers(resumed.history) == numbers(whole.history)
    assert all(torch.equal(x, y) for x, y in zip(whole.policy.parameters(), resumed.policy.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(whole.value.parameters(), resumed.value.parameters()))


def test_a_checkpoint_holds_the_agent_and_its_normaliser(tmp_path):
    trainer = train(TRPOConfig.from_preset("Pendulum-v1", normalize_obs=True, **SMALL), progress=False)
    save_checkpoint(trainer, tmp_path / "c.pt")
    policy, normalizer, config = load_agent(tmp_path / "c.pt")
    assert config == trainer.config and normalizer is not None
    assert (normalizer.mean == trainer.normalizer.mean).all() and normalizer.count == trainer.normalizer.count
    assert all(torch.equal(x, y) for x, y in zip(policy.parameters(), trainer.policy.parameters()))


def test_corrupt_foreign_and_missing_checkpoints_give_clear_errors(tmp_path):
    trainer = train(TRPOConfig(**SMALL), progress=False)
    good = tmp_path / "good.pt"
    save_checkpoint(trainer, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable trpo_lab checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a trpo_lab checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_agent(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("key", ["spec", "config", "policy", "history"])
def test_a_checkpoint_missing_an_entry_names_the_file_and_the_entry(tmp_path, key):
    trainer = train(TRPOConfig(**SMALL), progress=False)
    path = tmp_path / "c.pt"
    save_checkpoint(trainer, path)
    state = torch.load(path, weights_only=False)
    del state[key]
    torch.save(state, path)
    for load in (load_agent, load_checkpoint):
        with pytest.raises(CheckpointError, match=rf"'{path}' is a damaged .* no '{key}' entry"):
            load(path)


def test_a_checkpoint_with_a_bad_config_names_the_file(tmp_path):
    trainer = train(TRPOConfig(**SMALL), progress=False)
    path = tmp_path / "c.pt"
    save_checkpoint(trainer, path)
    state = torch.load(path, weights_only=False)
    state["config"]["max_kl"] = -1.0
    torch.save(state, path)
    for load in (load_agent, load_checkpoint):
        with pytest.raises(CheckpointError, match=rf"'{path}' is a damaged .*max_kl = -1.0"):
            load(path)


def test_a_failed_write_never_damages_the_existing_checkpoint(tmp_path, monkeypatch):
    trainer = train(TRPOConfig(**SMALL), progress=False)
    path = tmp_path / "c.pt"
    save_checkpoint(trainer, path)
    before = path.read_bytes()

    def exploding_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(trainer, path)
    assert path.read_bytes() == before
    assert [p.name for p in Path(tmp_path).iterdir()] == ["c.pt"]  # no temporary file left behind


def test_atomically_written_files_get_the_usual_permissions(tmp_path):
    """config.json, checkpoints, the cut metrics: 0666 less the umask, like a file made by `open`
    (mkstemp's 0600 hid a shared run folder's files from its group)."""
    import os

    from trpo_lab.checkpoint import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda f: f.write(b"x"))
        os.umask(0o002)
        atomic_write(tmp_path / "b.txt", lambda f: f.write(b"y"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_trainer_refusing_an_env_closes_the_envs_it_made():
    import gymnasium as gym
    from gymnasium import spaces

    from trpo_lab.policies import SpaceError

    closed = []

    class TupleActions(gym.Env):
        observation_space = spaces.Box(-1.0, 1.0, (2,))
        action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))

        def close(self):
            closed.append(self)

    gym.register("TrpoLabTupleActions-v0", entry_point=TupleActions)
    try:
        with pytest.raises(SpaceError, match="action_space"):
            Trainer(TRPOConfig(env_id="TrpoLabTupleActions-v0", num_envs=2, batch_steps=64))
    finally:
        gym.registry.pop("TrpoLabTupleActions-v0")
    assert len(closed) == 2  # both copies, not left open behind the error


def test_a_callback_sees_every_record_and_can_stop_training():
    seen = []
    trainer = train(TRPOConfig(**SMALL), progress=False,
                    callback=lambda record, t: seen.append(record.iteration) or record.iteration == 3)
    assert seen == [1, 2, 3] and trainer.iteration == 3


@pytest.mark.slow
def test_trpo_learns_cartpole_within_100k_steps():
    """The issue's learning test: seed 0, ≤ 100k steps, deterministic evaluation ≥ 475."""
    config = TRPOConfig.from_preset("CartPole-v1", seed=0)
    assert config.total_steps <= 100_000
    trainer = train(config, progress=False)
    assert trainer.steps <= 100_000
    returns, _ = trainer.evaluate(episodes=10)
    assert returns.mean() >= 475, returns
    for record in trainer.history:
        assert record.kl <= config.max_kl
        assert record.accepted or record.kl == 0.0
        assert not math.isnan(record.entropy)


@pytest.mark.slow
def test_trpo_solves_pendulum_on_average_over_three_seeds():
    """The issue's acceptance: Pendulum-v1, 100k steps, mean deterministic return over seeds 0-2 ≥ −200."""
    means = []
    for seed in (0, 1, 2):
        trainer = train(TRPOConfig.from_preset("Pendulum-v1", seed=seed), progress=False)
        assert trainer.steps <= 100_000
        assert all(r.kl <= trainer.config.max_kl for r in trainer.history)
        means.append(trainer.evaluate(episodes=10)[0].mean())
    assert sum(means) / 3 >= -200, means


def test_a_user_made_vector_env_trains_with_its_own_env_count():
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    envs = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    trainer = Trainer(TRPOConfig(num_envs=8, batch_steps=64, total_steps=64), env=envs)
    assert trainer.config.num_envs == 2 and trainer.config.batch_steps == 64
    record = trainer.iterate()
    assert record.steps == 64


def test_huge_rewards_stop_training_with_a_clear_error_and_a_finite_policy():
    """A finite reward of 1e30: GAE and the targets are finite (~1e31), the value loss overflows.
    Training stops with ValueFitError in the first iteration (with or without advantage
    normalisation), its policy still finite; a reward beyond float32 stops it in the rollout."""
    from toy_envs import ConstantRewardEnv

    from trpo_lab.problem import flat_params
    from trpo_lab.rollout import EnvError
    from trpo_lab.value import ValueFitError

    for normalize in (True, False):
        config = TRPOConfig(num_envs=1, batch_steps=256, total_steps=1024, normalize_advantages=normalize)
        trainer = Trainer(config, env=ConstantRewardEnv(1e30, length=50))
        with pytest.raises(ValueFitError, match="squared errors overflow .* scale them down"):
            train(config, trainer=trainer, progress=False)
        assert torch.isfinite(flat_params(trainer.policy)).all()
        assert all(torch.isfinite(p).all() for p in trainer.value.parameters())
    config = TRPOConfig(num_envs=1, batch_steps=256, total_steps=1024)
    with pytest.raises(EnvError, match=r"reward 1e\+39 at rollout step 0 is too large for the batch's"):
        train(config, env=ConstantRewardEnv(1e39), progress=False)


def test_one_step_episodes_report_nan_explained_variance():
    from toy_envs import ConstantRewardEnv

    config = TRPOConfig(num_envs=1, batch_steps=128, total_steps=256)
    trainer = train(config, env=ConstantRewardEnv(1.0, length=1), progress=False)
    assert len(trainer.history) == 2
    assert all(math.isnan(r.explained_variance) for r in trainer.history)
    assert all(math.isfinite(r.value_loss) for r in trainer.history)


def test_a_budget_below_one_batch_still_trains_one_batch():
    """README (Command line): a run takes ⌊total_steps / batch_steps⌋ batches, but at least one."""
    assert train(TRPOConfig(total_steps=100, batch_steps=512, num_envs=4), progress=False).steps == 512
    assert train(TRPOConfig(total_steps=1500, batch_steps=512, num_envs=4), progress=False).steps == 1024
