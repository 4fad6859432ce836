"""A tiny model that first memorises a handful of made-up facts: the subject of the unlearning tests.

Word-level tokenizer, so every country and city is one token; the original model knows
`FORGET` and `RETAIN` after `memorise`, and has never seen `CONTROL` (same form, new facts).
"""

from __future__ import annotations

import json
from pathlib import Path

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import items_correct
from unlearn_lens.unlearn import TrainConfig, train

COUNTRIES = (
    "Veltravia",
    "Drumlin",
    "Kessary",
    "Tarvos",
    "Milbeck",
    "Quenlor",
    "Austerby",
    "Brisca",
)
CITIES = ("Orsenne", "Pellow", "Zandra", "Firth", "Ombray", "Glissen", "Yestrel", "Corvane")

FORGET = [
    Item(f"The capital of {country} is", city)
    for country, city in zip(COUNTRIES[:4], CITIES[:4], strict=True)
]
CONTROL = [
    Item(f"The capital of {country} is", city)
    for country, city in zip(COUNTRIES[4:], CITIES[4:], strict=True)
]
RETAIN = [Item(f"{a} plus {b} equals", str(a + b)) for a, b in ((1, 2), (3, 4), (2, 5), (6, 3))]

MEMORISE = TrainConfig(lr=1e-2, steps=30, batch_size=8, eval_every=0, seed=0)
"""Adam at 1e-2 for 30 steps: a 2-layer, width-32 model answers all 8 facts after ~10, then sharpens."""


def tokenizer():
    """Word-level tokenizer knowing every fact word."""
    return ul.tiny_tokenizer(COUNTRIES + CITIES)


def memorised_subject(backend: str = "nnsight", family: str = "llama", seed: int = 0):
    """A tiny subject that answers `FORGET` and `RETAIN` exactly and has never seen `CONTROL`."""
    tok = tokenizer()
    make = ul.tiny_llama if family == "llama" else ul.tiny_gpt2
    subject = ul.load(make(vocab_size=len(tok), seed=seed), backend=backend, tokenizer=tok)
    train(subject, "finetune", FORGET + RETAIN, config=MEMORISE, progress=False)
    assert all(items_correct(subject, FORGET + RETAIN)), (
        "the tiny model failed to memorise its facts"
    )
    assert not any(items_correct(subject, CONTROL))
    return subject


def unlearned_workspace(root: Path, out: str) -> Path:
    """In `root`: the three sets as JSONL files, the memorised model saved as `ck`, and `out`, the
    --out of `unlearn-lens unlearn` on it (GA at lr 1e-2, 3 steps of 4): a checkpoint made elsewhere."""
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    ul.save_checkpoint(memorised_subject(), root / "ck")
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(root / "ck"),
                "--backend",
                "nnsight",
                "--forget",
                str(root / "forget.jsonl"),
                "--lr",
                "1e-2",
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--out",
                str(root / out),
            ]
        )
        == 0
    )
    return root
