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
