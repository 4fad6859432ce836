"""Items from a Hugging Face dataset named `hf:NAME[:CONFIG]:SPLIT`, read with `datasets.load_dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn_lens.data.fields import DataError

HF_PREFIX = "hf:"
"""Marks a data spec as a Hugging Face dataset rather than a file or directory."""


def is_hf_spec(spec: object) -> bool:
    """True for a string of the form `hf:...`."""
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`(name, config, split)` of `hf:NAME:CONFIG:SPLIT`; of `hf:NAME:PART` it is `(name, None, PART)`,
    PART being read as a config name too when the dataset has one by that name (see `load_hf_dataset`)."""
    parts = spec[len(HF_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(
            f"{spec}: a Hugging Face dataset is written hf:NAME[:CONFIG]:SPLIT, e.g. hf:locuslab/TOFU:forget10:train"
        )
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_hf_dataset(spec: str) -> Any:
    """The `datasets.Dataset` a `hf:` spec names.

    `hf:NAME:PART` takes PART as a config when the dataset has a config of that name and a
    single split (the TOFU layout: `hf:locuslab/TOFU:forget10` is config `forget10`, split
    `train`), and as a split otherwise. Offline (`HF_HUB_OFFLINE=1`) only the local cache
    is read; with no network and no offline mode it fails at once rather than retrying.

    **Raises** `DataError` in one line naming the spec.
    """
    import datasets

    from unlearn_lens.hub import hub_reachable

    name, config, split = parse_hf_spec(spec)
    local = Path(name).is_dir()
    if not local and not datasets.config.HF_HUB_OFFLINE and not hub_reachable():
        raise DataError(
            f"{spec}: the Hugging Face hub cannot be reached; set HF_HUB_OFFLINE=1 to read a cached copy, "
            "or give a directory written by Dataset.save_to_disk"
        )
    try:
        if config is None and split in datasets.get_dataset_config_names(name):
            config, split = split, None
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as error:  # datasets raises many types (RuntimeError for a loading script)
        where = (
            " (offline: HF_HUB_OFFLINE is set and it is not in the local cache)"
            if datasets.config.HF_HUB_OFFLINE
            else ""
        )
        raise DataError(f"{spec}: cannot load it{where}: {_first_line(error)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise DataError(
                f"{spec}: config {config!r} has splits {', '.join(loaded)}; "
                f"name one: hf:{name}:{config}:SPLIT"
            )
        loaded = next(iter(loaded.values()))
    return loaded
