"""Weight-delta norms along a training run, recorded from a step callback.

A [`DeltaTracker`][unlearn_lens.localize.DeltaTracker] keeps the reference weights on the
parameters' device and, every few steps, measures `‖W_live − W_reference‖` per layer and
component directly on the live parameters: no snapshot, no weight copied to CPU, and one
transfer of the resulting scalars per measurement. On CPU the difference is formed chunk by
chunk in one small scratch buffer, so it never travels through main memory as a full-size
temporary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from unlearn_lens.models.architecture import WeightSpec, named_parameters
from unlearn_lens.models.stored import StoredSnapshot
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real

CHUNK_ELEMENTS = 1 << 20
"""Elements per chunk of the difference (4 MiB in float32): small enough to stay in a CPU cache."""


@runtime_checkable
class TrainingStepLike(Protocol):
    """What a tracker needs from a training loop's step callback argument (read only)."""

    @property
    def phase(self) -> str: ...

    @property
    def request(self) -> int: ...

    @property
    def step(self) -> int: ...


@dataclass(frozen=True)
class DeltaRecord:
    """Delta norms against the reference at one training step.

    **Fields:** `phase` (`"unlearn"` / `"relearn"`), `request` and `step` (1-based) as the
    training loop reported them, `layers[ℓ]` (`‖ΔW‖_F` of block ℓ), `components[name][ℓ]` (the same per
    component), `non_layer[name]` (embeddings, final norm, unembedding).
    """

    phase: str
    request: int
    step: int
    layers: list[Real]
    components: dict[str, list[Real]] = field(default_factory=dict)
    non_layer: dict[str, Real] = field(default_factory=dict)


class DeltaTracker:
    """Step callback recording per-layer and per-component delta norms every `every` steps.

    Pass it as a training loop callback: `tracker(step)` records when `step.step` is a
    multiple of `every`. `history` holds the records; `reference_layer_norms[ℓ]` is
    `‖W_reference‖_F` of block ℓ, to turn norms into relative deltas.
    """

    def __init__(self, subject: Subject, reference: Snapshot, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.subject = subject
        self.every = every
        self.history: list[DeltaRecord] = []
        named_parameters(subject.model)
        self._specs = subject.specs
        for spec in self._specs:
            if spec.key not in reference:
                raise KeyError(
                    f"reference snapshot has no weight {spec.key!r}: take it with subject.snapshot()"
                )
        # A snapshot in memory is moved to the weights' device once; one on disk is read weight
        # by weight at each measurement, so it never lives in memory whole.
        self._stored = isinstance(reference, StoredSnapshot)
        self._reference: Mapping[str, Tensor] = (
            reference
            if self._stored
            else {s.key: self._on_device(s, reference) for s in self._specs}
        )
        self._n_layers = subject.shape.n_layers
        self.reference_layer_norms = [0.0] * self._n_layers
        for spec in self._specs:
            if spec.layer is not None:
                ref = self._reference[spec.key]
                self.reference_layer_norms[spec.layer] += float(ref.double().square().sum())
        self.reference_layer_norms = [math.sqrt(sq) for sq in self.reference_layer_norms]
        self._scratch: Tensor | None = None

    def __call__(self, step: TrainingStepLike) -> None:
        if step.step % self.every == 0:
            self.history.append(self.measure(step.phase, step.request, step.step))

    def measure(self, phase: str, request: int, step: int) -> DeltaRecord:
        """Delta norms of the live weights now, as a record labelled with the step."""
        params = named_parameters(self.subject.model)
        with torch.no_grad():
            distances = [
                self._distance(
                    spec.view(params),
                    self._on_device(spec, self._reference)
                    if self._stored
                    else self._reference[spec.key],
                )
                for spec in self._specs
            ]
        squares = _to_floats(distances)
        layer_sq = [0.0] * self._n_layers
        component_sq: dict[str, list[float]] = {}
        non_layer_sq: dict[str, float] = {}
        for spec, squared in zip(self._specs, squares, strict=True):
            if spec.layer is None:
                non_layer_sq[spec.component] = non_layer_sq.get(spec.component, 0.0) + squared
                continue
            layer_sq[spec.layer] += squared
            component_sq.setdefault(spec.component, [0.0] * self._n_layers)[spec.layer] += squared
        return DeltaRecord(
            phase=phase,
            request=request,
            step=step,
            layers=[math.sqrt(sq) for sq in layer_sq],
            components={
                name: [math.sqrt(sq) for sq in values] for name, values in component_sq.items()
            },
            non_layer={name: math.sqrt(sq) for name, sq in non_layer_sq.items()},
        )

    def _on_device(self, spec: WeightSpec, reference: Mapping[str, Tensor]) -> Tensor:
        live = spec.view(named_parameters(self.subject.model))
        return reference[spec.key].to(live.device, live.dtype)

    def _distance(self, live: Tensor, reference: Tensor) -> Tensor:
        """`‖live − reference‖²` as a 0-d float32 tensor on the weight's device (no sync).

        On CPU the difference is formed in row chunks inside a reused scratch buffer; an
        accelerator's allocator and bandwidth make one whole-tensor difference cheaper.
        """
        if live.device.type != "cpu":
            return torch.linalg.vector_norm(live.float() - reference.float()).square()
        row = live[0].numel() if live.ndim > 1 else 1
        rows_per_chunk = max(1, CHUNK_ELEMENTS // row)
        scratch = self._scratch_for(rows_per_chunk * row)
        norms = []
        for start in range(0, live.shape[0], rows_per_chunk):
            chunk = live[start : start + rows_per_chunk]
            buffer = scratch[: chunk.numel()].view(chunk.shape)
            buffer.copy_(chunk)
            buffer.sub_(reference[start : start + rows_per_chunk])
            norms.append(torch.linalg.vector_norm(buffer))
        return torch.linalg.vector_norm(torch.stack(norms)).square()

    def _scratch_for(self, size: int) -> Tensor:
        if self._scratch is None or self._scratch.numel() < size:
            self._scratch = torch.empty(max(size, CHUNK_ELEMENTS), dtype=torch.float32)
        return self._scratch


def _to_floats(values: list[Tensor]) -> list[float]:
    """0-d tensors on any devices as Python floats, with one transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for index, value in enumerate(values):
        by_device.setdefault(value.device, []).append(index)
    floats = [0.0] * len(values)
    for indices in by_device.values():
        for index, number in zip(
            indices, torch.stack([values[i] for i in indices]).tolist(), strict=True
        ):
            floats[index] = number
    return floats
