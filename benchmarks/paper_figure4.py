"""The paper's Figure 4, at a budget this machine can afford: single path, vine, natural gradient,
max KL and empirical FIM on Swimmer-v5, Hopper-v5 and Walker2d-v5 (Schulman et al. 2015, §8.1).

    .venv/bin/python benchmarks/paper_figure4.py run --steps 60000 --seeds 0 1 2 --jobs 2
    .venv/bin/python benchmarks/paper_figure4.py report      # curves (HTML + PNG) and PAPER.md's table

`run` trains every (env, method, seed) in its own process (one torch thread) and writes one JSON per
run to benchmarks/results/paper_figure4/ as it finishes, so a partial run keeps what it did; runs
whose file exists are skipped. `report` reads those files. Every method sees the same number of
simulator steps (the vine's branch steps included). The PNG is drawn by Debian's chromium through
Playwright (no download).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "paper_figure4"
ENVS = ("Swimmer-v5", "Hopper-v5", "Walker2d-v5")
HIDDEN = {"Swimmer-v5": (30,), "Hopper-v5": (50,), "Walker2d-v5": (50,)}
"""The paper's policies (§8.1 / App. E): one hidden layer of 30 units (Swimmer), 50 (Hopper, Walker)."""

METHODS: dict[str, dict] = {
    "single path": dict(sampling="single-path", update="trpo"),
    "vine": dict(sampling="vine", vine_states=32, vine_actions=4, vine_length=50),
    "natural gradient": dict(update="npg"),
    "max KL": dict(kl_constraint="max"),
    "empirical FIM": dict(fisher="empirical"),
}
COMMON = dict(max_kl=0.01, gamma=0.99, lam=0.97, num_envs=8, batch_steps=2048, normalize_obs=True,
              fvp_fraction=0.25, vf_epochs=10, vf_minibatch_size=256, vf_lr=3e-3,
              activation="tanh")
EVAL_POINTS = 10  # deterministic evaluations along the way (outside the training budget)
EVAL_EPISODES_CURVE = 3
VINE_TRUNK = 512  # the vine's trunk steps per iteration (its branches add 32·4·≤50 ≤ 6,400)


def config_for(env: str, method: str, seed: int, steps: int):
    from trpo_lab.config import TRPOConfig

    extra = dict(METHODS[method])
    if extra.get("sampling") == "vine":
        extra["batch_steps"] = VINE_TRUNK
    return TRPOConfig(env_id=env, seed=seed, total_steps=steps, hidden_sizes=HIDDEN[env],
                      **{**COMMON, **extra})


def points_at_start(config) -> float:
    """The initial policy's deterministic return (the same network for every method of a seed)."""
    from trpo_lab.train import Trainer

    return float(Trainer(config.replace(sampling="single-path")).evaluate(EVAL_EPISODES_CURVE)[0].mean())


def run_one(job: tuple[str, str, int, int]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env, method, seed, steps = job
    from trpo_lab.train import train

    config = config_for(env, method, seed, steps)
    points: list[tuple[int, float]] = []
    every = steps // EVAL_POINTS

    def evaluate(record, trainer) -> None:  # deterministic returns on a fixed schedule of steps
        if record.steps >= every * (len(points) + 1):
            returns, _ = trainer.evaluate(EVAL_EPISODES_CURVE)
            points.append((record.steps, float(returns.mean())))

    t0 = time.perf_counter()
    trainer = train(config, progress=False, callback=evaluate)
    wall = time.perf_counter() - t0
    returns, _ = trainer.evaluate(10)
    h = trainer.history
    result = dict(env=env, method=method, seed=seed, budget=steps, steps=trainer.steps,
                  iterations=trainer.iteration, wall_s=wall,
                  curve_steps=[0] + [p[0] for p in points] + [trainer.steps],
                  curve_return=[points_at_start(config)] + [p[1] for p in points]
                  + [float(returns.mean())],
                  train_steps=[r.steps for r in h], train_return=[r.mean_return for r in h],
                  backtracks=[r.backtracks for r in h],
                  kl=[r.kl for r in h], max_state_kl=[r.max_state_kl for r in h],
                  accepted=[r.accepted for r in h], eval_mean=float(returns.mean()),
                  config=config.to_dict())
    path = OUT / f"{env}__{method.replace(' ', '_')}__{seed}.json"
    path.write_text(json.dumps(result))
    return result


def cmd_run(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    jobs = [(e, m, s, args.steps) for s in args.seeds for e in args.envs for m in args.methods
            if not (OUT / f"{e}__{m.replace(' ', '_')}__{s}.json").exists()]
    print(f"{len(jobs)} runs of {args.steps} steps, {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(run_one, jobs):
            print(f"{r['env']:12s} {r['method']:17s} seed {r['seed']}: {r['steps']} steps, "
                  f"{r['wall_s']:.0f} s, last training mean return {r['train_return'][-1]:.1f}, "
                  f"deterministic eval {r['eval_mean']:.1f}", flush=True)


def load() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]


def curve_on_grid(r: dict, grid: np.ndarray) -> np.ndarray:
    """The run's deterministic evaluation return at each grid step count (last value carried)."""
    xs, ys = np.array(r["curve_steps"]), np.array(r["curve_return"], float)
    idx = np.searchsorted(xs, grid, side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)


def summary(results: list[dict]) -> dict:
    """Per env and method: seeds, final mean return (mean ± sd over seeds), area under the curve."""
    out: dict = {}
    for env in ENVS:
        runs = [r for r in results if r["env"] == env]
        if not runs:
            continue
        budget = min(r["budget"] for r in runs)
        grid = np.linspace(0, budget, 21)
        for method in METHODS:
            rs = [r for r in runs if r["method"] == method]
            if not rs:
                continue
            curves = np.array([curve_on_grid(r, grid) for r in rs])
            final = curves[:, -1]
            out[(env, method)] = dict(
                seeds=len(rs), final=float(np.nanmean(final)), final_sd=float(np.nanstd(final)),
                auc=float(np.nanmean(curves)), eval=float(np.mean([r["eval_mean"] for r in rs])),
                wall=float(np.mean([r["wall_s"] for r in rs])), grid=grid,
                accepted=float(np.mean([np.mean(r["accepted"]) for r in rs])),
                backtracked=float(np.mean([np.mean(np.nan_to_num(r["backtracks"]) > 0) for r in rs])),
                iterations=float(np.mean([r["iterations"] for r in rs])),
                mean_curve=np.nanmean(curves, 0), sd_curve=np.nanstd(curves, 0),
                steps=int(np.mean([r["steps"] for r in rs])))
    return out


def figure(stats: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    envs = [e for e in ENVS if any(k[0] == e for k in stats)]
    fig = make_subplots(1, len(envs), subplot_titles=envs)
    colors = dict(zip(METHODS, ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")))
    for col, env in enumerate(envs, 1):
        for method in METHODS:
            s = stats.get((env, method))
            if s is None:
                continue
            x, y, sd = s["grid"], s["mean_curve"], s["sd_curve"]
            fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[y + sd, (y - sd)[::-1]],
                                     fill="toself", line=dict(width=0), opacity=0.15,
                                     fillcolor=colors[method], showlegend=False, hoverinfo="skip",
                                     meta=f"{env}/{method}/band"), 1, col)
            dash = "dash" if method == "natural gradient" else None  # it can hide single path
            fig.add_trace(go.Scatter(x=x, y=y, name=method, line=dict(color=colors[method], dash=dash),
                                     legendgroup=method, showlegend=col == 1,
                                     meta=f"{env}/{method}"), 1, col)
        fig.update_xaxes(title_text="simulator steps", row=1, col=col)
    fig.update_yaxes(title_text="deterministic return (3 episodes; mean ± sd over seeds)",
                     row=1, col=1)
    fig.update_layout(template="plotly_white", height=430, width=1300,
                      title="Figure 4 of the TRPO paper at a small budget (trpo_lab)")
    return fig


def png_from_html(html: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1320, "height": 450})
        page.goto(html.resolve().as_uri())
        page.wait_for_selector(".main-svg", timeout=60_000)
        page.screenshot(path=str(png), full_page=True)
        browser.close()


def cmd_report(args) -> None:
    results = load()
    if not results:
        sys.exit(f"no results in {OUT}: run `paper_figure4.py run` first")
    stats = summary(results)
    fig = figure(stats)
    html, png = HERE / "paper_figure4.html", HERE / "paper_figure4.png"
    fig.write_html(html, include_plotlyjs=True)
    if not args.no_png:
        png_from_html(html, png)
    lines = ["| env | method | seeds | steps | iterations | final return (10 episodes; ± sd over "
             "seeds) | mean over the curve | ÷ single path | steps accepted | iterations that "
             "backtracked | wall s/run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (env, method), s in stats.items():
        ref = stats.get((env, "single path"), s)["auc"]
        lines.append(f"| {env} | {method} | {s['seeds']} | {s['steps']:,} | {s['iterations']:.0f} | "
                     f"{s['final']:.1f} ± {s['final_sd']:.1f} | {s['auc']:.1f} | "
                     f"{s['auc'] / ref if ref else float('nan'):.2f} | {100 * s['accepted']:.0f} % | "
                     f"{100 * s['backtracked']:.0f} % | {s['wall']:.0f} |")
    print("\n".join(lines))
    (HERE / "results" / "paper_figure4_table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--envs", nargs="*", default=list(ENVS))
    r.add_argument("--methods", nargs="*", default=list(METHODS))
    r.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    r.add_argument("--steps", type=int, default=60_000)
    r.add_argument("--jobs", type=int, default=2)
    rep = sub.add_parser("report")
    rep.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
