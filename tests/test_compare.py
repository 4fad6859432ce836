"""Comparisons between checkpoints: identity, a perturbed last layer, the single-pass pipeline, the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from unchecked import unchecked

import unlearn_lens as ul
from unlearn_lens import cli
from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics import (
    Comparison,
    collect_activations,
    compare,
    compare_passes,
    compare_snapshots,
    model_fisher,
    model_pass,
)
from unlearn_lens.errors import ConfigError
from unlearn_lens.metrics import cka_both, mean_pca_distance, pca_shift
from unlearn_lens.schema import dump, read

ITEMS = [
    Item("The capital of France is", " Paris"),
    Item(text="def x ( ) : return 1 + 2"),
    Item("The capital of Italy is", " Rome"),
    Item(text="the city of Rome"),
    Item("a b", " c d"),
    Item("the river of", " France"),
    Item(text="1 + 2 = 3"),
    Item("x y", " 4"),
]
EXACT = 1e-12
"""Identical activations give CKA and similarities of 1 up to float64 rounding only."""


def _perturb_last_block(subject, scale: float = 0.5) -> ul.Snapshot:
    """A snapshot whose last block's MLP output matrix got random noise (seeded)."""
    snapshot = subject.snapshot()
    key = subject.keys(layers=[subject.shape.n_layers - 1], components=["mlp_down", "mlp_out"])[0]
    generator = torch.Generator().manual_seed(0)
    snapshot[key] = snapshot[key] + scale * torch.randn(snapshot[key].shape, generator=generator)
    return snapshot


def test_a_model_compared_with_itself(both_backends):
    tl, nn = both_backends["transformer_lens"], both_backends["nnsight"]
    comparison = compare(tl, tl, ITEMS, batch_size=3, progress=False, fisher_components=True)
    assert [layer.stream for layer in comparison.layers] == list(range(tl.n_streams))
    for layer in comparison.layers:
        assert layer.cka_debiased == pytest.approx(1.0, abs=EXACT)
        assert layer.cka_biased == pytest.approx(1.0, abs=EXACT)
        assert layer.pc1_similarity == pytest.approx(1.0, abs=EXACT)
        assert layer.delta_pc1 == 0.0 and layer.pca_distance == 0.0
    assert comparison.mean_pca_distance == 0.0
    assert comparison.reference_metrics == comparison.updated_metrics
    by_layer = comparison.fisher_by_layer()
    assert sorted(by_layer) == list(range(tl.shape.n_layers))
    for group in comparison.fisher:
        assert (
            group.comparison.log10_mean_ratio == 0.0
            and group.comparison.histogram_tv_distance == 0.0
        )
    assert {g.component for g in comparison.fisher if g.layer == 0} >= {None, "q", "k", "v", "o"}
    assert all(group.comparison.ks_statistic is None for group in comparison.fisher)
    # The same model through the other backend: equal up to float32 hook-path rounding.
    across = compare(tl, nn, ITEMS, fisher=False, progress=False)
    assert all(layer.cka_debiased == pytest.approx(1.0, abs=1e-6) for layer in across.layers)
    assert across.fisher == []


def test_perturbed_last_block_changes_only_the_last_stream(both_backends):
    subject = both_backends["nnsight"]
    reference = subject.snapshot()
    updated = _perturb_last_block(subject)
    comparison = compare_snapshots(
        subject,
        reference,
        updated,
        ITEMS,
        fisher=False,
        progress=False,
        labels=("original", "noisy"),
    )
    *lower, last = comparison.layers
    for layer in lower:
        assert layer.cka_debiased == pytest.approx(1.0, abs=EXACT) and layer.delta_pc1 == 0.0
    assert last.cka_debiased < 0.99 and last.pca_distance > 0.0
    assert (comparison.reference, comparison.updated) == ("original", "noisy")
    key = next(k for k in updated if not torch.equal(updated[k], reference[k]))
    assert torch.equal(subject.weight(key).detach(), updated[key]), (
        "the subject keeps the updated weights"
    )


def test_one_pass_gives_what_the_separate_diagnostics_give(both_backends):
    subject = both_backends["transformer_lens"]
    reference = subject.snapshot()
    subject.restore(_perturb_last_block(subject, scale=0.05))
    updated_pass = model_pass(subject, ITEMS, batch_size=3)
    updated_acts = collect_activations(subject, ITEMS, batch_size=5)
    updated_fisher = model_fisher(subject, ITEMS, batch_size=4)
    subject.restore(reference)
    reference_pass = model_pass(subject, ITEMS, batch_size=3)
    reference_acts = collect_activations(subject, ITEMS)
    for index, rows in updated_acts.items():
        torch.testing.assert_close(updated_pass.activations[index], rows, atol=1e-6, rtol=0)
    scale = max(float(values.max()) for values in updated_fisher.values.values())
    for key, values in updated_fisher.values.items():  # atol: GPT-2's k bias has a zero gradient
        torch.testing.assert_close(
            updated_pass.fisher.values[key], values, rtol=1e-4, atol=1e-6 * scale
        )
    comparison = compare_passes(reference_pass, updated_pass)
    streams = sorted(reference_acts)
    assert comparison.mean_pca_distance == pytest.approx(
        mean_pca_distance([reference_acts[i] for i in streams], [updated_acts[i] for i in streams]),
        rel=1e-5,
    )
    for layer in comparison.layers:
        cka = cka_both(reference_acts[layer.stream], updated_acts[layer.stream])
        assert layer.cka_debiased == pytest.approx(cka.debiased, abs=1e-6)
        assert layer.cka_biased == pytest.approx(cka.biased, abs=1e-6)
        assert layer.pc2 == pytest.approx(
            pca_shift(reference_acts[layer.stream], updated_acts[layer.stream]).pc2, abs=1e-5
        )


def test_token_metrics_match_evaluate(both_backends):
    from unlearn_lens.evaluation import evaluate

    subject = both_backends["nnsight"]
    got = model_pass(subject, ITEMS, fisher=False).token_metrics
    expected = evaluate(subject, ITEMS)
    assert (got.n_tokens, got.n_sequences, got.accuracy) == (
        expected.n_tokens,
        expected.n_sequences,
        expected.accuracy,
    )
    assert got.nll == pytest.approx(expected.nll, rel=1e-6)


def test_json_round_trip(both_backends, tmp_path):
    from unlearn_lens.atomic import write_json_atomic

    subject = both_backends["transformer_lens"]
    comparison = compare_snapshots(
        subject,
        subject.snapshot(),
        _perturb_last_block(subject),
        ITEMS,
        pooling="last",
        progress=False,
        fisher_components=True,
    )
    path = write_json_atomic(tmp_path / "comparison.json", dump(comparison))
    assert read(Comparison, json.loads(path.read_text())) == comparison


def test_bad_input_is_a_config_error(both_backends, tiny_model, tiny_tok):
    subject = both_backends["transformer_lens"]
    with pytest.raises(ConfigError, match="no items"):
        compare(subject, subject, [], progress=False)
    with pytest.raises(ConfigError, match="3 items are too few"):
        compare(subject, subject, ITEMS[:3], progress=False)
    with pytest.raises(ConfigError, match="unknown pooling"):
        unchecked(compare)(subject, subject, ITEMS, pooling="max", progress=False)
    other_tokenizer = ul.load(
        copy.deepcopy(tiny_model), tokenizer=ul.tiny_tokenizer(("Zork", "Paris", "France"))
    )
    with pytest.raises(ConfigError, match="different tokenizers"):
        compare(subject, other_tokenizer, ITEMS, progress=False)
    make = ul.tiny_llama if subject.shape.family == "llama" else ul.tiny_gpt2
    deeper = ul.load(make(vocab_size=len(tiny_tok), n_layers=3), tokenizer=tiny_tok)
    with pytest.raises(ConfigError, match="n_layers 2 vs 3"):
        compare(subject, deeper, ITEMS, progress=False)
    with pytest.raises(ConfigError, match="snapshot does not match"):
        compare_snapshots(subject, subject.snapshot(), deeper.snapshot(), ITEMS, progress=False)


def test_tokens_pooling_works_with_few_items(both_backends):
    subject = both_backends["nnsight"]
    comparison = compare(
        subject, subject, ITEMS[:2], pooling="tokens", tokens="answer", fisher=False, progress=False
    )
    assert (
        comparison.n_samples == comparison.reference_metrics.n_tokens == 1 + 8
    )  # " Paris"; 9 words, 8 targets
    assert all(layer.cka_debiased == pytest.approx(1.0, abs=EXACT) for layer in comparison.layers)


# ----- the command ---------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints on disk: a Llama, a copy with a perturbed last block, and a GPT-2."""
    tok = ul.tiny_tokenizer(("Paris", "France", "Rome", "Italy"))
    root = tmp_path_factory.mktemp("checkpoints")
    original = ul.load(ul.tiny_llama(vocab_size=len(tok)), tokenizer=tok, backend="nnsight")
    ul.save_checkpoint(original, root / "original")
    original.restore(_perturb_last_block(original))
    ul.save_checkpoint(original, root / "updated")
    ul.save_checkpoint(
        ul.load(ul.tiny_gpt2(vocab_size=len(tok)), tokenizer=tok, backend="nnsight"), root / "gpt2"
    )
    data = root / "probe.jsonl"
    data.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in ITEMS))
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_json_and_figures_and_refuses_to_overwrite(checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--out",
        out,
        "--batch-size",
        3,
        "--fisher-components",
    )
    assert code == 0
    assert "CKA debiased" in stdout and "Token metrics" in stdout
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "cka.png",
        "comparison.json",
        "fisher_histograms.png",
        "overview.png",
        "pc1_similarity.png",
        "pca_shift.png",
    ]
    for name in names:
        if name.endswith(".png"):
            content = (out / name).read_bytes()
            assert content.startswith(PNG_MAGIC) and len(content) > 10_000
    comparison = read(Comparison, json.loads((out / "comparison.json").read_text()))
    assert comparison.layers[0].cka_debiased == pytest.approx(1.0, abs=EXACT)
    assert comparison.layers[-1].cka_debiased < 0.99
    code, _, stderr = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--out",
        out,
    )
    assert code == 2 and "--force" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, _ = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--out",
        out,
        "--force",
        "--no-fisher",
        "--pooling",
        "last",
    )
    assert code == 0
    assert read(Comparison, json.loads((out / "comparison.json").read_text())).pooling == "last"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "no staging directory is left behind"
    )


@pytest.mark.parametrize(
    "case",
    ["missing data", "malformed data", "mismatched models"],
)
def test_cli_bad_input_exits_2_with_one_line_and_no_output(checkpoints, tmp_path, capsys, case):
    data = checkpoints / "probe.jsonl"
    updated = checkpoints / "updated"
    if case == "missing data":
        data = tmp_path / "nowhere.jsonl"
    elif case == "malformed data":
        data = tmp_path / "bad.jsonl"
        data.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a",\n')
    else:
        updated = checkpoints / "gpt2"
    out = tmp_path / "run"
    code, _, stderr = _run(capsys, checkpoints / "original", updated, "--data", data, "--out", out)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "error" in stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_builtin_model_against_a_perturbed_copy(smollm_tl):
    items = [
        Item(f"The capital of {country} is", f" {city}")
        for country, city in (
            ("France", "Paris"),
            ("Italy", "Rome"),
            ("Spain", "Madrid"),
            ("Germany", "Berlin"),
            ("Japan", "Tokyo"),
            ("Egypt", "Cairo"),
            ("Canada", "Ottawa"),
            ("Peru", "Lima"),
        )
    ]
    original = smollm_tl.snapshot()
    try:
        comparison = compare_snapshots(
            smollm_tl, original, _perturb_last_block(smollm_tl, scale=0.02), items, progress=False
        )
    finally:
        smollm_tl.restore(original)
    assert len(comparison.layers) == 31 and len(comparison.fisher_by_layer()) == 30
    assert all(
        layer.cka_debiased == pytest.approx(1.0, abs=EXACT) for layer in comparison.layers[:-1]
    )
    assert comparison.layers[-1].cka_debiased < 1.0
    assert comparison.reference_metrics.exact_match >= 0.75
    assert comparison.fisher_by_layer()[29].log10_mean_ratio != 0.0


def test_cli_predicts_reversibility_and_prints_the_validation(checkpoints, tmp_path, capsys):
    from unlearn_lens.predict.features import PREDICTOR_INPUTS, predictor_inputs
    from unlearn_lens.predict.model import ReversibilityPredictor

    predictor = ReversibilityPredictor(
        features=PREDICTOR_INPUTS,
        mean=(-3.0, -3.0, 0.5, 0.25, -4.0, 0.0),
        scale=(1.0, 1.0, 0.3, 0.1, 1.0, 0.5),
        coef=(0.2, 0.1, -0.1, 0.0, 0.0, 0.05),
        intercept=0.4,
        alpha=1.0,
        validation={
            "n_cells": 7,
            "by_domain": {
                "scheme": "leave one domain out",
                "spearman": 0.61,
                "mean_abs_error": 0.2,
                "reversible_calls_correct": 0.8,
                "base_rate": 0.6,
            },
            "by_setting": {
                "scheme": "leave one setting out",
                "spearman": 0.55,
                "mean_abs_error": 0.25,
                "reversible_calls_correct": 0.7,
                "base_rate": 0.6,
            },
        },
        trained_on={"model": "test", "cells": 7},
    )
    path = predictor.save(tmp_path / "predictor.json")
    out = tmp_path / "run"
    code, stdout, _ = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--predict-reversibility",
        "--predictor",
        path,
        "--out",
        out,
    )
    assert code == 0
    written = json.loads((out / "reversibility.json").read_text())
    # The prediction by hand: intercept + Σ coef · clip((input − mean) / scale, ±3).
    inputs = predictor_inputs(written["features"]["values"])
    by_hand = predictor.intercept + sum(
        coef * min(3.0, max(-3.0, (inputs[name] - mean) / scale))
        for name, mean, scale, coef in zip(
            PREDICTOR_INPUTS, predictor.mean, predictor.scale, predictor.coef, strict=True
        )
    )
    assert written["predicted_recovery"] == pytest.approx(by_hand)
    # Only the last block was perturbed: reverting the last block restores everything.
    assert written["features"]["depth"] == 1
    text = " ".join(stdout.split())  # rich wraps long lines at the console width
    assert f"predicted relearning recovery {written['predicted_recovery']:.2f}" in text
    assert "leave one domain out: Spearman 0.61" in text and "validated on 7 held-out cells" in text
    # A predictor that does not say which cells it was fitted on is used, with a warning.
    assert (
        "warning: the reversibility predictor was fitted on validation cells of an unknown format"
        in text
    )
    assert (
        "leave one setting out: Spearman 0.55, mean abs. error 0.25, reversible call right 70 % (base rate 60 %)"
        in text
    )
    # The forgotten share with its interval, from the comparison's per-item outcomes.
    forgotten = written["forgotten"]
    comparison = json.loads((out / "comparison.json").read_text())
    reference, updated = (
        comparison[f"{name}_metrics"]["accuracy"] for name in ("reference", "updated")
    )
    assert forgotten["point"] == pytest.approx((reference - updated) / reference)
    assert forgotten["low"] <= forgotten["point"] <= forgotten["high"]
    assert (
        f"forgotten share of token accuracy {forgotten['point']:.2f} [{forgotten['low']:.2f}, "
        f"{forgotten['high']:.2f}] (95 % paired bootstrap" in text
    )
    code, _, _ = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--out",
        out,
        "--force",
        "--no-fisher",
    )
    assert (
        code == 0 and not (out / "reversibility.json").exists()
    )  # no stale prediction beside a new comparison
    code, _, stderr = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--predictor",
        path,
    )
    assert code == 2 and "--predictor is used only with --predict-reversibility" in stderr
    (tmp_path / "broken.json").write_text("{")
    code, _, stderr = _run(
        capsys,
        checkpoints / "original",
        checkpoints / "updated",
        "--data",
        checkpoints / "probe.jsonl",
        "--predict-reversibility",
        "--predictor",
        tmp_path / "broken.json",
    )
    assert (
        code == 2
        and "broken.json: not a reversibility predictor" in stderr
        and len(stderr.strip().splitlines()) == 1
    )
