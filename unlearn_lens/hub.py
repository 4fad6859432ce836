"""Whether the Hugging Face hub can be reached, asked before anything that would retry against it."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def hub_reachable() -> bool:
    """False in offline mode (`HF_HUB_OFFLINE`) or when the hub's host does not even resolve, so
    that no download with its retry loop is started."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True
