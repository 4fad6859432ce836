"""The validation study's grid: every domain × objective × learning rate × protocol, one cell each.

The grid is a grid file shipped with the package (`study.toml` beside this module) and run by
`unlearn-lens grid` like any other: each cell is a plain audit of one method, cached by its
settings and resumable (see `unlearn_lens.grid`). `GridSettings` is the
study's view of that file (its axes and fixed settings), which the page and the predictor's
provenance quote; [`unlearn_lens.reproduction.cells`][unlearn_lens.reproduction.cells] reads the
cells' results back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS
from unlearn_lens.errors import ConfigError
from unlearn_lens.grid.spec import GridSpec, load_grid
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.predict.features import ReversibilityFeatures
from unlearn_lens.regimes import RegimeVerdict
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.objectives import get_objective

STUDY_OBJECTIVES = ("ga", "ga_gd", "ga_kl", "npo", "npo_kl", "rlabel")
"""The six objectives of the study the project starts from (Xu et al.)."""

GRID_OBJECTIVES = ("ga", "ga_gd", "npo", "rlabel")
"""The objectives the default grid runs: the study's six less ga_kl and npo_kl, which at kl_weight 1
leave the same forget and retain accuracy as ga and npo (benchmarks/kl_gradients.py measured it:
the KL gradient is zero at the reference and a tenth to a fifth of GA's afterwards), so their cells were twins
that doubled the cost and leaked through the predictor's folds."""

PROTOCOLS = ("single", "continual")
STUDY_GRID = Path(__file__).with_name("study.toml")
"""The validation study's grid file, shipped with the package."""

STUDY_AXES = ("protocol", "lr", "method", "domain")
"""The axes of a study grid file, in the order of its product (domains innermost, so that a
partial grid covers all of them)."""


@dataclass(frozen=True)
class GridSettings:
    """What the grid spans and how big each cell is: the study's view of its grid file
    (`GridSettings.from_grid`; the defaults are the shipped `study.toml`'s, a test checks it).

    **Fields:** `domains`, `methods`, `lrs` (unlearning learning rates, gentle to aggressive)
    and `protocols` span the grid. Each cell is an audit of one method on at most `n_items`
    known forget items (and as many retain and novel control items) of its domain; unlearning
    runs `steps` AdamW steps of `batch_size` per request (one request for `"single"`,
    `continual_requests` for `"continual"`, each with the full `steps`); relearning
    runs `relearn_steps` at `relearn_lr` on the forget set, and the same on the control.

    **The span** (4 objectives × 2 learning rates × 3 domains × 2 protocols = 48 cells; 1 h 43 min
    on 2 CPU cores, measured when a cell was a lighter measurement than an audit) was chosen to
    keep the grid under two hours with the stronger relearning budget below:
    the KL twins are left out (see `GRID_OBJECTIVES`), and the learning rates are the gentle 3e-6
    (the gentlest that forgets in a single request: at 1e-6 no single-request cell of the former
    grid forgot) and the aggressive 3e-5, a decade apart. A copy of the grid file runs more.

    **The relearning budget**, 10 steps of 8 at 3e-5 (5 epochs of the 16 forget items; the audit's
    default steps and learning rate, so a cell is attacked as the audit attacks by default), was chosen with
    `benchmarks/grid_budget.py` (`docs/figures/validation/grid_budget.json`) on ga at lr 3e-5
    (single) and npo at lr 1e-5 (continual) in each domain. The former 4 steps at 1e-5 taught the
    text control 0.00-0.02 token accuracy (inconclusive); 4 steps at 6e-5, the cheapest budget
    whose control gain clears `min_control_gain` everywhere (text 0.16-0.22, code 0.50-0.57, math
    0.29-0.30), leaves the text cells "destroyed" (recovery 0.11-0.16) where 10 steps at 3e-5
    brings them back (recovery 0.89-0.95 against a control gain of 0.47: "collapsed but
    recoverable"); at 10 × 3e-5 the control gains 0.47 (text), 0.75-0.77 (code), 0.40-0.54 (math),
    below saturation. Each relearning step cost about 6 s a cell on 2 CPU cores.
    """

    domains: tuple[str, ...] = BUILTIN_DOMAINS
    methods: tuple[str, ...] = GRID_OBJECTIVES
    lrs: tuple[Real, ...] = (3e-6, 3e-5)
    protocols: tuple[str, ...] = PROTOCOLS
    n_items: int = 16
    steps: int = 8
    batch_size: int = 8
    continual_requests: int = 4
    relearn_steps: int = 10
    relearn_lr: Real = 3e-5
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

    @classmethod
    def from_grid(cls, spec: GridSpec) -> GridSettings:
        """The study's settings of a grid file with the study's axes (`STUDY_AXES`: protocol
        tables of `requests`, learning rates, one method per cell, built-in domains)."""
        if tuple(spec.axes) != STUDY_AXES:
            raise ConfigError(
                f"{spec.path}: a study grid has the axes {', '.join(STUDY_AXES)} in this order, "
                f"not {', '.join(spec.axes) or 'none'}"
            )
        requests = [table.get("requests", 1) for table in spec.axes["protocol"]]
        if requests[0] != 1 or len(requests) > 2:
            raise ConfigError(
                f"{spec.path}: [axes] protocol is {{ requests = 1 }} (single), then optionally "
                f"one table of continual requests, got {spec.axes['protocol']}"
            )
        fixed = spec.fixed
        defaults = cls()
        return cls(
            domains=tuple(spec.axes["domain"]),
            methods=tuple(spec.axes["method"]),
            lrs=tuple(float(lr) for lr in spec.axes["lr"]),
            protocols=PROTOCOLS[: len(requests)],
            n_items=fixed.get("max_items", defaults.n_items),
            steps=fixed.get("steps", defaults.steps),
            batch_size=fixed.get("batch_size", defaults.batch_size),
            continual_requests=requests[-1] if len(requests) == 2 else defaults.continual_requests,
            relearn_steps=fixed.get("relearn_steps", defaults.relearn_steps),
            relearn_lr=fixed.get("relearn_lr", defaults.relearn_lr),
            seed=fixed.get("seed", defaults.seed),
        )

    def cells(self) -> list[Cell]:
        """Every cell, domains innermost so that a partial grid covers all of them."""
        return [
            Cell(domain, method, lr, protocol)
            for protocol, lr, method, domain in itertools.product(
                self.protocols, self.lrs, self.methods, self.domains
            )
        ]


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
    """What the study reads of one cell's audit (accuracies are token accuracies on answer tokens).

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
    control_before: Real
    control_after: Real
    recovery: float | None
    peak_excess: float | None
    regime: RegimeVerdict
    features: ReversibilityFeatures
    head_restore: dict[str, Real]
    stop_reason: str
    seconds: dict[str, Real] = field(default_factory=dict)

    @property
    def control_gain(self) -> float:
        return self.control_after - self.control_before


def study_grid(path: str | Path = STUDY_GRID) -> tuple[GridSpec, GridSettings]:
    """A study grid file (default: the shipped one) and the study's view of it."""
    spec = load_grid(path)
    return spec, GridSettings.from_grid(spec)
