"""MultiDiscrete action spaces: a product of independent categoricals (as Stable-Baselines3 has), from
the distribution's algebra through the Fisher, the sampler, training, checkpoints and the CLI."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import MULTI_NVEC, small_problem
from torch.distributions import Categorical, kl_divergence
from toy_envs import MATCH_TARGETS_ID, MatchTargetsEnv

from trpo_lab import Trainer, TRPOConfig, train
from trpo_lab.checkpoint import checkpoint_callback, load_agent, load_checkpoint
from trpo_lab.cli import main
from trpo_lab.policies import MultiCategorical, PolicySpec, SpaceError, build_policy, spec_for_spaces
from trpo_lab.rollout import Sampler, make_vector_env
from trpo_lab.trust_region import fisher_operator

F64 = torch.float64
SMALL = dict(env_id=MATCH_TARGETS_ID, num_envs=4, batch_steps=512)


def components(logits):
    return [Categorical(logits=c) for c in torch.split(logits, list(MULTI_NVEC), -1)]


def test_log_prob_entropy_and_kl_are_sums_over_the_components():
    g = torch.Generator().manual_seed(0)
    p_logits = torch.randn(50, sum(MULTI_NVEC), generator=g, dtype=F64)
    q_logits = torch.randn(50, sum(MULTI_NVEC), generator=g, dtype=F64)
    p, q = MultiCategorical(p_logits, MULTI_NVEC), MultiCategorical(q_logits, MULTI_NVEC)
    actions = torch.stack([torch.randint(n, (50,), generator=g) for n in MULTI_NVEC], -1)
    pc, qc = components(p_logits), components(q_logits)
    assert p.batch_shape == (50,) and p.event_shape == (len(MULTI_NVEC),)
    torch.testing.assert_close(p.log_prob(actions), sum(c.log_prob(actions[:, k]) for k, c in enumerate(pc)),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(p.entropy(), sum(c.entropy() for c in pc), rtol=1e-14, atol=0)
    kl = kl_divergence(p, q)
    torch.testing.assert_close(kl, sum(kl_divergence(a, b) for a, b in zip(pc, qc)), rtol=1e-14, atol=0)
    assert kl.shape == (50,) and (kl > 0).all()
    assert torch.equal(kl_divergence(p, p), torch.zeros(50, dtype=F64))
    # the joint is a product: Σ_a π(a) = 1 over all 3·2·4 joint actions
    grid = torch.cartesian_prod(*[torch.arange(n) for n in MULTI_NVEC])
    total = MultiCategorical(p_logits[:1].expand(len(grid), -1), MULTI_NVEC).log_prob(grid).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)
    samples = p.sample((3,))
    assert samples.shape == (3, 50, len(MULTI_NVEC))
    assert all(int(samples[..., k].max()) < n for k, n in enumerate(MULTI_NVEC))
    assert torch.equal(p.mode, torch.stack([c.logits.argmax(-1) for c in pc], -1))


def test_the_fisher_equals_the_sum_of_the_components_explicit_fishers():
    """F = mean_i Σ_k J_kᵀ (diag p_k − p_k p_kᵀ) J_k, J_k = ∂logits_k/∂θ: the Fisher of a product of
    independent categoricals is the sum of theirs (the KL's Hessian, through `kl_divergence`)."""
    problem = small_problem("multi-categorical", n=6, hidden=(3,))
    theta = problem.theta_old
    F = torch.zeros(theta.numel(), theta.numel(), dtype=F64)
    for i in range(problem.batch_size):
        rows = torch.tensor([i])
        J = torch.func.jacrev(lambda th, rows=rows: problem.distribution_at(th, rows).logits[0])(theta)
        probs = problem.old_distribution(rows)
        for (start, n), comp in zip(zip(np.cumsum((0,) + MULTI_NVEC[:-1]), MULTI_NVEC), probs.components):
            p = comp.probs[0]
            Jk = J[start:start + n]
            F += Jk.T @ (torch.diag(p) - torch.outer(p, p)) @ Jk
    F /= problem.batch_size
    v = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(fisher_operator(problem)(v), F @ v, rtol=1e-9, atol=1e-11)


def test_spaces_map_to_a_multi_categorical_spec_and_bad_ones_are_named():
    obs = gym.spaces.Box(-1.0, 1.0, (4,))
    spec = spec_for_spaces(obs, gym.spaces.MultiDiscrete([3, 5]), (8,))
    assert (spec.kind, spec.act_dim, spec.nvec) == ("multi-categorical", 2, (3, 5))
    assert PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert PolicySpec.from_dict({k: v for k, v in spec_for_spaces(obs, gym.spaces.Discrete(2)).to_dict()
                                 .items() if k != "nvec"}).nvec == ()  # specs saved before nvec existed
    policy = build_policy(spec)
    assert policy.logits_net[-1].out_features == 8
    with pytest.raises(SpaceError, match="must start at 0"):
        spec_for_spaces(obs, gym.spaces.MultiDiscrete([3, 5], start=[1, 0]))
    with pytest.raises(SpaceError, match="a Discrete space must start at 0 \\(start = 1\\)"):
        spec_for_spaces(obs, gym.spaces.Discrete(3, start=1))  # the policy samples 0..n-1
    assert spec_for_spaces(obs, gym.spaces.Discrete(3, start=0)).kind == "categorical"
    with pytest.raises(SpaceError, match="use Discrete, a 1-D MultiDiscrete or a 1-D Box"):
        spec_for_spaces(obs, gym.spaces.MultiDiscrete([[2, 2], [2, 2]]))
    with pytest.raises(SpaceError, match="nvec = \\(3,\\) is not allowed"):
        build_policy(PolicySpec("multi-categorical", 4, 2, (8,), nvec=(3,)))
    with pytest.raises(SpaceError, match="kind = 'nope' is not allowed"):
        build_policy(PolicySpec("nope", 4, 2))


def test_the_sampler_draws_valid_component_actions_from_the_policy():
    envs = make_vector_env(MATCH_TARGETS_ID, 3)
    spec = spec_for_spaces(envs.single_observation_space, envs.single_action_space, (16,))
    torch.manual_seed(0)
    policy = build_policy(spec)
    sampler = Sampler(envs)
    sampler.reset(seed=0)
    batch = sampler.collect(policy, 40, torch.Generator().manual_seed(1))
    assert batch.actions.shape == (40, 3, 3) and batch.actions.dtype == torch.int64
    for k, n in enumerate(MatchTargetsEnv.nvec):
        a = batch.actions[..., k]
        assert int(a.min()) >= 0 and int(a.max()) < n
        assert len(torch.unique(a)) == n  # a near-uniform initial policy tries every choice
    with torch.no_grad():
        obs = batch.obs.reshape(-1, spec.obs_dim)
        assert torch.equal(policy.sample(obs, deterministic=True), policy.dist(obs).mode)


@pytest.mark.parametrize("update", ["trpo", "ppo-clip"])
def test_training_on_a_multidiscrete_env_learns_to_match_the_targets(update):
    """MatchTargets: a random policy scores ≈ 1.08 per step (21.7 per 20-step episode), a perfect one 3
    (60). Fifteen small iterations of trpo or ppo-clip take the deterministic policy well above random."""
    config = TRPOConfig(**SMALL, total_steps=15 * 512, update=update)
    trainer = train(config, progress=False)
    first, last = trainer.history[0], trainer.history[-1]
    assert all(r.accepted for r in trainer.history)
    assert last.mean_return > first.mean_return + 5
    assert last.entropy < first.entropy
    assert trainer.evaluate(episodes=5)[0].mean() >= 40


def test_a_multidiscrete_run_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path):
    config = TRPOConfig(**SMALL, total_steps=3 * 512)
    whole = train(config, progress=False)
    train(config.replace(total_steps=2 * 512), progress=False,
          callback=checkpoint_callback(tmp_path / "c.pt"))
    resumed = train(config, trainer=load_checkpoint(tmp_path / "c.pt", total_steps=config.total_steps),
                    progress=False)
    assert [r.as_dict() | {"sample_seconds": 0, "update_seconds": 0, "value_seconds": 0}
            for r in resumed.history] == \
           [r.as_dict() | {"sample_seconds": 0, "update_seconds": 0, "value_seconds": 0}
            for r in whole.history]
    policy, _, saved = load_agent(tmp_path / "c.pt")
    assert policy.spec.nvec == MatchTargetsEnv.nvec and saved.env_id == MATCH_TARGETS_ID
    assert isinstance(Trainer(config).policy.dist(torch.zeros(1, 9)), MultiCategorical)


def test_the_cli_trains_and_evaluates_a_multidiscrete_env(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env-id", MATCH_TARGETS_ID, "--total-steps", "1024", "--batch-steps", "512",
                 "--num-envs", "4", "--update", "npg", "--no-progress", "--out", str(run)]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2] and all(r["update"] == "npg" for r in rows)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == MATCH_TARGETS_ID and len(result["returns"]) == 2


def test_the_vine_refuses_multidiscrete_actions_by_name():
    with pytest.raises(ValueError, match="sampling = 'vine' does not support MultiDiscrete actions"):
        Trainer(TRPOConfig(**SMALL, total_steps=512, sampling="vine", vine_actions=2))
