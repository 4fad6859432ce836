"""Call a library function without the run-time type checks the test run adds.

The test run decorates every function of unlearn_lens with jaxtyping + beartype (pyproject's
addopts), so an argument that contradicts an annotation fails there first. Tests of the
library's own errors for such arguments (the one-line messages a user gets, who runs without
those checks) call the function through `unchecked`, which switches the checks off for the
whole call, the functions it calls included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jaxtyping


def unchecked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, run with jaxtyping's (and so beartype's) checks disabled while it runs."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        before = jaxtyping.config.jaxtyping_disable
        jaxtyping.config.update("jaxtyping_disable", True)
        try:
            return fn(*args, **kwargs)
        finally:
            jaxtyping.config.update("jaxtyping_disable", before)

    return call
