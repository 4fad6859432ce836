"""The study's cells read off audits: each cell of the study's grid is a plain audit of one
method (`unlearn-lens grid`), and the page reads what it needs from the cell's results.json.

Nothing here measures: the features come from the audit's own diagnostics (debiased CKA and
Fisher on the forget items), weight deltas and forgetting depth, so a cell costs what an audit
costs and any audit, of any model, can be read the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from unlearn_lens.errors import ConfigError
from unlearn_lens.grid.cells import CellStore
from unlearn_lens.grid.spec import GridCell, GridSpec
from unlearn_lens.localize.reversion import DepthEvidence
from unlearn_lens.predict.features import ReversibilityFeatures, profile_features
from unlearn_lens.reproduction.grid import Cell, CellResult
from unlearn_lens.study.results import RESULTS_FILE, AuditResults, MethodResults


def depth_evidence(result: MethodResults) -> DepthEvidence | None:
    """The method's head + last-k reversion evidence, from attribution or the exact sweep."""
    if result.attribution is not None:
        return result.attribution.depth
    return result.reversion.depth_evidence() if result.reversion is not None else None


def audit_features(result: MethodResults) -> ReversibilityFeatures:
    """The reversibility features of an audited method, from its stored diagnostics (the
    unlearned model against the original on the forget items), deltas and depth."""
    forget = result.comparisons.get("unlearned/forget")
    if forget is None or result.deltas is None:
        raise ConfigError(f"{result.method}: the audit has no diagnostics or deltas to read")
    n_layers = result.deltas.n_layers
    fisher = forget.fisher_by_layer()
    evidence = depth_evidence(result)
    return profile_features(
        # Stream ℓ + 1 is the output of block ℓ; stream 0 (the embedding) is not a block.
        [layer.cka_debiased for layer in forget.layers[1:]],
        [
            fisher[layer].log10_mean_ratio if layer in fisher else math.nan
            for layer in range(n_layers)
        ],
        result.deltas,
        evidence.forgetting_depth if evidence is not None else None,
        evidence.last_k if evidence is not None else None,
    )


def study_cell(cell: GridCell) -> Cell:
    """The study's coordinates of a grid cell: domain, objective, learning rate, protocol."""
    config = cell.config
    if len(config.methods) != 1 or config.unlearned:
        raise ConfigError(f"cell {cell.id}: a study cell audits exactly one method")
    protocol = "single" if config.requests == 1 else "continual"
    return Cell(config.domain, config.methods[0], config.lr, protocol)


def cell_result(cell: Cell, results: AuditResults, seconds: float) -> CellResult:
    """What the study reads of one audited cell (`seconds`: the cell's wall time)."""
    method = results.methods[cell.method]
    if method.relearn is None or method.regime is None or method.unlearn is None:
        raise ConfigError(f"{cell.name}: the audit of {cell.method} did not finish")
    relearn, comparisons = method.relearn, method.comparisons
    evidence = depth_evidence(method)
    head = math.nan if evidence is None else evidence.last_k.get(0, math.nan)
    head_accuracy = method.reversion.head.effect_accuracy if method.reversion else math.nan
    return CellResult(
        cell=cell,
        original={split: results.original[split] for split in ("forget", "retain")},
        unlearned={s: comparisons[f"unlearned/{s}"].updated_metrics for s in ("forget", "retain")},
        relearned={s: comparisons[f"relearned/{s}"].updated_metrics for s in ("forget", "retain")},
        control_before=relearn.control_before.accuracy,
        control_after=relearn.control_after.accuracy,
        recovery=relearn.recovery["accuracy"].recovery,
        peak_excess=relearn.peak_excess(),
        regime=method.regime,
        features=audit_features(method),
        head_restore={"nll": head, "accuracy": head_accuracy},
        stop_reason=method.unlearn.run.stop_reason,
        seconds={**method.seconds, "total": round(seconds, 2)},
    )


def read_study(spec: GridSpec, out: str | Path) -> list[CellResult]:
    """Every finished cell of the study's grid in `out`, in grid order (unfinished and failed
    cells left out)."""
    store = CellStore(out)
    results = []
    for cell in spec.cells:
        record = store.record(cell)
        if record is None or record.status != "complete":
            continue
        path = store.directory(cell.id) / RESULTS_FILE
        audited = AuditResults.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
        results.append(cell_result(study_cell(cell), audited, record.seconds))
    return results
