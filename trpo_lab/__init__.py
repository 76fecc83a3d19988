"""trpo_lab: Trust Region Policy Optimization (Schulman et al. 2015) as a small, readable lab.

The names below load on first use (PEP 562), so `import trpo_lab` and light modules such as
`trpo_lab.widgets` or `trpo_lab.settings` do not import torch: a notebook can send plotly's widget
code to the page first and let the browser load it while the kernel imports torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {  # module → the public names it gives the package
    "advantages": ("discounted_returns", "gae", "td_errors"),
    "config": ("PRESETS", "ConfigError", "TRPOConfig"),
    "policies": ("CategoricalPolicy", "GaussianPolicy", "MultiCategorical", "MultiCategoricalPolicy",
                 "PolicySpec", "SpaceError", "ValueFunction", "build_policy"),
    "rollout": ("EnvError", "RunningMeanStd", "evaluate_policy", "make_vector_env"),
    "settings": ("UPDATE_RULES", "StepSettings"),
    "train": ("IterationRecord", "Trainer", "train"),
    "trust_region": ("CGResult", "StepCache", "StepReport", "Trial", "UpdateProblem",
                     "backtracking_line_search", "conjugate_gradient", "empirical_fisher_operator",
                     "fisher_operator", "fisher_vector_product", "make_update_problem", "mean_kl",
                     "natural_step", "per_state_kl", "policy_gradient", "surrogate", "trpo_step",
                     "update_step"),
    "value": ("ValueFitError", "ValueFitReport", "fit_value", "make_value_optimizer"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'trpo_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


class _Package(types.ModuleType):
    """Importing a submodule binds its name in the package (`trpo_lab.train` ← the module); where
    the package exports a name of the same spelling (the function `train`), keep the export."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and _MODULE_OF.get(name) == name
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
