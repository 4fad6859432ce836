"""Paired bootstrap over items: intervals and label stability for numbers computed from
per-item outcomes (pure numpy, no models, no I/O).

Tables evaluated on the same items (the forget set before unlearning, after it, at each point
of a relearning curve) are *aligned*: one resample draws item indices once and applies them
to every aligned table, so their differences keep the pairing. A table of another item set
(the control) is resampled with its own indices, drawn from the same generator, one draw per
resample. A statistic is any function of the resampled tables' totals, vectorised over
resamples, so a maximum over curve points (peak excess) is taken inside each resample and
its upward bias is in the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from unlearn_lens.metrics.token import ItemOutcomes
from unlearn_lens.schema import Real

N_RESAMPLES = 4000
"""Default resamples: the 95 % interval endpoints' Monte Carlo error (sd over 100 seeds, worst of
forgotten share, recovery, control gain, excess, peak excess on 20-item sets) is 0.0077, below
0.01; 2000 gives 0.0113, 1000 0.0153 (benchmarks/bootstrap_resamples.py)."""

LEVEL = 0.95
"""Default coverage of an interval."""


@dataclass(frozen=True)
class Totals:
    """Sums of per-item outcomes over an item set, one entry per resample (numpy arrays)."""

    n_tokens: np.ndarray
    n_correct: np.ndarray
    n_exact: np.ndarray
    n_items: np.ndarray
    nll_sum: np.ndarray

    def __add__(self, other: Totals) -> Totals:
        """Two tables' totals pooled (the items of both, e.g. a control measured in two runs)."""
        return Totals(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))

    @property
    def accuracy(self) -> np.ndarray:
        """Token accuracy (NaN for a resample without target tokens)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.n_correct / self.n_tokens

    @property
    def exact_match(self) -> np.ndarray:
        """Share of items whose every target token is the argmax."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.n_exact / self.n_items

    @property
    def nll(self) -> np.ndarray:
        """Mean NLL per target token (nats)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.nll_sum / self.n_tokens

    def score(self, metric: str) -> np.ndarray:
        """The accuracy a verdict reads: `"token"` (token accuracy) or `"exact"` (exact match)."""
        if metric == "token":
            return self.accuracy
        if metric == "exact":
            return self.exact_match
        raise ValueError(f"unknown metric {metric!r}; use 'token' or 'exact'")


@dataclass
class BootstrapInterval:
    """A statistic's point estimate and percentile interval.

    **Fields:** `point` (on the items as they are), `low` and `high` (the `level` percentile
    interval over `n_resamples` resamples that give a finite value; NaN if none does),
    `n_undefined` (resamples where the statistic is not finite, e.g. a ratio over a loss that
    the resample drew as 0).
    """

    point: Real
    low: Real
    high: Real
    level: float
    n_resamples: int
    n_undefined: int


def _columns(outcomes: ItemOutcomes) -> np.ndarray:
    """The outcomes as a `[5, n_items]` float64 array: tokens, correct, exact, has targets, NLL."""
    n_tokens = np.asarray(outcomes.n_tokens, dtype=np.float64)
    has_targets = n_tokens > 0
    return np.stack(
        [
            n_tokens,
            np.asarray(outcomes.n_correct, dtype=np.float64),
            np.asarray(outcomes.exact, dtype=np.float64) * has_targets,
            has_targets.astype(np.float64),
            np.asarray(outcomes.nll_sum, dtype=np.float64),
        ]
    )


def _totals(sums: np.ndarray) -> Totals:
    return Totals(*sums)


def _fields(totals: Totals) -> tuple[np.ndarray, ...]:
    return (totals.n_tokens, totals.n_correct, totals.n_exact, totals.n_items, totals.nll_sum)


class Bootstrap:
    """Resamples drawn once for groups of aligned outcome tables; intervals and label stability
    of any statistic computed from them.

    **Arguments:**

    - `groups`: one mapping per item set, from a table's name to its outcomes; the tables of a
      group must have the same number of items (they are the same items) and names must be
      unique across groups.
    - `n_resamples`, `seed`: how many resamples, and the generator's seed (same seed, same
      resamples).

    A statistic (or a labelling function) takes a mapping from every table's name to its
    [`Totals`][unlearn_lens.metrics.bootstrap.Totals] and returns one value per resample; it
    is called once with the items as they are (one entry) and once with all resamples.
    """

    def __init__(
        self,
        groups: Sequence[Mapping[str, ItemOutcomes]],
        n_resamples: int = N_RESAMPLES,
        seed: int = 0,
    ) -> None:
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be positive, got {n_resamples}")
        names = [name for group in groups for name in group]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be unique across groups, got {names}")
        rng = np.random.default_rng(seed)
        self._rng = rng
        self.n_resamples = n_resamples
        self.indices: list[np.ndarray] = []
        self.point: dict[str, Totals] = {}
        self.resampled: dict[str, Totals] = {}
        for group in groups:
            sizes = {name: len(outcomes) for name, outcomes in group.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"aligned tables must hold the same items, got sizes {sizes}")
            n_items = next(iter(sizes.values()), 0)
            if n_items == 0:
                raise ValueError(f"a group of tables has no items: {sorted(group)}")
            indices = rng.integers(0, n_items, size=(n_resamples, n_items))
            self.indices.append(indices)
            # How often each item is drawn in each resample: every table's resampled sums are
            # then one matrix product, the same draw for every table of the group.
            counts = np.zeros((n_resamples, n_items))
            np.add.at(counts, (np.arange(n_resamples)[:, None], indices), 1.0)
            for name, outcomes in group.items():
                columns = _columns(outcomes)
                self.point[name] = _totals(columns.sum(axis=1, keepdims=True))
                self.resampled[name] = _totals(columns @ counts.T)

    def draw_seeds(self, tables: Mapping[str, Sequence[str]]) -> int:
        """Add one table per name that reads, in each resample, the tables of one run drawn
        uniformly from those listed (one draw per resample, shared by every name of the call,
        so a run's forget and control tables stay together), and at the point the first run's.

        So intervals combine items and runs (seeds): a resample is "this attack run again with
        a seed drawn at random, on items drawn at random", and its point is the run the verdict
        reads. Every name lists the same number of runs; returns that number.
        """
        counts = {len(runs) for runs in tables.values()}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"every name needs the same, positive number of runs, got {counts}")
        n_runs = counts.pop()
        drawn = self._rng.integers(0, n_runs, size=self.n_resamples)
        columns = np.arange(self.n_resamples)
        for name, runs in tables.items():
            if name in self.point:
                raise ValueError(f"table name {name!r} is taken")
            self.point[name] = self.point[runs[0]]
            stacked = [np.stack(column) for column in zip(
                *(_fields(self.resampled[run]) for run in runs), strict=True
            )]  # fmt: skip
            self.resampled[name] = Totals(*(column[drawn, columns] for column in stacked))
        return n_runs

    def _evaluate(
        self, function: Callable[[Mapping[str, Totals]], Values]
    ) -> tuple[np.ndarray, np.ndarray]:
        point = np.asarray(function(self.point)).reshape(-1)
        resampled = np.asarray(function(self.resampled)).reshape(-1)
        if point.shape != (1,) or resampled.shape != (self.n_resamples,):
            raise ValueError(
                "a statistic must return one value per resample, got shapes "
                f"{point.shape} and {resampled.shape} for 1 and {self.n_resamples}"
            )
        return point, resampled

    def interval(
        self, statistic: Callable[[Mapping[str, Totals]], Values], level: float = LEVEL
    ) -> BootstrapInterval:
        """The statistic's point estimate and its percentile interval at `level`."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        point, resampled = self._evaluate(statistic)
        finite = resampled[np.isfinite(resampled)]
        tail = 100.0 * (1.0 - level) / 2.0
        low, high = np.percentile(finite, [tail, 100.0 - tail]) if finite.size else (np.nan, np.nan)
        return BootstrapInterval(
            point=float(point[0]),
            low=float(low),
            high=float(high),
            level=level,
            n_resamples=self.n_resamples,
            n_undefined=int(self.n_resamples - finite.size),
        )

    def intervals(
        self,
        statistics: Callable[[Mapping[str, Totals]], Mapping[str, Values]],
        names: Sequence[str],
        level: float = LEVEL,
    ) -> dict[str, BootstrapInterval]:
        """The intervals of several statistics that one function computes together, by name."""
        return {name: self.interval(partial(_named, statistics, name), level) for name in names}

    def stability(self, label: Callable[[Mapping[str, Totals]], Values]) -> float:
        """Share of resamples whose label equals the label of the items as they are."""
        point, resampled = self._evaluate(label)
        return float(np.mean(resampled == point[0]))


Values = np.ndarray | float
"""Accuracies of resampled item sets (an array, one value per resample) or a single value: the
statistics below work element by element on either."""


def _named(
    statistics: Callable[[Mapping[str, Totals]], Mapping[str, Values]],
    name: str,
    totals: Mapping[str, Totals],
) -> Values:
    """One of the statistics `statistics` computes from resampled totals."""
    return statistics(totals)[name]


def forgotten(original: Values, unlearned: Values) -> Values:
    """Share of the original accuracy that unlearning removed (0 where the original is 0), as
    [`classify_regime`][unlearn_lens.classify_regime] defines it."""
    original, unlearned = np.asarray(original, float), np.asarray(unlearned, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(original > 0, (original - unlearned) / original, 0.0)


def recovery(original: Values, unlearned: Values, relearned: Values) -> Values:
    """Share of the removed accuracy that relearning won back (NaN where unlearning removed
    nothing, or added accuracy)."""
    return _per_loss(np.asarray(relearned, float) - unlearned, original, unlearned)


def control_gain(original: Values, unlearned: Values, before: Values, after: Values) -> Values:
    """The control's accuracy gain on recovery's scale (divided by the forget accuracy lost)."""
    return _per_loss(np.asarray(after, float) - before, original, unlearned)


def excess(
    original: Values,
    unlearned: Values,
    relearned: Values,
    before: Values,
    after: Values,
) -> Values:
    """Recovery minus the control's gain at the same point of relearning."""
    return recovery(original, unlearned, relearned) - control_gain(
        original, unlearned, before, after
    )


def peak_excess(
    original: Values,
    unlearned: Values,
    relearned: Sequence[Values],
    control: Sequence[Values],
) -> Values:
    """The largest excess along a relearning curve: `relearned[k]` and `control[k]` are the
    forget and control accuracies at curve point k, at equal work (interpolate the control's
    curve at the forget point's epoch first where they differ; `control[0]` is the control
    before relearning); the maximum is over points, taken separately for each resample."""
    if len(relearned) != len(control) or not relearned:
        raise ValueError(
            f"give one forget and one control accuracy per curve point, got {len(relearned)} "
            f"and {len(control)}"
        )
    return np.max(
        np.stack(
            [
                excess(original, unlearned, forget, control[0], after)
                for forget, after in zip(relearned, control, strict=True)
            ]
        ),
        axis=0,
    )


def _per_loss(change: Values, original: Values, unlearned: Values) -> np.ndarray:
    lost = np.asarray(original, float) - np.asarray(unlearned, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lost > 0, change / np.where(lost > 0, lost, 1.0), np.nan)
