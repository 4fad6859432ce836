"""`audit`: the whole study for each method — unlearn, relearn (and the control), diagnostics,
localisation and the regime verdict — with every finished stage saved so a run can resume.

One model is held in memory, with the original weights as a CPU snapshot beside it; the
unlearned and relearned weights are written as safetensors (in the run directory, or a temporary
one without `out`) and read back weight by weight whenever a stage swaps them in, so they cost
disk, not memory (see `StoredSnapshot`). Each finished stage rewrites `results.json` atomically,
so an interrupted run keeps everything it finished and `resume=True` continues from there.

With `StudyConfig.low_memory` the original weights live on disk too (read weight by weight, so
the numbers are unchanged; see docs/howto/scale.md for what it costs in time).

A checkpoint unlearned elsewhere (`StudyConfig.unlearned`) goes through the same stages but the
first: its weights are the unlearned snapshot, read from its own safetensors whenever needed
(never copied into the run), after a check against the original before any work.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from unlearn_lens.atomic import replace_directory
from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS, builtin
from unlearn_lens.data.chat import chat_items
from unlearn_lens.data.checks import (
    check_distinct,
    check_token_lengths,
    describe_duplicates,
    item_locations,
)
from unlearn_lens.data.fields import DataError
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import check_overlap, load_items
from unlearn_lens.errors import ConfigError, ModelSourceError
from unlearn_lens.evaluation import evaluate_outcomes
from unlearn_lens.metrics.cka import MIN_DEBIASED_SAMPLES
from unlearn_lens.models.checkpoints import check_checkpoint
from unlearn_lens.models.sources import check_device, load
from unlearn_lens.models.stored import StoredSnapshot, write_snapshot
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.out_dir import check_not_foreign, check_out_location, open_out
from unlearn_lens.schema import dump
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.given import GivenCheckpoint, locate
from unlearn_lens.study.results import (
    RESULTS_FILE,
    AuditResults,
    DataSummary,
    environment,
)
from unlearn_lens.study.stages import RELEARN_SOURCES, AuditRun, relearn_items, run_methods
from unlearn_lens.unlearn.known import split_known
from unlearn_lens.unlearn.objectives import get_objective

SNAPSHOT_DIR = "snapshots"


@dataclass
class StudyData:
    """The item sets an audit runs on."""

    forget: list[Item]
    retain: list[Item]
    control: list[Item]
    unrelated: list[Item]


def read_sets(config: StudyConfig) -> tuple[str, StudyData]:
    """The forget / retain / control / unrelated sets named by the settings (files win over the domain)."""
    if config.domain not in BUILTIN_DOMAINS:
        raise ConfigError(
            f"unknown domain {config.domain!r}; choose one of {', '.join(BUILTIN_DOMAINS)}"
        )
    sets, fields = builtin(config.domain), config.field_map
    data = StudyData(
        forget=load_items(config.forget, fields) if config.forget else list(sets.forget),
        retain=load_items(config.retain, fields) if config.retain else list(sets.retain),
        control=load_items(config.control, fields) if config.control else list(sets.control),
        unrelated=list(sets.unrelated),
    )
    files = [
        f"{name}={path}"
        for name, path in (
            ("forget", config.forget),
            ("retain", config.retain),
            ("control", config.control),
        )
        if path
    ]
    source = f"built-in {config.domain!r}" + (f" with {', '.join(files)}" if files else "")
    return source, data


def _check_items(
    subject: Subject, config: StudyConfig, data: StudyData, console: Console
) -> StudyData:
    """The sets with every item fitting the model (refused with file:line otherwise, or truncated
    with `truncate`); repeated items are reported, and a split with too few distinct items for
    debiased CKA is refused."""
    files = {"forget": config.forget, "retain": config.retain, "control": config.control}
    fitted = {}
    for split in ("forget", "retain", "control", "unrelated"):
        where = item_locations(
            files.get(split), len(getattr(data, split)), f"built-in {config.domain} {split}"
        )
        items, note = check_token_lengths(
            subject, getattr(data, split), where, config.max_tokens, config.truncate, split
        )
        fitted[split] = items
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")
        if split == "unrelated":
            continue
        check_distinct(f"{split} set", items, MIN_DEBIASED_SAMPLES, "debiased CKA")
        note = describe_duplicates(split, items, where)
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")
    if config.relearn_source not in RELEARN_SOURCES:
        note = relearn_items(config, None, subject)[1]
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")
    return StudyData(**fitted)


def prepare_data(
    subject: Subject, config: StudyConfig, sets: tuple[str, StudyData], console: Console
) -> DataSummary:
    """Item checks, known filter on forget and retain, novelty filter on the control, then the item cap."""
    source, data = sets
    if config.chat_template:
        data = StudyData(
            *(
                chat_items(items, subject.tokenizer)
                for items in (data.forget, data.retain, data.control, data.unrelated)
            )
        )
        source += ", prompts in the chat template"
    data = _check_items(subject, config, data, console)
    overlap = check_overlap(data.forget, data.retain)
    if overlap:
        console.print(
            f"[yellow]warning:[/] {overlap} items are in both the forget and the retain set"
        )
    given = {"forget": len(data.forget), "retain": len(data.retain), "control": len(data.control)}
    kept = {"forget": data.forget, "retain": data.retain, "control": data.control}
    if config.known_only:
        # The control measures learning from scratch: only items the model does not know.
        kept = {
            "forget": split_known(subject, data.forget)[0],
            "retain": split_known(subject, data.retain)[0],
            "control": split_known(subject, data.control)[1],
        }
    if config.max_items is not None:
        kept = {split: items[: config.max_items] for split, items in kept.items()}
    kept["unrelated"] = data.unrelated[: config.max_items] if config.max_items else data.unrelated
    for split in ("forget", "retain", "control"):
        check_distinct(
            f"{split} set (after the known filter, of {given[split]} given)",
            kept[split],
            MIN_DEBIASED_SAMPLES,
            "debiased CKA (give more items or pass --keep-unknown)",
        )
    if config.requests > len(kept["forget"]):
        raise ConfigError(
            f"requests={config.requests} is more than the {len(kept['forget'])} forget items kept; "
            "each request needs at least one item"
        )
    console.print(
        f"data: {source}; kept forget {len(kept['forget'])}/{given['forget']}, retain "
        f"{len(kept['retain'])}/{given['retain']} "
        f"(known to the model), control {len(kept['control'])}/{given['control']} (unknown to it)"
    )
    return DataSummary(source=source, items=kept, given=given)


def _check_methods(config: StudyConfig) -> None:
    """Unknown methods fail before any model is loaded (the retain set always exists: see `prepare_data`)."""
    for method in config.methods:
        get_objective(method)


def _check_relearn_source(config: StudyConfig) -> None:
    """A relearning source that is not a named set must be a readable data file, checked before any model loads."""
    if config.relearn_source in RELEARN_SOURCES:
        return
    try:
        load_items(config.relearn_source, config.field_map)
    except DataError as error:
        raise ConfigError(
            f"--relearn-source {error} (or name one of {', '.join(RELEARN_SOURCES)})"
        ) from None


def _locate_given(config: StudyConfig) -> dict[str, GivenCheckpoint]:
    """Each given checkpoint's files and run record, found before any model loads (a hub id is fetched here)."""
    located = {}
    for name, source in config.unlearned.items():
        try:
            located[name] = locate(source)
        except (ModelSourceError, ConfigError) as error:
            raise type(error)(f"--unlearned {name}: {error}") from None
    return located


def _check_unchanged(results: AuditResults, given: dict[str, GivenCheckpoint]) -> None:
    """A resumed run must read the weights it began with: a given checkpoint that changed since is refused."""
    for name, checkpoint in given.items():
        before = results.methods.get(name)
        if (
            before is None
            or before.given is None
            or before.given.weights_sha256 in (None, checkpoint.weights_sha256)
        ):
            continue
        raise ConfigError(
            f"--unlearned {name}: the weights in {checkpoint.directory} changed since this run began "
            "(their SHA-256 differs); resume with the same checkpoint, or rerun with --force"
        )


def _check_given(subject: Subject, given: dict[str, GivenCheckpoint], console: Console) -> None:
    """Refuse a given checkpoint whose architecture, tensors or tokenizer differ from the
    original's, before anything is computed or written."""
    for name, checkpoint in given.items():
        try:
            note = check_checkpoint(subject, Path(checkpoint.directory), checkpoint.source)
        except ModelSourceError as error:
            raise ModelSourceError(f"--unlearned {name}: {error}") from None
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")


def replacement_path(out: Path) -> Path:
    """Where a run replacing the finished run in `out` (with force) is written until it completes:
    a fixed name beside `out`, so `--resume` finds it after an interrupt."""
    return out.parent / f".{out.name}.replacing"


class RunDirectory:
    """Where an audit keeps results.json and the snapshots that resuming needs."""

    def __init__(self, path: str | Path, replaces: Path | None = None) -> None:
        self.path = Path(path)
        self.replaces = replaces
        """The finished run this one replaces once complete (it is written beside it until then)."""

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    def snapshot_path(self, method: str, name: str) -> Path:
        return self.path / SNAPSHOT_DIR / f"{method}-{name}.safetensors"

    def load_snapshot(self, method: str, name: str) -> StoredSnapshot:
        path = self.snapshot_path(method, name)
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing: the run cannot resume past this stage; rerun with --force"
            )
        return StoredSnapshot(path)

    def drop_snapshots(self) -> None:
        """Remove the snapshots once a run is complete (they are only for resuming)."""
        shutil.rmtree(self.path / SNAPSHOT_DIR, ignore_errors=True)

    def start(self) -> None:
        """Before a new run's first write: clear what an earlier, interrupted replacement left."""
        if self.replaces is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def finish(self) -> None:
        """A complete replacement takes the place of the run it replaces, whole."""
        if self.replaces is not None:
            self.path = replace_directory(self.path, self.replaces)
            self.replaces = None


def _open_run(
    config: StudyConfig, out: Path | None, resume: bool, force: bool
) -> tuple[RunDirectory | None, AuditResults | None]:
    """Check the output directory, writing nothing: a previous run is resumed (an interrupted
    replacement first; with none begun, resuming starts afresh), refused, or (with force) replaced
    by a run written beside it; a non-empty directory that holds no run is refused unless forced."""
    if out is None:
        if resume:
            raise ConfigError("--resume needs --out, the directory of the run to continue")
        return None, None
    check_out_location(out)
    if resume:
        for run in (RunDirectory(replacement_path(out), replaces=out), RunDirectory(out)):
            if run.results_path.exists():
                previous = AuditResults.load(run.path)
                if previous.config != config:
                    changed = sorted(
                        k for k, v in dump(config).items() if dump(previous.config).get(k) != v
                    )
                    raise ConfigError(
                        f"{run.path}: the run there used other settings ({', '.join(changed)}); "
                        "resume with the same ones"
                    )
                return run, previous
        # Nothing there: a run interrupted before its first stage finished wrote nothing, so it starts afresh.
    if (out / RESULTS_FILE).exists():
        if not force:
            raise ConfigError(
                f"{out} already holds a run's results.json; use --resume to continue it or --force to replace it"
            )
        return RunDirectory(replacement_path(out), replaces=out), None
    check_not_foreign(out, force, (RESULTS_FILE,))
    return RunDirectory(out), None


@contextmanager
def _snapshot_store(run: RunDirectory | None) -> Iterator[Path]:
    """Where the run's weight snapshots go: the run directory's, or a temporary directory that
    lasts as long as the audit without `out`."""
    if run is not None:
        yield run.path / SNAPSHOT_DIR
        return
    with tempfile.TemporaryDirectory(prefix="unlearn-lens-snapshots-") as directory:
        yield Path(directory)


@contextmanager
def _original(subject: Subject, config: StudyConfig) -> Iterator[Snapshot]:
    """The original weights: a CPU snapshot, or with `low_memory` a file in a temporary
    directory of its own (a replaced run's directory may be cleared while it is needed)."""
    if not config.low_memory:
        yield subject.snapshot()
        return
    with tempfile.TemporaryDirectory(prefix="unlearn-lens-original-") as directory:
        yield write_snapshot(Path(directory) / "original.safetensors", subject)


def audit(
    config: StudyConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    subject: Subject | None = None,
    progress: bool = True,
    console: Console | None = None,
    on_stage: Callable[[AuditResults], None] | None = None,
    unlearned: Mapping[str, str] | None = None,
) -> AuditResults:
    """Run the study for every method of `config`, and every checkpoint it names as unlearned
    elsewhere, and return its results.

    With `out`, every finished stage is saved there (results.json plus weight snapshots) and
    `resume=True` continues an interrupted run. Settings, data files and `out` are checked
    before the model loads, and items against the model before anything is written. With
    `force`, a finished run in `out` is replaced only once the new one is complete (it is
    written beside `out` until then, and `resume=True` finds it there). `subject` lets a caller
    pass a model already loaded (its weights must be the original ones); otherwise
    `config.model` is loaded. `on_stage` is called with the results after every saved stage.
    Progress bars show only when `console` is a terminal; otherwise it gets one line as each stage ends.

    `unlearned` names checkpoints unlearned elsewhere (name → directory or hub id), added to
    `config.unlearned`; without a `config`, only they are audited. Each is checked against the
    original (architecture, tensor names and shapes, tokenizer) right after it loads.
    """
    if unlearned:
        base = (
            config if config is not None else StudyConfig(methods=())
        )  # checkpoints alone: no default methods
        config = base.with_values(unlearned={**base.unlearned, **unlearned})
    config = config or StudyConfig()
    config.validate()
    _check_methods(config)
    _check_relearn_source(config)
    if subject is None:
        check_device(config.device)
    console = console or Console(stderr=True)
    progress = (
        progress and console.is_terminal
    )  # bars vanish off a terminal: each stage prints a line when it ends instead

    def note(line: str) -> None:
        console.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)

    # The run lock is held from the first check of `out` to the last write, replacement included.
    with open_out(Path(out) if out is not None else None, note) as out:
        return _open_and_run(config, out, resume, force, subject, progress, console, on_stage)


def _open_and_run(
    config: StudyConfig,
    out: Path | None,
    resume: bool,
    force: bool,
    subject: Subject | None,
    progress: bool,
    console: Console,
    on_stage: Callable[[AuditResults], None] | None,
) -> AuditResults:
    """The audit's work once its settings are checked and `out` (if any) is held."""
    run, results = _open_run(config, out, resume, force)
    given = _locate_given(config)
    if results is not None:
        _check_unchanged(results, given)
    sets = read_sets(config) if results is None or results.data is None else None
    if subject is None:
        subject = load(
            config.model,
            backend=config.backend,
            device=config.device,
            device_map=config.device_map,
            dtype=config.dtype,
        )
    _check_given(subject, given, console)
    results = results or AuditResults(config=config, environment=environment())
    results.status = "running"

    def save() -> None:
        if run is not None:
            results.save(run.path)
        if on_stage is not None:
            on_stage(results)

    with _snapshot_store(run) as store, _original(subject, config) as original:
        ctx = AuditRun(subject, config, results, original, run, store, save, progress, console)
        return _run_stages(ctx, sets, given)


def _run_stages(
    ctx: AuditRun, sets: tuple[str, StudyData] | None, given: dict[str, GivenCheckpoint]
) -> AuditResults:
    """The stages of `audit` once the settings, the run directory and the model are ready: the
    data, then every method and given checkpoint (see `unlearn_lens.study.stages`)."""
    subject, config, results, run = ctx.subject, ctx.config, ctx.results, ctx.run
    save = ctx.save_results
    try:
        if results.data is None:
            assert sets is not None, "read when the results hold no data yet"
            with ctx.stage("data (checks, known filter, original metrics)"):
                prepared = prepare_data(subject, config, sets, ctx.console)
                outcomes = {
                    split: evaluate_outcomes(subject, items)
                    for split, items in prepared.items.items()
                    if split != "unrelated"
                }
            # Together: an interrupt saves all or none.
            results.data, results.original_outcomes = prepared, outcomes
            results.original = {split: o.metrics() for split, o in outcomes.items()}
            if run is not None:
                run.start()
            save()
        run_methods(ctx, config.methods, given)
        results.status = "complete"
        save()
        if run is not None:
            run.drop_snapshots()
            run.finish()
    except KeyboardInterrupt:
        results.status = "interrupted"
        save()
        where = (
            f"; finished stages are in {run.results_path}, continue with --resume"
            if run is not None
            else ""
        )
        ctx.console.print(f"[yellow]interrupted[/]{where}")
        raise
    finally:
        subject.restore(ctx.original)
    return results
