"""Logit lens: the last stream read through final norm and unembedding is the model's logits;
ranks against brute force; snapshot swapping; divergence."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.localize import LogitLens, first_divergence, lens_logits, logit_lens, read_answers
from unlearn_lens.models.sources import BACKENDS
from unlearn_lens.schema import dump, read

ITEMS = [
    Item("The capital of France is", " Paris"),
    Item("The capital of Italy is", " Rome"),
    Item(text="def x ( ) : return 1 + 2"),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_stream_readout_is_the_models_logits(tiny_model, tiny_tok, backend):
    reference = copy.deepcopy(tiny_model)
    subject = ul.load(tiny_model, tokenizer=tiny_tok, backend=backend)
    batch = subject.encode(ITEMS)
    logits = lens_logits(subject, batch)
    assert logits.lens.shape == (3, subject.n_streams, len(tiny_tok))
    with torch.no_grad():
        hf = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    # Last prompt positions: 4 prompt tokens for the two facts; position 0 for the text item.
    expected = hf[torch.arange(3), torch.tensor([4, 4, 0])]
    torch.testing.assert_close(logits.model, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits.lens[:, -1], expected, atol=1e-5, rtol=0)
    assert logits.answer.tolist() == [
        tiny_tok.convert_tokens_to_ids(w) for w in ("Paris", "Rome", "x")
    ]
    # Earlier streams are different readouts, not copies of the last.
    assert not torch.allclose(logits.lens[:, 0], logits.lens[:, -1])


def test_ranks_and_probabilities_against_brute_force(tiny_model, tiny_tok):
    subject = ul.load(tiny_model, tokenizer=tiny_tok, backend="nnsight")
    readout = read_answers(subject, ITEMS, "now", batch_size=2)
    logits = lens_logits(subject, subject.encode(ITEMS))
    for item in range(3):
        answer = int(logits.answer[item])
        for stream in range(subject.n_streams):
            row = logits.lens[item, stream].double()
            order = sorted(range(row.shape[0]), key=lambda t: -float(row[t]))
            assert (
                readout.ranks[item][stream] == order.index(answer) + 1
            )  # no exact ties in random logits
            assert readout.probabilities[item][stream] == pytest.approx(
                float(torch.softmax(row, 0)[answer]), rel=1e-5
            )  # batches of 2 vs 3
    assert len(readout.median_rank()) == subject.n_streams == len(readout.mean_probability())


def test_snapshots_are_swapped_in_and_the_subjects_weights_put_back(tiny_tok):
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=3), tokenizer=tiny_tok, backend="nnsight"
    )
    original = subject.snapshot()
    changed = dict(original)
    last = subject.keys(layers=[2])
    generator = torch.Generator().manual_seed(0)
    for key in last:
        changed[key] = original[key] + 3.0 * torch.randn(original[key].shape, generator=generator)
    current = {k: t + 0.01 for k, t in original.items()}
    subject.restore(current)
    lens = logit_lens(
        subject,
        ITEMS[:2],
        {"original": original, "same": dict(original), "changed": changed},
        progress=False,
    )
    for key in subject.keys():
        assert torch.equal(subject.weight(key).detach(), current[key])
    subject.restore(original)
    assert lens.readouts["original"] == read_answers(subject, ITEMS[:2], "original")
    assert lens.decoder == "fixed" and lens.own_head["original"] == lens.fixed_head["original"]
    assert lens.readouts["same"].ranks == lens.readouts["original"].ranks
    assert lens.first_divergence["same"] is None
    # Only block 2 changed: streams 0..2 are identical, so a divergence can only appear at stream 3.
    assert lens.readouts["changed"].ranks[0][:3] == lens.readouts["original"].ranks[0][:3]
    assert lens.first_divergence["changed"] in (3, None)
    assert read(LogitLens, json.loads(json.dumps(dump(lens)))) == lens
    with pytest.raises(ValueError, match="reference 'base' is not one of the snapshots"):
        logit_lens(subject, ITEMS, {"original": original}, reference="base", progress=False)


def test_first_divergence_by_rank_factor():
    assert first_divergence([5, 5, 3, 1], [6, 51, 2000, 1500]) == 1  # 51 > 10 × 5
    assert (
        first_divergence([5, 5, 3, 1], [6, 49, 30, 10]) is None
    )  # 9.8, 10 and 10 are not more than 10
    assert first_divergence([5, 5, 3, 1], [6, 49, 31, 10]) == 2
    assert first_divergence([70, 5], [6, 5]) == 0  # either direction
    assert first_divergence([1, 2], [1, 2]) is None


def test_fixed_decoder_sees_no_change_where_only_the_head_changed(tiny_tok):
    """Only the final norm and the tied matrix's output use change: every residual stream is the
    same, so through the fixed (original) decoder every readout is the original's, while each
    model's own head shifts the whole curve."""
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok), n_layers=3), tokenizer=tiny_tok, backend="nnsight"
    )
    assert subject.shape.tied_embeddings
    original = subject.snapshot()
    generator = torch.Generator().manual_seed(1)
    head_changed = dict(original)
    head_changed["final_norm.weight"] = original["final_norm.weight"] * (
        1 + torch.rand(original["final_norm.weight"].shape, generator=generator)
    )
    lens = logit_lens(subject, ITEMS, {"original": original, "head": head_changed}, progress=False)
    assert lens.fixed_head["head"].ranks == lens.fixed_head["original"].ranks
    # The same streams through the same decoder: the same numbers, to the bit.
    assert lens.fixed_head["head"].probabilities == lens.fixed_head["original"].probabilities
    assert lens.own_head["head"].probabilities != lens.own_head["original"].probabilities
    assert lens.first_divergence["head"] is None
    own = logit_lens(
        subject, ITEMS, {"original": original, "head": head_changed}, decoder="own", progress=False
    )
    assert own.readouts is own.own_head and own.fixed_head == lens.fixed_head
    # The fixed readout of the last stream of the original model is its own logits' readout.
    subject.restore(head_changed)
    logits = lens_logits(subject, subject.encode(ITEMS), decoder=original)
    subject.restore(original)
    reference = lens_logits(subject, subject.encode(ITEMS))
    torch.testing.assert_close(logits.fixed, reference.lens, atol=1e-6, rtol=0)
    assert not torch.allclose(logits.lens, reference.lens)
    with pytest.raises(ValueError, match="decoder must be one of fixed, own"):
        logit_lens(subject, ITEMS, {"original": original}, decoder="theirs", progress=False)
