"""Which layers and heads carry a GA unlearning update, and does reverting them bring the facts back?

python examples/head_attribution.py
"""

from _settings import FAST

import unlearn_lens as ul
from unlearn_lens.localize import Reverter

subject = ul.load("smollm2-135m")
sets = ul.builtin("text")
n = 8 if FAST else 32
forget, retain = sets.forget[:n], sets.retain[:n]
original = subject.snapshot()
ul.unlearn(
    subject, forget, retain, method="ga", lr=1e-5, steps=2 if FAST else 10, progress=not FAST
)
unlearned = subject.snapshot()
deltas = ul.weight_deltas(subject.specs, original, unlearned)
reverter = Reverter(
    subject,
    original,
    forget[:4] if FAST else forget,
    retain[:4] if FAST else retain,
    unlearned=unlearned,
)
heads = ul.head_attribution(deltas, reverter, n_layers=1 if FAST else 3, progress=not FAST)
for layer, effects in zip(heads.reversion_layers, heads.reversion_nll, strict=True):
    best = max(range(len(effects)), key=lambda h: effects[h])
    print(
        f"block {layer}: reverting head {best} alone restores {effects[best]:.1%} of the forget loss"
    )
top = sorted(deltas.layers, key=lambda d: d.share, reverse=True)[:3]
print("largest update shares:", ", ".join(f"block {d.layer} {d.share:.1%}" for d in top))
