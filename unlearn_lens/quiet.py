"""Off a terminal, third-party progress bars go quiet; the audit's own stage lines and warnings stay.

transformers ("Loading weights", GGUF de-quantising), huggingface_hub (downloads) and datasets
(map, filter, download) draw tqdm bars that redraw with carriage returns: in a pipe or a CI log
each redraw is noise beside the audit's plain one-line stages. Warnings are left as they are.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

DATASETS_BARS = "HF_DATASETS_DISABLE_PROGRESS_BARS"
"""Read by `datasets` when it is first imported (the CLI imports it only for `hf:` specs)."""


def quiet_third_party_bars(stream: TextIO | None = None) -> bool:
    """Silence transformers', huggingface_hub's and datasets' progress bars when `stream`
    (default stderr, where they draw) is not a terminal; return whether they were silenced."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return False
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars, and huggingface_hub's with them
    os.environ.setdefault(DATASETS_BARS, "1")
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    return True
