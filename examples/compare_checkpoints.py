"""Compare the built-in model with an unlearned copy of itself, layer by layer.

python examples/compare_checkpoints.py
"""

from _settings import FAST

import unlearn_lens as ul

subject = ul.load("smollm2-135m")
sets = ul.builtin("text")
forget = sets.forget[: 8 if FAST else 32]
original = subject.snapshot()
ul.unlearn(subject, forget, method="npo", lr=1e-5, steps=2 if FAST else 10, progress=not FAST)
comparison = ul.compare_snapshots(
    subject,
    original,
    subject.snapshot(),
    forget,
    progress=not FAST,
    labels=("original", "npo-unlearned"),
)
for layer in comparison.layers[-5:]:
    print(
        f"stream {layer.stream:2d}: debiased CKA {layer.cka_debiased:.3f} (biased {layer.cka_biased:.3f}), "
        f"PC1 similarity {layer.pc1_similarity:.3f}"
    )
print(
    "forget exact match:",
    comparison.reference_metrics.exact_match,
    "->",
    comparison.updated_metrics.exact_match,
)
