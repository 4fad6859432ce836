"""unlearn_lens: audit whether an unlearned language model really forgot, or only hides what it knows."""

from unlearn_lens.errors import ConfigError, ModelSourceError, UnlearnLensError
from unlearn_lens.models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    RunOutput,
    Snapshot,
    Subject,
    SubjectInfo,
    load,
    save_checkpoint,
    tiny_gpt2,
    tiny_llama,
    tiny_tokenizer,
    wrap,
)

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "ConfigError",
    "ModelSourceError",
    "RunOutput",
    "Snapshot",
    "Subject",
    "SubjectInfo",
    "UnlearnLensError",
    "__version__",
    "load",
    "save_checkpoint",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_tokenizer",
    "wrap",
]
