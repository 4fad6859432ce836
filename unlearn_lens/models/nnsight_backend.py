"""nnsight backend: forward passes traced through an nnsight `LanguageModel`, locally or on NDIF.

With `remote=True` the very same trace is sent to NDIF (`lm.trace(..., remote=True)`), which
needs network access and an API key (`nnsight.CONFIG.set_default_api_key(...)`); the model must
then be a hub model NDIF hosts. Remote subjects serve forward passes (diagnostics); training
and weight snapshots need the weights in local memory, and fail at once with `REMOTE_LIMITS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unlearn_lens.data.batching import Batch
from unlearn_lens.errors import ModelSourceError
from unlearn_lens.models.architecture import layers_path
from unlearn_lens.models.subject import RunOutput, Subject

REMOTE_LIMITS = (
    "this needs the weights in local memory or gradients, and a remote (NDIF) subject has neither: unlearning, "
    "relearning, weight snapshots, deltas, reversion and the Fisher information need a local model (load(..., "
    "device_map='auto') across local GPUs); remotely, use the forward-only diagnostics: evaluate, "
    "collect_activations, compare(..., fisher=False)"
)
"""What a remote subject cannot do, and what it can: the one-line error for the others."""


def _envoy(lm, path: str):
    node = lm
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


class NNsightSubject(Subject):
    """A subject whose forward passes run inside `LanguageModel.trace`."""

    backend_name = "nnsight"

    def __init__(self, lm, tokenizer, source: str, remote: bool = False) -> None:
        super().__init__(lm._module, tokenizer, source)
        self.lm = lm
        self.remote = remote
        self._layers_path = layers_path(self.shape.family)

    def trace_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every trace gets: the only difference between local and NDIF runs."""
        return {"remote": self.remote}

    def run(
        self, batch: Batch, residual_layers: Sequence[int] | None = None, grad: bool = False
    ) -> RunOutput:
        if grad and self.remote:
            raise ModelSourceError(f"{self.source} runs on NDIF: {REMOTE_LIMITS}")
        wanted = sorted(set(residual_layers or ()))
        layers = _envoy(self.lm, self._layers_path)
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        saved: dict[int, Tensor] = {}
        with torch.set_grad_enabled(grad), self.lm.trace(inputs, **self.trace_kwargs()):
            for index in wanted:
                if index == 0:
                    saved[0] = layers[0].input.save()
                else:
                    output = layers[index - 1].output
                    saved[index] = (output[0] if isinstance(output, tuple) else output).save()
            logits = self.lm.output.logits.save()
        residuals = {index: saved[index] if grad else saved[index].detach() for index in wanted}
        return RunOutput(logits=logits if grad else logits.detach(), residuals=residuals)

    def _params(self) -> dict[str, torch.nn.Parameter]:
        """The local parameters; a remote subject has none to read or write."""
        if self.remote:
            raise ModelSourceError(f"{self.source} runs on NDIF: {REMOTE_LIMITS}")
        return super()._params()
