"""Turn a model source (built-in name, local directory, hub id, in-memory model) into a `Subject`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel

from unlearn_lens.errors import ModelSourceError
from unlearn_lens.hub import hub_reachable
from unlearn_lens.models.architecture import model_shape
from unlearn_lens.models.bridge_backend import BridgeSubject, boot_bridge
from unlearn_lens.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL, ensure_builtin_cache
from unlearn_lens.models.dtypes import resolve_dtype
from unlearn_lens.models.nnsight_backend import NNsightSubject
from unlearn_lens.models.subject import Subject
from unlearn_lens.out_dir import MODEL_DIR

BACKENDS = ("transformer_lens", "nnsight")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ModelSourceError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def check_device(device: str | None) -> None:
    """Refuse a device torch cannot parse, or an accelerator this machine lacks, before any model loads."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ModelSourceError(
            f"--device {device!r} is not a torch device; e.g. cpu, cuda, cuda:1 or mps"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelSourceError(
                f"--device {device}: this machine has no CUDA device; use --device cpu"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ModelSourceError(
                f"--device {device}: this machine has {count} CUDA device(s), numbered from 0"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelSourceError(
            f"--device {device}: MPS is not available on this machine; use --device cpu"
        )


def _from_pretrained(
    location: str,
    *,
    dtype: torch.dtype,
    device: str | None,
    device_map: Any,
    trust_remote_code: bool,
    gguf_file: str | None = None,
    local_files_only: bool = False,
):
    """Load model and tokenizer with transformers, safetensors only (no pickle)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": trust_remote_code,
        "local_files_only": local_files_only,
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(
        location,
        trust_remote_code=trust_remote_code,
        local_files_only=local_files_only,
        **({"gguf_file": gguf_file} if gguf_file else {}),
    )
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor bar for a load that takes a second is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except SafetensorError as error:
        raise ModelSourceError(
            f"{location}: its weights cannot be read ({error}); the checkpoint is truncated or "
            "corrupt: copy or save it again"
        ) from None
    except RuntimeError as error:  # transformers refuses weights that do not fit the config
        raise ModelSourceError(
            f"{location}: transformers cannot load it ({str(error).strip().splitlines()[0]})"
        ) from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    if device is not None and device_map is None:
        # transformers declares PreTrainedModel.to through functools.wraps(nn.Module.to), which
        # types the bound method as if `device` were `self`.
        model = model.to(device)  # type: ignore[arg-type]
    return model.eval(), tokenizer


def model_source(source: str | Path) -> str:
    """`source`, or `source/model` when `source` is the `--out` of `unlearn-lens unlearn` (or
    `relearn`): a directory holding `model/` and no `config.json` of its own."""
    path = Path(source)
    if (
        path.is_dir()
        and not (path / "config.json").exists()
        and (path / MODEL_DIR / "config.json").is_file()
    ):
        return str(path / MODEL_DIR)
    return str(source)


def _load_directory(path: Path, **options):
    from unlearn_lens.models.checkpoints import check_against_own_config  # imports this module

    path = Path(model_source(path))
    if (path / "config.json").is_file():
        if not options["trust_remote_code"]:  # remote code builds what no config check here can
            check_against_own_config(path, str(path))
        return _from_pretrained(str(path), **options)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _from_pretrained(str(path), gguf_file=ggufs[0].name, **options)
    raise ModelSourceError(
        f"{path} is a directory but not a model: no config.json (or single .gguf file) in it"
    )


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _load_hub(name: str, **options):
    if not HUB_ID.match(name):
        raise ModelSourceError(
            f"unknown model source {name!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}), "
            "not a directory, not a Hugging Face hub id"
        )
    try:
        if not hub_reachable():
            options = {**options, "local_files_only": True}
        return _from_pretrained(name, **options)
    except OSError as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise ModelSourceError(
            f"could not load {name!r} as a local directory or from the Hugging Face hub ({first_line}); "
            f"offline, use the built-in model {DEFAULT_MODEL!r} or a local directory"
        ) from None


def load(
    source: str | Path | PreTrainedModel = DEFAULT_MODEL,
    backend: str = "transformer_lens",
    *,
    tokenizer=None,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    remote: bool = False,
) -> Subject:
    """Load a model as a `Subject` through the chosen backend.

    `source` is a built-in name (`"smollm2-135m"`), a local HF model directory (safetensors
    or a single GGUF), a Hugging Face hub id (needs network), or an in-memory `transformers`
    causal LM (then pass `tokenizer`). `dtype` (a torch dtype or `"float32"`, `"bfloat16"`,
    `"float16"`) is the weights' dtype: float32 by default for a model read from disk, unchanged
    by default for an in-memory one. `device_map` is passed to transformers for models that
    span several devices (e.g. `"auto"`); `remote=True` (nnsight only) runs traces on NDIF.
    """
    _check_backend(backend)
    check_device(device)
    if remote and backend != "nnsight":
        raise ModelSourceError("remote=True needs backend='nnsight' (NDIF runs nnsight traces)")
    options = {
        "dtype": resolve_dtype(dtype or "float32"),
        "device": device,
        "device_map": device_map,
        "trust_remote_code": trust_remote_code,
    }
    if isinstance(source, nn.Module):
        if tokenizer is None:
            raise ModelSourceError(
                "an in-memory model needs its tokenizer: load(model, tokenizer=tokenizer)"
            )
        model, label = source.eval(), f"in-memory {type(source).__name__}"
        if dtype is not None:
            model = model.to(resolve_dtype(dtype))
        if device is not None:
            model = model.to(device)
    elif remote:
        return _remote_subject(str(source), tokenizer)
    elif str(source) in BUILTIN_MODELS:
        model, tokenizer = _from_pretrained(str(ensure_builtin_cache(str(source))), **options)
        label = str(source)
    elif Path(source).is_dir():
        model, tokenizer = _load_directory(Path(source), **options)
        label = str(source)
    elif Path(source).exists():
        raise ModelSourceError(
            f"{source} is a file; give the model's directory or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    else:
        model, tokenizer = _load_hub(str(source), **options)
        label = str(source)
    return _subject(model, tokenizer, label, backend)


def _subject(model: PreTrainedModel, tokenizer, label: str, backend: str) -> Subject:
    model_shape(model)  # an unsupported layout fails here, in one line, before any backend is built
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if backend == "transformer_lens":
        return BridgeSubject(boot_bridge(model, tokenizer, label), tokenizer, label)
    from nnsight import TransformersModel

    lm = TransformersModel(model, task="text-generation", tokenizer=tokenizer)
    return NNsightSubject(lm, tokenizer, label)


def _remote_subject(name: str, tokenizer) -> Subject:
    """An NDIF-hosted model: weights stay remote, traces run there (`remote=True`)."""
    from nnsight import TransformersModel

    lm = TransformersModel(name, task="text-generation", tokenizer=tokenizer)
    return NNsightSubject(lm, lm.tokenizer, name, remote=True)


def wrap(obj, remote: bool = False) -> Subject:
    """A `Subject` around a `TransformerBridge` or an nnsight model (`LanguageModel` /
    `TransformersModel`) the user already has."""
    from nnsight import Envoy, TransformersModel
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(obj, TransformerBridge):
        if obj.tokenizer is None:
            raise ModelSourceError(
                "this TransformerBridge has no tokenizer; boot it with tokenizer=..."
            )
        return BridgeSubject(obj, obj.tokenizer, f"bridge {type(obj.original_model).__name__}")
    if isinstance(obj, Envoy):
        tokenizer = getattr(obj, "tokenizer", None) if isinstance(obj, TransformersModel) else None
        if tokenizer is None:
            raise ModelSourceError(
                f"this nnsight {type(obj).__name__} has no tokenizer; create it with "
                "TransformersModel(model, task='text-generation', tokenizer=...)"
            )
        return NNsightSubject(
            obj, tokenizer, f"nnsight {type(obj._module).__name__}", remote=remote
        )
    raise ModelSourceError(
        f"cannot wrap a {type(obj).__name__}: wrap() takes a TransformerBridge, an nnsight LanguageModel "
        "or nnsight TransformersModel (for a transformers model use load(model, tokenizer=...))"
    )
