"""Continual unlearning (the forget set in 4 sequential requests) at three learning rates.

python examples/continual_sweep.py
"""

from _settings import FAST

import unlearn_lens as ul

subject = ul.load("smollm2-135m")
sets = ul.builtin("text")
forget = sets.forget[: 8 if FAST else 32]
original = subject.snapshot()
for lr in (1e-6, 1e-5, 1e-4)[: 2 if FAST else 3]:
    subject.restore(original)
    run = ul.unlearn(
        subject,
        forget,
        method="ga",
        lr=lr,
        requests=2 if FAST else 4,
        steps=1 if FAST else 3,
        progress=not FAST,
        keep_snapshots=False,
    )
    after = run.metrics("after", "forget")
    print(
        f"lr {lr:g}: forget accuracy after {len(run.run.request_stops)} requests = {after.accuracy:.2f}"
    )
subject.restore(original)
