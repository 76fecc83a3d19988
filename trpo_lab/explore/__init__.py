"""The trust-region explorer: replay one TRPO update on a frozen batch while δ and damping move.

    snapshot = make_snapshot("Pendulum-v1", batch_steps=2048)   # an UpdateProblem, frozen
    Explorer(snapshot)                                         # sliders + four live Plotly views

`snapshots` freezes update problems to files, `landscape` evaluates the real surrogate and KL around
θ_old, `session` re-runs `trpo_step` and caches what each slider needs, `views` are pure figure
builders, `app` wires ipywidgets sliders to `FigureWidget`s. Importing this package does not import
plotly's widgets or ipywidgets (they load when an `Explorer` is built), so it stays fast.
"""

from .session import RANGES, ExplorerSession, Frame, Settings
from .snapshots import (
    Snapshot,
    SnapshotError,
    capture_snapshot,
    load_snapshot,
    make_snapshot,
    snapshot_callback,
)

__all__ = ["RANGES", "Explorer", "preload_plotly_widgets", "ExplorerSession", "Frame", "Settings", "Snapshot",
           "SnapshotError", "capture_snapshot", "load_snapshot", "make_snapshot",
           "snapshot_callback"]


def __getattr__(name: str):
    if name in ("Explorer", "preload_plotly_widgets"):  # plotly's widgets load only when used
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'trpo_lab.explore' has no attribute {name!r}")
