"""A throw-away JupyterLab server for browser tests.

The server listens on 127.0.0.1 on a free port, with its own token and its own config, data, runtime
and IPython dirs in a temporary folder, serves a *copy* of the notebooks (autosave never touches the
repository), and hands its environment (TRPO_LAB_FAST=1) down to every kernel it starts. It is stopped
by its own process id; kernels are stopped by deleting their sessions, and any process the server
left behind is killed by its process id.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# Debian's Chromium, headless on a machine without a GPU or network (tests and benchmarks/browser_latency.py).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


class LabServerError(RuntimeError):
    """The JupyterLab server did not start, answer or stop as expected."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running JupyterLab: its process, URL, token, served root and log file."""

    process: subprocess.Popen
    port: int
    token: str
    root: Path
    log_path: Path
    tmp: Path
    known_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, timeout: float = 10.0) -> object:
        """Call the server's REST API with the token; returns the decoded JSON (None when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: str) -> str:
        """The URL that opens `notebook` (relative to the root) in a fresh workspace."""
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def descendants(self) -> list[psutil.Process]:
        """Every live process started by the server (kernels and their children)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def remember_children(self) -> None:
        """Note the ids of the server's child processes, so they can be killed even if orphaned."""
        self.known_pids.update(p.pid for p in self.descendants())

    def delete_sessions(self, timeout: float = 20.0) -> None:
        """Delete every session (which shuts its kernel down) and wait until no kernel is left."""
        self.remember_children()
        for session in self.api("GET", "/api/sessions") or []:
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError as error:  # already gone
                if error.code != 404:
                    raise
        for kernel in self.api("GET", "/api/kernels") or []:  # kernels without a session
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
        deadline = time.monotonic() + timeout
        while self.api("GET", "/api/kernels"):
            if time.monotonic() > deadline:
                raise LabServerError(f"kernels still running {timeout} s after their sessions were deleted")
            time.sleep(0.1)
        kill_pids(self.known_pids - {self.process.pid}, grace=5.0)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


try:  # resolved here, not in the forked child (no imports between fork and exec)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: cleanup relies on the fixtures' teardown alone
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the test process dies, even if the test
    process is killed outright and its cleanup never runs (the server then stops its kernels)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def kill_pids(pids: set[int], grace: float) -> None:
    """SIGTERM each still-living process in `pids`, then SIGKILL whatever outlives `grace` seconds."""
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            alive.append(process)
        except psutil.NoSuchProcess:
            continue
    _, still_alive = psutil.wait_procs(alive, timeout=grace)
    for process in still_alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(still_alive, timeout=grace)


# User settings of the throw-away lab: no news or update prompts (no network, no toast over the page).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def write_settings(settings_dir: Path) -> None:
    for name, values in LAB_SETTINGS.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def start_lab_server(
    notebooks: Path, log_path: Path, env: dict[str, str], startup_timeout: float = 60.0
) -> LabServer:
    """Start JupyterLab on a copy of `notebooks/` and return once its REST API answers."""
    tmp = Path(tempfile.mkdtemp(prefix="trpo_lab_browser_"))
    root = tmp / "root"
    shutil.copytree(notebooks, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "ipython")}
    for path in dirs.values():
        path.mkdir()
    settings = dirs["config"] / "lab" / "user-settings"
    write_settings(settings)
    server_env = {
        **os.environ,
        **env,
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["config"] / "lab" / "workspaces"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between probing and binding
        port, token = free_port(), secrets.token_hex(24)
        command = [
            sys.executable, "-m", "jupyter", "lab",
            "--allow-root",
            "--no-browser",
            "--ServerApp.open_browser=False",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, cwd=root, env=server_env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        server = LabServer(process, port, token, root, log_path, tmp)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                server.api("GET", "/api/status", timeout=2.0)
                return server
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        last_error = server.log_tail()
        stop_lab_server(server, remove_tmp=False)
    shutil.rmtree(tmp, ignore_errors=True)
    raise LabServerError(f"JupyterLab did not answer; see {log_path}. Last lines:\n{last_error}")


def stop_lab_server(server: LabServer, remove_tmp: bool = True) -> None:
    """Delete sessions, stop the server by its pid, kill anything it left, remove its temp dir."""
    if server.process.poll() is None:
        try:
            server.delete_sessions()
        except (urllib.error.URLError, ConnectionError, TimeoutError, LabServerError):
            pass  # the pids below are killed anyway
        server.remember_children()
        kill_pids({server.process.pid}, grace=10.0)
    server.process.wait(timeout=10)
    kill_pids(server.known_pids, grace=5.0)
    if remove_tmp:
        shutil.rmtree(server.tmp, ignore_errors=True)
