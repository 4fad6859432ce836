"""Pooled residual-stream activations: hand references, padding invariance, backend parity."""

from __future__ import annotations

import pytest
import torch
from unchecked import unchecked

from unlearn_lens.data.batching import encode_item
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics import collect_activations, context_length, pool, token_mask

ITEMS = [
    Item("The capital of France is", " Paris"),
    Item(text="def x ( ) : return 1 + 2"),
    Item("The capital of Italy is a city", " Rome"),
    Item(text="the city"),
    Item("a b", " c d"),
]
PARITY_ATOL = 1e-5
"""Both backends run the same float32 modules; only hook plumbing differs."""
PADDING_ATOL = 1e-6
"""Padding changes matrix shapes, so float32 kernels may sum in another order; nothing more."""


def _alone(subject, item: Item, streams) -> dict[int, torch.Tensor]:
    """Residual streams of one item run alone (no padding), `[seq, d]` per stream."""
    out = subject.run(subject.encode([item]), residual_layers=streams)
    return {index: out.residuals[index][0].double() for index in streams}


@pytest.mark.parametrize("pooling", ["mean", "last", "tokens"])
def test_pooling_matches_items_run_alone(both_backends, pooling):
    subject = both_backends["transformer_lens"]
    streams = list(range(subject.n_streams))
    got = collect_activations(subject, ITEMS, pooling=pooling, batch_size=3)
    assert sorted(got) == streams
    alone = [_alone(subject, item, streams) for item in ITEMS]
    for index in streams:
        rows = [
            {"mean": a[index].mean(dim=0, keepdim=True), "last": a[index][-1:], "tokens": a[index]}[
                pooling
            ]
            for a in alone
        ]
        expected = torch.cat(rows)
        assert got[index].dtype == torch.float32 and got[index].device.type == "cpu"
        torch.testing.assert_close(got[index].double(), expected, atol=PADDING_ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last", "tokens"])
def test_padding_and_batch_size_do_not_change_pooled_activations(both_backends, pooling):
    subject = both_backends["nnsight"]
    one_by_one = collect_activations(subject, ITEMS, pooling=pooling, batch_size=1)
    long_item = Item(text=" ".join(["the"] * 40))  # pads every other item by dozens of tokens
    padded = collect_activations(subject, [*ITEMS, long_item], pooling=pooling, batch_size=8)
    n = one_by_one[0].shape[0]
    for index, rows in one_by_one.items():
        torch.testing.assert_close(padded[index][:n], rows, atol=PADDING_ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last", "tokens"])
def test_backends_agree(both_backends, pooling):
    tl = collect_activations(both_backends["transformer_lens"], ITEMS, pooling=pooling)
    nn = collect_activations(both_backends["nnsight"], ITEMS, pooling=pooling)
    for index in tl:
        torch.testing.assert_close(tl[index], nn[index], atol=PARITY_ATOL, rtol=0)


def test_token_spans_select_prompt_and_answer(both_backends, tiny_tok):
    subject = both_backends["transformer_lens"]
    lengths = {}
    for item in ITEMS:
        ids, _ = encode_item(tiny_tok, item)
        answer = (
            len(tiny_tok(item.answer, add_special_tokens=False)["input_ids"])
            if not item.is_text
            else len(ids) - 1
        )
        lengths[item] = (len(ids), answer)
    answer_rows = collect_activations(
        subject, ITEMS, pooling="tokens", tokens="answer", layers=[1]
    )[1]
    prompt_rows = collect_activations(
        subject, ITEMS, pooling="tokens", tokens="prompt", layers=[1]
    )[1]
    assert answer_rows.shape[0] == sum(a for _, a in lengths.values())
    assert prompt_rows.shape[0] == sum(n - a for n, a in lengths.values())
    # The last prompt token of an item is where its first answer token is predicted.
    last_prompt = collect_activations(
        subject, ITEMS[:1], pooling="last", tokens="prompt", layers=[1]
    )[1]
    n, a = lengths[ITEMS[0]]
    torch.testing.assert_close(
        last_prompt[0].double(),
        _alone(subject, ITEMS[0], [1])[1][n - a - 1],
        atol=PADDING_ATOL,
        rtol=0,
    )


def test_layers_subset_and_token_mask(both_backends):
    subject = both_backends["transformer_lens"]
    got = collect_activations(subject, ITEMS, layers=[2, 0])
    assert sorted(got) == [0, 2] and got[0].shape == (len(ITEMS), subject.shape.d_model)
    batch = subject.encode(ITEMS[:2])
    everything = token_mask(batch, "all")
    assert torch.equal(everything, batch.attention_mask.bool())
    assert torch.equal(token_mask(batch, "prompt") | token_mask(batch, "answer"), everything)
    assert not (token_mask(batch, "prompt") & token_mask(batch, "answer")).any()


def test_inputs_longer_than_the_context_are_truncated_with_a_warning(both_backends):
    subject = both_backends["transformer_lens"]
    context = context_length(subject)
    assert context == 128  # both tiny models: max_position_embeddings (Llama), n_positions (GPT-2)
    too_long = Item(text=" ".join(["1 + 2"] * context))
    with pytest.warns(UserWarning, match="lost tokens from the left"):
        got = collect_activations(subject, [too_long, ITEMS[0]], pooling="tokens", layers=[0])
    assert got[0].shape[0] == context + len(encode_item(subject.tokenizer, ITEMS[0])[0])


def test_bad_pooling_and_span():
    residual, mask = torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        unchecked(pool)(residual, mask, "max")
    with pytest.raises(ValueError, match="no items"):
        unchecked(collect_activations)(None, [])
