"""`Subject`: the one interface through which the rest of unlearn_lens sees a model.

A subject owns a Hugging Face causal LM (the module both backends wrap), its tokenizer, and
a backend that runs forward passes through hooks. Everything that touches weights
(snapshots, restoring, swapping one layer or head) works on the shared module, so it is
identical whatever the backend; only `run` differs between backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedModel

from unlearn_lens.data.batching import Batch, batches, encode
from unlearn_lens.data.items import Item
from unlearn_lens.models.architecture import (
    READOUT_MODULES,
    ModelShape,
    WeightSpec,
    hf_module,
    model_shape,
    named_parameters,
    weight_specs,
)

Snapshot = Mapping[str, Tensor]
"""A subject's trainable weights by canonical weight key: CPU copies in memory (a dict) or read
on demand from a safetensors file (`StoredSnapshot`)."""


@dataclass
class RunOutput:
    """Logits of one forward pass, and the residual stream it collected.

    `residuals[j]` is the stream after the embedding for `j == 0` and after block `j - 1`
    otherwise (before the final norm), for each `j` that was asked for.
    """

    logits: Float[Tensor, "batch seq vocab"]
    residuals: dict[int, Float[Tensor, "batch seq d_model"]] = field(default_factory=dict)


@dataclass(frozen=True)
class SubjectInfo:
    """What `unlearn-lens inspect` prints about a model."""

    shape: ModelShape
    n_parameters: int
    source: str
    backend: str
    dtype: str
    device: str


class Subject(ABC):
    """A causal LM with a tokenizer, a hook backend and weights addressed by layer, component, head."""

    backend_name: str = ""

    def __init__(self, model: PreTrainedModel, tokenizer, source: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.shape = model_shape(model)
        self.specs: list[WeightSpec] = weight_specs(model, self.shape)
        self._spec_by_key = {spec.key: spec for spec in self.specs}
        self.model.eval()

    # ----- forward -------------------------------------------------------------------------

    @abstractmethod
    def run(
        self, batch: Batch, residual_layers: Sequence[int] | None = None, grad: bool = False
    ) -> RunOutput:
        """One forward pass returning logits and, in the same pass, the residual streams asked for.

        `residual_layers` are indices into the stream (0 = after the embedding, `j` = after
        block `j - 1`); `None` collects none. With `grad=False` nothing keeps a graph.
        """

    @property
    def n_streams(self) -> int:
        """How many residual-stream positions there are: the embedding plus one per block."""
        return self.shape.n_layers + 1

    @property
    def device(self) -> torch.device:
        """Device of the input embedding (where batches are sent)."""
        return self.weight("embed.weight").device

    def encode(self, items: Sequence[Item], max_length: int | None = None) -> Batch:
        """Tokenise items into a right-padded batch on the model's device."""
        return encode(self.tokenizer, items, max_length).to(self.device)

    def batches(
        self, items: Sequence[Item], batch_size: int, max_length: int | None = None
    ) -> Iterator[Batch]:
        """Encode items `batch_size` at a time, each batch on the model's device."""
        for batch in batches(self.tokenizer, items, batch_size, max_length):
            yield batch.to(self.device)

    # ----- weights -------------------------------------------------------------------------

    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters, for a plain torch optimiser."""
        return self.model.parameters()

    def keys(
        self, layers: Iterable[int] | None = None, components: Iterable[str] | None = None
    ) -> list[str]:
        """Canonical weight keys, optionally only those of some layers and components."""
        layer_set = set(layers) if layers is not None else None
        comp_set = set(components) if components is not None else None
        return [
            spec.key
            for spec in self.specs
            if (layer_set is None or spec.layer in layer_set)
            and (comp_set is None or spec.component in comp_set)
        ]

    def spec(self, key: str) -> WeightSpec:
        """The address of one weight key (a clear error lists what exists)."""
        try:
            return self._spec_by_key[key]
        except KeyError:
            raise KeyError(
                f"no weight {key!r}; keys look like {self.specs[min(1, len(self.specs) - 1)].key!r}"
            ) from None

    def weight(self, key: str, head: int | None = None) -> Tensor:
        """The live tensor of a weight key, or of one head of it (writing into it writes the model)."""
        spec = self.spec(key)
        tensor = spec.view(self._params())
        return tensor if head is None else spec.head_view(tensor, head)

    def snapshot(self) -> Snapshot:
        """CPU copies of every trainable weight (tied embeddings stored once)."""
        params = self._params()
        with torch.no_grad():
            return {
                spec.key: spec.view(params).detach().to("cpu", copy=True) for spec in self.specs
            }

    def restore(self, snapshot: Snapshot, keys: Iterable[str] | None = None) -> None:
        """Write snapshot weights back into the model, all of them or only `keys`."""
        params = self._params()
        with torch.no_grad():
            for key in snapshot if keys is None else keys:
                view = self.spec(key).view(params)
                view.copy_(snapshot[key].to(view.device, view.dtype))

    def restore_heads(self, snapshot: Snapshot, key: str, heads: Iterable[int]) -> None:
        """Write only some heads of one attention weight back from a snapshot."""
        spec = self.spec(key)
        view = spec.view(self._params())
        with torch.no_grad():
            for head in heads:
                target = spec.head_view(view, head)
                target.copy_(spec.head_view(snapshot[key], head).to(target.device, target.dtype))

    def readout_modules(self) -> tuple[nn.Module, nn.Module]:
        """The final norm and the unembedding (the HF modules themselves, not copies)."""
        norm_path, unembed_path = READOUT_MODULES[self.shape.family]
        return hf_module(self.model, norm_path), hf_module(self.model, unembed_path)

    @contextmanager
    def untied_output(self, unembedding: Tensor) -> Iterator[None]:
        """Inside the block the unembedding reads its own copy of `unembedding`, so the input
        embedding can differ from it; the tie (or the untied weight) is put back afterwards.

        This is how a patch reverts the *output* use of a tied embedding matrix without its
        *input* use, or the other way round.
        """
        _, head = self.readout_modules()
        tied = head.weight
        assert isinstance(tied, Tensor), "the unembedding is a Linear: its weight is a parameter"
        head.weight = nn.Parameter(
            unembedding.to(tied.device, tied.dtype, copy=True), requires_grad=False
        )
        try:
            yield
        finally:
            head.weight = tied

    def head_keys(self) -> list[str]:
        """Weight keys of the output head: the final norm and an untied unembedding (a tied
        unembedding is the `embed.weight` key, read through `untied_output`)."""
        return self.keys(components=["final_norm", "unembed"])

    @contextmanager
    def head_from(self, snapshot: Snapshot) -> Iterator[None]:
        """Inside the block the output head (final norm and unembedding) holds `snapshot`'s
        weights while the input embedding and the blocks keep theirs; afterwards every weight
        is as it was, the tie included."""
        keys = self.head_keys()
        saved = {key: self.weight(key).detach().clone() for key in keys}
        self.restore(snapshot, keys)
        try:
            if self.shape.tied_embeddings:
                with self.untied_output(snapshot["embed.weight"]):
                    yield
            else:
                yield
        finally:
            self.restore(saved, keys)

    def info(self) -> SubjectInfo:
        """Architecture summary, parameter count, source and backend."""
        params = {id(p): p for p in self.model.parameters()}
        first = next(iter(params.values()))
        return SubjectInfo(
            shape=self.shape,
            n_parameters=sum(p.numel() for p in params.values()),
            source=self.source,
            backend=self.backend_name,
            dtype=str(first.dtype).removeprefix("torch."),
            device=str(first.device),
        )

    def _params(self) -> dict[str, nn.Parameter]:
        return named_parameters(self.model)
