"""Test-wide settings: notebooks (and their kernels, which inherit this environment) run small."""

import os

os.environ.setdefault("TRPO_LAB_FAST", "1")
