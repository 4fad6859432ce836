"""Shared fixtures: tiny models built in memory, and the real built-in model loaded once."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoTokenizer

import unlearn_lens as ul
from unlearn_lens.models.builtin import DEFAULT_MODEL, ensure_builtin_cache
from unlearn_lens.models.sources import BACKENDS

# Tiny models spend most of their time handing work between threads; one thread is ~10x faster
# for them on this 2-core machine, and the real-model tests lose little.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    """Under `-n` (pytest-xdist), build the built-in model's cache once in the controlling
    process, before the workers start, so that no two workers build it at the same time."""
    is_worker = hasattr(config, "workerinput")
    if not is_worker and getattr(config.option, "numprocesses", None):
        ensure_builtin_cache(DEFAULT_MODEL)


LONGEST_FIRST = ("test_examples.py", "test_memory.py")
"""Files of the longest tests (real-model example scripts, tensor accounting), collected first so
that under `-n` the workers start on them and the short tests fill in around them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the longest tests first (a stable sort: every other test keeps its order)."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)


FACT_WORDS = ("Veltravia", "Orsenne", "Drumlin", "Kessary", "Paris", "France", "Rome", "Italy")


@pytest.fixture(scope="session")
def tiny_tok():
    """Word-level tokenizer with a few extra fact words."""
    return ul.tiny_tokenizer(FACT_WORDS)


@pytest.fixture(params=["llama", "gpt2"])
def tiny_model(request, tiny_tok):
    """A fresh tiny random model of each supported family."""
    make = ul.tiny_llama if request.param == "llama" else ul.tiny_gpt2
    return make(vocab_size=len(tiny_tok))


@pytest.fixture
def both_backends(tiny_model, tiny_tok):
    """The same tiny model (two identical copies) behind each backend."""
    return {
        backend: ul.load(copy.deepcopy(tiny_model), backend=backend, tokenizer=tiny_tok)
        for backend in BACKENDS
    }


@pytest.fixture(scope="session")
def smollm_tl():
    """The built-in SmolLM2-135M through TransformerLens (built/cached on first use)."""
    return ul.load("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_nnsight():
    """The built-in SmolLM2-135M through nnsight."""
    return ul.load("smollm2-135m", backend="nnsight")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The built-in instruct model's tokenizer alone, without loading its weights."""
    return AutoTokenizer.from_pretrained(str(ensure_builtin_cache(DEFAULT_MODEL)))
