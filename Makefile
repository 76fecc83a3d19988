# Two commands: `make lab` (install, then JupyterLab on notebooks/) and `make test` (install, then
# every test: unit tests, notebooks under nbval, browser tests). Both use the active virtual
# environment, or create .venv here when none is active.
VENV ?= .venv
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(VENV)/bin/python)

.PHONY: install lab test
install:
	@[ -n "$(VIRTUAL_ENV)" ] || [ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .

lab: install
	$(PY) -m jupyter lab notebooks/

test: install
	$(PY) -m pytest
