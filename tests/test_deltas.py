"""Weight deltas per weight / layer / component / head, update directions, and the DeltaTracker."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.localize import (
    DeltaRecord,
    DeltaReport,
    DeltaTracker,
    UpdateDirections,
    tracking,
    update_cosines,
    weight_deltas,
)
from unlearn_lens.schema import dump, read

ITEMS = [Item("The capital of France is", " Paris"), Item("The capital of Italy is", " Rome")]


def _subject(family: str, tok, tied: bool = True, n_layers: int = 2):
    if family == "llama":
        model = ul.tiny_llama(vocab_size=len(tok), n_layers=n_layers, tied=tied)
    else:
        model = ul.tiny_gpt2(vocab_size=len(tok), n_layers=n_layers)
    return ul.load(model, tokenizer=tok, backend="nnsight")


def _perturbed(snapshot, scale=0.01, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        key: t + scale * torch.randn(t.shape, generator=generator) for key, t in snapshot.items()
    }


@pytest.mark.parametrize("family,tied", [("llama", True), ("llama", False), ("gpt2", True)])
def test_snapshot_against_itself_is_zero(tiny_tok, family, tied):
    subject = _subject(family, tiny_tok, tied)
    snapshot = subject.snapshot()
    report = weight_deltas(subject.specs, snapshot, snapshot)
    assert report.total.norm == 0.0 and report.total.reference_norm > 0
    assert all(d.norm == 0.0 for d in report.weights.values())
    assert all(
        layer.norm == 0.0 and layer.share == 0.0 and layer.relative == 0.0
        for layer in report.layers
    )
    assert all(head.norm == 0.0 for head in report.heads)
    assert all(d.norm == 0.0 for d in report.non_layer.values())
    assert set(report.non_layer) == (
        {"embed", "final_norm"}
        | ({"pos_embed"} if family == "gpt2" else set())
        | (set() if tied else {"unembed"})
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_norms_shares_and_relative_sizes_against_brute_force(tiny_tok, family):
    subject = _subject(family, tiny_tok)
    original = subject.snapshot()
    updated = _perturbed(original)
    report = weight_deltas(subject.specs, original, updated)
    total_sq = 0.0
    for layer in report.layers:
        keys = subject.keys(layers=[layer.layer])
        delta_sq = sum(
            float((updated[k].double() - original[k].double()).square().sum()) for k in keys
        )
        ref_sq = sum(float(original[k].double().square().sum()) for k in keys)
        assert layer.norm == pytest.approx(math.sqrt(delta_sq), rel=1e-12)
        assert layer.relative == pytest.approx(math.sqrt(delta_sq / ref_sq), rel=1e-12)
        for component, delta in layer.components.items():
            comp_keys = subject.keys(layers=[layer.layer], components=[component])
            expected = sum(
                float((updated[k].double() - original[k].double()).square().sum())
                for k in comp_keys
            )
            assert delta.norm == pytest.approx(math.sqrt(expected), rel=1e-12)
        total_sq += delta_sq
    total_sq += sum(d.norm**2 for d in report.non_layer.values())
    assert report.total.norm == pytest.approx(math.sqrt(total_sq), rel=1e-12)
    assert sum(report.share_by_layer()) + report.non_layer_share == pytest.approx(1.0, abs=1e-12)
    assert report.layers[0].share == pytest.approx(report.layers[0].norm ** 2 / total_sq, rel=1e-12)
    # Per-head squares of one component add up to the component's (weight and bias together).
    for layer in range(subject.shape.n_layers):
        for component in ("q", "k", "v"):
            heads = [h for h in report.heads if h.layer == layer and h.component == component]
            assert math.fsum(h.norm**2 for h in heads) == pytest.approx(
                report.layers[layer].components[component].norm ** 2, rel=1e-10
            )


def test_tied_embeddings_are_counted_once(tiny_tok):
    subject = _subject("llama", tiny_tok, tied=True)
    original = subject.snapshot()
    updated = dict(original)
    updated["embed.weight"] = original["embed.weight"] + 0.5
    report = weight_deltas(subject.specs, original, updated)
    expected = 0.5 * math.sqrt(original["embed.weight"].numel())
    assert report.total.norm == pytest.approx(expected, rel=1e-6)  # float32 rounding of W + 0.5
    assert report.non_layer["embed"].norm == report.total.norm
    assert report.non_layer_share == pytest.approx(1.0)
    # One tied delta, attributed to both of its uses.
    assert (
        report.tied_embeddings
        and report.head_share == report.input_embedding_share == pytest.approx(1.0)
    )


@pytest.mark.parametrize("tied", [True, False])
def test_head_and_input_embedding_shares_against_brute_force(tiny_tok, tied):
    subject = _subject("llama", tiny_tok, tied=tied)
    original = subject.snapshot()
    updated = _perturbed(original)
    report = weight_deltas(subject.specs, original, updated)

    def squares(keys):
        return sum(float((updated[k].double() - original[k].double()).square().sum()) for k in keys)

    total = squares(original)  # every distinct tensor once
    head_keys = ["final_norm.weight", "embed.weight" if tied else "unembed.weight"]
    assert report.tied_embeddings is tied
    assert report.head_share == pytest.approx(squares(head_keys) / total, rel=1e-10)
    assert report.input_embedding_share == pytest.approx(
        squares(["embed.weight"]) / total, rel=1e-10
    )
    shares = sum(report.share_by_layer()) + report.head_share + report.input_embedding_share
    overlap = squares(["embed.weight"]) / total if tied else 0.0
    assert shares == pytest.approx(1.0 + overlap, rel=1e-10)
    assert read(DeltaReport, json.loads(json.dumps(dump(report)))) == report


def _change_head(snapshot, subject, key, head, amount=1.0):
    changed = {k: t.clone() for k, t in snapshot.items()}
    spec = subject.spec(key)
    spec.head_view(changed[key], head).add_(amount)
    return changed


def test_one_kv_head_change_shows_in_that_head_and_its_query_group_only(tiny_tok):
    subject = _subject(
        "llama", tiny_tok
    )  # 4 query heads, 2 KV heads: query heads 2 and 3 read KV head 1
    original = subject.snapshot()
    report = weight_deltas(
        subject.specs, original, _change_head(original, subject, "layers.1.k.weight", 1)
    )
    nonzero = [(h.layer, h.component, h.head) for h in report.heads if h.norm > 0]
    assert nonzero == [(1, "k", 1)]
    assert len([h for h in report.heads if h.layer == 1 and h.component == "k"]) == 2
    assert len([h for h in report.heads if h.layer == 1 and h.component == "q"]) == 4
    norms = report.query_head_norms()
    assert norms.shape == (2, 4)
    changed = subject.spec("layers.1.k.weight").head_view(original["layers.1.k.weight"], 1).numel()
    expected = math.sqrt(
        changed / 2
    )  # ‖Δk‖² = changed elements × 1², split between the two query heads
    assert norms[1, 2] == pytest.approx(expected) and norms[1, 3] == pytest.approx(expected)
    assert norms[1, 0] == 0 and norms[1, 1] == 0 and not norms[0].any()
    assert (norms**2).sum() == pytest.approx(report.total.norm**2)


@pytest.mark.parametrize(
    "family,key,head",
    [
        ("llama", "layers.0.q.weight", 2),
        ("llama", "layers.1.o.weight", 3),
        ("gpt2", "layers.1.v.weight", 1),
        ("gpt2", "layers.0.o.weight", 2),
    ],
)
def test_one_head_change_shows_in_that_head_only(tiny_tok, family, key, head):
    subject = _subject(family, tiny_tok)
    original = subject.snapshot()
    report = weight_deltas(subject.specs, original, _change_head(original, subject, key, head))
    spec = subject.spec(key)
    assert [(h.layer, h.component, h.head) for h in report.heads if h.norm > 0] == [
        (spec.layer, spec.component, head)
    ]
    norms = report.query_head_norms()
    assert [tuple(int(i) for i in idx) for idx in zip(*norms.nonzero(), strict=True)] == [
        (spec.layer, head)
    ]
    assert [k for k, d in report.weights.items() if d.norm > 0] == [key]


def test_report_round_trips_through_json(tiny_tok):
    subject = _subject("gpt2", tiny_tok)
    original = subject.snapshot()
    report = weight_deltas(subject.specs, original, _perturbed(original))
    again = read(DeltaReport, json.loads(json.dumps(dump(report))))
    assert again == report


def test_update_directions_on_constructed_relearning(tiny_tok):
    subject = _subject("llama", tiny_tok)
    original = subject.snapshot()
    unlearned = _perturbed(original, seed=1)
    delta = {k: unlearned[k] - original[k] for k in original}
    half_back = {k: unlearned[k] - 0.5 * delta[k] for k in original}
    further = {k: unlearned[k] + delta[k] for k in original}
    back = update_cosines(subject.specs, original, unlearned, original)
    assert back.cosine == pytest.approx([-1.0, -1.0]) and back.undone == pytest.approx([1.0, 1.0])
    assert back.overall_cosine == pytest.approx(-1.0)
    half = update_cosines(subject.specs, original, unlearned, half_back)
    assert half.undone == pytest.approx(
        [0.5, 0.5], rel=1e-6
    ) and half.overall_undone == pytest.approx(0.5, rel=1e-6)
    onward = update_cosines(subject.specs, original, unlearned, further)
    assert onward.cosine == pytest.approx([1.0, 1.0]) and onward.undone == pytest.approx(
        [-1.0, -1.0]
    )
    # Relearning that touches only layer 1: layer 0 has no relearning direction.
    only_one = {k: (original[k] if subject.spec(k).layer == 1 else unlearned[k]) for k in original}
    mixed = update_cosines(subject.specs, original, unlearned, only_one)
    assert (
        math.isnan(mixed.cosine[0])
        and mixed.undone[0] == 0.0
        and mixed.cosine[1] == pytest.approx(-1.0)
    )
    assert read(UpdateDirections, json.loads(json.dumps(dump(back)))) == back


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tracker_records_match_full_snapshot_deltas(tiny_tok, family, monkeypatch):
    monkeypatch.setattr(tracking, "CHUNK_ELEMENTS", 100)  # force several chunks per weight
    subject = _subject(family, tiny_tok)
    reference = subject.snapshot()
    tracker = DeltaTracker(subject, reference, every=2)
    batch = subject.encode(ITEMS)
    optimiser = torch.optim.AdamW(subject.parameters(), lr=1e-2)
    expected = []
    for step in range(1, 6):
        loss = ul.metrics.target_loss(subject.run(batch, grad=True).logits, batch.labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        tracker(SimpleNamespace(phase="unlearn", request=0, step=step, loss=float(loss)))
        if step % 2 == 0:
            expected.append(weight_deltas(subject.specs, reference, subject.snapshot()))
    assert [(r.phase, r.request, r.step) for r in tracker.history] == [
        ("unlearn", 0, 2),
        ("unlearn", 0, 4),
    ]
    for record, report in zip(tracker.history, expected, strict=True):
        assert record.layers == pytest.approx([layer.norm for layer in report.layers], rel=1e-5)
        for layer in report.layers:
            for component, delta in layer.components.items():
                assert record.components[component][layer.layer] == pytest.approx(
                    delta.norm, rel=1e-5, abs=1e-9
                )
        assert record.non_layer == pytest.approx(
            {name: d.norm for name, d in report.non_layer.items()}, rel=1e-5
        )
        assert min(record.layers) > 0
    assert tracker.reference_layer_norms == pytest.approx(
        [layer.reference_norm for layer in expected[0].layers], rel=1e-9
    )
    assert read(DeltaRecord, json.loads(json.dumps(dump(tracker.history[0])))) == tracker.history[0]


def test_tracker_rejects_bad_settings(tiny_tok):
    subject = _subject("llama", tiny_tok)
    with pytest.raises(ValueError, match="every must be a positive"):
        DeltaTracker(subject, subject.snapshot(), every=0)
    with pytest.raises(KeyError, match=r"no weight 'embed.weight'"):
        DeltaTracker(subject, {})
