"""How many bootstrap resamples does an interval need? Enough that its endpoints' own Monte
Carlo error (their standard deviation over bootstrap seeds) stays below 0.01.

A realistic case, simulated once (fixed seed): 20 forget items of 1-3 content tokens, the
original answering 97 % of tokens, the unlearned 30 %, a relearning curve of 4 more points
(40-75 %), and 20 control items learning 0-30 % along the same curve. For each number of
resamples B, the 95 % interval of forgotten share, recovery, control gain, excess and peak excess
is computed with 100 bootstrap seeds; the table gives each endpoint's standard deviation.

    .venv/bin/python benchmarks/bootstrap_resamples.py [--seeds 100] [--resamples 200,500,1000,2000,4000,8000]
"""

from __future__ import annotations

import argparse

import numpy as np

from unlearn_lens.metrics import ItemOutcomes
from unlearn_lens.metrics.bootstrap import (
    Bootstrap,
    control_gain,
    excess,
    forgotten,
    peak_excess,
    recovery,
)

N_ITEMS = 20
FORGET_CURVE = (0.3, 0.4, 0.55, 0.65, 0.75)
CONTROL_CURVE = (0.0, 0.05, 0.1, 0.2, 0.3)


def simulated_groups(rng: np.random.Generator) -> list[dict[str, ItemOutcomes]]:
    """The forget tables (original, curve points f0..f4, f0 the unlearned) and the control's."""

    def table(tokens: np.ndarray, p: float) -> ItemOutcomes:
        correct = rng.binomial(tokens, p)
        return ItemOutcomes(
            tokens.tolist(),
            correct.tolist(),
            (correct == tokens).astype(int).tolist(),
            [1.0] * len(tokens),
        )

    forget_tokens = rng.integers(1, 4, size=N_ITEMS)
    control_tokens = rng.integers(2, 5, size=N_ITEMS)
    forget = {"original": table(forget_tokens, 0.97)}
    forget.update({f"f{k}": table(forget_tokens, p) for k, p in enumerate(FORGET_CURVE)})
    control = {f"c{k}": table(control_tokens, p) for k, p in enumerate(CONTROL_CURVE)}
    return [forget, control]


def accuracy(t, name):
    return t[name].accuracy


STATISTICS = {
    "forgotten": lambda t: forgotten(accuracy(t, "original"), accuracy(t, "f0")),
    "recovery": lambda t: recovery(accuracy(t, "original"), accuracy(t, "f0"), accuracy(t, "f4")),
    "control gain": lambda t: control_gain(
        accuracy(t, "original"), accuracy(t, "f0"), accuracy(t, "c0"), accuracy(t, "c4")
    ),
    "excess": lambda t: excess(
        accuracy(t, "original"),
        accuracy(t, "f0"),
        accuracy(t, "f4"),
        accuracy(t, "c0"),
        accuracy(t, "c4"),
    ),
    "peak excess": lambda t: peak_excess(
        accuracy(t, "original"),
        accuracy(t, "f0"),
        [accuracy(t, f"f{k}") for k in range(len(FORGET_CURVE))],
        [accuracy(t, f"c{k}") for k in range(len(CONTROL_CURVE))],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--resamples", default="200,500,1000,2000,4000,8000")
    args = parser.parse_args()
    groups = simulated_groups(np.random.default_rng(123))
    for name, statistic in STATISTICS.items():
        interval = Bootstrap(groups, 2000, seed=0).interval(statistic)
        print(f"{name}: {interval.point:.3f} [{interval.low:.3f}, {interval.high:.3f}]")
    print(f"endpoint sd over {args.seeds} seeds (low/high):")
    for n_resamples in (int(b) for b in args.resamples.split(",")):
        boots = [Bootstrap(groups, n_resamples, seed) for seed in range(args.seeds)]
        row, worst = [], 0.0
        for name, statistic in STATISTICS.items():
            ends = np.array([(i.low, i.high) for i in (b.interval(statistic) for b in boots)])
            sd = ends.std(axis=0, ddof=1)
            worst = max(worst, float(sd.max()))
            row.append(f"{name} {sd[0]:.4f}/{sd[1]:.4f}")
        print(f"B={n_resamples:5d}: " + ", ".join(row) + f"; worst {worst:.4f}")


if __name__ == "__main__":
    main()
