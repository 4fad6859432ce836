"""Audit tools on an nnsight model you already have (here: the built-in model's HF module).

    python examples/wrap_nnsight_model.py

With NDIF access the same code runs remotely: `TransformersModel("org/model", task="text-generation")`
and `ul.wrap(lm, remote=True)` send every trace with `remote=True`.
"""

from nnsight import TransformersModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import unlearn_lens as ul
from unlearn_lens.models import ensure_builtin_cache

# Your own model, loaded the usual way (here: the built-in SmolLM2's cached HF directory).
directory = ensure_builtin_cache()
lm = TransformersModel(
    AutoModelForCausalLM.from_pretrained(directory),
    task="text-generation",
    tokenizer=AutoTokenizer.from_pretrained(directory),
)
subject = ul.wrap(lm)
items = ul.builtin("text").forget[:8]
activations = ul.collect_activations(subject, items)
print(
    "streams collected in one pass per batch:",
    len(activations),
    "each",
    tuple(activations[0].shape),
)
print("exact match on 8 facts:", ul.evaluate(subject, items).exact_match)
