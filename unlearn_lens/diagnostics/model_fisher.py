"""Diagonal empirical Fisher of a model's linear weights from per-example gradients, one backward per batch.

`F_i = E_x[(∂ log p_θ(x) / ∂θ_i)²]`, with `log p_θ(x)` the summed log-likelihood of an item's
target tokens. For each batch, one forward pass records the input of every linear module (a
forward hook) and one backward pass of the *sum* of the items' log-likelihoods delivers the
gradient at each module's output (a tensor hook); the per-example weight gradient is the
per-token outer product of the two, squared by
[`per_example_linear_grad_sq`][unlearn_lens.metrics.per_example_linear_grad_sq]. The backward
asks only for the gradient of the residual stream after the embedding, so autograd computes no
weight gradient at all (and leaves every `.grad` untouched).

Covered: the weights and biases of attention (q, k, v, o), MLP and untied unembedding
matrices, i.e. every weight applied as `x @ Wᵀ` (`nn.Linear`) or `x @ W` (GPT-2's `Conv1D`,
fused QKV included). Not covered: norms and embeddings (including tied embeddings, whose
per-example gradient mixes the lookup and the unembedding), which would need one backward per
example; they are listed in `ModelFisher.skipped`.

A hooked module is matched to the weight it computes with by storage, not by name: a
TransformerBridge may run its own modules whose weights are views of the Hugging Face
parameters (GPT-2's fused `c_attn` is run as three `Linear` views), and each module's
contribution lands in exactly the parameter elements it used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from unlearn_lens.data.batching import Batch
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics.activations import context_length
from unlearn_lens.evaluation import EVAL_BATCH_SIZE
from unlearn_lens.metrics.fisher import FisherProfile, per_example_linear_grad_sq
from unlearn_lens.metrics.token import target_loss
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.stored import write_snapshot
from unlearn_lens.models.subject import Subject

LINEAR_COMPONENTS = frozenset(
    {"q", "k", "v", "o", "mlp_gate", "mlp_up", "mlp_down", "mlp_in", "mlp_out", "unembed"}
)
"""Components whose tensors are only ever used as a linear map's weight or bias."""


@dataclass
class ModelFisher:
    """Diagonal empirical Fisher of a model's linear weights on a set of items.

    **Fields:**

    - `values`: weight key → Fisher, shaped like `subject.weight(key)`, float32 (float64 for a
      float64 model): the mean over items of the squared per-item gradient.
    - `addresses`: weight key → `(layer, component)`; `layer` is `None` outside the blocks.
    - `n_examples`: number of items averaged over.
    - `skipped`: weight keys not covered (norms, embeddings; see the module description).
    """

    values: Mapping[str, Tensor]
    addresses: dict[str, tuple[int | None, str]]
    n_examples: int
    skipped: tuple[str, ...]
    _stats: dict[tuple[int | None, str | None], FisherProfile] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def groups(self, components: bool = False) -> dict[tuple[int | None, str | None], list[str]]:
        """The weight keys of each profiled group: per layer (`(layer, None)`) and, with
        `components`, per layer and component too, in layer order (outside the blocks last)."""
        by_component: dict[tuple[int | None, str], list[str]] = {}
        for key, address in self.addresses.items():
            by_component.setdefault(address, []).append(key)
        layers: dict[int | None, list[str]] = {}
        for layer, component in by_component:
            layers.setdefault(layer, []).append(component)
        groups: dict[tuple[int | None, str | None], list[str]] = {}
        for layer in sorted(layers, key=lambda x: (x is None, x or 0)):
            names = layers[layer]
            groups[(layer, None)] = [k for name in names for k in by_component[(layer, name)]]
            if components and len(names) > 1:
                for name in names:
                    groups[(layer, name)] = by_component[(layer, name)]
        return groups

    def profile(self, address: tuple[int | None, str | None], keys: list[str]) -> FisherProfile:
        """One group's values (`keys`, as `groups` gives them) profiled. The statistics are
        computed once and kept, so a model compared with several others is profiled once; the
        values are read from `values` on each call and kept only by the profile returned, so
        Fisher values stored on disk are in memory one group at a time."""
        tensors = [self.values[key] for key in keys]
        if address not in self._stats:
            profile = FisherProfile.of(*tensors)
            self._stats[address] = replace(profile, values=())
            return profile
        return replace(self._stats[address], values=tuple(v.detach().flatten() for v in tensors))

    def profiles(
        self, components: bool = False
    ) -> dict[tuple[int | None, str | None], FisherProfile]:
        """Every group's profile at once (see `groups` and `profile`): every value in memory."""
        return {
            address: self.profile(address, keys)
            for address, keys in self.groups(components).items()
        }

    def stored(self, path: str | Path) -> ModelFisher:
        """The same Fisher information with its values written to `path` (safetensors) and read
        back group by group when profiled, bit for bit; the profiles computed so far are kept."""
        fisher = ModelFisher(
            write_snapshot(path, self.values), self.addresses, self.n_examples, self.skipped
        )
        fisher._stats.update(self._stats)
        return fisher


@dataclass
class _Target:
    """One tensor a hooked module computes with, and where its squared gradients accumulate."""

    param: str  # name of the parameter the tensor is (a view of)
    accumulator: Tensor  # a view of that parameter's buffer, laid out like the module's tensor
    transposed: bool  # Conv1D: the weight is [in, out], not nn.Linear's [out, in]
    is_bias: bool


def _aligned_view(buffer: Tensor, param: Tensor, tensor: Tensor) -> Tensor | None:
    """The elements of `buffer` (laid out like the contiguous `param`) that `tensor` occupies in
    `param`'s storage, shaped like `tensor`; `None` if `tensor` is not inside `param`."""
    if (
        tensor.untyped_storage().data_ptr() != param.untyped_storage().data_ptr()
        or tensor.dtype != param.dtype
    ):
        return None
    offset = tensor.storage_offset() - param.storage_offset()
    reach = offset + sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    if offset < 0 or reach >= param.numel() or tensor.numel() == 0:
        return None
    return buffer.as_strided(tensor.shape, tensor.stride(), buffer.storage_offset() + offset)


class FisherHooks:
    """Hooks that accumulate squared per-example gradients of linear weights, batch by batch.

    Use as a context manager around the batches; for each batch, run the subject with
    `grad=True` collecting residual stream 0, then call `backward`:

    ```python
    with FisherHooks(subject) as hooks:
        for batch in subject.batches(items, 16):
            out = subject.run(batch, residual_layers=[0], grad=True)
            hooks.backward(batch, out.logits, out.residuals[0])
    fisher = hooks.result()
    ```

    Forward passes without gradients (`torch.no_grad`) are ignored by the hooks.
    """

    def __init__(self, subject: Subject, keys: Iterable[str] | None = None) -> None:
        self.subject = subject
        wanted = subject.keys() if keys is None else list(keys)
        self._keys = [key for key in wanted if subject.spec(key).component in LINEAR_COMPONENTS]
        self._skipped = tuple(
            key for key in wanted if subject.spec(key).component not in LINEAR_COMPONENTS
        )
        params = named_parameters(subject.model)
        self._param_names = sorted({subject.spec(key).param for key in self._keys})
        for name in self._param_names:
            if not params[name].is_contiguous():
                raise ValueError(
                    f"parameter {name} is not contiguous; Fisher accumulation needs contiguous weights"
                )
        self._params = {name: params[name] for name in self._param_names}
        self._buffers: dict[str, Tensor] = {}
        self._uncovered: list[str] = []
        self._targets: dict[nn.Module, list[_Target]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: Bool[Tensor, "batch seq"] | None = None  # set only during our backward
        self._n_examples = 0
        self._fired: list[nn.Module] = []
        self._result: ModelFisher | None = None

    # ----- set-up ----------------------------------------------------------------------------

    def __enter__(self) -> FisherHooks:
        for name, param in self._params.items():
            dtype = torch.promote_types(param.dtype, torch.float32)
            self._buffers[name] = torch.zeros(param.shape, dtype=dtype, device=param.device)
        for module in self.subject.model.modules():
            is_conv1d = isinstance(module, Conv1D)
            if not (isinstance(module, nn.Linear) or is_conv1d):
                continue
            targets = []
            for tensor, is_bias in ((module.weight, False), (getattr(module, "bias", None), True)):
                if not isinstance(tensor, torch.Tensor):  # no bias (None)
                    continue
                for name, param in self._params.items():
                    view = _aligned_view(self._buffers[name], param, tensor)
                    if view is not None:
                        targets.append(
                            _Target(
                                name, view, transposed=is_conv1d and not is_bias, is_bias=is_bias
                            )
                        )
                        break
            if targets:
                self._targets[module] = targets
                self._handles.append(module.register_forward_hook(self._forward_hook))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ----- hooks -----------------------------------------------------------------------------

    def _forward_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled() or not output.requires_grad:
            return
        self._fired.append(module)
        activation = inputs[0].detach()
        output.register_hook(lambda grad: self._accumulate(module, activation, grad))

    def _accumulate(self, module: nn.Module, activation: Tensor, grad: Tensor) -> None:
        if self._mask is None:
            return  # a backward pass that is not ours
        if activation.ndim != 3:
            raise RuntimeError(
                f"expected a [batch, seq, features] input to {type(module).__name__}, got {tuple(activation.shape)}"
            )
        for target in self._targets[module]:
            if target.is_bias:
                ones = torch.ones(
                    *activation.shape[:2], 1, dtype=activation.dtype, device=activation.device
                )
                squared = per_example_linear_grad_sq(ones, grad, self._mask)[:, 0]
            else:
                squared = per_example_linear_grad_sq(activation, grad, self._mask)
                if target.transposed:
                    squared = squared.T
            target.accumulator.add_(squared.to(target.accumulator.dtype))

    # ----- per batch -------------------------------------------------------------------------

    def backward(
        self,
        batch: Batch,
        logits: Float[Tensor, "batch seq vocab"],
        stream0: Float[Tensor, "batch seq d_model"],
    ) -> None:
        """Backpropagate the summed log-likelihood of `batch`'s targets, accumulating squared
        per-example gradients.

        `logits` and `stream0` (residual stream 0) come from one forward pass of `batch` run with
        gradients inside this context.
        """
        if not self._fired:
            raise RuntimeError(
                "no hooked module ran with gradients: run the batch with grad=True inside the context"
            )
        if self._result is not None:
            raise RuntimeError(
                "FisherHooks.result() was already taken; use a new FisherHooks for more batches"
            )
        if self._n_examples == 0:
            self._check_coverage()
        loss = target_loss(logits, batch.labels, reduction="sum_per_sequence").sum()
        self._mask = batch.attention_mask.bool()
        try:
            torch.autograd.grad(loss, stream0)
        finally:
            self._mask = None
            self._fired = []
        self._n_examples += len(batch)

    def _check_coverage(self) -> None:
        """Find the keys whose elements the first forward pass did not use exactly once through a
        hooked module (their squared per-example gradients would be wrong); `result` leaves them out."""
        coverage = {
            name: torch.zeros(b.shape, dtype=torch.uint8, device=b.device)
            for name, b in self._buffers.items()
        }
        for module in self._fired:
            for target in self._targets[module]:
                view = target.accumulator
                coverage[target.param].as_strided(
                    view.shape, view.stride(), view.storage_offset()
                ).add_(1)
        self._uncovered = [
            key
            for key in self._keys
            if not bool((self.subject.spec(key).view(coverage) == 1).all())
        ]

    # ----- result ----------------------------------------------------------------------------

    def result(self) -> ModelFisher:
        """Fisher per covered weight key: the accumulated squares divided by the number of items
        (in place: the values are views of the accumulation buffers, which are not copied)."""
        if self._result is not None:
            return self._result
        if self._n_examples == 0:
            raise ValueError("no batch was passed to FisherHooks.backward")
        for buffer in self._buffers.values():
            buffer.div_(self._n_examples)
        covered = [key for key in self._keys if key not in self._uncovered]
        values = {key: self.subject.spec(key).view(self._buffers).to("cpu") for key in covered}
        addresses = {
            key: (self.subject.spec(key).layer, self.subject.spec(key).component) for key in covered
        }
        if self._uncovered:
            warnings.warn(
                f"no Fisher for {len(self._uncovered)} linear weight(s) such as {self._uncovered[0]}: the "
                "forward pass did not use them exactly once through a linear module, so their per-example "
                "gradients cannot be read from module hooks",
                UserWarning,
                stacklevel=2,
            )
        self._result = ModelFisher(
            values, addresses, self._n_examples, skipped=(*self._skipped, *self._uncovered)
        )
        return self._result


def model_fisher(
    subject: Subject,
    items: Sequence[Item],
    batch_size: int = EVAL_BATCH_SIZE,
    keys: Iterable[str] | None = None,
) -> ModelFisher:
    """Diagonal empirical Fisher of the linear weights of `subject` on `items`.

    One batched forward and backward pass per `batch_size` items (see the module description);
    `keys` restricts it to some weight keys (default: all that are covered). Inputs longer than
    the model's context lose tokens from the left, with a warning.
    """
    if not items:
        raise ValueError("no items to compute the Fisher information on")
    with FisherHooks(subject, keys) as hooks:
        for batch in subject.batches(items, batch_size, max_length=context_length(subject)):
            out = subject.run(batch, residual_layers=[0], grad=True)
            hooks.backward(batch, out.logits, out.residuals[0])
    return hooks.result()
