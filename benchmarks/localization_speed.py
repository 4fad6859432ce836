"""Localisation by weight attribution against the full exact sweep, on the built-in model, in one run.

Unlearns SmolLM2-135M with GA at the audit defaults (the audit's own data preparation: built-in
`text` sets, known filter, 32 items per split), then localises the same unlearned model twice:

- attribution (the audit's default): integrated gradients over every weight, the forgetting
  depth by exact bisection, exact reversions of the top blocks and heads;
- exact (`--localization exact`, the code before attribution): the reversion sweep (every block,
  every head + last-k, every component, top-n head sets) and single-head reversions of 3 layers.

Prints the seconds of each and their ratio (target ≥ 8), the agreement of attributed and exact
effects (Spearman over every block, target ≥ 0.9; over the single heads the exact mode measured
and the heads the attribution verified, target ≥ 0.8, for the first-order effect of reverting each
head alone, with the integrated-gradient shares beside it), the completeness residual and points,
and memory: the peak RSS growth of each mode over the live RSS before it (glibc's freed heap
handed back first; Linux VmHWM, reset between modes), how much more the attribution mode needs
than the exact one in snapshots of the model (target: at most one), and the process's
`resource.getrusage` peak.

    python benchmarks/localization_speed.py [--backend transformer_lens]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import resource
import time
from pathlib import Path

import numpy as np
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.localize import (
    Reverter,
    head_attribution,
    localize_by_attribution,
    reversion_sweep,
    spearman,
    weight_deltas,
)
from unlearn_lens.study.audit import _prepare_data, _read_sets
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.unlearn.api import unlearn

TARGET_SPEEDUP = 8.0
"""The attribution mode must localise at least 8× faster than the full exact sweep."""
TARGET_BLOCK_AGREEMENT = 0.9
TARGET_HEAD_AGREEMENT = 0.8
MIB = 2**20


def _status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> int:
    """Hand freed heap memory back to the OS (so the RSS is what is live), reset the peak RSS
    (VmHWM) to the current RSS and return that RSS."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default="transformer_lens", help="hook backend (default transformer_lens)"
    )
    args = parser.parse_args()

    config = StudyConfig(backend=args.backend)
    subject = ul.load(config.model, backend=config.backend)
    original = subject.snapshot()
    data = _prepare_data(subject, config, _read_sets(config), Console(file=io.StringIO()))
    forget, retain = data.items["forget"], data.items["retain"]
    started = time.perf_counter()
    unlearn(
        subject,
        forget,
        retain,
        "ga",
        lr=config.lr,
        steps=config.steps,
        batch_size=config.batch_size,
        requests=config.requests,
        seed=config.seed,
        progress=False,
        keep_snapshots=False,
    )
    unlearn_seconds = time.perf_counter() - started
    unlearned = subject.snapshot()
    snapshot_bytes = sum(t.numel() * t.element_size() for t in unlearned.values())
    deltas = weight_deltas(subject.specs, original, unlearned)

    before = _reset_peak()
    started = time.perf_counter()
    localized = localize_by_attribution(
        subject, original, unlearned, forget, retain, progress=False
    )
    attribution_seconds = time.perf_counter() - started
    attribution_growth = _status("VmHWM") - before

    before = _reset_peak()
    started = time.perf_counter()
    reverter = Reverter(subject, original, forget, retain, unlearned=unlearned)
    sweep = reversion_sweep(reverter, deltas, progress=False)
    heads = head_attribution(deltas, reverter, sweep=sweep, progress=False)
    exact_seconds = time.perf_counter() - started
    exact_growth = _status("VmHWM") - before

    attribution, check, depth = localized.attribution, localized.check, localized.depth
    forget_attr = attribution.forget
    n_heads = subject.shape.n_heads
    exact_heads = [(layer, head) for layer in heads.reversion_layers for head in range(n_heads)]
    exact_head_effects = [value for row in heads.reversion_nll for value in row]
    attributed_heads = [
        attribution.single_patches.head_patch(layer, head, fraction=True)
        for layer, head in exact_heads
    ]
    shared_heads = [
        forget_attr.head_patch(layer, head, fraction=True) for layer, head in exact_heads
    ]
    components = [r for r in sweep.components if r.label in forget_attr.components]
    component_totals = forget_attr.component_totals(fraction=True)
    last_k_gap = np.abs(
        np.asarray(forget_attr.last_k(fraction=True)) - np.asarray(sweep.last_k_effects())
    ).max()
    n_evaluations = (
        2
        + len(depth.last_k)
        + (depth.input_embedding is not None)
        + len(check.blocks)
        + len(check.heads)
    )
    block_rho = spearman(forget_attr.blocks(fraction=True), sweep.layer_effects("nll"))
    head_rho = spearman(attributed_heads, exact_head_effects)
    speedup = exact_seconds / attribution_seconds

    print(
        f"SmolLM2-135M ({config.backend}), GA lr {config.lr} × {config.steps} steps ({unlearn_seconds:.0f} s); "
        f"{len(forget)} forget, {len(retain)} retain items"
    )
    print(
        f"forget NLL {forget_attr.loss_original:.3f} → {forget_attr.loss_unlearned:.3f}; "
        f"retain NLL {attribution.retain.loss_original:.3f} → {attribution.retain.loss_unlearned:.3f}"
    )
    n_exact = (
        (len(sweep.layers) + len(sweep.last_k) + 1 + len(sweep.components) + len(sweep.top_heads))
        + len(exact_heads)
        + 2
    )
    print(
        f"exact sweep + 3-layer heads: {exact_seconds:7.1f} s  "
        f"({n_exact} evaluations, {len(exact_heads)} single heads)"
    )
    print(
        f"attribution mode:            {attribution_seconds:7.1f} s  ({attribution.passes} "
        "forward/backward passes per set, "
        f"{n_evaluations} exact evaluations, all {forget_attr.heads().size} heads attributed)"
    )
    print(
        "attribution mode by stage: "
        + ", ".join(f"{stage} {value:.1f} s" for stage, value in localized.seconds.items())
    )
    print(
        f"speed-up: {speedup:.1f}× (target ≥ {TARGET_SPEEDUP:.0f}×): "
        f"{'ok' if speedup >= TARGET_SPEEDUP else 'below target'}"
    )
    print(
        f"completeness residual: forget {attribution.residual:.4f}, retain {attribution.retain.residual:.4f} "
        f"with {attribution.points} Gauss–Legendre points (tolerance {attribution.tolerance})"
    )
    print(
        f"depth: exact sweep {sweep.forgetting_depth}, bisection {depth.forgetting_depth} "
        f"({len(depth.last_k)} head + last-k reversions: {sorted(depth.last_k)})"
    )
    print(
        f"agreement, all {len(sweep.layers)} blocks (attributed vs exact sweep): Spearman {block_rho:.3f} "
        f"(target ≥ {TARGET_BLOCK_AGREEMENT}): {'ok' if block_rho >= TARGET_BLOCK_AGREEMENT else 'below target'}"
    )
    print(
        f"agreement, {len(exact_heads)} single heads of blocks {heads.reversion_layers} (exact mode's heads), "
        f"first-order effect of reverting each alone: Spearman {head_rho:.3f} (target ≥ {TARGET_HEAD_AGREEMENT}): "
        f"{'ok' if head_rho >= TARGET_HEAD_AGREEMENT else 'below target'}; integrated-gradient shares: "
        f"{spearman(shared_heads, exact_head_effects):.3f}"
    )
    print(
        f"agreement, verified in attribution mode (top half and spread over the ranking): "
        f"{len(check.blocks)} blocks {check.block_agreement:.3f}, {len(check.heads)} heads {check.head_agreement:.3f}"
    )
    print(
        f"agreement, {len(components)} components: Spearman "
        f"{spearman([component_totals[r.label] for r in components], [r.effect_nll for r in components]):.3f}; "
        f"head + last-k curve: Spearman {spearman(forget_attr.last_k(fraction=True), sweep.last_k_effects()):.3f}, "
        f"largest gap {last_k_gap:.3f}"
    )
    print("per block attributed:", [round(v, 3) for v in forget_attr.blocks(fraction=True)])
    print("per block exact:     ", [round(v, 3) for v in sweep.layer_effects("nll")])
    print("head + last-k attributed:", [round(v, 3) for v in forget_attr.last_k(fraction=True)])
    print("head + last-k exact:     ", [round(v, 3) for v in sweep.last_k_effects()])
    print("single heads first order:", [round(v, 4) for v in attributed_heads])
    print("single heads IG share:   ", [round(v, 4) for v in shared_heads])
    print("single heads exact:      ", [round(v, 4) for v in exact_head_effects])
    extra = attribution_growth - exact_growth
    print(
        f"memory: peak RSS growth over the live RSS: attribution {attribution_growth / MIB:.0f} "
        f"MiB, exact {exact_growth / MIB:.0f} MiB; "
        f"attribution needs {extra / MIB:+.0f} MiB more = {extra / snapshot_bytes:+.2f} snapshots "
        f"of {snapshot_bytes / MIB:.0f} MiB "
        f"(target ≤ 1): {'ok' if extra <= snapshot_bytes else 'over target'}; "
        f"process peak (getrusage) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    for line in localized.warnings():
        print(f"warning: {line}")


if __name__ == "__main__":
    main()
