"""trpo_lab: Trust Region Policy Optimization (Schulman et al. 2015) as a small, readable lab."""

from .advantages import discounted_returns, gae, td_errors
from .config import PRESETS, ConfigError, TRPOConfig
from .policies import (
    CategoricalPolicy,
    GaussianPolicy,
    MultiCategorical,
    MultiCategoricalPolicy,
    PolicySpec,
    SpaceError,
    ValueFunction,
    build_policy,
)
from .rollout import EnvError, RunningMeanStd, evaluate_policy, make_vector_env
from .settings import UPDATE_RULES, StepSettings
from .train import IterationRecord, Trainer, train
from .trust_region import (
    CGResult,
    StepCache,
    StepReport,
    Trial,
    UpdateProblem,
    backtracking_line_search,
    conjugate_gradient,
    empirical_fisher_operator,
    fisher_operator,
    fisher_vector_product,
    make_update_problem,
    mean_kl,
    natural_step,
    per_state_kl,
    policy_gradient,
    surrogate,
    trpo_step,
    update_step,
)
from .value import ValueFitError, ValueFitReport, fit_value, make_value_optimizer

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "CGResult", "CategoricalPolicy", "ConfigError", "EnvError", "GaussianPolicy",
    "IterationRecord", "MultiCategorical", "MultiCategoricalPolicy",
    "PolicySpec", "RunningMeanStd", "SpaceError", "StepCache", "StepReport",
    "StepSettings", "UPDATE_RULES", "empirical_fisher_operator", "per_state_kl", "update_step",
    "TRPOConfig", "Trainer", "Trial", "UpdateProblem", "ValueFitError", "ValueFitReport", "ValueFunction",
    "backtracking_line_search", "build_policy", "conjugate_gradient", "discounted_returns",
    "evaluate_policy", "fisher_operator", "fisher_vector_product", "fit_value", "gae",
    "make_update_problem", "make_value_optimizer", "make_vector_env", "mean_kl", "natural_step",
    "policy_gradient", "surrogate", "td_errors", "train", "trpo_step",
]
