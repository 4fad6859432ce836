"""A checkpoint against its own config.json, for each supported family: a config edited after saving
is refused in one line naming the config's number and the tensor's; the saved config passes."""

from __future__ import annotations

import json

import pytest

import unlearn_lens as ul
from unlearn_lens.errors import ModelSourceError
from unlearn_lens.models.checkpoints import check_against_own_config

VOCAB = 96

CASES = {
    # family: (config edit, what the message must hold)
    "llama wider": (
        "llama",
        {"hidden_size": 48},
        "its config.json says hidden_size 48, but tensor model.embed_tokens.weight is [96, 32] "
        "in the checkpoint (32 where the config implies [96, 48])",
    ),
    "llama narrower MLP": (
        "llama",
        {"intermediate_size": 80},
        "its config.json says intermediate_size 80, but tensor model.layers.0.mlp.gate_proj.weight "
        "is [64, 32] in the checkpoint (64 where the config implies [80, 32])",
    ),
    "llama other vocabulary": (
        "llama",
        {"vocab_size": 100},
        "its config.json says vocab_size 100, but tensor model.embed_tokens.weight is [96, 32]",
    ),
    "llama fewer layers": (
        "llama",
        {"num_hidden_layers": 1},
        "its config.json says num_hidden_layers 1, but the checkpoint has tensor model.layers.1.",
    ),
    "gpt2 wider": (
        "gpt2",
        {"n_embd": 48},
        "n_embd 48, but tensor transformer.wte.weight is [96, 32] in the checkpoint "
        "(32 where the config implies [96, 48])",
    ),
    "gpt2 more layers": (
        "gpt2",
        {"n_layer": 3},
        "its config.json says n_layer 3, but the checkpoint holds tensors of 2 layers (none of layer 2)",
    ),
}


def _saved(tmp_path, family: str):
    make = ul.tiny_llama if family == "llama" else ul.tiny_gpt2
    directory = tmp_path / family
    make(VOCAB).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family, edit, message", list(CASES.values()), ids=list(CASES))
def test_a_config_that_does_not_describe_its_tensors_is_refused(tmp_path, family, edit, message):
    directory = _saved(tmp_path, family)
    check_against_own_config(directory, "ck")  # as saved, the config describes its tensors
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ModelSourceError) as info:
        check_against_own_config(directory, "ck")
    text = str(info.value)
    assert text.startswith("ck: ") and message in text and "\n" not in text, text
