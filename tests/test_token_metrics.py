import math

import jaxtyping
import pytest
import torch
from unchecked import unchecked

from unlearn_lens.metrics import (
    ItemOutcomes,
    TokenMetricsAccumulator,
    per_sequence_correct,
    sequence_logprob,
    target_loss,
    token_metrics,
    token_nll,
)

IGNORE = -100


def row(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def tiny_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 3 tokens over a vocabulary of 3; every number below is by hand."""
    logits = torch.zeros(2, 3, 3, dtype=torch.float64)
    logits[0, 0] = row(0.0, math.log(2.0), 0.0)  # p = (1/4, 1/2, 1/4), target 1: hit
    logits[0, 1] = row(math.log(3.0), 0.0, 0.0)  # p = (3/5, 1/5, 1/5), target 2: miss
    logits[1, 1] = row(1.0, 0.0, 0.0)  # target 0: hit
    logits[:, 2] = row(9.0, -9.0, 3.0)  # the last position predicts nothing
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, 0]])
    return logits, labels


def test_hand_computed_metrics():
    logits, labels = tiny_example()
    nll, mask = token_nll(logits, labels)
    third = -math.log(math.e / (math.e + 2.0))
    assert mask.tolist() == [[True, True], [False, True]]
    torch.testing.assert_close(
        nll,
        torch.tensor([[math.log(2.0), math.log(5.0)], [0.0, third]], dtype=torch.float64),
        rtol=1e-14,
        atol=0,
    )
    metrics = token_metrics(logits, labels)
    mean_nll = (math.log(2.0) + math.log(5.0) + third) / 3
    assert metrics.accuracy == pytest.approx(2 / 3)
    assert metrics.nll == pytest.approx(mean_nll, rel=1e-14)
    assert metrics.perplexity == pytest.approx(math.exp(mean_nll), rel=1e-14)
    assert (metrics.exact_match, metrics.n_tokens, metrics.n_sequences) == (0.5, 3, 2)
    assert per_sequence_correct(logits, labels).tolist() == [False, True]


def test_target_loss_reductions():
    logits, labels = tiny_example()
    logits = logits.clone().requires_grad_(True)
    third = -math.log(math.e / (math.e + 2.0))
    per_sequence = [math.log(2.0) + math.log(5.0), third]
    assert target_loss(logits, labels).item() == pytest.approx(sum(per_sequence) / 3, rel=1e-14)
    assert target_loss(logits, labels, "mean_sequences").item() == pytest.approx(
        (per_sequence[0] / 2 + per_sequence[1]) / 2, rel=1e-14
    )
    assert target_loss(logits, labels, "sum_per_sequence").tolist() == pytest.approx(
        per_sequence, rel=1e-14
    )
    log_likelihood = sequence_logprob(logits, labels)
    assert log_likelihood.tolist() == pytest.approx([-v for v in per_sequence], rel=1e-14)
    log_likelihood.sum().backward()
    assert logits.grad is not None and logits.grad[:, 2].abs().sum() == 0  # last position unused


def test_target_loss_keeps_input_dtype_and_skips_empty_sequences():
    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(1))
    labels[1] = IGNORE
    loss = target_loss(logits, labels, "mean_sequences")
    assert loss.dtype == torch.float32
    expected = target_loss(logits[[0, 2]], labels[[0, 2]], "mean_sequences")
    torch.testing.assert_close(loss, expected)
    assert target_loss(logits, labels, "sum_per_sequence")[1] == 0.0


def test_target_loss_errors():
    logits, labels = tiny_example()
    with pytest.raises(ValueError, match="unknown reduction"):
        unchecked(target_loss)(logits, labels, "mean")
    with pytest.raises(ValueError, match="no target tokens"):
        target_loss(logits, torch.full_like(labels, IGNORE))


def test_label_and_shape_errors():
    logits, labels = tiny_example()
    with pytest.raises(ValueError, match=r"token ids in \[0, 3\)"):
        token_nll(logits, torch.tensor([[IGNORE, 3, 0], [IGNORE, 0, 0]]))
    with pytest.raises(ValueError, match="logits must be"):
        unchecked(token_metrics)(logits, labels[:, :2])
    with pytest.raises(ValueError, match="no target tokens seen"):
        token_metrics(logits, torch.full_like(labels, IGNORE))
    with pytest.raises(ValueError, match="no batch was added"):
        TokenMetricsAccumulator().result()


def random_batch(seed: int, batch: int = 6, seq: int = 9, vocab: int = 5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    labels[:, :3] = IGNORE  # prompts
    return logits, labels


def test_padding_changes_no_metric():
    logits, labels = random_batch(2)
    base = token_metrics(logits, labels)
    generator = torch.Generator().manual_seed(3)
    # Two more positions on the right (garbage logits, no targets) and two all-padding rows.
    padded_logits = torch.randn(8, 11, 5, generator=generator, dtype=torch.float64)
    padded_logits[:6, :9] = logits
    padded_labels = torch.full((8, 11), IGNORE)
    padded_labels[:6, :9] = labels
    padded = token_metrics(padded_logits, padded_labels)
    assert padded == base
    padded_correct = per_sequence_correct(padded_logits, padded_labels)
    assert padded_correct[:6].tolist() == per_sequence_correct(logits, labels).tolist()
    nll, mask = token_nll(padded_logits, padded_labels)
    assert nll[~mask].abs().sum() == 0


def test_float32_logits_give_float64_nll():
    logits, labels = random_batch(4)
    nll, _ = token_nll(logits.float(), labels)
    assert nll.dtype == torch.float64
    expected, _ = token_nll(logits.float().double(), labels)
    assert torch.equal(nll, expected)


def test_accumulator_equals_one_shot():
    logits, labels = random_batch(5, batch=10, seq=12)
    labels[2, 5:] = IGNORE  # shorter sequences
    labels[9, 8:] = IGNORE
    labels[7] = IGNORE  # a sequence with nothing to predict
    one_shot = token_metrics(logits, labels)
    accumulator = TokenMetricsAccumulator()
    for start, stop, length in [(0, 2, 12), (2, 3, 5), (3, 9, 12), (9, 10, 8)]:
        # Batches of different sizes, some cut to a shorter length as a batcher would.
        accumulator.update(logits[start:stop, :length], labels[start:stop, :length])
    streamed = accumulator.result()
    assert (streamed.n_tokens, streamed.n_sequences) == (one_shot.n_tokens, one_shot.n_sequences)
    assert streamed.accuracy == one_shot.accuracy
    assert streamed.exact_match == one_shot.exact_match
    # Each item's NLL is summed exactly rounded, then those sums: batching changes nothing.
    assert streamed == one_shot


def test_item_outcomes_are_each_items_counts_and_recompute_the_metrics():
    logits, labels = random_batch(9, batch=10, seq=12)
    labels[4, 6:] = IGNORE
    labels[7] = IGNORE  # an item with nothing to predict
    labels[:3, :4] = IGNORE
    labels[:3, 4:7] = logits[:3, 3:6].argmax(-1)  # three exact matches: targets are the argmax
    labels[:3, 7:] = IGNORE
    accumulator = TokenMetricsAccumulator()
    for start in range(0, 10, 4):
        accumulator.update(logits[start : start + 4], labels[start : start + 4])
    outcomes = accumulator.outcomes()
    # Brute force, item by item, in float64 from the log-softmax.
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = ItemOutcomes([], [], [], [])
    for b in range(10):
        targets = [(t, int(labels[b, t])) for t in range(1, 12) if labels[b, t] != IGNORE]
        correct = [int(logits[b, t - 1].argmax()) == y for t, y in targets]
        expected.n_tokens.append(len(targets))
        expected.n_correct.append(sum(correct))
        expected.exact.append(int(all(correct)))
        expected.nll_sum.append(-sum(float(log_probs[b, t - 1, y]) for t, y in targets))
    assert outcomes.n_tokens == expected.n_tokens
    assert outcomes.n_correct == expected.n_correct
    assert outcomes.exact == expected.exact == per_sequence_correct(logits, labels).int().tolist()
    assert outcomes.nll_sum == pytest.approx(expected.nll_sum, rel=1e-13)
    assert sum(outcomes.exact[:3]) == 3 and outcomes.n_tokens[7] == 0
    # The metrics recomputed from the outcomes, exactly.
    metrics = outcomes.metrics()
    assert metrics == accumulator.result()
    assert metrics.accuracy == sum(expected.n_correct) / sum(expected.n_tokens)
    assert metrics.exact_match == sum(expected.exact[:7] + expected.exact[8:]) / 9
    assert metrics.n_sequences == 9
    assert metrics.nll == math.fsum(outcomes.nll_sum) / sum(expected.n_tokens)
    assert metrics == token_metrics(logits, labels)
    # outcomes() is a copy: later batches do not change it.
    accumulator.update(logits[:1], labels[:1])
    assert len(outcomes) == 10 and len(accumulator.outcomes()) == 11


def test_perplexity_overflow_is_inf():
    logits = torch.zeros(1, 2, 2, dtype=torch.float64)
    logits[0, 0] = torch.tensor([1e4, 0.0])
    metrics = token_metrics(logits, torch.tensor([[IGNORE, 1]]))
    assert metrics.nll == pytest.approx(1e4)
    assert metrics.perplexity == math.inf


class PrefixSumModel:
    """A deterministic "model": the logits at position t are a fixed table's row for the sum of
    tokens 0..t modulo the vocabulary, so every prediction depends on the whole prefix."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.vocab = vocab
        self.table = torch.randn(
            vocab, vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids.cumsum(dim=-1) % self.vocab]

    def greedy_decode(self, prompt: list[int], steps: int) -> list[int]:
        tokens = list(prompt)
        for _ in range(steps):
            tokens.append(int(self.logits(torch.tensor(tokens))[-1].argmax()))
        return tokens[len(prompt) :]


def test_exact_match_equals_greedy_decoding():
    vocab, prompt_length, answer_length, n = 7, 4, 3, 60
    model = PrefixSumModel(vocab, seed=6)
    generator = torch.Generator().manual_seed(7)
    prompts = torch.randint(0, vocab, (n, prompt_length), generator=generator)
    answers = torch.randint(0, vocab, (n, answer_length), generator=generator)
    for i in range(0, n, 2):  # half the answers are the model's own greedy output
        answers[i] = torch.tensor(model.greedy_decode(prompts[i].tolist(), answer_length))
    answers[0, -1] = (answers[0, -1] + 1) % vocab  # right until the last token
    ids = torch.cat([prompts, answers], dim=1)
    labels = torch.cat([torch.full_like(prompts, IGNORE), answers], dim=1)
    expected = [
        model.greedy_decode(p.tolist(), answer_length) == a.tolist()
        for p, a in zip(prompts, answers, strict=True)
    ]
    logits = model.logits(ids)
    assert per_sequence_correct(logits, labels).tolist() == expected
    assert 0 < sum(expected) < n
    assert token_metrics(logits, labels).exact_match == pytest.approx(sum(expected) / n)


def test_the_test_run_checks_annotations_and_shapes_at_run_time():
    # pyproject's addopts install jaxtyping + beartype on unlearn_lens: a labels tensor of
    # another sequence length than the logits fails the `batch seq` annotation before the body.
    logits, labels = tiny_example()
    with pytest.raises(jaxtyping.TypeCheckError, match="labels"):
        token_metrics(logits, labels[:, :2])
