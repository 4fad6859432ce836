"""What the battery of recovery attacks costs: the default audit with and without it, back to
back, on the built-in model, with the time of each stage and the ratio (target: at most 1.25).

    python benchmarks/battery_cost.py [--method ga] [--out runs/battery-cost]

Run it with nothing else on the machine: two heavy jobs at once make every figure wrong.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from rich.console import Console

from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import StudyConfig

TARGET_RATIO = 1.25
"""The battery may cost at most a quarter of the audit without it."""


def timed_audit(config: StudyConfig, out: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of one audit into `out` (replaced), and its stages' seconds summed over methods."""
    start = time.perf_counter()
    results = audit(
        config, out=out, force=True, progress=False, console=Console(file=io.StringIO())
    )
    seconds: dict[str, float] = {}
    for result in results.methods.values():
        for stage, value in result.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    return time.perf_counter() - start, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", default=None, help="default: the audit's")
    parser.add_argument("--out", type=Path, default=Path("runs/battery-cost"))
    args = parser.parse_args()
    base = StudyConfig() if args.method is None else StudyConfig(methods=tuple(args.method))
    runs = {
        "without battery": base.merged({"attacks": []}),
        "with battery": base,
    }
    times = {}
    for name, config in runs.items():
        wall, stages = timed_audit(config, args.out / name.replace(" ", "-"))
        times[name] = wall
        detail = ", ".join(f"{stage} {value:.0f} s" for stage, value in stages.items())
        print(f"{name}: {wall:.0f} s ({detail})", flush=True)
    ratio = times["with battery"] / times["without battery"]
    verdict = "ok" if ratio <= TARGET_RATIO else "over target"
    print(f"ratio {ratio:.2f} (target ≤ {TARGET_RATIO}): {verdict}")


if __name__ == "__main__":
    main()
