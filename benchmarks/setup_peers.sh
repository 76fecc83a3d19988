#!/usr/bin/env bash
# Create .venv-bench (gitignored) with trpo_lab and the peer libraries of benchmarks/compare.py.
# torch is pinned on the same command line so that nothing pulls another (CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV_BENCH:-.venv-bench}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0 \
  -r benchmarks/requirements-peers.txt
# the lab itself, without its notebook dependencies (the benchmarks only train)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
"$VENV/bin/python" -c "import torch, sb3_contrib, tianshou, trpo_lab; print('torch', torch.__version__, '| sb3-contrib', sb3_contrib.__version__, '| tianshou', tianshou.__version__)"
