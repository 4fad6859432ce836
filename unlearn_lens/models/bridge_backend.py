"""TransformerLens 4 backend: forward passes through a `TransformerBridge` and its hook points."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from unlearn_lens.data.batching import Batch
from unlearn_lens.errors import ModelSourceError
from unlearn_lens.models.subject import RunOutput, Subject


def stream_hook_name(index: int) -> str:
    """Bridge hook point of residual-stream position `index` (0 = after the embedding)."""
    return "blocks.0.hook_resid_pre" if index == 0 else f"blocks.{index - 1}.hook_resid_post"


def boot_bridge(model, tokenizer, name: str):
    """Wrap an in-memory HF model in a `TransformerBridge` without any hub call.

    The bridge re-loads a tokenizer by name unless it is marked as already adding BOS, so it
    gets a marked copy; unlearn_lens tokenises with the original tokenizer itself.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bridge_tokenizer = copy.deepcopy(tokenizer)
    bridge_tokenizer.init_kwargs["name_or_path"] = name
    bridge_tokenizer.init_kwargs["add_bos_token"] = True
    try:
        return TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=bridge_tokenizer)
    except ValueError as error:
        if "supported architecture" in str(error):
            kind = getattr(model.config, "model_type", type(model).__name__)
            raise ModelSourceError(
                f"TransformerLens has no bridge for architecture {kind!r}; try backend='nnsight'"
            ) from None
        raise


class BridgeSubject(Subject):
    """A subject whose forward passes run through TransformerLens hook points."""

    backend_name = "transformer_lens"

    def __init__(self, bridge, tokenizer, source: str) -> None:
        super().__init__(bridge.original_model, tokenizer, source)
        self.bridge = bridge

    def run(
        self, batch: Batch, residual_layers: Sequence[int] | None = None, grad: bool = False
    ) -> RunOutput:
        collected: dict[int, Tensor] = {}
        # Hook points answer to their canonical name, not the TransformerLens alias we look them up by.
        wanted = {
            self.bridge.hook_dict[stream_hook_name(index)].name: index
            for index in residual_layers or ()
        }

        def save(activation: Tensor, hook) -> None:
            collected[wanted[hook.name]] = activation if grad else activation.detach()

        with torch.set_grad_enabled(grad):
            logits = self.bridge.run_with_hooks(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                fwd_hooks=[(name, save) for name in wanted],
            )
        return RunOutput(logits=logits, residuals=collected)
