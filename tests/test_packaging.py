"""The install files agree with each other and pin torch to the release that is on disk."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def environment_pip_lines() -> list[str]:
    lines, inside = [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s*-\s*pip:\s*$", line):
            inside = True
            continue
        if inside:
            m = re.match(r"^\s+-\s+(.*)$", line)
            if not m:
                break
            lines.append(m.group(1).strip())
    return lines


def test_environment_yml_pip_section_equals_requirements_txt():
    assert environment_pip_lines() == requirement_lines((ROOT / "requirements.txt").read_text())


def test_torch_is_pinned_to_the_cpu_release_on_disk():
    assert "torch==2.13.0" in requirement_lines((ROOT / "requirements.txt").read_text())


def test_pyproject_declares_the_package_its_cli_and_its_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert {"torch", "gymnasium", "numpy", "plotly", "anywidget", "ipywidgets", "jupyterlab", "tqdm"} <= names
    assert any("mujoco" in d for d in project["dependencies"] if d.startswith("gymnasium"))
    assert project["scripts"]["trpo-lab"] == "trpo_lab.cli:main"
    test_names = {re.split(r"[<>=\[ ]", d)[0] for d in project["optional-dependencies"]["test"]}
    assert {"pytest", "nbval"} <= test_names


def test_the_ray_extra_is_declared_and_installed_for_the_tests():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("ray[tune]") for d in project["optional-dependencies"]["ray"])
    requirements = requirement_lines((ROOT / "requirements.txt").read_text())
    assert any(line.startswith("ray[tune]") for line in requirements)


def test_the_package_loads_its_names_on_first_use():
    """`import trpo_lab` and its light modules do not import torch (a notebook sends plotly's widget
    code to the page before the kernel imports torch); every exported name resolves; `train` is the
    function even after the submodule `trpo_lab.train` is imported; an unknown name raises."""
    import subprocess
    import sys

    code = (
        "import sys, trpo_lab, trpo_lab.widgets, trpo_lab.settings\n"
        "assert 'torch' not in sys.modules, 'import trpo_lab imported torch'\n"
        "import trpo_lab.checkpoint\n"  # imports the module trpo_lab.train
        "from trpo_lab import train\n"
        "assert callable(train) and train.__module__ == 'trpo_lab.train' and trpo_lab.train is train\n"
        "missing = [n for n in trpo_lab.__all__ if getattr(trpo_lab, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(trpo_lab.__all__) <= set(dir(trpo_lab))\n"
        "try:\n    trpo_lab.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
        "else:\n    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
