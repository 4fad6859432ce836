"""Audit a checkpoint someone else unlearned: save TOFU-like question/answer data with
`save_to_disk`, make an "external" unlearned model with `unlearn-lens unlearn`, then audit that
checkpoint (relearning attack, diagnostics, localisation, verdict) without unlearning anything here.

    python examples/audit_given_checkpoint.py   # minutes on 2 CPU cores (the tests' fast settings: about 3)
"""

from pathlib import Path

from _settings import FAST
from datasets import Dataset

import unlearn_lens as ul
from unlearn_lens.cli import main

root = Path("runs/example-given")
n_items, steps = (4, 2) if FAST else (32, 10)  # 4 items: the fewest debiased CKA takes
sets = ul.builtin("text")
data = {}
for split in ("forget", "retain", "control"):
    records = [
        {"question": item.prompt, "answer": item.answer} for item in getattr(sets, split)[:n_items]
    ]
    data[split] = str(root / "data" / split)
    Dataset.from_list(records).save_to_disk(data[split])

# The "external" unlearning: the command line `unlearn-lens unlearn ...`, writing OUT/model and OUT/run.json.
status = main(
    [
        "unlearn",
        "--method",
        "npo",
        "--forget",
        data["forget"],
        "--retain",
        data["retain"],
        "--steps",
        str(steps),
        "--out",
        str(root / "external"),
        "--force",
    ]
)
assert status == 0, "unlearn-lens unlearn failed"

config = ul.StudyConfig(
    forget=data["forget"],
    retain=data["retain"],
    control=data["control"],
    methods=(),
    max_items=n_items,
    relearn_steps=steps,
)
results = ul.audit(
    config,
    unlearned={"external": str(root / "external")},
    out=root / "audit",
    force=True,
    progress=not FAST,
)
external = results.methods["external"]
print(external.given.describe())
print("regime:", external.regime.describe())
print("localisation:", external.localization.verdict)
