"""Snapshots kept on disk: a safetensors file whose weights are read one at a time, when asked for.

An audit needs the unlearned and relearned weights again and again (diagnostics, reversion,
attribution, logit lens), but only one weight at a time: a
[`StoredSnapshot`][unlearn_lens.models.stored.StoredSnapshot] is a read-only mapping from weight key to
tensor, like a `Snapshot`, that reads each weight from its file
on every access (the operating system's page cache keeps repeated reads cheap). A weight read
back is bit for bit the weight written, unless the file was written in a lower precision
(`dtype`), in which case it is that rounding, returned in the precision asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from unlearn_lens.atomic import atomic_target
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.subject import Subject


class StoredSnapshot(Mapping[str, Tensor]):
    """A snapshot in a safetensors file: `snapshot[key]` reads that weight from disk (a fresh CPU
    tensor each time, in `dtype` when given, else as stored)."""

    def __init__(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        self.path = Path(path)
        self.dtype = dtype
        self._handle = safe_open(str(self.path), framework="pt")
        self._keys = tuple(self._handle.keys())

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._keys:
            raise KeyError(key)
        tensor = self._handle.get_tensor(key)
        return tensor if self.dtype is None else tensor.to(self.dtype)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def write_snapshot(
    path: str | Path,
    weights: Subject | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
) -> StoredSnapshot:
    """Write a subject's current weights (or a snapshot) to `path` atomically, in `dtype` when
    given, and return it as a [`StoredSnapshot`][unlearn_lens.models.stored.StoredSnapshot] that reads
    back in the weights' own dtype.

    A CPU weight already contiguous and in `dtype` is written from the model's own memory, with
    no copy; others (slices of a fused weight, GPU weights, another dtype) are copied one at a
    time only as far as safetensors needs them all at once.
    """
    if isinstance(weights, Subject):
        params = named_parameters(weights.model)
        tensors = {spec.key: spec.view(params).detach() for spec in weights.specs}
    else:
        tensors = dict(weights)
    own_dtype = next(iter(tensors.values())).dtype
    prepared = {
        key: tensor.to("cpu", dtype or tensor.dtype).contiguous() for key, tensor in tensors.items()
    }
    with atomic_target(path) as temporary:
        save_file(prepared, temporary)
    del prepared
    return StoredSnapshot(path, dtype=own_dtype if dtype not in (None, own_dtype) else None)
