"""Overhead of weight-delta tracking on the unlearning loop, on the built-in model.

Runs the same GA unlearning (batch 8, AdamW, lr 1e-5, 8 capital facts) twice from the same
original weights: bare, then with `DeltaTracker(subject, original, every=1)` as a step callback.
Prints both times, the overhead ratio (target: at most 15 %) and seconds per step. The
tracker's own time is also measured directly (a timer around each call), which is less
sensitive to machine noise than the difference of two runs.

    python benchmarks/unlearn_overhead.py [--steps 8] [--backend transformer_lens]
"""

from __future__ import annotations

import argparse
import time

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.localize.tracking import DeltaTracker
from unlearn_lens.unlearn import TrainConfig, TrainingStep, train

CAPITALS = (
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("Canada", "Ottawa"),
)
FORGET = [Item(f"The capital of {country} is", f" {city}") for country, city in CAPITALS]
TARGET_OVERHEAD = 0.15
"""Tracking every step may cost at most 15 % of the bare loop's time."""


class TimedTracker:
    """A `DeltaTracker` whose calls are timed."""

    def __init__(self, tracker: DeltaTracker) -> None:
        self.tracker = tracker
        self.seconds = 0.0

    def __call__(self, step: TrainingStep) -> None:
        started = time.perf_counter()
        self.tracker(step)
        self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="GA steps per run (default 8)")
    parser.add_argument(
        "--backend", default="transformer_lens", help="hook backend (default transformer_lens)"
    )
    args = parser.parse_args()

    subject = ul.load("smollm2-135m", backend=args.backend)
    original = subject.snapshot()
    config = TrainConfig(lr=1e-5, steps=args.steps, batch_size=8, eval_every=0)
    train(
        subject, "ga", FORGET, config=TrainConfig(lr=1e-5, steps=1, eval_every=0), progress=False
    )  # warm-up
    subject.restore(original)

    bare = train(subject, "ga", FORGET, config=config, progress=False)
    subject.restore(original)
    tracker = TimedTracker(DeltaTracker(subject, original, every=1))
    tracked = train(subject, "ga", FORGET, config=config, callbacks=[tracker], progress=False)
    subject.restore(original)

    steps = bare.steps_run
    print(f"built-in model, backend {args.backend}, GA, batch 8, {steps} steps per run")
    print(f"bare loop:         {bare.seconds:8.2f} s  ({bare.seconds / steps:.3f} s/step)")
    print(f"with DeltaTracker: {tracked.seconds:8.2f} s  ({tracked.seconds / steps:.3f} s/step)")
    print(
        f"tracker calls:     {tracker.seconds:8.2f} s  ({tracker.seconds / steps:.3f} s/step, "
        f"{len(tracker.tracker.history)} records)"
    )
    by_runs = tracked.seconds / bare.seconds - 1
    by_calls = tracker.seconds / bare.seconds
    verdict = "ok" if by_calls <= TARGET_OVERHEAD else "over target"
    print(
        f"overhead: {by_runs:+.1%} (run difference), {by_calls:.1%} (tracker time / bare loop); "
        f"target ≤ {TARGET_OVERHEAD:.0%}: {verdict}"
    )


if __name__ == "__main__":
    main()
