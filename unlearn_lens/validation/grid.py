"""The validation grid: every domain × objective × learning rate × protocol, one cell each.

A cell unlearns the built-in forget set from the original model, measures the cheap
reversibility features (see [`unlearn_lens.predict.features`][unlearn_lens.predict.features])
and what reverting the output head alone restores, then spends a fixed relearning budget on
the forget set and the same budget on the novel control set, and classifies the regime. Each finished
cell is written to its own JSON file in
the cache directory, so an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from unlearn_lens.atomic import json_float, write_json_atomic
from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS, builtin
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics.compare import ModelPass, model_pass
from unlearn_lens.errors import ConfigError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.localize.reversion import Reverter, last_layers_patch
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.predict.features import measure_features
from unlearn_lens.regimes import classify_regime
from unlearn_lens.unlearn.api import UnlearnResult, unlearn
from unlearn_lens.unlearn.known import split_known
from unlearn_lens.unlearn.objectives import get_objective
from unlearn_lens.unlearn.relearn import relearn

STUDY_OBJECTIVES = ("ga", "ga_gd", "ga_kl", "npo", "npo_kl", "rlabel")
"""The six objectives of the study the project starts from (Xu et al.)."""

GRID_OBJECTIVES = ("ga", "ga_gd", "npo", "rlabel")
"""The objectives the default grid runs: the study's six less ga_kl and npo_kl, which at kl_weight 1
leave the same forget and retain accuracy as ga and npo (benchmarks/kl_gradients.py measured it:
the KL gradient is zero at the reference and a tenth to a fifth of GA's afterwards), so their cells were twins
that doubled the cost and leaked through the predictor's folds."""

PROTOCOLS = ("single", "continual")
SETTINGS_FILE = "settings.json"
CELLS_DIR = "cells"

CELL_FORMAT = 3
"""Version of what a cell measures, stored in the cache's settings file: bump it whenever a
definition changes, so that a cache of old cells is refused instead of mixed with new ones."""

CELL_FORMAT_CHANGE = (
    "the regime is decided as the audit decides it (peak excess along the recovery curve, "
    "inconclusive when the budget teaches the control < 0.1) and each cell records its peak excess"
)
"""What format `CELL_FORMAT` changed, for the error that refuses an older cache."""

FORMAT_KEY = "cell_format"
"""Key of `CELL_FORMAT` in the settings file (absent in caches from before format 2)."""


@dataclass(frozen=True)
class GridSettings:
    """What the grid spans and how big each cell is.

    **Fields:** `domains`, `methods`, `lrs` (unlearning learning rates, gentle to aggressive)
    and `protocols` span the grid. Each cell uses the first `n_items` forget, retain and control
    items of its domain; unlearning runs `steps` AdamW steps of `batch_size` per request (one
    request for `"single"`, `continual_requests` for `"continual"`, each with the full `steps`);
    relearning runs `relearn_steps` at `relearn_lr` on the forget set, and the same on the control.

    **The span** (4 objectives × 2 learning rates × 3 domains × 2 protocols = 48 cells, 1 h 43 min
    on 2 CPU cores, measured) keeps the grid under two hours with the stronger relearning budget below:
    the KL twins are left out (see `GRID_OBJECTIVES`), and the learning rates are the gentle 3e-6
    (the gentlest that forgets in a single request: at 1e-6 no single-request cell of the former
    grid forgot) and the aggressive 3e-5, a decade apart. `--methods`/`--lrs` run more.

    **The relearning budget**, 10 steps of 8 at 3e-5 (5 epochs of the 16 forget items; the audit's
    default steps and learning rate, so a cell is attacked as the audit attacks by default), was chosen with
    `benchmarks/grid_budget.py` (`docs/figures/validation/grid_budget.json`) on ga at lr 3e-5
    (single) and npo at lr 1e-5 (continual) in each domain. The former 4 steps at 1e-5 taught the
    text control 0.00-0.02 token accuracy (inconclusive); 4 steps at 6e-5, the cheapest budget
    whose control gain clears `min_control_gain` everywhere (text 0.16-0.22, code 0.50-0.57, math
    0.29-0.30), leaves the text cells "destroyed" (recovery 0.11-0.16) where 10 steps at 3e-5
    brings them back (recovery 0.89-0.95 against a control gain of 0.47: "collapsed but
    recoverable"); at 10 × 3e-5 the control gains 0.47 (text), 0.75-0.77 (code), 0.40-0.54 (math),
    below saturation. Each relearning step costs about 6 s a cell on 2 CPU cores: the default grid
    took 1 h 43 min there (the former 144-cell span would take 4.6 h).
    """

    domains: tuple[str, ...] = BUILTIN_DOMAINS
    methods: tuple[str, ...] = GRID_OBJECTIVES
    lrs: tuple[float, ...] = (3e-6, 3e-5)
    protocols: tuple[str, ...] = PROTOCOLS
    n_items: int = 16
    steps: int = 8
    batch_size: int = 8
    continual_requests: int = 4
    relearn_steps: int = 10
    relearn_lr: float = 3e-5
    seed: int = 0

    def __post_init__(self) -> None:
        for domain in self.domains:
            if domain not in BUILTIN_DOMAINS:
                raise ConfigError(
                    f"unknown domain {domain!r}; choose from {', '.join(BUILTIN_DOMAINS)}"
                )
        for method in self.methods:
            get_objective(method)
        for protocol in self.protocols:
            if protocol not in PROTOCOLS:
                raise ConfigError(
                    f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}"
                )
        if any(not lr > 0 for lr in self.lrs):
            raise ConfigError(f"learning rates must be positive, got {self.lrs}")
        if self.n_items < 4:
            raise ConfigError(f"n_items must be at least 4 (debiased CKA), got {self.n_items}")

    def cells(self) -> list[Cell]:
        """Every cell, domains innermost so that a partial grid covers all of them."""
        return [
            Cell(domain, method, lr, protocol)
            for protocol, lr, method, domain in itertools.product(
                self.protocols, self.lrs, self.methods, self.domains
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSettings:
        # Left as it is: the pydantic migration replaces from_dict.
        return cls(
            **{  # type: ignore[arg-type]
                key: tuple(value) if isinstance(value, list) else value
                for key, value in data.items()
            }
        )


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    domain: str
    method: str
    lr: float
    protocol: str

    @property
    def name(self) -> str:
        return f"{self.domain}-{self.method}-lr{self.lr:g}-{self.protocol}"


@dataclass
class CellResult:
    """Everything measured in one cell (accuracies are token accuracies on answer tokens).

    `recovery` is (relearned − unlearned) / (original − unlearned) on the forget set, None when
    unlearning removed (almost) nothing; `control_gain` is the accuracy the same budget taught
    the novel control items; `peak_excess` is the largest excess of recovery over the control's
    gain at equal work along the relearning curve (None with `recovery`), which the regime
    compares with its `control_margin`; `features` are the cheap pre-relearning measurements;
    `head_restore` is the restoration effect of reverting the output head alone (final norm and
    unembedding, the forgetting depth's k = 0) on the forget set, by metric (`"nll"`, `"accuracy"`).
    """

    cell: Cell
    original: dict[str, TokenMetrics]
    unlearned: dict[str, TokenMetrics]
    relearned: dict[str, TokenMetrics]
    control_before: float
    control_after: float
    recovery: float | None
    peak_excess: float | None
    regime: dict[str, Any]
    features: dict[str, Any]
    head_restore: dict[str, float]
    stop_reason: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def control_gain(self) -> float:
        return self.control_after - self.control_before

    def to_dict(self) -> dict[str, Any]:
        def metrics(d: dict[str, TokenMetrics]) -> dict[str, Any]:
            return {split: asdict(m) for split, m in d.items()}

        return {
            "cell": asdict(self.cell),
            "original": metrics(self.original),
            "unlearned": metrics(self.unlearned),
            "relearned": metrics(self.relearned),
            "control_before": self.control_before,
            "control_after": self.control_after,
            "recovery": self.recovery,
            "peak_excess": self.peak_excess,
            "regime": self.regime,
            "features": self.features,
            "head_restore": self.head_restore,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        def metrics(d: dict[str, Any]) -> dict[str, TokenMetrics]:
            return {split: TokenMetrics.from_dict(m) for split, m in d.items()}

        return cls(
            cell=Cell(**data["cell"]),
            original=metrics(data["original"]),
            unlearned=metrics(data["unlearned"]),
            relearned=metrics(data["relearned"]),
            control_before=float(data["control_before"]),
            control_after=float(data["control_after"]),
            recovery=data["recovery"],
            peak_excess=data["peak_excess"],
            regime=data["regime"],
            features=data["features"],
            head_restore={
                metric: json_float(value) for metric, value in data["head_restore"].items()
            },
            stop_reason=str(data["stop_reason"]),
            seconds=dict(data["seconds"]),
        )


@dataclass
class DomainData:
    """A domain's items and what the original model gives on them (computed once per grid)."""

    forget: list[Item]
    retain: list[Item]
    control: list[Item]
    original: dict[str, TokenMetrics]
    original_pass: ModelPass


def domain_data(subject: Subject, domain: str, n_items: int) -> DomainData:
    """The first `n_items` of each built-in split, the control less any item the original already
    answers (as the audit keeps it: a known control item cannot gain, and would flatter recovery);
    `subject` must hold the original weights."""
    sets = builtin(domain)
    forget, retain = sets.forget[:n_items], sets.retain[:n_items]
    control = split_known(subject, sets.control[:n_items])[1]
    original_pass = model_pass(
        subject, forget, label="original"
    )  # its token metrics are the forget metrics
    return DomainData(
        forget=forget,
        retain=retain,
        control=control,
        original={"forget": original_pass.token_metrics, "retain": evaluate(subject, retain)},
        original_pass=original_pass,
    )


def _after(outcome: UnlearnResult, split: str) -> TokenMetrics:
    """The unlearning run's final metrics on `split`: a grid run always measures forget and retain."""
    metrics = outcome.metrics("after", split)
    assert metrics is not None, f"the grid's unlearning run did not measure {split}"
    return metrics


def run_cell(
    subject: Subject, original: Snapshot, data: DomainData, cell: Cell, settings: GridSettings
) -> CellResult:
    """Unlearn, measure the cheap features and the head-only restore, relearn (and the control),
    classify as the audit does (peak excess, default thresholds); `subject` ends with the original weights."""
    seconds: dict[str, float] = {}
    began = start = time.perf_counter()
    subject.restore(original)
    outcome = unlearn(
        subject,
        data.forget,
        data.retain,
        cell.method,
        lr=cell.lr,
        steps=settings.steps,
        batch_size=settings.batch_size,
        requests=settings.continual_requests if cell.protocol == "continual" else 1,
        seed=settings.seed,
        progress=False,
        keep_snapshots=False,
    )
    unlearned_weights = subject.snapshot()
    unlearned = {split: _after(outcome, split) for split in ("forget", "retain")}
    seconds["unlearn"] = time.perf_counter() - start

    start = time.perf_counter()
    reverter = Reverter(subject, original, data.forget, unlearned=unlearned_weights)
    features = measure_features(
        subject,
        original,
        data.forget,
        unlearned=unlearned_weights,
        original_pass=data.original_pass,
        reverter=reverter,
    )
    head = reverter.measure(
        last_layers_patch(subject, 0)
    )  # measured already when the depth's bisection reached k = 0
    seconds["features"] = time.perf_counter() - start

    start = time.perf_counter()
    subject.restore(unlearned_weights)
    attack = relearn(
        subject,
        data.forget,
        data.control,
        steps=settings.relearn_steps,
        lr=settings.relearn_lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
        original_forget=data.original["forget"],
        progress=False,
    )
    relearned = {"forget": attack.forget_after, "retain": evaluate(subject, data.retain)}
    seconds["relearn"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - began
    subject.restore(original)

    peak_excess = attack.peak_excess()
    regime = classify_regime(
        data.original["forget"].accuracy,
        unlearned["forget"].accuracy,
        relearned["forget"].accuracy,
        control_before=attack.control_before.accuracy,
        control_after=attack.control_after.accuracy,
        retain_original=data.original["retain"].accuracy,
        retain_unlearned=unlearned["retain"].accuracy,
        retain_nll_original=data.original["retain"].nll,
        retain_nll_unlearned=unlearned["retain"].nll,
        peak_excess=peak_excess,
    )
    return CellResult(
        cell=cell,
        original=data.original,
        unlearned=unlearned,
        relearned=relearned,
        control_before=attack.control_before.accuracy,
        control_after=attack.control_after.accuracy,
        recovery=attack.recovery["accuracy"].recovery,
        peak_excess=peak_excess,
        regime=regime.to_dict(),
        features=features.to_dict(),
        head_restore={"nll": head.effect_nll, "accuracy": head.effect_accuracy},
        stop_reason=outcome.run.stop_reason,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


class GridCache:
    """A directory of finished cells (`cells/<name>.json`) under the settings and cell format that made them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def cell_path(self, cell: Cell) -> Path:
        return self.path / CELLS_DIR / f"{cell.name}.json"

    def open(self, settings: GridSettings) -> None:
        """Start a new cache, or check that an existing one was made with the same settings and cell format."""
        settings_path = self.path / SETTINGS_FILE
        if settings_path.is_file():
            stored = json.loads(settings_path.read_text())
            found = stored.pop(FORMAT_KEY, 1)
            if found != CELL_FORMAT:
                raise ConfigError(
                    f"{settings_path}: the cached cells are of format {found}, this version measures format "
                    f"{CELL_FORMAT} ({CELL_FORMAT_CHANGE}); use another cache directory or delete this one"
                )
            if stored != settings.to_dict():
                changed = sorted(k for k, v in settings.to_dict().items() if stored.get(k) != v)
                raise ConfigError(
                    f"{settings_path}: the cached cells were made with other settings ({', '.join(changed)}); "
                    "use another cache directory or delete this one"
                )
        else:
            write_json_atomic(settings_path, {**settings.to_dict(), FORMAT_KEY: CELL_FORMAT})

    def load(self, cell: Cell) -> CellResult | None:
        path = self.cell_path(cell)
        return CellResult.from_dict(json.loads(path.read_text())) if path.is_file() else None

    def save(self, result: CellResult) -> None:
        write_json_atomic(self.cell_path(result.cell), result.to_dict())

    def finished(self, settings: GridSettings) -> list[CellResult]:
        """The cached results of the settings' cells, in grid order (missing cells left out)."""
        return [result for cell in settings.cells() if (result := self.load(cell)) is not None]


def run_grid(
    subject: Subject,
    settings: GridSettings,
    cache_dir: str | Path,
    *,
    console: Console | None = None,
    on_cell: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run every cell not yet in the cache (`subject` holds the original weights) and return all
    finished cells; Ctrl-C keeps every cell finished so far."""
    console = console or Console(stderr=True)
    cache = GridCache(cache_dir)
    cache.open(settings)
    todo = [cell for cell in settings.cells() if not cache.cell_path(cell).is_file()]
    console.print(
        f"validation grid: {len(settings.cells()) - len(todo)} cells cached, {len(todo)} to run"
    )
    original = subject.snapshot()
    data = {
        domain: domain_data(subject, domain, settings.n_items)
        for domain in dict.fromkeys(c.domain for c in todo)
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("cells", total=len(todo))
            for cell in todo:
                bar.update(task, description=cell.name)
                result = run_cell(subject, original, data[cell.domain], cell, settings)
                cache.save(result)
                if on_cell is not None:
                    on_cell(result)
                bar.advance(task)
    finally:
        subject.restore(original)
    return cache.finished(settings)
