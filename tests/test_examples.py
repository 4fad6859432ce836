"""Every example script runs as-is on the built-in model (with fast settings), so none can rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted(
    p
    for p in (Path(__file__).parent.parent / "examples").glob("*.py")
    if not p.name.startswith("_")
)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path, smollm_tl):
    # One torch thread per test process when pytest-xdist runs one process per core.
    threads = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
    env = {**os.environ, "UNLEARN_LENS_EXAMPLES_FAST": "1", "OMP_NUM_THREADS": threads}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example must print what it found"
