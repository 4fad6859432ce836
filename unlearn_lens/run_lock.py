"""One run at a time per output directory: an OS lock (`flock`) on a file beside the directory.

The lock file `.NAME.lock` sits in the directory's parent, not inside it, so it covers a run
that replaces the directory whole (`--force`: written beside it, then swapped in) and needs no
directory to exist yet. It holds the holder's process id, for the message that refuses a
second process. The operating system drops a `flock` when its holder dies, however it dies,
so a lock file left by a killed run is found free and taken over. The file is removed when
the run ends, with any parent directory the lock had to create that is still empty, so a
finished or failed run leaves nothing of the lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from unlearn_lens.errors import RunLockedError

_held: dict[Path, int] = {}
"""Lock files this process holds, with how many nested `run_lock`s hold each: a command that
locks its `--out` can call library code that locks the same directory."""


def lock_path(directory: str | Path) -> Path:
    """The lock file of `directory`: beside the directory its path resolves to (through links)."""
    real = Path(os.path.realpath(directory))
    return real.parent / f".{real.name}.lock"


def _make_parents(path: Path) -> list[Path]:
    """Create the missing ancestors of `path`; return those created, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _holder(fd: int) -> str:
    """The process id written in an open lock file ('' when none is written yet)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode(errors="replace").strip()


def _acquire(path: Path, directory: Path) -> tuple[int, str]:
    """An open descriptor of `path` holding its lock, and the process id a dead holder left in it
    ('' when none). Refuses at once when a live process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise RunLockedError(
                f"{directory} is in use by {who} (another unlearn-lens run writing there); "
                "wait for it to finish or write elsewhere"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, _holder(fd)
        # The holder removed the file between our open and our lock: lock the file now there.
        os.close(fd)


@contextmanager
def run_lock(
    directory: str | Path, on_takeover: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the run lock of `directory` until the block ends.

    A second process refuses at once with `RunLockedError` naming the directory and the
    holder's process id; a lock left by a process that died is taken over, and
    `on_takeover` gets one line saying so. Nested calls in one process share the lock.
    """
    directory = Path(directory)
    path = lock_path(directory)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    created = _make_parents(path)
    try:
        fd, dead = _acquire(path, directory)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        if dead and on_takeover is not None:
            on_takeover(
                f"{directory}: took over the run lock left by process {dead}, which is no longer running"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[path] = 1
        yield
    finally:
        _held.pop(path, None)
        path.unlink(missing_ok=True)  # while still locked: no other process can hold this file
        os.close(fd)
        _remove_empty(created)


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories the lock created that nothing else has filled, deepest first."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return
