"""`audit`: the whole study for each method — unlearn, relearn (and the control), diagnostics,
localisation and the regime verdict — with every finished stage saved so a run can resume.

One model is held in memory; the original, unlearned and relearned weights are CPU snapshots
swapped in with `restore`. Each finished stage rewrites `results.json` atomically, and the
unlearned / relearned snapshots are written as safetensors beside it, so an interrupted run
keeps everything it finished and `resume=True` continues from there.

A checkpoint unlearned elsewhere (`StudyConfig.unlearned`) goes through the same stages but the
first: its weights are the unlearned snapshot, read from its own safetensors whenever needed
(never copied into the run), after a check against the original before any work.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from safetensors.torch import load_file, save

from unlearn_lens.atomic import replace_directory, write_bytes_atomic
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
from unlearn_lens.diagnostics.compare import ModelPass, compare_passes, model_pass
from unlearn_lens.errors import ConfigError, ModelSourceError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.localize.attributed import localize_by_attribution
from unlearn_lens.localize.deltas import update_cosines, weight_deltas
from unlearn_lens.localize.heads import head_attribution
from unlearn_lens.localize.logit_lens import logit_lens
from unlearn_lens.localize.reversion import Reverter, reversion_sweep
from unlearn_lens.localize.summary import summarise_localization
from unlearn_lens.localize.tracking import DeltaTracker
from unlearn_lens.metrics.cka import MIN_DEBIASED_SAMPLES
from unlearn_lens.models.checkpoints import check_checkpoint, read_snapshot
from unlearn_lens.models.sources import check_device, load
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.out_dir import check_not_foreign, check_out_location
from unlearn_lens.regimes import classify_regime
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.given import GivenCheckpoint, locate
from unlearn_lens.study.results import (
    RESULTS_FILE,
    AuditResults,
    DataSummary,
    MethodResults,
    environment,
)
from unlearn_lens.unlearn.api import unlearn
from unlearn_lens.unlearn.known import split_known
from unlearn_lens.unlearn.objectives import get_objective
from unlearn_lens.unlearn.relearn import relearn

RELEARN_SOURCES = ("forget", "retain", "unrelated")
"""Named relearning sources (any other value is read as a data file)."""
SNAPSHOT_DIR = "snapshots"


@dataclass
class StudyData:
    """The item sets an audit runs on."""

    forget: list[Item]
    retain: list[Item]
    control: list[Item]
    unrelated: list[Item]


def _read_sets(config: StudyConfig) -> tuple[str, StudyData]:
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
        note = _relearn_items(config, None, subject)[1]
        if note is not None:
            console.print(f"[yellow]warning:[/] {escape(note)}")
    return StudyData(**fitted)


def _prepare_data(
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


def _relearn_items(
    config: StudyConfig, data: DataSummary | None, subject: Subject
) -> tuple[list[Item], str | None]:
    """The relearning source: a named split of the run's data, or items read from its data spec,
    checked (and truncated with `truncate`) like the splits; with the truncation note, if any."""
    if config.relearn_source in RELEARN_SOURCES:
        assert data is not None, "a named split is read only once the run's data is prepared"
        return data.items[config.relearn_source], None
    items = load_items(config.relearn_source, config.field_map)
    items = chat_items(items, subject.tokenizer) if config.chat_template else items
    where = item_locations(config.relearn_source, len(items), config.relearn_source)
    return check_token_lengths(subject, items, where, config.max_tokens, config.truncate, "relearn")


def _check_methods(config: StudyConfig) -> None:
    """Unknown methods fail before any model is loaded (the retain set always exists: see `_prepare_data`)."""
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

    def save_snapshot(self, method: str, name: str, snapshot: Snapshot) -> None:
        """Write a snapshot atomically (safetensors: no pickle on the way back)."""
        write_bytes_atomic(
            self.snapshot_path(method, name), save({k: v.contiguous() for k, v in snapshot.items()})
        )

    def load_snapshot(self, method: str, name: str) -> Snapshot:
        path = self.snapshot_path(method, name)
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing: the run cannot resume past this stage; rerun with --force"
            )
        return load_file(path)

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
                        k
                        for k, v in config.to_dict().items()
                        if previous.config.to_dict().get(k) != v
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
def _timed(console: Console, stage: str, result: MethodResults | None = None) -> Iterator[None]:
    """Time a stage into `result.seconds` and, off a terminal (where no bars show), print one line when it ends."""
    start = time.perf_counter()
    yield
    seconds = round(time.perf_counter() - start, 2)
    if result is not None:
        result.seconds[stage] = seconds
    if not console.is_terminal:
        console.print(
            f"{result.method}: {stage}" if result is not None else stage,
            f"done in {seconds:.1f} s",
            markup=False,
            highlight=False,
        )


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
    )  # bars vanish off a terminal: `_timed` prints a line per stage instead
    run, results = _open_run(config, Path(out) if out is not None else None, resume, force)
    given = _locate_given(config)
    if results is not None:
        _check_unchanged(results, given)
    sets = _read_sets(config) if results is None or results.data is None else None
    if subject is None:
        subject = load(
            config.model,
            backend=config.backend,
            device=config.device,
            device_map=config.device_map,
            dtype=config.dtype,
        )
    _check_given(subject, given, console)
    original = subject.snapshot()
    results = results or AuditResults(config=config, environment=environment())
    results.status = "running"

    def save() -> None:
        if run is not None:
            results.save(run.path)
        if on_stage is not None:
            on_stage(results)

    try:
        if results.data is None:
            with _timed(console, "data (checks, known filter, original metrics)"):
                assert sets is not None, "the sets are read whenever the run has no data yet"
                prepared = _prepare_data(subject, config, sets, console)
                metrics = {
                    split: evaluate(subject, items)
                    for split, items in prepared.items.items()
                    if split != "unrelated"
                }
            results.data, results.original = (
                prepared,
                metrics,
            )  # together: an interrupt saves both or neither
            if run is not None:
                run.start()
            save()
        original_passes: dict[str, ModelPass] = {}
        for method in config.methods:
            method_result = results.methods.setdefault(method, MethodResults(method=method))
            _run_method(
                subject,
                config,
                results,
                method_result,
                original,
                original_passes,
                run,
                save,
                progress,
                console,
            )
        for name, checkpoint in given.items():
            method_result = results.methods.setdefault(name, MethodResults(method=name))
            method_result.given = (
                checkpoint  # found afresh: a resumed run reads the checkpoint where it is now
            )
            _run_method(
                subject,
                config,
                results,
                method_result,
                original,
                original_passes,
                run,
                save,
                progress,
                console,
            )
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
        console.print(f"[yellow]interrupted[/]{where}")
        raise
    finally:
        subject.restore(original)
    return results


def _original_pass(
    subject: Subject,
    original: Snapshot,
    items: Sequence[Item],
    split: str,
    config: StudyConfig,
    cache: dict[str, ModelPass],
    progress: bool,
) -> ModelPass:
    """The original model's pass on a data set, computed once per audit."""
    if split not in cache:
        subject.restore(original)
        cache[split] = model_pass(
            subject,
            items,
            # The field holds the raw config value; validate() checked it is "mean" or "last".
            pooling=config.pooling,  # type: ignore[arg-type]
            progress=progress,
            label=f"original/{split}",
        )
    return cache[split]


def _run_method(
    subject: Subject,
    config: StudyConfig,
    results: AuditResults,
    result: MethodResults,
    original: Snapshot,
    original_passes: dict[str, ModelPass],
    run: RunDirectory | None,
    save: Callable[[], None],
    progress: bool,
    console: Console,
) -> None:
    """The stages of one method (or given checkpoint: no unlearning), skipping those a resumed run already finished."""
    assert results.data is not None, "audit prepares the data before any method runs"
    data = results.data.items
    forget, retain, control = data["forget"], data["retain"], data["control"]
    method = result.method
    console.rule(
        f"[bold]{escape(method)}[/]"
        + (f" (given checkpoint {escape(result.given.source)})" if result.given else "")
    )

    if result.given is not None:
        unlearned = read_snapshot(subject, Path(result.given.directory))
    elif result.unlearn is None:
        subject.restore(original)
        tracker = DeltaTracker(subject, original, every=1)
        with _timed(console, "unlearn", result):
            outcome = unlearn(
                subject,
                forget,
                retain,
                method,
                lr=config.lr,
                steps=config.steps,
                batch_size=config.batch_size,
                requests=config.requests,
                seed=config.seed,
                callbacks=[tracker],
                progress=progress,
                keep_snapshots=False,
                **config.objective_options,
            )
        if outcome.run.interrupted:
            raise KeyboardInterrupt
        unlearned = subject.snapshot()
        if run is not None:
            run.save_snapshot(method, "unlearned", unlearned)
        result.unlearn, result.tracking = outcome, tracker.history
        save()
    else:
        unlearned = (
            run.load_snapshot(method, "unlearned") if run is not None else subject.snapshot()
        )

    if result.relearn is None:
        subject.restore(unlearned)
        with _timed(console, "relearn", result):
            result_relearn = relearn(
                subject,
                _relearn_items(config, results.data, subject)[0],
                control,
                steps=config.relearn_steps,
                forget_items=forget,
                retain_items=retain,
                original_forget=results.original["forget"],
                lr=config.relearn_lr or config.lr,
                batch_size=config.batch_size,
                seed=config.seed,
                progress=progress,
            )
        relearned = subject.snapshot()
        if run is not None:
            run.save_snapshot(method, "relearned", relearned)
        result.relearn = result_relearn
        save()
    else:
        relearned = (
            run.load_snapshot(method, "relearned") if run is not None else subject.snapshot()
        )

    if not result.comparisons:
        comparisons = {}  # set on the result only when all four exist: an interrupt saves none or all
        with _timed(console, "diagnostics", result):
            for name, snapshot in (("unlearned", unlearned), ("relearned", relearned)):
                for split, items in (("forget", forget), ("retain", retain)):
                    reference = _original_pass(
                        subject, original, items, split, config, original_passes, progress
                    )
                    subject.restore(snapshot)
                    updated = model_pass(
                        subject,
                        items,
                        # The raw config value; validate() checked it is "mean" or "last".
                        pooling=config.pooling,  # type: ignore[arg-type]
                        progress=progress,
                        label=f"{name}/{split}",
                    )
                    comparisons[f"{name}/{split}"] = compare_passes(reference, updated)
        result.comparisons = comparisons
        save()

    if result.localization is None:
        subject.restore(unlearned)
        with _timed(console, "localization", result):
            result.deltas = weight_deltas(subject.specs, original, unlearned)
            result.directions = update_cosines(subject.specs, original, unlearned, relearned)
            if config.localization == "exact":
                reverter = Reverter(subject, original, forget, retain, unlearned=unlearned)
                result.reversion = reversion_sweep(
                    reverter,
                    result.deltas,
                    restore_fraction=config.restore_fraction,
                    progress=progress,
                )
                result.heads = head_attribution(
                    result.deltas, reverter, sweep=result.reversion, progress=progress
                )
            else:
                result.attribution = localize_by_attribution(
                    subject,
                    original,
                    unlearned,
                    forget,
                    retain,
                    restore_fraction=config.restore_fraction,
                    progress=progress,
                )
                for line in result.attribution.warnings():
                    console.print(f"[yellow]warning:[/] {method}: {line}")
            result.logit_lens = logit_lens(
                subject,
                forget,
                {"original": original, "unlearned": unlearned, "relearned": relearned},
                decoder=config.lens_decoder,
                progress=progress,
            )
            result.localization = _summarise(result)
        subject.restore(unlearned)
        save()

    if result.regime is None:
        result.regime = _regime(results, result, config)
        save()
    console.print(f"[bold]{method}[/]: {escape(result.regime.describe())}")
    console.print(f"  {escape(result.localization.verdict)}")


def _per_block(comparison, attribute: str) -> list[float]:
    """A per-stream diagnostic as one value per block (stream ℓ + 1 is the output of block ℓ)."""
    return [getattr(layer, attribute) for layer in comparison.layers[1:]]


def _summarise(result: MethodResults):
    # Called once the deltas and the exact depth (the sweep, or the attribution's search) exist.
    assert result.deltas is not None
    depth = result.reversion if result.attribution is None else result.attribution.depth
    assert depth is not None
    forget, retain = result.comparisons["unlearned/forget"], result.comparisons["unlearned/retain"]
    fisher = forget.fisher_by_layer()
    n_layers = len(forget.layers) - 1
    fisher_change = [
        fisher[layer].log10_mean_ratio if layer in fisher else float("nan")
        for layer in range(n_layers)
    ]
    attribution = result.attribution
    return summarise_localization(
        result.deltas,
        depth,
        attribution=None
        if attribution is None
        else attribution.attribution.forget.blocks(fraction=True),
        cka_forget=_per_block(forget, "cka_debiased"),
        cka_retain=_per_block(retain, "cka_debiased"),
        pc1_similarity=_per_block(forget, "pc1_similarity"),
        fisher_change=fisher_change if fisher else None,
    )


def _regime(results: AuditResults, result: MethodResults, config: StudyConfig):
    relearned = result.relearn
    assert relearned is not None, "the regime is classified after the relearning stage"
    recovery = relearned.recovery["accuracy"]
    assert recovery.original is not None, "the audit gives relearn the original's forget metrics"
    original_retain = results.original["retain"]
    unlearned_retain = result.comparisons["unlearned/retain"].updated_metrics
    return classify_regime(
        recovery.original,
        recovery.unlearned,
        recovery.relearned,
        control_before=recovery.control_before,
        control_after=recovery.control_after,
        retain_original=original_retain.accuracy,
        retain_unlearned=unlearned_retain.accuracy,
        retain_nll_original=original_retain.nll,
        retain_nll_unlearned=unlearned_retain.nll,
        peak_excess=relearned.peak_excess(),
        thresholds=config.thresholds(),
    )
