"""Fixtures for browser tests: a throw-away JupyterLab server and Debian's Chromium driven by Playwright.

Artifacts (server log, one screenshot per state, the browser console on failure) go to
tests/browser/artifacts/ (gitignored; override with TRPO_LAB_BROWSER_ARTIFACTS), which is emptied at the
start of each run, so after a failure it holds exactly that run's evidence and CI can print or keep it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from lab_page import LabNotebook
from lab_server import CHROMIUM_ARGS, LabServer, kill_pids, start_lab_server, stop_lab_server

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TRPO_LAB_BROWSER_ARTIFACTS", Path(__file__).parent / "artifacts"))
CHROMIUM = os.environ.get("TRPO_LAB_CHROMIUM", "/usr/bin/chromium")
_failed: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember each phase's report on the item, and point failed browser tests at their artifacts."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed and item.get_closest_marker("browser"):
        _failed.append(item.name)
        where = f"server log: {ARTIFACTS / 'server.log'}\nscreenshots: {ARTIFACTS / item.name}"
        report.sections.append(("browser artifacts", where))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter type
    if _failed:
        terminalreporter.write_sep("-", "browser test artifacts")
        terminalreporter.write_line(f"server log: {ARTIFACTS / 'server.log'}")
        for name in _failed:
            terminalreporter.write_line(f"{name}: {ARTIFACTS / name}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The artifacts folder, emptied once per run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab_server(artifacts: Path) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 serving a copy of notebooks/, kernels in fast mode (TRPO_LAB_FAST=1)."""
    server = start_lab_server(REPO / "notebooks", artifacts / "server.log", {"TRPO_LAB_FAST": "1"})
    try:
        yield server
    finally:
        stop_lab_server(server)


@pytest.fixture(scope="session")
def browser_context():
    """Debian's Chromium (not Playwright's download) with a fresh user-data dir, closed at the end."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="trpo_lab_chromium_")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 2200},  # tall: a whole explorer fits
        )
        browser_pid = _browser_pid(profile)
        try:
            yield context
        finally:
            context.close()
            if browser_pid:
                kill_pids({browser_pid}, grace=5.0)
            shutil.rmtree(profile, ignore_errors=True)


def _browser_pid(profile: str) -> int | None:
    """The pid of the Chromium whose command line names our profile dir (for a last-resort kill)."""
    for process in psutil.Process().children(recursive=True):
        try:
            if any(profile in part for part in process.cmdline()) and "--type=" not in " ".join(
                process.cmdline()
            ):
                return process.pid
        except psutil.Error:
            continue
    return None


@pytest.fixture
def notebook(request: pytest.FixtureRequest, lab_server: LabServer, browser_context, artifacts: Path):
    """A fresh page for one test; afterwards the page is closed and every session (kernel) deleted.

    On failure the page's last state and its browser console are saved next to the test's screenshots.
    """
    page = browser_context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
    lab = LabNotebook(page, lab_server, artifacts / request.node.name)
    try:
        yield lab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            try:
                lab.screenshot("failure")
            except Exception:  # noqa: BLE001 - evidence is best effort, cleanup is not
                pass
            lab.shots.mkdir(parents=True, exist_ok=True)
            (lab.shots / "console.log").write_text("\n".join(console))
        page.close()
        lab_server.delete_sessions()
