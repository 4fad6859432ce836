"""Atomic file writes: a reader (or a crash) never sees a half-written results file."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    with atomic_target(path) as temporary, open(temporary, "wb") as stream:
        stream.write(data)
    return Path(path)


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write; once the block ends without
    error it is flushed to disk and renamed over `path` (otherwise removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(handle)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; results are for sharing
        yield Path(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def json_safe(payload: Any) -> Any:
    """`payload` with every non-finite float (JSON has no NaN or infinity) replaced by None."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: json_safe(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [json_safe(value) for value in payload]
    return payload


def json_float(value: float | int | None) -> float:
    """A float read back from JSON, where `json_safe` wrote a non-finite value as null (NaN here)."""
    return math.nan if value is None else float(value)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write `payload` as indented JSON, atomically; non-finite floats are written as null."""
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode())


def through_link(path: str | Path) -> Path:
    """`path`, or the path it links to when it is a symbolic link: what a replacement replaces,
    so the link itself stays as the user made it."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextmanager
def staged_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `directory` (beside its target, for a link); on
    success it replaces `directory` whole, on any error it is removed, so `directory` is never
    seen half-written."""
    directory = through_link(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the result is an ordinary directory
    try:
        yield staging
        replace_directory(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def replace_directory(source: str | Path, directory: str | Path) -> Path:
    """Move the complete directory `source` to `directory`, replacing whatever is there (a link's
    target, leaving the link).

    The old `directory` is first renamed aside and removed only once `source` is in place, so
    a crash in between leaves one of the two whole, never neither.
    """
    source, directory = Path(source), through_link(directory)
    retired = directory.parent / f".{directory.name}-retired-{os.getpid()}"
    if directory.exists():
        directory.rename(retired)
    source.rename(directory)
    if retired.exists():
        shutil.rmtree(retired)
    return directory
