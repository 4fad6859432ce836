"""Loading and wrapping models behind the one `Subject` interface."""

from unlearn_lens.models.architecture import COMPONENTS, ModelShape, WeightSpec
from unlearn_lens.models.bridge_backend import BridgeSubject
from unlearn_lens.models.builtin import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    cache_root,
    ensure_builtin_cache,
)
from unlearn_lens.models.checkpoints import check_checkpoint, checkpoint_directory, read_snapshot
from unlearn_lens.models.dtypes import DTYPES
from unlearn_lens.models.nnsight_backend import NNsightSubject
from unlearn_lens.models.saving import save_checkpoint
from unlearn_lens.models.sources import BACKENDS, load, wrap
from unlearn_lens.models.stored import StoredSnapshot, write_snapshot
from unlearn_lens.models.subject import RunOutput, Snapshot, Subject, SubjectInfo
from unlearn_lens.models.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer

__all__ = [
    "BACKENDS",
    "BUILTIN_MODELS",
    "COMPONENTS",
    "DEFAULT_MODEL",
    "DTYPES",
    "BridgeSubject",
    "ModelShape",
    "NNsightSubject",
    "RunOutput",
    "Snapshot",
    "StoredSnapshot",
    "Subject",
    "SubjectInfo",
    "WeightSpec",
    "cache_root",
    "check_checkpoint",
    "checkpoint_directory",
    "ensure_builtin_cache",
    "load",
    "read_snapshot",
    "save_checkpoint",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_tokenizer",
    "wrap",
    "write_snapshot",
]
