# Two commands: `make lab` (install, then JupyterLab on notebooks/) and `make test` (install, then
# every test: unit tests, notebooks under nbval, browser tests). Both use the active virtual
# environment, or create .venv here when none is active.
VENV ?= .venv
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(VENV)/bin/python)

.PHONY: install lab test
install:
	@[ -n "$(VIRTUAL_ENV)" ] || [ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .

# `make lab` works as root (containers, cloud VMs: JupyterLab refuses root without --allow-root) and
# on a headless Linux machine (no DISPLAY / WAYLAND_DISPLAY: no browser to open, and Python's webbrowser
# would fall back to a text browser in the terminal). Open the URL JupyterLab prints. Extra options:
# `make lab LAB_ARGS="--ServerApp.ip=0.0.0.0 --ServerApp.port=8890"`.
LAB_ARGS ?=
LAB_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
LAB_HEADLESS := $(if $(and $(filter Linux,$(shell uname -s 2>/dev/null)),$(if $(DISPLAY)$(WAYLAND_DISPLAY),,yes)),--no-browser)

lab: install
	@echo "Starting JupyterLab on notebooks/: open the http://… URL it prints below (Ctrl-C stops it)."
	$(PY) -m jupyter lab notebooks/ $(LAB_ROOT) $(LAB_HEADLESS) $(LAB_ARGS)

test: install
	$(PY) -m pytest
