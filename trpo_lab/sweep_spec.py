"""What a sweep runs: `SweepSpec` (a base config, a grid and random samples over `TRPOConfig`
fields, seeds), its trials, and the command line's spelling of grids and distributions.

Every trial's config is built and validated when the spec is made, so a bad field or value fails
before anything runs. Nothing here trains or writes files (sweep.py does).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ConfigError, TRPOConfig

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


class SweepError(ConfigError):
    """A sweep that cannot run as asked (bad spec, a folder holding another sweep, …)."""


def _fields() -> dict[str, str]:
    return {f.name: f.type for f in dataclasses.fields(TRPOConfig)}


def _check_field(name: str, where: str) -> None:
    if name == "seed":
        raise SweepError(f"{where}: 'seed' is not swept this way; use seeds = N (seeds base.seed … "
                         "base.seed + N − 1)")
    if name not in _fields():
        raise SweepError(f"{where}: TRPOConfig has no field {name!r}; fields are: {sorted(_fields())}")


def _plain(value: Any) -> Any:
    """A JSON-friendly form (tuples become lists; numpy scalars become Python numbers)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs. `grid`: field → values (every combination); `sample`: field → a
    distribution ('uniform', lo, hi) · ('loguniform', lo, hi) · ('randint', lo, hi) (hi included) ·
    ('choice', [values]), drawn `samples` times with `sample_seed`; `seeds`: seeds per setting."""

    base: TRPOConfig = field(default_factory=TRPOConfig)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    seeds: int = 1
    sample: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    samples: int = 0
    sample_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", {k: _values(k, v, "grid") for k, v in dict(self.grid).items()})
        object.__setattr__(self, "sample", {k: _values(k, v, "sample")
                                            for k, v in dict(self.sample).items()})
        self.validate()

    def validate(self) -> None:
        """Raise `SweepError`/`ConfigError` naming the field and value that cannot run."""
        if not isinstance(self.base, TRPOConfig):
            raise SweepError(f"SweepSpec.base = {self.base!r} is not allowed: must be a TRPOConfig")
        for name, values in self.grid.items():
            _check_field(name, "grid")
            if not values:
                raise SweepError(f"grid {name!r} has no values: give at least one")
        for name, dist in self.sample.items():
            _check_field(name, "sample")
            if name in self.grid:
                raise SweepError(f"sample {name!r} is also in the grid: sweep each field one way")
            if not dist or dist[0] not in DISTRIBUTIONS:
                raise SweepError(f"sample {name} = {list(dist)!r} is not allowed: must start with one of "
                                 f"{DISTRIBUTIONS}")
            if dist[0] == "choice" and (len(dist) != 2 or not dist[1]):
                raise SweepError(f"sample {name} = {list(dist)!r}: 'choice' takes one non-empty list")
            if dist[0] != "choice":
                _check_bounds(name, dist)
        for name, value, allowed in (("seeds", self.seeds, "≥ 1"), ("samples", self.samples, "≥ 0"),
                                     ("sample_seed", self.sample_seed, "≥ 0")):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "seeds"):
                raise SweepError(f"SweepSpec.{name} = {value!r} is not allowed: must be an integer {allowed}")
        if bool(self.sample) != (self.samples > 0):
            raise SweepError(f"samples = {self.samples} with sample fields {sorted(self.sample)}: give both "
                             "distributions and a number of samples ≥ 1, or neither")
        self.trials()  # every trial's config is built (and validated) before anything runs

    @property
    def swept(self) -> list[str]:
        """The fields the sweep varies, in the table's column order."""
        return [*self.grid, *self.sample]

    def settings(self) -> list[dict[str, Any]]:
        """Every setting (field → value) of the sweep, seeds aside."""
        grid = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        if not self.sample:
            return grid
        rng = np.random.default_rng(self.sample_seed)
        drawn = [{name: _draw(rng, dist, _fields()[name]) for name, dist in self.sample.items()}
                 for _ in range(self.samples)]
        return [{**g, **d} for g in grid for d in drawn]

    def trials(self) -> list[Trial]:
        """Every trial, setting by setting, seed by seed; each config validated here."""
        out = []
        for i, setting in enumerate(self.settings()):
            for k in range(self.seeds):
                seed = self.base.seed + k
                try:
                    config = self.base.replace(**setting, seed=seed)
                except ConfigError as e:
                    raise SweepError(f"sweep setting {setting}: {e}") from e
                except TypeError as e:
                    raise SweepError(f"sweep setting {setting}: {e}") from e
                out.append(Trial(f"{i:03d}-s{seed}", setting, seed, config))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"base": _plain_dict(self.base.to_dict()), "grid": {k: list(v) for k, v in self.grid.items()},
                "seeds": self.seeds, "sample": {k: list(v) for k, v in self.sample.items()},
                "samples": self.samples, "sample_seed": self.sample_seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        return cls(**{**data, "base": TRPOConfig.from_dict(data["base"])})


_INT64 = 2**63  # numpy's integers(lo, hi + 1) needs −2⁶³ ≤ lo and hi + 1 < 2⁶³


def _check_bounds(name: str, dist: Sequence[Any]) -> None:
    """A 'uniform', 'loguniform' or 'randint' distribution's bounds are numbers numpy can draw between:
    finite, lo < hi, and lo > 0 (loguniform), hi − lo finite (uniform), whole and within int64
    (randint: numpy would truncate 1.5 silently)."""
    kind = dist[0]
    rule = {"uniform": "numbers lo < hi (finite, and hi − lo finite)",
            "loguniform": "numbers lo < hi with lo > 0 (finite)",
            "randint": "whole numbers lo < hi with −2⁶³ ≤ lo and hi < 2⁶³ − 1"}[kind]
    numbers = len(dist) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                     for v in dist[1:])
    if numbers:
        lo, hi = dist[1], dist[2]
        numbers = (math.isfinite(lo) and math.isfinite(hi) and lo < hi
                   and {"uniform": lambda: math.isfinite(hi - lo), "loguniform": lambda: lo > 0,
                        "randint": lambda: (-_INT64 <= lo and hi < _INT64 - 1 and float(lo).is_integer()
                                            and float(hi).is_integer())}[kind]())
    if not numbers:
        raise SweepError(f"sample {name} = {list(dist)!r}: {kind} takes {rule}")


def _values(name: str, values: Any, where: str) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SweepError(f"{where} {name} = {values!r} is not allowed: must be a list of values")
    return tuple(_plain(list(values)))


def _plain_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in d.items()}


def _draw(rng: np.random.Generator, dist: Sequence[Any], kind: str) -> Any:
    if dist[0] == "choice":
        return _plain(dist[1][int(rng.integers(len(dist[1])))])
    lo, hi = dist[1], dist[2]
    if dist[0] == "randint":
        return int(rng.integers(int(lo), int(hi) + 1))
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if dist[0] == "loguniform" \
        else rng.uniform(lo, hi)
    return int(round(value)) if kind == "int" else float(value)


@dataclass(frozen=True)
class Trial:
    id: str
    setting: dict[str, Any]
    seed: int
    config: TRPOConfig


def parse_value(name: str, text: str) -> Any:
    """One value of field `name` written on a command line: numbers, true/false, strings, and
    tuples as 64x64 (`()` for none)."""
    kind = _fields()[name]
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError("write true or false")
            return text.lower() == "true"
        if kind.startswith("tuple"):
            return [] if text in ("()", "") else [int(h) for h in text.split("x")]
        return {"int": int, "float": float}.get(kind, str)(text)
    except ValueError as e:
        raise SweepError(f"{name} = {text!r} is not a {kind}: {e}") from e


def _split(item: str, flag: str) -> tuple[str, str]:
    name, sep, values = item.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise SweepError(f"{flag} {item!r}: write FIELD=VALUES, e.g. max_kl=0.003,0.01")
    _check_field(name, flag)
    if not values.strip():
        raise SweepError(f"{flag} {name!r} has no values: give at least one")
    return name, values


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`["max_kl=0.003,0.01", "damping=0.1,1"]` → {"max_kl": [0.003, 0.01], "damping": [0.1, 1.0]}."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, values = _split(item, "--grid")
        grid[name] = [parse_value(name, v.strip()) for v in values.split(",") if v.strip()]
    return grid


def parse_sample(items: Sequence[str]) -> dict[str, list[Any]]:
    """`["max_kl=loguniform:0.001:0.1", "update=choice:trpo,npg"]` → distributions for `SweepSpec`."""
    sample: dict[str, list[Any]] = {}
    for item in items:
        name, text = _split(item, "--sample")
        dist, _, rest = text.partition(":")
        if dist == "choice":
            sample[name] = [dist, [parse_value(name, v.strip()) for v in rest.split(",") if v.strip()]]
        else:
            try:
                sample[name] = [dist, *(float(v) if dist != "randint" else int(v) for v in rest.split(":"))]
            except ValueError as e:
                raise SweepError(f"--sample {item!r}: {dist} takes numbers, e.g. {name}=uniform:0.1:1 "
                                 f"({e})") from e
    return sample
