"""Write a subject's model as a Hugging Face directory (config, tokenizer, safetensors) that `load` reads back."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from unlearn_lens.atomic import staged_directory
from unlearn_lens.models.architecture import named_parameters
from unlearn_lens.models.subject import Subject


def save_checkpoint(subject: Subject, directory: str | Path) -> Path:
    """Save the subject's current weights under their Hugging Face names, atomically.

    Bridge wrapper segments are stripped and tied embeddings are written once, so the result is
    an ordinary transformers checkpoint (the supported families keep no persistent buffers); the
    directory appears only once it is complete.
    """
    with staged_directory(directory) as staging:
        subject.model.config.save_pretrained(staging)
        subject.tokenizer.save_pretrained(staging)
        params = named_parameters(subject.model)
        # Exactly the parameters the weight map addresses: the HF layout, whatever a bridge added.
        state = {
            spec.param: params[spec.param].detach().to("cpu").contiguous() for spec in subject.specs
        }
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
    return Path(directory)
