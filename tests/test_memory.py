"""Memory mechanics: snapshots on disk read on demand, Fisher values streamed group by group, and
how many copies of the weights an audit keeps alive (counted from the live tensors, not RSS)."""

from __future__ import annotations

import gc
import io
import json
import math

import numpy as np
import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.diagnostics.compare import compare_model_fisher
from unlearn_lens.diagnostics.model_fisher import model_fisher
from unlearn_lens.localize import Reverter, reversion_sweep
from unlearn_lens.schema import dump
from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.unlearn import unlearn


@pytest.fixture(scope="module")
def unlearned_pair():
    """A memorised tiny subject holding GA-unlearned weights, and both snapshots in memory."""
    subject = memorised_subject()
    original = subject.snapshot()
    unlearn(subject, FORGET, RETAIN, "ga", lr=1e-2, steps=3, batch_size=4, progress=False)
    return subject, original, subject.snapshot()


def test_stored_snapshot_reads_back_every_weight_bit_for_bit(tmp_path, unlearned_pair):
    subject, _, unlearned = unlearned_pair
    stored = ul.write_snapshot(tmp_path / "w.safetensors", subject)
    assert sorted(stored) == sorted(unlearned) and len(stored) == len(unlearned)
    for key, tensor in unlearned.items():
        assert stored[key].dtype == tensor.dtype
        assert torch.equal(stored[key], tensor), key
    with pytest.raises(KeyError):
        stored["no.such.weight"]
    # In bfloat16 on disk: the rounding of each weight, read back in the weights' own dtype.
    half = ul.write_snapshot(tmp_path / "h.safetensors", unlearned, dtype=torch.bfloat16)
    key = next(iter(unlearned))
    assert half[key].dtype == torch.float32
    assert torch.equal(half[key], unlearned[key].to(torch.bfloat16).float())


def test_reversion_from_stored_snapshots_is_bit_identical(tmp_path, unlearned_pair):
    subject, original, unlearned = unlearned_pair
    in_memory = reversion_sweep(
        Reverter(subject, original, FORGET, RETAIN, unlearned=unlearned), progress=False
    )
    stored_original = ul.write_snapshot(tmp_path / "o.safetensors", original)
    stored_unlearned = ul.write_snapshot(tmp_path / "u.safetensors", unlearned)
    on_disk = reversion_sweep(
        Reverter(subject, stored_original, FORGET, RETAIN, unlearned=stored_unlearned),
        progress=False,
    )
    assert json.dumps(dump(on_disk)) == json.dumps(dump(in_memory))
    assert any(r.effect_nll != 0 for r in in_memory.layers)  # the sweep measured something


def test_streamed_fisher_summaries_equal_the_in_memory_ones(tmp_path, unlearned_pair):
    subject, original, unlearned = unlearned_pair
    subject.restore(original)
    reference = model_fisher(subject, FORGET + RETAIN)
    subject.restore(unlearned)
    updated = model_fisher(subject, FORGET + RETAIN)
    for components in (False, True):
        in_memory = compare_model_fisher(reference, updated, components=components)
        streamed = compare_model_fisher(
            reference.stored(tmp_path / f"r{components}.safetensors"),
            updated.stored(tmp_path / f"u{components}.safetensors"),
            components=components,
        )
        assert streamed == in_memory
    # And both agree with a float64 textbook mean per layer.
    for group in compare_model_fisher(
        reference.stored(tmp_path / "r.safetensors"), updated, components=False
    ):
        keys = [k for k, (layer, _) in reference.addresses.items() if layer == group.layer]
        values = np.concatenate([reference.values[k].double().numpy().ravel() for k in keys])
        assert group.comparison.original.mean == pytest.approx(values.mean(), rel=1e-12)


def _embedding_storages(shape: torch.Size) -> set[int]:
    """Live CPU float32 storages holding a tensor shaped like the embedding matrix: weights,
    gradients, optimiser moments and snapshots each hold one, activations never do."""
    gc.collect()
    return {
        obj.untyped_storage().data_ptr()
        for obj in gc.get_objects()
        if isinstance(obj, torch.Tensor) and obj.shape == shape and obj.dtype == torch.float32
    }


@pytest.mark.parametrize(("low_memory", "most"), [(False, 5), (True, 4)])
def test_audit_keeps_at_most_weights_gradients_moments_and_original(tmp_path, low_memory, most):
    """At every forward pass of the audit, count the copies of the weights alive: training needs
    the weights, their gradients and AdamW's two moments, plus the original to revert to (on
    disk with `low_memory`). With the unlearned snapshot in memory and relearning taking its own
    copy of it, relearning would hold seven."""
    subject = memorised_subject()
    weight = subject.weight("embed.weight")
    # Other tests' models may be alive: count only what the audit adds, and the model's weights.
    elsewhere = _embedding_storages(weight.shape) - {weight.untyped_storage().data_ptr()}
    counts: list[int] = []
    run = subject.run

    def counted(*args, **kwargs):
        counts.append(len(_embedding_storages(weight.shape) - elsewhere))
        return run(*args, **kwargs)

    subject.run = counted
    config = StudyConfig(
        model="tiny",
        methods=("npo",),
        lr=1e-2,
        steps=3,
        batch_size=4,
        relearn_steps=3,
        relearn_lr=1e-2,
        max_items=None,
        low_memory=low_memory,
    )
    files = {}
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
        files[name] = str(path)
    audit(
        config.with_values(**files),
        out=tmp_path / "run",
        subject=subject,
        progress=False,
        console=Console(file=io.StringIO()),
    )
    assert len(counts) > 50 and min(counts) >= 1
    assert max(counts) == most, f"{max(counts)} copies of the weights alive at once"
    assert math.isfinite(sum(counts))
