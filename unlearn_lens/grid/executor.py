"""Where a grid's tasks run: one after another in this process, or as Ray tasks on a cluster.

An executor maps a function over tasks and yields `(index, result)` as each finishes; it knows
nothing of what the tasks compute. A task that cannot finish for a reason of the executor's (a
worker lost more often than the retries allow, a cluster gone) yields a `TaskFailure` instead.
Ray is an optional dependency (`pip install unlearn-lens[ray]`), imported only when asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from unlearn_lens.errors import ConfigError, one_line
from unlearn_lens.grid.spec import Resources

MAX_RETRIES = 3
"""How often Ray reruns a task whose worker died (killed, out of memory, node lost)."""


@dataclass(frozen=True)
class TaskFailure:
    """A task the executor could not run to its end, with the reason in one line."""

    message: str


@runtime_checkable
class Executor(Protocol):
    """Runs `fn` over tasks, yielding `(index, result or TaskFailure)` in the order they finish."""

    slots: int
    """How many tasks run at once (for time estimates)."""

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Each task in this process, one after another: nothing to start, nothing to ship."""

    slots = 1

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for index, task in enumerate(tasks):
            try:
                result = fn(task)
            except Exception as error:
                result = TaskFailure(f"{type(error).__name__}: {one_line(error)}")
            yield index, result

    def close(self) -> None:
        pass


def import_ray() -> ModuleType:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which is not installed; pip install 'unlearn-lens[ray]' (or ray>=2.9)"
        ) from None
    return ray


class RayExecutor:
    """Each task as a Ray task asking for `resources`, retried by Ray if its worker dies.

    `target` is `"auto"` (the cluster this machine belongs to), an address (`HOST:PORT` or
    `ray://HOST:10001`), `"local"` (a Ray on this machine with all its CPUs) or `"local:N"` (with
    N CPUs), or None for the Ray this process already started. A Ray started here is shut down by
    `close`; one found running is left as it was.
    """

    def __init__(
        self, target: str | None, resources: Resources, max_retries: int = MAX_RETRIES
    ) -> None:
        self.ray = import_ray()
        self.resources = resources
        self.max_retries = max_retries
        self.started = False
        if not self.ray.is_initialized():
            self.ray.init(**_init_arguments(target), log_to_driver=False)
            self.started = True
        cluster = self.ray.cluster_resources()
        self.slots = _slots(cluster, resources)
        if self.slots == 0 and self.started:
            self.close()
            raise ConfigError(
                f"--ray {target}: each cell asks for {resources} but this Ray has "
                f"{_describe_resources(cluster)}; lower [resources] or use a larger cluster"
            )
        self.slots = max(1, self.slots)  # a cluster that scales up may have none yet

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        options: dict[str, Any] = {
            "num_cpus": self.resources.num_cpus,
            "num_gpus": self.resources.num_gpus,
            "max_retries": self.max_retries,
        }
        if self.resources.memory is not None:
            options["memory"] = self.resources.memory
        remote = ray.remote(fn).options(**options)
        pending = {remote.remote(task): index for index, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        result = TaskFailure(f"{type(error).__name__}: {one_line(error)}")
                    yield index, result
        finally:
            for ref in pending:  # interrupted: nothing left running on the cluster
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def _init_arguments(target: str | None) -> dict[str, Any]:
    """`ray.init` arguments for a `--ray` value."""
    if target is None or target == "auto":
        return {"address": "auto"}
    if target == "local" or target.startswith("local:"):
        count = target.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise ConfigError(f"--ray {target}: N in local:N must be a whole number ≥ 1")
        return {"num_cpus": int(count) if count else None, "include_dashboard": False}
    return {"address": target}


def _slots(cluster: dict[str, float], resources: Resources) -> int:
    """How many tasks the cluster can run at once with these resources each (0: none fits)."""
    slots = math.inf
    for name, need in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)):
        if need > 0:
            slots = min(slots, cluster.get(name, 0.0) // need)
    if resources.memory:
        slots = min(slots, cluster.get("memory", 0.0) // resources.memory)
    return int(slots) if slots != math.inf else 1


def _describe_resources(cluster: dict[str, float]) -> str:
    return ", ".join(f"{cluster.get(name, 0):g} {name}" for name in ("CPU", "GPU", "memory"))


def executor_for(ray: str | None, resources: Resources) -> Executor:
    """The executor a `--ray` value asks for: local (None) or Ray."""
    return LocalExecutor() if ray is None else RayExecutor(ray, resources)
