"""The explorer's engine, without widgets: re-run `trpo_step` on a snapshot for a setting of the
sliders and compute what the four views need, redoing only the work that depends on what changed.

    δ, backtrack coefficient, max backtracks → the line search only (`StepCache` keeps g, the Fisher
                                                graph and the CG solve);
    damping, CG iterations                    → a new CG solve, the curve along s, the slice plane
                                                and its grid (all depend only on the direction s);
    snapshot                                  → everything.
The curve and the grid are framed for δ rounded up to a half decade (`view_scale`) and cached per
(direction, view scale): moving δ inside a half decade redraws them without a forward pass.
`work` counts what was computed, so tests can check that δ alone re-ran only the line search.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..settings import StepSettings, slider_ranges
from ..trust_region import StepCache, StepReport, update_step
from .landscape import (
    GRID,
    ExactFisher,
    Grid,
    Plane,
    StepCurve,
    angle_degrees,
    cg_errors,
    curve_coefficients,
    exact_direction,
    exact_fisher,
    grid_shape,
    natural_direction,
    slice_grid,
    slice_plane,
    step_curve,
    view_scale,
)
from .snapshots import Snapshot

RANGES: dict[str, tuple[float, float]] = slider_ranges("trpo")
"""What the explorer's sliders span (and what `Settings` accepts), from `StepSettings`' metadata."""


@dataclass(frozen=True)
class Settings(StepSettings):
    """One position of the explorer's controls: `StepSettings` whose slider fields lie in their
    sliders' ranges."""

    def validate(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            integer = isinstance(lo, int)
            ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"explorer setting {name} = {value!r} is not allowed: must be {kind} "
                                 f"in [{lo:g}, {hi:g}] (the slider's range)")
        super().validate()

    @property
    def direction_key(self) -> tuple[float, int, float, str]:
        """What the search direction s depends on (damping, CG iterations and tolerance, Fisher)."""
        return (float(self.damping), int(self.cg_iters), float(self.cg_tol), self.fisher)

    @classmethod
    def from_config(cls, config: dict) -> Settings:
        """The controls at a training run's settings (slider fields clipped into their ranges)."""
        values = {name: config[name] for name in StepSettings().as_dict() if name in config}
        for name, (lo, hi) in RANGES.items():
            if name in values:
                values[name] = type(lo)(min(max(values[name], lo), hi))
        return cls(**values)


@dataclass(frozen=True)
class ExactComparison:
    """CG against the exact Fisher: x* = (F + damping·I)⁻¹ g and the undamped F⁺g."""

    errors: np.ndarray  # ‖x_k − x*‖/‖x*‖ for k = 0 … cg_iters
    relative_error: float  # of the CG solution s that trpo_step used
    angle: float  # ∠(s, x*) in degrees
    angle_natural: float  # ∠(s, F⁺g) in degrees
    eigenvalues: np.ndarray  # F's spectrum, descending
    damping: float


@dataclass(frozen=True)
class Frame:
    """Everything the four views show for one snapshot and one setting of the sliders."""

    snapshot: str
    settings: Settings
    report: StepReport
    sFs: float  # sᵀFs (undamped); NaN when there is no direction
    curve: StepCurve | None
    plane: Plane | None
    grid: Grid | None
    exact: ExactComparison | None
    exact_note: str  # why there is no exact comparison, or ""

    @property
    def pending(self) -> tuple[str, ...]:
        """The views whose data `ExplorerSession.compute(..., landscape=False)` left for
        `ExplorerSession.complete`: the line search without its curve, the slice without its grid."""
        if self.plane is None:  # no step direction: nothing to compute, the views say why
            return ()
        return (("line_search",) if self.curve is None else ()) + (
            ("trust_region",) if self.grid is None else ())


class Memo(OrderedDict):
    """A dict that keeps the `maxsize` entries used last (read with `memo[key]`, `get` or
    `setdefault`, or written): the explorer's and the compare view's caches, whose entries (curves,
    grids, step reports) would otherwise grow with every slider position visited. (OrderedDict's
    own `get` and `setdefault` bypass `__getitem__`/`__setitem__`, so they are routed here.)"""

    def __init__(self, maxsize: int = 256):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 8:
            raise ValueError(f"maxsize = {maxsize!r} is not allowed: an integer ≥ 8")
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


class _SnapshotState:
    def __init__(self, snapshot: Snapshot):
        self.problem = snapshot.problem()
        self.cache = StepCache()
        self.curves = Memo(128)
        self.planes = Memo(128)
        self.grids = Memo(128)
        self.exact = Memo(128)
        self.fisher: ExactFisher | None = None


class ExplorerSession:
    """Snapshots by name, their caches, and `compute(name, settings) -> Frame`."""

    def __init__(self, snapshots: Snapshot | list[Snapshot] | dict[str, Snapshot],
                 grid_size: int | tuple[int, int] = GRID,
                 curve_points: int = 25, exact_max_params: int = 1500):
        if isinstance(snapshots, Snapshot):
            snapshots = [snapshots]
        if not isinstance(snapshots, dict):
            snapshots = {s.name: s for s in snapshots}
        if not snapshots or not all(isinstance(s, Snapshot) for s in snapshots.values()):
            raise ValueError(f"snapshots = {snapshots!r} is not allowed: give one or more Snapshot "
                             "objects (e.g. make_snapshot('CartPole-v1'))")
        grid_size = grid_shape(grid_size)
        for name, value, lo in (("curve_points", curve_points, 8),
                                ("exact_max_params", exact_max_params, 0)):
            if not (isinstance(value, int) and value >= lo):
                raise ValueError(f"{name} = {value!r} is not allowed: must be an integer ≥ {lo}")
        self.snapshots = dict(snapshots)
        self.grid_size, self.curve_points = grid_size, curve_points
        self.exact_max_params = exact_max_params
        self.work: Counter[str] = Counter()
        self._states: dict[str, _SnapshotState] = {}

    @property
    def names(self) -> list[str]:
        return list(self.snapshots)

    def state(self, name: str) -> _SnapshotState:
        if name not in self.snapshots:
            raise ValueError(f"snapshot = {name!r} is not known; snapshots are: {self.names}")
        if name not in self._states:
            self._states[name] = _SnapshotState(self.snapshots[name])
        return self._states[name]

    def report(self, name: str, settings: Settings) -> StepReport:
        """Only the step: `update_step` with the snapshot's cache, without the views' curve, slice
        and exact comparison (e.g. to sweep a setting without drawing every value)."""
        st = self.state(name)
        solves = len(st.cache.solves)
        report = update_step(st.problem, settings.replace(update="trpo"), cache=st.cache)
        self.work["trpo_step"] += 1
        self.work["cg_solve"] += len(st.cache.solves) - solves
        return report

    def compute(self, name: str, settings: Settings, landscape: bool = True) -> Frame:
        """Run the TRPO rule with the settings (`update_step`, the function training calls) and gather
        the views. With `landscape=False` the real surrogate and KL̄ along the step and on the slice
        (25 + 63 forward passes over the batch) are taken only if already computed; `complete`
        computes the rest (the explorer draws the other views in the meantime)."""
        st = self.state(name)
        report = self.report(name, settings)
        if report.direction is None or not math.isfinite(report.sAs) or report.sAs <= 0:
            return Frame(name, settings, report, math.nan, None, None, None, None,
                         "no search direction: " + report.reason)
        key = settings.direction_key
        s = report.direction
        sFs = report.sAs - settings.damping * float(s @ s)
        if key not in st.planes:
            self.work["plane"] += 1
            st.planes[key] = slice_plane(s, report.grad, st.cache.fisher(settings.fisher),
                                         settings.damping)
        scale = view_scale(settings.max_kl)
        exact, note = self._exact(st, report, settings)
        frame = Frame(name, settings, report, sFs, st.curves.get((key, scale)), st.planes[key],
                      st.grids.get((key, scale)), exact, note)
        return self.complete(frame) if landscape else frame

    def complete(self, frame: Frame) -> Frame:
        """`frame` with its curve and slice grid (computed now if not computed before)."""
        if not frame.pending:
            return frame
        st, settings, s = self.state(frame.snapshot), frame.settings, frame.report.direction
        key, scale = settings.direction_key, view_scale(settings.max_kl)
        if (key, scale) not in st.curves:
            self.work["curve"] += 1
            t = curve_coefficients(frame.report.sAs, scale, self.curve_points)
            st.curves[(key, scale)] = step_curve(st.problem, s, t)
        if (key, scale) not in st.grids:
            self.work["grid"] += 1
            st.grids[(key, scale)] = slice_grid(st.problem, frame.plane, scale, self.grid_size)
        return replace(frame, curve=st.curves[(key, scale)], grid=st.grids[(key, scale)])

    def _exact(self, st: _SnapshotState, report: StepReport, settings: Settings
               ) -> tuple[ExactComparison | None, str]:
        n = st.problem.num_params
        if n > self.exact_max_params:
            return None, (f"exact F not formed: the policy has P = {n} parameters "
                          f"(> {self.exact_max_params}; a P×P matrix and P Fisher products)")
        if st.fisher is None:
            self.work["exact_fisher"] += 1
            st.fisher = exact_fisher(st.cache.fisher("analytic"), n, st.problem.theta_old.dtype)
        key = settings.direction_key
        if key not in st.exact:
            self.work["exact_comparison"] += 1
            g, s = report.grad, report.direction.double()
            target = exact_direction(st.fisher, g, settings.damping)
            errors = cg_errors(st.fisher, g, settings.damping, settings.cg_iters, settings.cg_tol)
            st.exact[key] = ExactComparison(
                errors, float((s - target).norm() / target.norm()), angle_degrees(s, target),
                angle_degrees(s, natural_direction(st.fisher, g)),
                st.fisher.eigenvalues.flip(0).numpy(), settings.damping)
        return st.exact[key], ""
