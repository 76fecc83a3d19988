"""`make lab`, the README's first command: it starts JupyterLab serving notebooks/, also as root (where
JupyterLab refuses to start without --allow-root) and on a headless machine (where it must not try to
open a browser), and prints the URL to open.

The test runs the real `make lab` (install included) with the interpreter running the tests, on a free
port, with throw-away Jupyter config/data/runtime dirs, reaches the server's REST API, lists the
notebooks it serves, and stops the processes it started by their ids.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user shell without a display, using the tests' interpreter's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MAKEFLAGS")}
    for name in ("config", "data", "runtime"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), VIRTUAL_ENV=sys.prefix,
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), **extra)
    return env


def dry_run(env: dict[str, str]) -> str:
    """The command `make lab` would run (make -n prints it without running anything)."""
    out = subprocess.run([MAKE, "-n", "lab"], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout
    return next(line for line in out.splitlines() if "jupyter lab" in line)


def test_make_lab_passes_allow_root_only_as_root_and_no_browser_only_headless(tmp_path):
    headless = dry_run(lab_env(tmp_path))
    assert "--no-browser" in headless.split()
    assert ("--allow-root" in headless.split()) == (os.geteuid() == 0)
    if sys.platform.startswith("linux"):
        with_display = dry_run(lab_env(tmp_path, DISPLAY=":0"))
        assert "--no-browser" not in with_display.split()
    extra = dry_run(lab_env(tmp_path, LAB_ARGS="--ServerApp.port=9999"))
    assert extra.rstrip().endswith("--ServerApp.port=9999")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM make and everything it started (by pid), then SIGKILL what outlives 20 s."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in reversed(family):  # the server first: it stops its kernels
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=20)


def test_make_lab_starts_jupyterlab_on_the_notebooks(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    args = (f"--ServerApp.port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token} "
            "--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    log = tmp_path / "make_lab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([MAKE, "lab", f"LAB_ARGS={args}"], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=lab_env(tmp_path))
    try:
        contents = None
        deadline = time.monotonic() + 300  # install + start; only catches a hang
        while contents is None:
            if process.poll() is not None:
                pytest.fail(f"make lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within 300 s:\n{log.read_text()[-3000:]}")
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents",
                                                 headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    contents = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        served = sorted(item["name"] for item in contents["content"] if item["type"] == "notebook")
        assert served == NOTEBOOKS
        text = log.read_text()
        # the URL to open (with a token given on the command line, JupyterLab prints it as "token=...")
        assert re.search(rf"http://(localhost|127\.0\.0\.1):{port}/lab\?token=", text), text[-3000:]
        assert "Running as root is not recommended" not in text
    finally:
        _stop(process)
