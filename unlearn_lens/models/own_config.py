"""A checkpoint's tensors against its own `config.json`: every tensor the config implies is there
with the shape the config gives it, and no tensor is left over.

A config that disagrees with its weights (edited by hand, copied from a sibling model) describes
another model than the one saved; transformers refuses to load it, so the weights must be
refused too wherever they are read without transformers. The layout is built from the config on
the meta device: every name and shape, no memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from unlearn_lens.errors import ModelSourceError

SIZE_FIELDS = (
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "n_inner",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "head_dim",
)
"""Config fields (as config.json names them) that are a tensor axis's size in the supported families."""
STALE_BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
"""Buffers older transformers versions saved beside the weights (GPT-2's causal mask, Llama's
rotary frequencies): recomputed when a model is built, so they say nothing about its architecture."""
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")
"""The block index in a tensor name (`model.layers.3.…`, `transformer.h.3.…`)."""


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as messages write it: `[96, 32]`."""
    return f"[{', '.join(map(str, shape))}]"


def stored_name(name: str, stored: Mapping[str, object], prefix: str) -> str | None:
    """The checkpoint's name for a parameter: the same, or without the base model's prefix
    (`model.`, `transformer.`), as checkpoints saved from the base model (GPT-2's own) have it."""
    for candidate in (name, name.removeprefix(prefix)):
        if candidate in stored:
            return candidate
    return None


def _sizes(config) -> list[tuple[str, int]]:
    """Each size the config gives a tensor axis, with how the config gives it (for messages):
    products of heads and head size first, as they are the more specific reading of a size."""
    raw = config.to_dict()
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    heads_name = config.attribute_map.get("num_attention_heads", "num_attention_heads")
    sizes = []
    if heads and head_dim:
        sizes.append(
            (
                f"{heads_name} × head_dim = {heads} × {head_dim} = {heads * head_dim}",
                heads * head_dim,
            )
        )
        kv = raw.get("num_key_value_heads")
        if isinstance(kv, int):
            sizes.append(
                (
                    f"num_key_value_heads × head_dim = {kv} × {head_dim} = {kv * head_dim}",
                    kv * head_dim,
                )
            )
    if "n_embd" in raw and hidden:  # GPT-2: fused QKV is 3 wide, the default MLP 4 wide
        sizes += [(f"{k} × n_embd {hidden} = {k * hidden}", k * hidden) for k in (3, 4)]
    return sizes + [
        (f"{field} {value}", value)
        for field, value in raw.items()
        if field in SIZE_FIELDS and isinstance(value, int)
    ]


def _mismatch(
    config, name: str, expected: tuple[int, ...], found: tuple[int, ...], label: str
) -> ModelSourceError:
    """The refusal of one tensor whose shape is not the config's, naming the config's size and the tensor's."""
    axes = [axis for axis in range(len(expected)) if expected[axis] != found[axis]]
    if len(expected) != len(found) or not axes:
        return ModelSourceError(
            f"{label}: its config.json implies tensor {name} is {shape_text(expected)}, "
            f"but it is {shape_text(found)} in the checkpoint"
        )
    axis = axes[0]
    why = ", ".join(text for text, value in _sizes(config) if value == expected[axis])
    says = f"says {why}" if why else f"implies {expected[axis]}"
    return ModelSourceError(
        f"{label}: its config.json {says}, but tensor {name} is {shape_text(found)} in the checkpoint "
        f"({found[axis]} where the config implies {shape_text(expected)})"
    )


def check_own_config(config, shapes: Mapping[str, tuple[int, ...]], label: str) -> None:
    """Refuse, in one line naming the config's number and the tensor's, a checkpoint whose
    tensors (`shapes`, by name) are not those `config` implies: a tensor of another shape, one
    missing, or one the config has no place for (a layer beyond its count, say)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            layout = AutoModelForCausalLM.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ModelSourceError(
            f"{label}: its config.json does not describe a model transformers can build ({error})"
        ) from None
    prefix = f"{layout.base_model_prefix}."
    layers_name = config.attribute_map.get("num_hidden_layers", "num_hidden_layers")
    n_layers = getattr(config, "num_hidden_layers", None)
    held = {int(match.group(1)) for name in shapes if (match := LAYER_INDEX.search(name))}
    known: set[str] = set()
    seen: set[int] = set()
    for name, param in layout.named_parameters(remove_duplicate=False):
        alias = id(param) in seen  # a tied unembedding: the embedding again, optional on disk
        seen.add(id(param))
        known.update((name, name.removeprefix(prefix)))
        stored = stored_name(name, shapes, prefix)
        if stored is None:
            if alias:
                continue
            if (match := LAYER_INDEX.search(name)) and int(match.group(1)) not in held:
                raise ModelSourceError(
                    f"{label}: its config.json says {layers_name} {n_layers}, but the checkpoint "
                    f"holds tensors of {len(held)} layers (none of layer {match.group(1)})"
                )
            raise ModelSourceError(
                f"{label}: its config.json implies tensor {name} {shape_text(tuple(param.shape))}, "
                "which the checkpoint lacks"
            )
        if tuple(shapes[stored]) != tuple(param.shape):
            raise _mismatch(config, name, tuple(param.shape), tuple(shapes[stored]), label)
    for name, _ in layout.named_buffers():
        known.update((name, name.removeprefix(prefix)))
    for name, shape in shapes.items():
        if name in known or name.endswith(STALE_BUFFERS):
            continue
        if (match := LAYER_INDEX.search(name)) and n_layers is not None:
            raise ModelSourceError(
                f"{label}: its config.json says {layers_name} {n_layers}, but the checkpoint has "
                f"tensor {name} {shape_text(tuple(shape))} (of layer {match.group(1)})"
            )
        raise ModelSourceError(
            f"{label}: the checkpoint has tensor {name} {shape_text(tuple(shape))}, which its "
            "config.json does not describe"
        )
