"""The stages of one audited method, each a small function over one `AuditRun`.

A stage that a resumed run already finished is skipped; each finished stage is saved at once
(results.json, and the weight snapshots the later stages read), so an interrupt keeps it.
Order: unlearn (skipped for a checkpoint given as unlearned), same-data relearning,
diagnostics, the battery of other recovery attacks, localisation, the regime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from unlearn_lens.data.chat import chat_items
from unlearn_lens.data.checks import check_token_lengths, item_locations
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import load_items
from unlearn_lens.diagnostics.compare import ModelPass, compare_passes, model_pass
from unlearn_lens.localize.attributed import localize_by_attribution
from unlearn_lens.localize.deltas import update_cosines, weight_deltas
from unlearn_lens.localize.heads import head_attribution
from unlearn_lens.localize.logit_lens import logit_lens
from unlearn_lens.localize.reversion import Reverter, reversion_sweep
from unlearn_lens.localize.summary import LocalizationSummary, summarise_localization
from unlearn_lens.localize.tracking import DeltaTracker
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.models.checkpoints import read_snapshot
from unlearn_lens.models.stored import StoredSnapshot, write_snapshot
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.regimes import NOT_FORGOTTEN, VERDICT_METRICS, RegimeVerdict, classify_regime
from unlearn_lens.study.battery import BatteryBudget, battery_regime, read_battery, run_battery
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.intervals import verdict_intervals
from unlearn_lens.study.results import AuditResults, DataSummary, MethodResults
from unlearn_lens.unlearn.api import unlearn
from unlearn_lens.unlearn.relearn import relearn

if TYPE_CHECKING:
    from unlearn_lens.study.audit import RunDirectory

RELEARN_SOURCES = ("forget", "retain", "unrelated")
"""Named relearning sources (any other value is read as a data file)."""


@dataclass
class AuditRun:
    """What every stage reads and writes: the model, the settings, the results so far, the
    original weights, where snapshots go, how to save and report, and what is computed once per
    audit for the original (its diagnostic passes, its rounded metrics)."""

    subject: Subject
    config: StudyConfig
    results: AuditResults
    original: Snapshot
    run: RunDirectory | None
    store: Path
    save_results: Callable[[], None]
    """Writes results.json (with --out) and tells `on_stage`; named so because nnsight mounts
    a `save` attribute on every object, which a dataclass would take for this field's default."""
    progress: bool
    console: Console
    original_passes: dict[str, ModelPass] = field(default_factory=dict)
    rounded_original: dict[str, tuple[ItemOutcomes, TokenMetrics | None]] = field(
        default_factory=dict
    )

    @property
    def items(self) -> dict[str, list[Item]]:
        """The audit's item sets (forget, retain, control, unrelated)."""
        assert self.results.data is not None, "the data stage runs first"
        return self.results.data.items

    @contextmanager
    def stage(self, name: str, result: MethodResults | None = None) -> Iterator[None]:
        """Time a stage into `result.seconds` and, off a terminal (where no bars show), print
        one line when it ends."""
        start = time.perf_counter()
        yield
        seconds = round(time.perf_counter() - start, 2)
        if result is not None:
            result.seconds[name] = seconds
        if not self.console.is_terminal:
            self.console.print(
                f"{result.method}: {name}" if result is not None else name,
                f"done in {seconds:.1f} s",
                markup=False,
                highlight=False,
            )

    def keep(self, method: str, name: str) -> StoredSnapshot:
        """Write the model's current weights as `method`'s `name` snapshot, read back on demand."""
        return write_snapshot(self.store / f"{method}-{name}.safetensors", self.subject)

    def stored(self, method: str, name: str) -> Snapshot:
        """A snapshot an earlier (resumed) run kept."""
        assert self.run is not None, "only a run with --out resumes"
        return self.run.load_snapshot(method, name)


def relearn_items(
    config: StudyConfig, data: DataSummary | None, subject: Subject
) -> tuple[list[Item], str | None]:
    """The relearning source: a named split of the run's data, or items read from its data spec,
    checked (and truncated with `truncate`) like the splits; with the truncation note, if any."""
    if config.relearn_source in RELEARN_SOURCES:
        assert data is not None, "a named source needs the run's data"
        return data.items[config.relearn_source], None
    items = load_items(config.relearn_source, config.field_map)
    items = chat_items(items, subject.tokenizer) if config.chat_template else items
    where = item_locations(config.relearn_source, len(items), config.relearn_source)
    return check_token_lengths(subject, items, where, config.max_tokens, config.truncate, "relearn")


def run_method(ctx: AuditRun, result: MethodResults) -> None:
    """Every stage of one method (or given checkpoint: no unlearning), skipping finished ones."""
    given = f" (given checkpoint {escape(result.given.source)})" if result.given else ""
    ctx.console.rule(f"[bold]{escape(result.method)}[/]{given}")
    unlearned = unlearn_stage(ctx, result)
    relearned = relearn_stage(ctx, result, unlearned)
    diagnostics_stage(ctx, result, unlearned, relearned)
    same_data = same_data_regime(ctx, result)
    battery_stage(ctx, result, unlearned, same_data)
    localization_stage(ctx, result, unlearned, relearned)
    if result.regime is None:
        battery = result.battery
        verdict = battery.verdict if battery is not None else None
        result.regime = same_data if verdict is None else battery_regime(same_data, verdict)
        original = ctx.results.original_outcomes.get("forget")
        if original is not None and result.relearn is not None:
            result.intervals = verdict_intervals(
                original, result.relearn.curve, ctx.config.thresholds(), ctx.config.verdict_metric,
                seed=ctx.config.seed, seeds=result.relearn_seeds,
            )  # fmt: skip
        ctx.save_results()
    assert result.localization is not None
    ctx.console.print(f"[bold]{result.method}[/]: {escape(result.regime.describe())}")
    ctx.console.print(f"  {escape(result.localization.verdict)}")


def unlearn_stage(ctx: AuditRun, result: MethodResults) -> Snapshot:
    """The unlearned weights: a given checkpoint's, a resumed run's, or unlearned here."""
    if result.given is not None:
        return read_snapshot(ctx.subject, Path(result.given.directory))
    if result.unlearn is not None:
        return ctx.stored(result.method, "unlearned")
    config, items = ctx.config, ctx.items
    ctx.subject.restore(ctx.original)
    tracker = DeltaTracker(ctx.subject, ctx.original, every=1)
    with ctx.stage("unlearn", result):
        outcome = unlearn(
            ctx.subject, items["forget"], items["retain"], result.method,
            lr=config.lr, steps=config.steps, batch_size=config.batch_size,
            requests=config.requests, seed=config.seed, callbacks=[tracker],
            progress=ctx.progress, keep_snapshots=False, **config.objective_options,
        )  # fmt: skip
    if outcome.run.interrupted:
        raise KeyboardInterrupt
    unlearned = ctx.keep(result.method, "unlearned")
    result.unlearn, result.tracking = outcome, tracker.history
    ctx.save_results()
    return unlearned


def relearn_stage(ctx: AuditRun, result: MethodResults, unlearned: Snapshot) -> Snapshot:
    """The same-data relearning attack with its equal-work control; the relearned weights."""
    if result.relearn is not None:
        return ctx.stored(result.method, "relearned")
    config, items = ctx.config, ctx.items
    ctx.subject.restore(unlearned)
    source = relearn_items(config, ctx.results.data, ctx.subject)[0]
    with ctx.stage("relearn", result):
        attack = relearn(
            ctx.subject, source, items["control"], steps=config.relearn_steps, forget_items=items["forget"],
            retain_items=items["retain"], original_forget=ctx.results.original["forget"],
            lr=config.relearn_lr or config.lr, batch_size=config.batch_size, seed=config.seed,
            progress=ctx.progress, start=unlearned,
        )  # fmt: skip
        relearned = ctx.keep(result.method, "relearned")
        # Further seeds (--seeds): the same attack from the same unlearned weights, another
        # batch order; only their curves are kept, for the intervals.
        for k in range(1, config.seeds):
            ctx.subject.restore(unlearned)
            result.relearn_seeds.append(relearn(
                ctx.subject, source, items["control"], steps=config.relearn_steps,
                forget_items=items["forget"], original_forget=ctx.results.original["forget"],
                lr=config.relearn_lr or config.lr, batch_size=config.batch_size,
                seed=config.seed + k, progress=ctx.progress, start=unlearned,
            ).curve)  # fmt: skip
    result.relearn = attack
    ctx.save_results()
    return relearned


def diagnostics_stage(
    ctx: AuditRun, result: MethodResults, unlearned: Snapshot, relearned: Snapshot
) -> None:
    """CKA, PCA and Fisher of the unlearned and relearned models against the original, on the
    forget and retain sets (all four saved together, or none)."""
    if result.comparisons:
        return
    comparisons = {}
    with ctx.stage("diagnostics", result):
        for name, snapshot in (("unlearned", unlearned), ("relearned", relearned)):
            for split in ("forget", "retain"):
                reference = original_pass(ctx, split)
                ctx.subject.restore(snapshot)
                updated = model_pass(
                    ctx.subject, ctx.items[split], pooling=ctx.config.pooling,
                    progress=ctx.progress, label=f"{name}/{split}",
                )  # fmt: skip
                comparisons[f"{name}/{split}"] = compare_passes(reference, updated)
    result.comparisons = comparisons
    ctx.save_results()


def original_pass(ctx: AuditRun, split: str) -> ModelPass:
    """The original model's pass on a data set, computed once per audit; its Fisher values are
    kept on disk and read back layer by layer at each comparison."""
    if split not in ctx.original_passes:
        ctx.subject.restore(ctx.original)
        reference = model_pass(
            ctx.subject, ctx.items[split], pooling=ctx.config.pooling, progress=ctx.progress,
            label=f"original/{split}",
        )  # fmt: skip
        if reference.fisher is not None:
            reference.fisher = reference.fisher.stored(
                ctx.store / f"original-fisher-{split}.safetensors"
            )
        ctx.original_passes[split] = reference
    return ctx.original_passes[split]


def battery_stage(
    ctx: AuditRun, result: MethodResults, unlearned: Snapshot, same_data: RegimeVerdict
) -> None:
    """The other recovery attacks, each against its own null, for a run that forgot."""
    if result.battery is not None or same_data.label == NOT_FORGOTTEN:
        return
    config = ctx.config
    assert result.relearn is not None
    budget = BatteryBudget(
        config.relearn_steps, config.relearn_lr or config.lr, config.batch_size, config.seed
    )
    with ctx.stage("battery", result):
        battery = run_battery(
            ctx.subject, ctx.original, unlearned, ctx.items, ctx.results.original["forget"],
            result.relearn.curve.forget[0].outcomes, config.attacks, budget,
            config.quantization_schemes, ctx.rounded_original, ctx.progress, seeds=config.seeds,
        )  # fmt: skip
        result.battery = read_battery(
            battery, result.relearn, same_data, budget, config.thresholds(),
            original=ctx.results.original_outcomes.get("forget"), metric=config.verdict_metric,
            same_data_seeds=result.relearn_seeds,
        )  # fmt: skip
    ctx.save_results()


def localization_stage(
    ctx: AuditRun, result: MethodResults, unlearned: Snapshot, relearned: Snapshot
) -> None:
    """Weight deltas, the depth and attribution (or exact reversion), and the logit lens."""
    if result.localization is not None:
        return
    config, subject, original = ctx.config, ctx.subject, ctx.original
    forget, retain = ctx.items["forget"], ctx.items["retain"]
    # Reversion and attribution read the unlearned weights for every patch and pass: held in
    # memory for this stage (three copies with the model and the original, below training's
    # four plus the original), unless low_memory.
    unlearned = unlearned if config.low_memory else dict(unlearned)
    subject.restore(unlearned)
    with ctx.stage("localization", result):
        result.deltas = weight_deltas(subject.specs, original, unlearned)
        result.directions = update_cosines(subject.specs, original, unlearned, relearned)
        if config.localization == "exact":
            reverter = Reverter(subject, original, forget, retain, unlearned=unlearned)
            result.reversion = reversion_sweep(
                reverter, result.deltas, restore_fraction=config.restore_fraction,
                progress=ctx.progress,
            )  # fmt: skip
            result.heads = head_attribution(
                result.deltas, reverter, sweep=result.reversion, progress=ctx.progress
            )
        else:
            result.attribution = localize_by_attribution(
                subject, original, unlearned, forget, retain,
                restore_fraction=config.restore_fraction, progress=ctx.progress,
            )  # fmt: skip
            for line in result.attribution.warnings():
                ctx.console.print(f"[yellow]warning:[/] {result.method}: {line}")
        result.logit_lens = logit_lens(
            subject, forget, {"original": original, "unlearned": unlearned, "relearned": relearned},
            decoder=config.lens_decoder, progress=ctx.progress,
        )  # fmt: skip
        result.localization = summarise(result)
    subject.restore(unlearned)
    ctx.save_results()


def _per_block(comparison, attribute: str) -> list[float]:
    """A per-stream diagnostic as one value per block (stream ℓ + 1 is the output of block ℓ)."""
    return [getattr(layer, attribute) for layer in comparison.layers[1:]]


def summarise(result: MethodResults) -> LocalizationSummary:
    """The per-layer columns side by side, their correlations and the shallowness verdict."""
    forget, retain = result.comparisons["unlearned/forget"], result.comparisons["unlearned/retain"]
    fisher = forget.fisher_by_layer()
    n_layers = len(forget.layers) - 1
    fisher_change = [
        fisher[layer].log10_mean_ratio if layer in fisher else float("nan")
        for layer in range(n_layers)
    ]
    attribution = result.attribution
    evidence = result.reversion if attribution is None else attribution.depth
    assert result.deltas is not None and evidence is not None, "summarised once localised"
    return summarise_localization(
        result.deltas,
        evidence,
        attribution=None
        if attribution is None
        else attribution.attribution.forget.blocks(fraction=True),
        cka_forget=_per_block(forget, "cka_debiased"),
        cka_retain=_per_block(retain, "cka_debiased"),
        pc1_similarity=_per_block(forget, "pc1_similarity"),
        fisher_change=fisher_change if fisher else None,
    )


def same_data_regime(ctx: AuditRun, result: MethodResults) -> RegimeVerdict:
    """The regime as same-data relearning alone decides it (the battery may change reversibility)."""
    config = ctx.config
    metric = VERDICT_METRICS[config.verdict_metric]
    assert result.relearn is not None
    recovery = result.relearn.recovery[metric]
    assert recovery.original is not None, "the audit measures the original on the forget set"
    original_retain = ctx.results.original["retain"]
    unlearned_retain = result.comparisons["unlearned/retain"].updated_metrics
    return classify_regime(
        recovery.original,
        recovery.unlearned,
        recovery.relearned,
        control_before=recovery.control_before,
        control_after=recovery.control_after,
        retain_original=getattr(original_retain, metric),
        retain_unlearned=getattr(unlearned_retain, metric),
        retain_nll_original=original_retain.nll,
        retain_nll_unlearned=unlearned_retain.nll,
        # The relearning curve records token accuracy only: its peak excess is a token number.
        peak_excess=result.relearn.peak_excess() if metric == "accuracy" else None,
        control_exact_gain=result.relearn.recovery["exact_match"].control_gain,
        thresholds=config.thresholds(),
    )


def run_methods(ctx: AuditRun, methods: Sequence[str], given: dict) -> None:
    """Every method of the settings, then every checkpoint given as unlearned."""
    for method in methods:
        run_method(ctx, ctx.results.methods.setdefault(method, MethodResults(method=method)))
    for name, checkpoint in given.items():
        result = ctx.results.methods.setdefault(name, MethodResults(method=name))
        result.given = (
            checkpoint  # found afresh: a resumed run reads the checkpoint where it is now
        )
        run_method(ctx, result)
