"""`StepSettings`: every setting of one policy update, each spelled once (name, type, rule, meaning,
slider) in the field's metadata.

`TRPOConfig` inherits these fields (so `config.max_kl` is the step's δ), every `StepReport` stores the
`StepSettings` it was made with, and the explorer's sliders read their ranges and labels from here.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

UPDATE_RULES = ("trpo", "npg", "pg", "ppo-clip")
"""trpo: CG direction, β to the model's boundary, line search · npg: the same direction and β, no
line search (Kakade 2002) · pg: the plain gradient g scaled to the same model KL · ppo-clip: epochs of
minibatch Adam on the clipped surrogate (Schulman et al. 2017)."""


class ConfigError(ValueError):
    """A setting has a value that is not allowed; the message names field, value and rule."""


@dataclass(frozen=True)
class Setting:
    """What one field means and allows. `check(value)` is True when the value is allowed;
    `slider` is the explorer's range (None: no slider), `log` its scale, `step` the distance
    between two of its positions (for a log slider: in decades)."""

    doc: str
    allowed: str
    check: Any  # Callable[[Any], bool]
    label: str = ""
    slider: tuple[float, float] | None = None
    log: bool = False
    step: float | None = None
    rules: tuple[str, ...] = UPDATE_RULES  # the update rules that read this setting


def is_number(v: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False,
              hi_open: bool = False) -> bool:
    """v is a finite int or float (not a bool) in [lo, hi] (an end open where asked)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def _number(lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False):
    return lambda v: is_number(v, lo, hi, lo_open=lo_open, hi_open=hi_open)


def _integer(lo: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _choice(*options: str):
    def check(v: Any) -> bool:
        return v in options
    check.options = options  # type: ignore[attr-defined]  # the CLI offers them as choices
    return check


def setting(default: Any, doc: str, allowed: str, check: Any, **meta: Any) -> Any:
    """A dataclass field carrying its `Setting` (documentation, rule, slider) as metadata."""
    return dataclasses.field(default=default, metadata={"setting": Setting(doc, allowed, check, **meta)})


_LS = ("trpo",)  # settings of the line search
_CG = ("trpo", "npg")  # settings of the CG solve
_TR = ("trpo", "npg", "pg")  # settings of the trust-region model
_PPO = ("ppo-clip",)


@dataclass(frozen=True)
class StepSettings:
    """The settings of one policy update on an `UpdateProblem` (validated once, here)."""

    update: str = setting(
        "trpo", "Update rule: 'trpo', 'npg' (natural gradient, no line search), 'pg' (plain gradient "
        "scaled to the same model KL) or 'ppo-clip'.", f"must be one of {UPDATE_RULES}",
        _choice(*UPDATE_RULES), label="update rule")
    max_kl: float = setting(
        0.01, "Trust-region radius δ: the mean KL(π_old ‖ π_new) an accepted step may not exceed.",
        "must be a finite number > 0", _number(0.0, lo_open=True), label="δ (max KL)",
        slider=(1e-4, 1e-1), log=True, step=0.05, rules=_TR)
    damping: float = setting(
        0.1, "CG damping λ: conjugate gradient solves (F + λ·I) s = g; the model KL is ½xᵀ(F + λI)x.",
        "must be a finite number ≥ 0", _number(0.0), label="damping λ", slider=(1e-4, 1.0), log=True,
        step=0.05, rules=_TR)
    cg_iters: int = setting(
        10, "Conjugate-gradient iterations for (F + λI) s = g.", "must be an integer ≥ 1", _integer(1),
        label="CG iterations", slider=(1, 50), step=1, rules=_CG)
    cg_tol: float = setting(
        1e-10, "CG stops early once ‖r‖² < cg_tol·‖g‖² (a residual relative to the gradient).",
        "must be a finite number > 0", _number(0.0, lo_open=True), rules=_CG)
    backtrack_coef: float = setting(
        0.8, "Line search shrinks the step by this factor per rejected trial.", "must lie in (0, 1)",
        _number(0.0, 1.0, lo_open=True, hi_open=True), label="backtrack coef", slider=(0.3, 0.95),
        step=0.01, rules=_LS)
    backtrack_iters: int = setting(
        10, "Line-search trials before the step is rejected (parameters then stay unchanged).",
        "must be an integer ≥ 1", _integer(1), label="max backtracks", slider=(1, 30), step=1, rules=_LS)
    accept_rule: str = setting(
        "strict", "Line-search acceptance: 'strict' (KL ≤ δ and L improves: the paper's Appendix C), "
        "'improvement-ratio' (L improves by ≥ accept_ratio of the linear model's prediction, KL "
        "unchecked: the original code, modular_rl) or 'kl-1.5' (KL ≤ 1.5δ and L does not decrease: OpenAI "
        "baselines).", "must be 'strict', 'improvement-ratio' or 'kl-1.5'",
        _choice("strict", "improvement-ratio", "kl-1.5"), label="accept rule", rules=_LS)
    accept_ratio: float = setting(
        0.1, "With accept_rule 'improvement-ratio': the fraction of the predicted gain a trial must "
        "realise.", "must lie in (0, 1]", _number(0.0, 1.0, lo_open=True), rules=_LS)
    kl_direction: str = setting(
        "old-new", "The KL the constraint measures: 'old-new' is KL(π_old ‖ π_θ) (the paper; the "
        "original code, modular_rl, computes this one but never checks it) or 'new-old' is "
        "KL(π_θ ‖ π_old) (Spinning Up's Gaussian policies). Both have the Hessian F at θ_old, so "
        "only the line search's check differs.", "must be 'old-new' or 'new-old'",
        _choice("old-new", "new-old"), label="KL direction", rules=_TR)
    fisher: str = setting(
        "analytic", "Fisher matrix F: 'analytic' (the Hessian of the mean KL) or 'empirical' (the mean "
        "outer product of per-sample scores ∇log π(a|s): the paper's 'empirical FIM').",
        "must be 'analytic' or 'empirical'", _choice("analytic", "empirical"), label="Fisher",
        rules=_TR)
    kl_constraint: str = setting(
        "mean", "Which KL over states the line search bounds by δ: 'mean' (the paper's practical "
        "choice) or 'max' (the largest per-state KL, as in its theory; the paper's 'max KL').",
        "must be 'mean' or 'max'", _choice("mean", "max"), label="KL constraint", rules=_LS)
    ppo_clip: float = setting(
        0.2, "PPO clip ε: the ratio π_θ/π_old is clipped to [1 − ε, 1 + ε].", "must lie in (0, 1)",
        _number(0.0, 1.0, lo_open=True, hi_open=True), label="clip ε", slider=(0.05, 0.5), step=0.01,
        rules=_PPO)
    ppo_epochs: int = setting(
        10, "PPO passes over the batch per update.", "must be an integer ≥ 1", _integer(1),
        label="PPO epochs", rules=_PPO)
    ppo_minibatch_size: int = setting(
        64, "PPO minibatch size.", "must be an integer ≥ 1", _integer(1), rules=_PPO)
    ppo_lr: float = setting(
        3e-4, "PPO Adam learning rate.", "must be a finite number > 0", _number(0.0, lo_open=True),
        rules=_PPO)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first step setting whose value is not allowed."""
        for name in _settings():
            check_step_setting(name, getattr(self, name), type(self).__name__)

    def replace(self, **changes: Any) -> StepSettings:
        """A copy with some fields changed (validated); unknown names raise `ConfigError`."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise ConfigError(f"{type(self).__name__} has no field {name!r}; fields are: "
                                  f"{sorted(known)}")
        return dataclasses.replace(self, **changes)

    def step_settings(self) -> StepSettings:
        """Just the step's settings (from a `TRPOConfig`, which inherits them)."""
        if type(self) is StepSettings:
            return self
        return StepSettings(**{name: getattr(self, name) for name in step_fields()})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in step_fields()}

    def applies(self, name: str) -> bool:
        """Whether the setting `name` is read by this update rule."""
        return self.update in step_fields()[name].rules


def step_fields() -> dict[str, Setting]:
    """Every step setting's `Setting`, in field order."""
    return dict(_settings())


@functools.cache
def _settings() -> dict[str, Setting]:
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(StepSettings)}


def check_step_setting(name: str, value: Any, owner: str = "") -> None:
    """Raise `ConfigError` unless `value` is allowed for the step setting `name` (its rule, written
    once in `StepSettings`); the message names `owner.name` (or `name`), the value and what is allowed.
    For `StepSettings` itself and for the pure functions called without one (`natural_step`, …)."""
    spec = _settings()[name]
    if not spec.check(value):
        raise ConfigError(f"{owner + '.' if owner else ''}{name} = {value!r} is not allowed: {spec.allowed}")


def slider_ranges(rule: str | None = None) -> dict[str, tuple[float, float]]:
    """The sliders' ranges, by setting name: of every setting that has one, or only of those
    that `rule` reads (the TRPO explorer shows `slider_ranges("trpo")`)."""
    if rule is not None and rule not in UPDATE_RULES:
        raise ConfigError(f"rule = {rule!r} is not allowed: must be one of {UPDATE_RULES}")
    return {name: s.slider for name, s in step_fields().items()
            if s.slider is not None and (rule is None or rule in s.rules)}


def slider_widget(name: str, value: float, **kwargs: Any) -> Any:
    """An ipywidgets slider for the setting `name`, with the label, range, step and scale of its
    metadata (a log slider's own readout shows the grid point; apps may show the exact value
    beside it). `kwargs` go to the widget (style, layout, continuous_update, ...)."""
    spec = step_fields().get(name)
    if spec is None or spec.slider is None or spec.step is None:
        raise ConfigError(f"name = {name!r} is not allowed: must be a setting with a slider, one of "
                          f"{sorted(slider_ranges())}")
    import ipywidgets as W

    lo, hi = spec.slider
    common = dict(value=value, description=spec.label, step=spec.step, **kwargs)
    if spec.log:
        return W.FloatLogSlider(base=10, min=math.log10(lo), max=math.log10(hi), readout_format=".2e",
                                **common)
    if isinstance(lo, int):
        return W.IntSlider(min=lo, max=hi, **common)
    return W.FloatSlider(min=lo, max=hi, readout_format=".2f", **common)
