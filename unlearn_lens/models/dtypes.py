"""The weight dtypes a model can be loaded in, by the names flags and study.toml use."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Loadable dtypes. Half precision halves memory; diagnostics still compute in float64."""


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The torch dtype for a name of `DTYPES` (a torch dtype passes through)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        from unlearn_lens.errors import ModelSourceError

        raise ModelSourceError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]
