"""Shared knob of the examples: `UNLEARN_LENS_EXAMPLES_FAST=1` (set by the test suite) shrinks every run."""

import os

FAST = os.environ.get("UNLEARN_LENS_EXAMPLES_FAST") == "1"
"""True when the examples run as tests: fewer items and steps, same code paths."""
