"""The Ray Tune backend on a local Ray instance started here (num_cpus=2): the same table as the local
backend for the same seeds; ASHA stops trials early and the table says so.

Ray is the optional extra `trpo_lab[ray]`; requirements.txt installs it so CI runs these tests."""

from __future__ import annotations

import pytest
import ray
from test_sweep import BASE, GRID, local_sweep, without_time  # noqa: F401  (fixture)

from trpo_lab.sweep import SweepSpec, read_table, run_sweep


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception:  # Ray's 30 s start-up wait can run out on a loaded machine: one more try
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_gives_the_local_backends_table(local_ray, local_sweep, tmp_path):  # noqa: F811
    rows = run_sweep(SweepSpec(base=BASE, grid=GRID, seeds=2), tmp_path / "ray", backend="ray",
                     progress=False)
    assert without_time(rows) == without_time(local_sweep[1])
    assert read_table(tmp_path / "ray") == rows
    assert all((tmp_path / "ray" / r["history"]).exists() for r in rows)


def test_ray_asha_stops_hopeless_trials_and_the_table_says_so(local_ray, tmp_path):
    base = BASE.replace(total_steps=4096)  # 8 iterations: ASHA rungs at 1, 2, 4
    spec = SweepSpec(base=base, grid={"max_kl": [1e-4, 3e-4, 0.01, 0.03]}, seeds=2)
    rows = run_sweep(spec, tmp_path / "asha", backend="ray", asha=True, asha_grace=1, progress=False)
    assert len(rows) == 8 and {r["status"] for r in rows} <= {"finished", "stopped"}
    for r in rows:
        assert (r["iterations"] == 8) == (r["status"] == "finished")
    assert any(r["status"] == "stopped" for r in rows)
    again = []
    run_sweep(spec, tmp_path / "asha", backend="ray", asha=True, asha_grace=1, progress=False,
              on_trial=again.append)
    assert again == []  # stopped trials count as done: a resume does not re-run them
