"""The training loop: rollout → GAE → update problem → update rule (`update_step`) → value fit → record.

`Trainer.iterate()` does one iteration and returns its `IterationRecord`; `train()` runs the whole
budget with a progress bar and an optional callback (notebooks draw live curves from it).
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch
from torch.nn.utils import vector_to_parameters

from .advantages import gae
from .config import TRPOConfig
from .policies import Policy, PolicySpec, SpaceError, ValueFunction, build_policy, spec_for_spaces
from .rollout import RunningMeanStd, Sampler, make_vector_env
from .settings import StepSettings
from .trust_region import StepReport, UpdateProblem, make_update_problem, update_step
from .value import fit_value, make_value_optimizer
from .vine import VineSampler, VineSettings


@dataclass(frozen=True)
class IterationRecord:
    """What one training iteration did. Every field is defined in README.md (Metrics)."""

    iteration: int
    steps: int  # environment steps so far
    episodes: int  # episodes finished in this iteration
    mean_return: float  # mean return of the last 20 finished episodes (NaN before the first)
    mean_length: float
    max_kl: float  # δ
    kl: float  # KL̄ of the accepted step, in the step's kl_direction (default π_old ‖ π_new); 0 when rejected
    surrogate_gain: float  # L(θ_new) − L(θ_old)
    predicted_improvement: float  # g·(full step); NaN when the rule proposes none
    backtracks: float  # line-search rejections (an integer); NaN for rules without a line search
    accepted: bool
    entropy: float  # mean policy entropy on the batch, after the step
    value_loss: float  # value MSE before fitting
    explained_variance: float  # of the value predictions before fitting
    sample_seconds: float
    update_seconds: float  # policy step (`update_step`)
    value_seconds: float  # value fit
    update: str = "trpo"  # the update rule
    max_state_kl: float = float("nan")  # largest per-state KL of the accepted step

    def as_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """The state of a run: agent, envs, value optimiser, RNG, counters. Checkpoints save all of it."""

    def __init__(self, config: TRPOConfig, env=None):
        self.config = config
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.envs = make_vector_env(env if env is not None else config.env_id, config.num_envs)
        if self.envs.num_envs != config.num_envs and env is not None:
            self.config = config = config.replace(
                num_envs=self.envs.num_envs,
                batch_steps=self.envs.num_envs * max(1, config.batch_steps // self.envs.num_envs))
        try:
            spec = spec_for_spaces(self.envs.single_observation_space, self.envs.single_action_space,
                                   config.hidden_sizes, config.activation, config.init_log_std)
        except SpaceError:
            if env is None:  # the envs made here from config.env_id: not left open behind the error
                self.envs.close()
            raise
        self.policy: Policy = build_policy(spec)
        self.value = ValueFunction(spec.obs_dim, config.vf_hidden_sizes, config.activation)
        self.value_optimizer = make_value_optimizer(self.value, config.vf_optimizer, config.vf_lr,
                                                    config.vf_lbfgs_iters)
        self.normalizer = RunningMeanStd((spec.obs_dim,), config.obs_clip) \
            if config.normalize_obs else None
        self.sampler = Sampler(self.envs, self.normalizer)
        self.vine: VineSampler | None = None
        if config.sampling == "vine":
            env_id = self.envs.envs[0].spec.id if self.envs.envs[0].spec else config.env_id
            self.vine = VineSampler(self.sampler, functools.partial(gym.make, env_id), VineSettings(
                config.vine_states, config.vine_actions, config.vine_length, config.gamma))
        self.sampler.reset(seed=config.seed)
        self.last_sim_steps = 0  # simulator steps of the last batch (trunk + branches for the vine)
        self.iteration, self.steps = 0, 0
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.recent_lengths: deque[int] = deque(maxlen=20)
        self.history: list[IterationRecord] = []
        self.last_problem: UpdateProblem | None = None
        self.last_report: StepReport | None = None

    @property
    def step_settings(self) -> StepSettings:
        """The update rule's settings, from the config."""
        return self.config.step_settings()

    @property
    def spec(self) -> PolicySpec:
        return self.policy.spec

    @property
    def done(self) -> bool:
        """True once another batch would exceed `total_steps`, after at least one iteration (so a
        run stays within its budget unless the budget is smaller than one batch). A vine batch's
        size is taken from the last one."""
        step = max(self.config.batch_steps, self.last_sim_steps)
        return self.iteration > 0 and self.steps + step > self.config.total_steps

    def collect_problem(self) -> tuple[UpdateProblem, torch.Tensor, torch.Tensor, list, list]:
        """Roll out one batch and freeze it with the current policy as an `UpdateProblem`.
        Returns (problem, flat obs, value targets, finished episode returns, lengths)."""
        c = self.config
        if self.vine is not None:
            return self._collect_vine_problem()
        batch = self.sampler.collect(self.policy, c.batch_steps // c.num_envs, self.generator)
        self.last_sim_steps = batch.num_steps
        with torch.no_grad():
            values, next_values = self.value(batch.obs), self.value(batch.next_obs)
        advantages, targets = gae(batch.rewards, values, next_values, batch.terminated,
                                  batch.episode_ends, c.gamma, c.lam)
        obs = batch.obs.reshape(batch.num_steps, -1)
        actions = batch.actions.reshape(batch.num_steps, *batch.actions.shape[2:])
        problem = make_update_problem(self.policy, obs, actions, advantages.reshape(-1),
                                      c.fvp_fraction, c.normalize_advantages, self.generator)
        return problem, obs, targets.reshape(-1), batch.episode_returns, batch.episode_lengths

    def _collect_vine_problem(self):
        """The vine's batch (§5.2): the trunk's GAE targets fit the value function (which also
        bootstraps cut branches); the update problem holds the branches' Q̂ as rows."""
        c = self.config
        assert self.vine is not None
        vb = self.vine.collect(self.policy, self.value, c.batch_steps // c.num_envs, self.generator,
                               self.normalizer)
        trunk = vb.trunk
        with torch.no_grad():
            values, next_values = self.value(trunk.obs), self.value(trunk.next_obs)
        _, targets = gae(trunk.rewards, values, next_values, trunk.terminated, trunk.episode_ends,
                         c.gamma, c.lam)
        obs, actions, advantages, groups = vb.rows(c.normalize_advantages)
        problem = make_update_problem(self.policy, obs, actions, advantages, c.fvp_fraction, False,
                                      self.generator, groups)
        self.last_sim_steps = trunk.num_steps + vb.branch_steps
        trunk_obs = trunk.obs.reshape(trunk.num_steps, -1)
        return (problem, trunk_obs, targets.reshape(-1), trunk.episode_returns,
                trunk.episode_lengths)

    def iterate(self) -> IterationRecord:
        """One TRPO iteration; appends its record to `history` and returns it."""
        c = self.config
        t0 = time.perf_counter()
        problem, obs, targets, ep_returns, ep_lengths = self.collect_problem()
        t1 = time.perf_counter()
        report = update_step(problem, self.step_settings, generator=self.generator)
        if report.accepted:
            vector_to_parameters(report.theta_new, self.policy.parameters())
        t2 = time.perf_counter()
        fit = fit_value(self.value, obs, targets, self.value_optimizer, c.vf_epochs,
                        c.vf_minibatch_size, self.generator)
        t3 = time.perf_counter()
        with torch.no_grad():
            entropy = float(self.policy.dist(problem.obs).entropy().mean())
        self.recent_returns.extend(ep_returns)
        self.recent_lengths.extend(ep_lengths)
        self.iteration += 1
        self.steps += self.last_sim_steps
        nan = float("nan")
        record = IterationRecord(
            iteration=self.iteration, steps=self.steps, episodes=len(ep_returns),
            mean_return=float(np.mean(self.recent_returns)) if self.recent_returns else nan,
            mean_length=float(np.mean(self.recent_lengths)) if self.recent_lengths else nan,
            max_kl=c.max_kl, kl=report.kl, surrogate_gain=report.surrogate_gain,
            predicted_improvement=report.predicted_improvement, backtracks=report.backtracks,
            accepted=report.accepted, entropy=entropy, value_loss=fit.loss_before,
            explained_variance=fit.explained_variance, sample_seconds=t1 - t0,
            update_seconds=t2 - t1, value_seconds=t3 - t2, update=c.update,
            max_state_kl=report.max_state_kl)
        self.last_problem, self.last_report = problem, report
        self.history.append(record)
        return record

    def evaluate(self, episodes: int = 10, seed: int | None = None, deterministic: bool = True):
        """Deterministic evaluation returns on fresh envs (see `rollout.evaluate_policy`)."""
        from .rollout import evaluate_policy

        seed = self.config.seed + 10_000 if seed is None else seed
        return evaluate_policy(self.policy, self.config.env_id, episodes, seed, self.normalizer,
                               deterministic)


def train(config: TRPOConfig, *, env=None, callback: Callable[[IterationRecord, Trainer], object]
          | None = None, progress: bool = True, trainer: Trainer | None = None) -> Trainer:
    """Train until `config.total_steps`; returns the `Trainer` (its `history` holds every record).

    `callback(record, trainer)` runs after each iteration; returning True stops training early.
    Pass `trainer` to continue a run (e.g. one loaded from a checkpoint). To write checkpoints as
    it goes, pass `checkpoint.checkpoint_callback(path, every)` as the callback (training knows
    nothing of files; `runs.run_training` does that for the CLI and sweeps).
    """
    from tqdm.auto import tqdm

    if trainer is None:
        trainer = Trainer(config, env)
    bar = tqdm(total=trainer.config.total_steps, initial=trainer.steps, unit="step",
               disable=not progress, desc=trainer.config.env_id, dynamic_ncols=True)
    try:
        while not trainer.done:
            record = trainer.iterate()
            bar.update(record.steps - bar.n)
            if not math.isnan(record.mean_return):
                bar.set_postfix(ret=f"{record.mean_return:.1f}", kl=f"{record.kl:.4f}")
            stop = callback(record, trainer) if callback is not None else None
            if stop is True:
                break
    finally:
        bar.close()
    return trainer
