"""A first audit on the built-in model: unlearn capital facts with GA, attack, localise, verdict.

python examples/first_audit.py            # about 5 minutes on 2 CPU cores
"""

from _settings import FAST

import unlearn_lens as ul

config = ul.StudyConfig(
    methods=("ga",),
    max_items=8 if FAST else 32,
    steps=3 if FAST else 10,
    relearn_steps=3 if FAST else 10,
)
results = ul.audit(config, out="runs/example-first-audit", force=True, progress=not FAST)
ga = results.methods["ga"]
print("regime:", ga.regime.describe())
print("localisation:", ga.localization.verdict)
print(
    "forgetting depth:", ga.localization.forgetting_depth, "of", ga.localization.n_layers, "layers"
)
check = ga.attribution.check
print(
    f"attribution vs exact reversion: blocks ρ {check.block_agreement:.2f}, heads ρ {check.head_agreement:.2f}"
)
