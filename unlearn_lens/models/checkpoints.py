"""A checkpoint saved elsewhere, read as a `Snapshot` of a loaded subject.

An audit of weights unlearned elsewhere holds one model, the original, and swaps the
checkpoint's weights in. Before any work the checkpoint is checked against the subject from
its `config.json`, its safetensors headers (names and shapes, no tensor is read) and its
tokenizer; its tensors are read only when the audit needs them, shard by shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from unlearn_lens.errors import ModelSourceError
from unlearn_lens.hub import hub_reachable
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.builtin import BUILTIN_MODELS, ensure_builtin_cache
from unlearn_lens.models.own_config import STALE_BUFFERS, check_own_config, shape_text, stored_name
from unlearn_lens.models.sources import HUB_ID, model_source
from unlearn_lens.models.subject import Snapshot, Subject

INDEX_FILE = "model.safetensors.index.json"
"""Where a sharded safetensors checkpoint maps each tensor to its shard."""
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
"""What is fetched of a hub checkpoint: config, tokenizer and safetensors weights, never pickles."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
"""Any of these in a checkpoint directory means a tokenizer was saved with it."""


@dataclass(frozen=True)
class _Tensor:
    """Where one tensor of a checkpoint is, and its shape (from the safetensors header)."""

    file: Path
    shape: tuple[int, ...]


def checkpoint_directory(source: str | Path) -> Path:
    """The local directory holding a checkpoint: `source` itself when it is a directory (its
    `model/` when it is the `--out` of `unlearn-lens unlearn`), the
    built-in model's cache for its name, else the Hugging Face hub repository it names (its
    config, tokenizer and safetensors fetched, or found in the hub cache when offline)."""
    path = Path(model_source(source))
    if path.is_dir():
        return path
    if path.exists():
        raise ModelSourceError(f"{source} is a file; give the checkpoint's directory")
    if str(source) in BUILTIN_MODELS:
        return ensure_builtin_cache(str(source))
    if not HUB_ID.match(str(source)):
        raise ModelSourceError(f"{source}: no such directory (and not a Hugging Face hub id)")
    from huggingface_hub import snapshot_download

    online = hub_reachable()
    try:
        return Path(
            snapshot_download(
                str(source), allow_patterns=list(HUB_FILES), local_files_only=not online
            )
        )
    except (OSError, ValueError) as error:
        reason = (
            str(error).strip().splitlines()[0]
            if online and str(error).strip()
            else ("offline (HF_HUB_OFFLINE or no network) and not in the hub cache")
        )
        raise ModelSourceError(
            f"{source}: no such directory, and not a model on the Hugging Face hub ({reason})"
        ) from None


def _tensors(directory: Path) -> dict[str, _Tensor]:
    """Every tensor of a safetensors checkpoint (one file or shards named by its index), by name."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            files = sorted(
                {
                    directory / name
                    for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
                }
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelSourceError(f"{index}: not a safetensors index ({error})") from None
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelSourceError(
            f"{directory} has no .safetensors weights; unlearn_lens does not unpickle .bin checkpoints "
            "(convert them to safetensors first)"
        )
    tensors: dict[str, _Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    tensors.setdefault(
                        name, _Tensor(file, tuple(handle.get_slice(name).get_shape()))
                    )
        except (SafetensorError, OSError) as error:
            raise ModelSourceError(
                f"{file}: its weights cannot be read ({error}); the checkpoint is truncated or corrupt: "
                "copy or save it again"
            ) from None
    return tensors


def weights_digest(directory: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files (names and bytes): what a resumed audit
    compares to be sure it reads the weights the run began with (about 1 s per 500 MB)."""
    digest = hashlib.sha256()
    for file in sorted({tensor.file for tensor in _tensors(directory).values()}):
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _prefix(subject: Subject) -> str:
    return f"{subject.model.base_model_prefix}."


def _config(directory: Path, label: str):
    """The checkpoint's own config, read from its config.json."""
    from transformers import AutoConfig

    if not (directory / "config.json").is_file():
        raise ModelSourceError(
            f"{label}: no config.json in {directory}; give a Hugging Face checkpoint directory"
        )
    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelSourceError(
            f"{label}: its config.json cannot be read ({str(error).strip().splitlines()[0]})"
        ) from None


def check_against_own_config(directory: Path, label: str) -> None:
    """Refuse a checkpoint directory whose safetensors do not fit its own config.json (see
    `check_own_config`), reading only the config and the safetensors headers."""
    shapes = {name: tensor.shape for name, tensor in _tensors(directory).items()}
    check_own_config(_config(directory, label), shapes, label)


def check_checkpoint(subject: Subject, directory: Path, label: str) -> str | None:
    """Refuse, in one line naming the first difference, a checkpoint whose tensors do not fit its
    own config.json (checked first), whose architecture, tensor names and shapes, or tokenizer
    differ from `subject`'s (the original), or that changed a
    weight the audit cannot swap in; return a note when it has no tokenizer to compare. Only the
    config, the safetensors headers, the tokenizer and the tensors outside the audit's weights are read."""
    config = _config(directory, label)
    tensors = _tensors(directory)
    check_own_config(config, {name: tensor.shape for name, tensor in tensors.items()}, label)
    ours = subject.model.config
    for setting in ("model_type", "tie_word_embeddings"):
        theirs, expected = getattr(config, setting, None), getattr(ours, setting, None)
        if theirs != expected:
            raise ModelSourceError(
                f"{label}: {setting} is {theirs} in the checkpoint, {expected} in the original"
            )
    _check_tensors(subject, tensors, label)
    _check_unswapped(subject, tensors, label)
    return _check_tokenizer(subject, directory, label)


def _check_unswapped(subject: Subject, tensors: dict[str, _Tensor], label: str) -> None:
    """The audit swaps in the weights its snapshots cover (`subject.specs`); a parameter outside
    them (a norm its family's layout does not list, say) keeps the original's values, so a
    checkpoint that changed one would be audited as a model it is not: refused, naming it. Only
    those few tensors are read."""
    params = named_parameters(subject.model)
    covered = {id(params[spec.param]) for spec in subject.specs}
    prefix = _prefix(subject)
    for name, param in params.items():
        if id(param) in covered:
            continue
        stored = _stored_name(name, tensors, prefix, label)
        with safe_open(tensors[stored].file, framework="pt") as handle:
            theirs = handle.get_tensor(stored)
        if not torch.equal(theirs.to(param.device, param.dtype), param.detach()):
            raise ModelSourceError(
                f"{label}: tensor {name} differs from the original's, but it is not among the weights the "
                "audit swaps in, so the audit would study another model than the checkpoint"
            )


def _check_tensors(subject: Subject, tensors: dict[str, _Tensor], label: str) -> None:
    """Every parameter of the original's architecture is in the checkpoint with its shape (a tied
    unembedding may be left out), and the checkpoint holds no tensor the architecture lacks."""
    with torch.device("meta"):  # the architecture's own names and shapes, free of any hook wrapper
        layout = type(subject.model)(subject.model.config)
    prefix = _prefix(subject)
    known: set[str] = set()
    seen: set[int] = set()
    for name, param in layout.named_parameters(remove_duplicate=False):
        alias = (
            id(param) in seen
        )  # a tied unembedding: the embedding again, optional in a checkpoint
        seen.add(id(param))
        known.update((name, name.removeprefix(prefix)))
        stored = stored_name(name, tensors, prefix)
        if stored is None:
            if alias:
                continue
            raise ModelSourceError(
                f"{label}: tensor {name} {shape_text(tuple(param.shape))} of the original is "
                "missing from the checkpoint"
            )
        if tensors[stored].shape != tuple(param.shape):
            raise ModelSourceError(
                f"{label}: tensor {name} is {shape_text(tensors[stored].shape)} in the checkpoint, "
                f"{shape_text(tuple(param.shape))} in the original"
            )
    for name, _ in layout.named_buffers():
        known.update((name, name.removeprefix(prefix)))
    for name, tensor in tensors.items():
        if name not in known and not name.endswith(STALE_BUFFERS):
            raise ModelSourceError(
                f"{label}: the checkpoint has tensor {name} {shape_text(tensor.shape)}, which the original lacks"
            )


def _stored_name(name: str, tensors: dict[str, _Tensor], prefix: str, where: str) -> str:
    """The checkpoint's name for a parameter the checks found in it (else one line naming it)."""
    stored = stored_name(name, tensors, prefix)
    if stored is None:
        raise ModelSourceError(f"{where}: tensor {name} is missing from the checkpoint")
    return stored


def _vocabulary(tokenizer) -> dict[int, str]:
    return {index: token for token, index in tokenizer.get_vocab().items()}


def _check_tokenizer(subject: Subject, directory: Path, label: str) -> str | None:
    """The checkpoint's tokenizer maps every id to the original's token, or the first id that
    differs is named; a checkpoint saved without a tokenizer gets a note instead."""
    from transformers import AutoTokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return f"{label}: no tokenizer saved with the checkpoint; its tensors fit the original, whose tokenizer is used"
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelSourceError(
            f"{label}: its tokenizer cannot be read ({str(error).strip().splitlines()[0]})"
        ) from None
    theirs, ours = _vocabulary(tokenizer), _vocabulary(subject.tokenizer)
    for index in sorted(theirs.keys() & ours.keys()):
        if theirs[index] != ours[index]:
            raise ModelSourceError(
                f"{label}: the tokenizer differs from the original's at id {index}: {theirs[index]!r} in the "
                f"checkpoint, {ours[index]!r} in the original"
            )
    if theirs.keys() != ours.keys():
        raise ModelSourceError(
            f"{label}: the tokenizer has {len(theirs)} tokens, the original's {len(ours)}"
        )
    return None


def read_snapshot(subject: Subject, directory: Path) -> Snapshot:
    """The checkpoint's weights as a CPU snapshot of `subject`: its weight keys, slices (fused
    QKV) and dtypes, read file by file. Check the checkpoint first with `check_checkpoint`."""
    tensors, prefix = _tensors(directory), _prefix(subject)
    params = named_parameters(subject.model)
    stored = {
        spec.param: _stored_name(spec.param, tensors, prefix, str(directory))
        for spec in subject.specs
    }
    read: dict[str, torch.Tensor] = {}
    for file in sorted({tensors[name].file for name in stored.values()}):
        with safe_open(file, framework="pt") as handle:
            for param, name in stored.items():
                if tensors[name].file == file and param not in read:
                    read[param] = handle.get_tensor(name).to(params[param].dtype)
    return {spec.key: spec.view(read).contiguous() for spec in subject.specs}
