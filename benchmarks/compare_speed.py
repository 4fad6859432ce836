"""How close `compare` comes to the cost of the passes it cannot avoid, on the built-in model.

Two snapshots of SmolLM2-135M (the original and a copy with every linear weight perturbed by
0.1 % of its standard deviation) are compared on 32 inputs of up to 64 tokens: activations of
all 31 residual-stream positions, token metrics and the Fisher information of every linear
weight, for both snapshots. The floor, measured in the same run, is what any implementation
must spend: per snapshot, the bare forward passes that collect the activations plus one
batched forward/backward over the same data. Also timed: the Fisher information alone against
one batched forward/backward (and, with `--per-example-loop`, against one backward per input).

    python benchmarks/compare_speed.py [--backend nnsight] [--batch-size 16] [--threads N] [--per-example-loop]

Every time is given as wall-clock seconds and as the process's CPU seconds: on a shared
machine the wall clock also counts other people's work, the CPU time much less (run with
`--threads 1` to avoid thread spin-waiting too). Peak memory is the process's maximum resident
set size (`resource.getrusage`); torch's allocations are outside Python's heap, so tracemalloc
would not see them.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics import compare_passes, model_fisher, model_pass
from unlearn_lens.metrics.token import target_loss

MAX_TOKENS = 64
N_INPUTS = 32
PERTURBATION = 1e-3
"""Relative size of the random update: small, like an unlearning run's (SCIENCE.md: ~4e-4)."""

CAPITALS = (
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Chile", "Santiago"),
    ("Poland", "Warsaw"),
    ("Cuba", "Havana"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
)
PASSAGE = [
    "The",
    "river",
    "rises",
    "in",
    "the",
    "northern",
    "hills",
    "and",
    "runs",
    "south",
    "for",
    "three",
    "hundred",
    "miles,",
    "past",
    "farms,",
    "mills",
    "and",
    "the",
    "old",
    "market",
    "towns,",
    "before",
    "it",
    "widens",
    "into",
    "a",
    "slow",
    "estuary",
    "where",
    "fishing",
    "boats",
    "wait",
    "for",
    "the",
    "tide.",
    "In",
    "the",
    "nineteenth",
    "century",
    "its",
    "banks",
    "held",
    "more",
    "than",
    "forty",
    "factories,",
    "and",
    "the",
    "water",
    "changed",
    "colour",
    "with",
    "the",
    "dyes",
    "they",
    "used;",
    "today",
    "the",
    "factories",
    "are",
    "flats",
    "and",
    "the",
    "river",
    "is",
    "clean",
    "enough",
    "for",
    "salmon",
    "to",
    "return",
    "each",
    "autumn.",
]


def probe_items() -> list[Item]:
    """16 short capital facts and 16 passages of 6 to 51 words (up to 64 tokens)."""
    facts = [Item(f"The capital of {country} is", f" {city}") for country, city in CAPITALS]
    passages = [Item(text=" ".join(PASSAGE[: 6 + 3 * i])) for i in range(N_INPUTS - len(facts))]
    return facts + passages


def perturbed(snapshot: ul.Snapshot, subject: ul.Subject, seed: int = 0) -> ul.Snapshot:
    generator = torch.Generator().manual_seed(seed)
    result = dict(snapshot)
    for key, weight in snapshot.items():
        if weight.ndim == 2 and subject.spec(key).component not in ("embed", "pos_embed"):
            noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
            result[key] = weight + PERTURBATION * float(weight.std()) * noise
    return result


class Clock:
    """Wall-clock and process CPU seconds since creation (or since the last `lap`)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        elapsed = (now_wall - self.wall, now_cpu - self.cpu)
        self.wall, self.cpu = now_wall, now_cpu
        return elapsed


def show(seconds: tuple[float, float]) -> str:
    return f"{seconds[0]:7.2f} s wall, {seconds[1]:7.2f} s CPU"


def ratio(a: tuple[float, float], b: tuple[float, float]) -> str:
    return f"{a[0] / b[0]:.2f}x wall, {a[1] / b[1]:.2f}x CPU"


def add(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] + b[0], a[1] + b[1]


def rss_mib() -> float:
    """Current resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_only(subject: ul.Subject, items: list[Item], batch_size: int) -> tuple[float, float]:
    """The bare forward passes the activations need (every stream collected, nothing pooled)."""
    clock = Clock()
    with torch.no_grad():
        for batch in subject.batches(items, batch_size):
            subject.run(batch, residual_layers=range(subject.n_streams))
    return clock.lap()


def forward_backward(
    subject: ul.Subject, items: list[Item], batch_size: int
) -> tuple[float, float]:
    """One ordinary batched forward/backward (weight gradients of the mean loss) per batch."""
    clock = Clock()
    for batch in subject.batches(items, batch_size):
        target_loss(subject.run(batch, grad=True).logits, batch.labels).backward()
    elapsed = clock.lap()
    subject.model.zero_grad(set_to_none=True)
    return elapsed


def per_example_loop(subject: ul.Subject, items: list[Item]) -> tuple[float, float]:
    """The naive Fisher: one forward/backward per input, squaring every weight gradient."""
    params = list(subject.model.parameters())
    squares = [torch.zeros_like(p) for p in params]
    clock = Clock()
    for item in items:
        batch = subject.encode([item])
        target_loss(
            subject.run(batch, grad=True).logits, batch.labels, "sum_per_sequence"
        ).sum().backward()
        for param, square in zip(params, squares, strict=True):
            square.addcmul_(param.grad, param.grad)
            param.grad = None
    return clock.lap()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="transformer_lens", choices=ul.models.BACKENDS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--per-example-loop", action="store_true", help="also time one backward per input"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    subject = ul.load("smollm2-135m", backend=args.backend)
    items = probe_items()
    lengths = [len(subject.encode([item]).input_ids[0]) for item in items]
    assert max(lengths) <= MAX_TOKENS, f"an input has {max(lengths)} tokens"
    reference = subject.snapshot()
    updated = perturbed(reference, subject)
    forward_only(subject, items[:2], 2)  # warm-up: first-call allocations and lazy imports
    print(
        f"SmolLM2-135M ({args.backend}), {len(items)} inputs of {min(lengths)}-{max(lengths)} tokens "
        f"({sum(lengths)} in all), batch size {args.batch_size}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    baseline = rss_mib()

    clock = Clock()
    total = (0.0, 0.0)
    passes = []
    for label, snapshot in (("reference", reference), ("updated", updated)):
        subject.restore(snapshot)
        passes.append(model_pass(subject, items, batch_size=args.batch_size, label=label))
        seconds = clock.lap()
        total = add(total, seconds)
        print(f"  pass over {label:9s} (activations, token metrics, Fisher): {show(seconds)}")
    comparison = compare_passes(*passes)
    seconds = clock.lap()
    total = add(total, seconds)
    print(f"  metrics between the passes (CKA, PCA, Fisher summaries): {show(seconds)}")
    compare_peak = peak_rss_mib()
    del passes

    floor = (0.0, 0.0)
    for snapshot in (reference, updated):
        subject.restore(snapshot)
        floor = add(
            floor,
            add(
                forward_only(subject, items, args.batch_size),
                forward_backward(subject, items, args.batch_size),
            ),
        )

    subject.restore(reference)
    clock.lap()
    fisher = model_fisher(subject, items, batch_size=args.batch_size)
    fisher_time = clock.lap()
    one_fwd_bwd = forward_backward(subject, items, args.batch_size)
    n_values = sum(v.numel() for v in fisher.values.values())

    print(f"compare, both snapshots:                                    {show(total)}")
    print(f"floor, 2 x (forward passes + one batched forward/backward): {show(floor)}")
    print(f"ratio: {ratio(total, floor)}")
    print(
        f"Fisher of {len(fisher.values)} linear weights ({n_values / 1e6:.1f} M values): {show(fisher_time)}"
    )
    print(
        f"one batched forward/backward:                               {show(one_fwd_bwd)}  "
        f"(Fisher: {ratio(fisher_time, one_fwd_bwd)})"
    )
    if args.per_example_loop:
        loop = per_example_loop(subject, items)
        print(
            f"one forward/backward per input:                             {show(loop)}  "
            f"({ratio(loop, fisher_time)} the batched Fisher)"
        )
    print(
        f"memory: RSS {baseline:.0f} MiB before compare (model, snapshots), peak {compare_peak:.0f} MiB "
        f"during compare (+{compare_peak - baseline:.0f} MiB); process peak {peak_rss_mib():.0f} MiB"
    )
    print(
        f"sanity: last-stream debiased CKA {comparison.layers[-1].cka_debiased:.4f}, "
        f"mean PCA distance {comparison.mean_pca_distance:.4f}, load average now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
