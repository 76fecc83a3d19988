"""The class deployment path (docs/teaching.md): repo2docker / Binder / JupyterHub build the image from
environment.yml and run postBuild. Smoke tests: postBuild installs the package, the student
environment's requirements are satisfiable together, and every notebook's import cell runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


SERVER_PROBE = """
import json
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.initialize(argv=["--ServerApp.open_browser=False"], find_extensions=True, new_httpserver=False)
print(json.dumps({k: v for k, v in app.jpserver_extensions.items() if k.startswith("nbgrader")}))
"""


def test_postbuild_installs_the_package_and_hides_nbgraders_instructor_panels(tmp_path: Path):
    """postBuild installs trpo_lab (into PIP_TARGET here) and turns off and locks nbgrader's
    instructor panels for the students' JupyterLab, and keeps the server from loading the formgrader
    and course-list extensions (here in a temporary user config instead of the environment's),
    leaving the students' assignment list and validate button on and the user's own server settings
    as they were."""
    script = ROOT / "postBuild"
    assert os.access(script, os.X_OK), "postBuild must be executable (repo2docker runs it directly)"
    config = tmp_path / "jupyter_config"
    config.mkdir()
    own = {"ServerApp": {"iopub_data_rate_limit": 12345.0, "jpserver_extensions": {"some.extension": True}}}
    (config / "jupyter_server_config.json").write_text(json.dumps(own))
    env = {**os.environ, "PIP_TARGET": str(tmp_path / "site"), "TRPO_LAB_JUPYTER_LEVEL": "user",
           "JUPYTER_CONFIG_DIR": str(config),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    source = tmp_path / "repo"  # a copy, so the build leaves nothing in the work tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "postBuild"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "trpo_lab", source / "trpo_lab", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([str(source / "postBuild")], cwd=source, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = subprocess.run([sys.executable, "-c", "import trpo_lab, sys; print(trpo_lab.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().startswith(str(tmp_path / "site")), probe.stdout

    instructor = {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list",
                  "@jupyter/nbgrader:create-assignment"}
    page_config = json.loads((config / "labconfig" / "page_config.json").read_text())
    assert set(page_config["disabledExtensions"]) == set(page_config["lockedExtensions"]) == instructor
    listed = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "labextension", "list"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    printed = listed.stdout + listed.stderr  # jupyter prints the list to stderr
    assert set(printed.split("Disabled extensions:")[1].split()) == instructor, printed  # what loads
    assert "@jupyter/nbgrader v" in printed  # the package, with the students' panels, stays on

    server = json.loads((config / "jupyter_server_config.json").read_text())["ServerApp"]
    assert server["iopub_data_rate_limit"] == 12345.0 and server["jpserver_extensions"]["some.extension"]
    loaded = subprocess.run([sys.executable, "-c", SERVER_PROBE], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {  # what a server started there loads
        "nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False,
        "nbgrader.server_extensions.assignment_list": True,
        "nbgrader.server_extensions.validate_assignment": True}


def test_postbuild_refuses_an_unknown_configuration_level(tmp_path: Path):
    env = {**os.environ, "PIP_TARGET": str(tmp_path / "site"), "TRPO_LAB_JUPYTER_LEVEL": "global",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    source = tmp_path / "repo"
    source.mkdir()
    shutil.copy2(ROOT / "postBuild", source / "postBuild")
    done = subprocess.run([str(source / "postBuild")], cwd=source, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2
    assert "TRPO_LAB_JUPYTER_LEVEL=global; allowed: user, sys_prefix, system" in done.stderr


def test_the_student_requirements_resolve_together():
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "-r",
                           str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stdout[-3000:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebooks_import(path: Path):
    cells = json.loads(path.read_text())["cells"]
    imports = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    source = "from IPython.display import display\n" + imports
    env = {**os.environ, "TRPO_LAB_FAST": "1"}
    done = subprocess.run([sys.executable, "-c", source], cwd=ROOT / "notebooks", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
