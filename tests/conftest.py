"""Shared pytest set-up: Hypothesis runs without per-example deadlines (a loaded 2-core CI machine is slow, not wrong),
and derandomised under CI so that a failure there reproduces exactly."""
import os

from hypothesis import settings

settings.register_profile("llmfs", deadline=None, derandomize=bool(os.environ.get("CI")), print_blob=True)
settings.load_profile("llmfs")
