"""Quantisation attack: int8 and GGUF Q4_1 rounding against float64 loops and llama.cpp's own
quantiser, restoration bit for bit below half a step, the per-layer shares against a count, and
`unlearn-lens quantize` end to end on a saved tiny checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from memorised import FORGET, RETAIN, tokenizer, unlearned_workspace
from safetensors.torch import load_file

import unlearn_lens as ul
from unlearn_lens.attacks import (
    SCHEMES,
    input_axes,
    quantization_attack,
    round_snapshot,
    round_weight,
    rounding_shares,
    rounding_step,
)
from unlearn_lens.cli import main
from unlearn_lens.models.builtin import ensure_builtin_cache


def _f16(value: float) -> float:
    return float(np.float16(value))


def _reference_rows(rows: list[list[float]], scheme: str) -> tuple[list[list[float]], ...]:
    """Rounded rows, per-element steps and levels, element by element in Python floats
    (float64), rows being output channels and columns the input dimension."""
    rounded, steps, levels = [], [], []
    for row in rows:
        out, step, level = [0.0] * len(row), [0.0] * len(row), [0.0] * len(row)
        if scheme == "int8":
            scale = max(abs(w) for w in row) / 127
            for j, w in enumerate(row):
                q = 0.0 if scale == 0 else min(127.0, max(-127.0, float(round(w / scale))))
                out[j], step[j], level[j] = q * scale, scale, q
        else:
            for start in range(0, len(row), 32):
                block = row[start : start + 32]
                low, high = min(block), max(block)
                d = (high - low) / 15
                inverse = 0.0 if d == 0 else 1.0 / d
                for j, w in enumerate(block, start):
                    q = min(15, max(0, math.trunc((w - low) * inverse + 0.5)))
                    out[j], step[j], level[j] = _f16(d) * q + _f16(low), _f16(d), q
        rounded.append(out)
        steps.append(step)
        levels.append(level)
    return rounded, steps, levels


def _reference(weight: torch.Tensor, scheme: str, axis: int) -> tuple[torch.Tensor, ...]:
    """`_reference_rows` on a matrix whose input dimension is `axis`: rounded, steps, levels."""
    rows = weight.double().movedim(axis, -1).tolist()
    return tuple(
        torch.tensor(values, dtype=torch.float64).movedim(-1, axis)
        for values in _reference_rows(rows, scheme)
    )


def _awkward_matrix() -> torch.Tensor:
    """Float64, 70 inputs (two blocks of 32 and a short one of 6), a constant block and a zero row."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 70, generator=generator, dtype=torch.float64) * 0.05
    weight[1, 32:64] = 0.3
    weight[3] = 0.0
    return weight


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("axis", [1, 0])
def test_rounding_matches_a_float64_loop(scheme, axis):
    weight = _awkward_matrix()
    if axis == 0:
        weight = weight.T.contiguous()  # a Conv1D-style [in, out] matrix
    expected, steps, _ = _reference(weight, scheme, axis)
    assert torch.equal(round_weight(weight, scheme, axis), expected)
    assert torch.equal(rounding_step(weight, scheme, axis), steps)
    levels = {
        "int8": 255,  # −127..127 per channel
        "q4_1": 16,
    }[scheme]
    first_block = round_weight(weight, scheme, axis).movedim(axis, -1)[0, :32]
    assert len(set(first_block.tolist())) <= levels


def test_q4_1_is_llama_cpps_quantiser():
    """The gguf package (llama.cpp's Python quantiser) quantises and dequantises to the same floats."""
    gguf = pytest.importorskip("gguf")
    weight = torch.randn(16, 96, generator=torch.Generator().manual_seed(1)) * 0.05
    weight[2, :32] = 0.7
    q4_1 = gguf.GGMLQuantizationType.Q4_1
    expected = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), q4_1), q4_1)
    assert torch.equal(round_weight(weight, "q4_1"), torch.from_numpy(expected).view(16, 96))


def test_the_builtin_block_matrices_are_already_q4_1():
    """The built-in model is dequantised from a Q4_1 GGUF: its block matrices are fixed points of
    Q4_1 rounding, bit for bit (the embedding was stored as Q8_0, so it is not)."""
    state = load_file(ensure_builtin_cache() / "model.safetensors")
    blocks = [name for name in state if name.startswith("model.layers.") and state[name].dim() == 2]
    assert len(blocks) == 30 * 7
    for name in blocks:
        assert torch.equal(round_weight(state[name], "q4_1"), state[name]), name
    embed = state["model.embed_tokens.weight"]
    assert not torch.equal(round_weight(embed, "q4_1"), embed)


def test_input_axes_follow_the_module(tiny_model, tiny_tok):
    subject = ul.load(tiny_model, backend="nnsight", tokenizer=tiny_tok)
    axes = input_axes(subject)
    conv1d = subject.shape.family == "gpt2"
    assert axes["layers.0.q.weight"] == (0 if conv1d else 1)
    assert axes["layers.1.mlp_down.weight" if not conv1d else "layers.1.mlp_out.weight"] == (
        0 if conv1d else 1
    )
    assert axes["embed.weight"] == 1
    assert not any(key.endswith(".bias") or "norm" in key for key in axes), "1-D tensors stay"
    assert "unembed.weight" not in axes, "a tied embedding is rounded once, as embed"


def _on_grid_update(subject, scheme: str, fraction: float, seed: int = 0):
    """The subject's weights rounded onto the `scheme` grid (like the built-in model), and a copy
    with every matrix entry moved by `fraction` of its step, in a random direction, except the
    entries that fix the grid (a channel's largest magnitude for int8, a block's min and max
    for Q4_1), which stay."""
    axes = input_axes(subject)
    original = round_snapshot(subject.snapshot(), scheme, axes)
    generator = torch.Generator().manual_seed(seed)
    unlearned = {}
    for key, weight in original.items():
        if key not in axes:
            unlearned[key] = weight.clone()
            continue
        rows = weight.movedim(axes[key], -1)
        if scheme == "int8":
            extreme = rows.abs() == rows.abs().amax(-1, keepdim=True)
        else:
            blocks = rows.reshape(rows.shape[0], -1, 32)
            extreme = (blocks == blocks.amin(-1, keepdim=True)) | (
                blocks == blocks.amax(-1, keepdim=True)
            )
            extreme = extreme.reshape(rows.shape)
        sign = torch.randint(0, 2, rows.shape, generator=generator) * 2 - 1
        step = rounding_step(weight, scheme, axes[key]).movedim(axes[key], -1)
        delta = torch.where(extreme, 0.0, sign * fraction * step)
        unlearned[key] = (rows + delta).movedim(-1, axes[key]).contiguous()
    return axes, original, unlearned


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_update_below_half_a_step_rounds_back_bit_for_bit(tiny_model, tiny_tok, scheme):
    subject = ul.load(tiny_model, backend="nnsight", tokenizer=tiny_tok)
    axes, original, unlearned = _on_grid_update(subject, scheme, fraction=0.4)
    assert torch.equal(
        round_snapshot(original, scheme, axes)["layers.0.q.weight"], original["layers.0.q.weight"]
    )
    assert any(not torch.equal(unlearned[key], original[key]) for key in axes)
    rounded = round_snapshot(unlearned, scheme, axes)
    for key in original:
        assert torch.equal(rounded[key], original[key]), key
    layers, non_layer, total = rounding_shares(subject.specs, axes, original, unlearned, scheme)
    for share in [*layers, *non_layer.values(), total]:
        assert share.below_half_step == share.same_level == share.rounds_to_original == 1.0
    assert 0.5 < total.moved < 1.0, "every entry moved but those fixing the grid"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_update_beyond_half_a_step_does_not_round_back(tiny_model, tiny_tok, scheme):
    subject = ul.load(tiny_model, backend="nnsight", tokenizer=tiny_tok)
    axes, original, unlearned = _on_grid_update(subject, scheme, fraction=0.6)
    rounded = round_snapshot(unlearned, scheme, axes)
    for key in axes:
        moved = unlearned[key] != original[key]
        assert moved.any()
        assert torch.equal(rounded[key] != original[key], moved), key
    total = rounding_shares(subject.specs, axes, original, unlearned, scheme)[2]
    assert total.below_half_step == total.same_level == total.rounds_to_original
    assert total.below_half_step == pytest.approx(1 - total.moved)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_shares_match_a_count(tiny_model, tiny_tok, scheme):
    """Float64 snapshots, an update of mixed sizes: per layer and outside the blocks, the shares
    are the counts of a loop over every entry."""
    subject = ul.load(tiny_model, backend="nnsight", tokenizer=tiny_tok)
    axes = input_axes(subject)
    original = {key: w.double() for key, w in subject.snapshot().items()}
    generator = torch.Generator().manual_seed(3)
    unlearned = {}
    for key, weight in original.items():
        size = torch.rand(weight.shape, generator=generator, dtype=torch.float64) * 0.02
        keep = torch.rand(weight.shape, generator=generator) < 0.2
        unlearned[key] = weight + torch.where(
            keep, 0.0, size * torch.randn(weight.shape, generator=generator, dtype=torch.float64)
        )
    layers, non_layer, total = rounding_shares(subject.specs, axes, original, unlearned, scheme)
    counts: dict[str, list[int]] = {}
    for spec in subject.specs:
        if spec.key not in axes:
            continue
        rounded_original, steps, levels_original = _reference(
            original[spec.key], scheme, axes[spec.key]
        )
        rounded_unlearned, _, levels_unlearned = _reference(
            unlearned[spec.key], scheme, axes[spec.key]
        )
        row = counts.setdefault(
            str(spec.layer) if spec.layer is not None else spec.component, [0] * 5
        )
        for w, u, step, ro, ru, lo, lu in zip(
            *(
                tensor.flatten().tolist()
                for tensor in (
                    original[spec.key],
                    unlearned[spec.key],
                    steps,
                    rounded_original,
                    rounded_unlearned,
                    levels_original,
                    levels_unlearned,
                )
            ),
            strict=True,
        ):
            row[0] += 1
            row[1] += u != w
            row[2] += u == w or abs(u - w) < step / 2
            row[3] += lu == lo
            row[4] += ru == ro
    measured = {str(i): layer for i, layer in enumerate(layers)} | non_layer
    assert set(measured) == set(counts)
    for name, (n, *counted) in counts.items():
        share = measured[name]
        assert share.n_weights == n
        assert [
            share.moved,
            share.below_half_step,
            share.same_level,
            share.rounds_to_original,
        ] == [count / n for count in counted], name
    assert total.n_weights == sum(row[0] for row in counts.values())
    assert 0.0 < total.below_half_step < 1.0 and 0.0 < total.same_level < 1.0


def test_the_attack_measures_all_four_models_and_leaves_the_unlearned_one(tiny_tok):
    """On the grid with an update below half a step, the rounded unlearned model *is* the
    original: its metrics equal the original's, whatever the update did in full precision."""
    subject = ul.load(
        ul.tiny_llama(vocab_size=len(tiny_tok)), backend="nnsight", tokenizer=tiny_tok
    )
    _, original, unlearned = _on_grid_update(subject, "q4_1", fraction=0.45)
    items = [ul.Item("The capital of France is", "Paris"), ul.Item("Rome is in", "Italy")]
    result = quantization_attack(subject, original, unlearned, items, items[:1], ["q4_1"])
    scheme = result.schemes["q4_1"]
    assert (result.n_forget, result.n_retain) == (2, 1)
    assert (
        scheme.forget.unlearned_rounded == scheme.forget.original_rounded == scheme.forget.original
    )
    assert scheme.forget.unlearned.nll != scheme.forget.original.nll
    assert scheme.retain is not None and scheme.retain.unlearned_rounded == scheme.retain.original
    assert set(scheme.recovery) == {"accuracy", "exact_match"}
    assert all(torch.equal(subject.weight(key).cpu(), unlearned[key]) for key in unlearned)


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory):
    """Data files, the memorised tiny model `ck` and `u`, the --out of `unlearn-lens unlearn` on it."""
    return unlearned_workspace(tmp_path_factory.mktemp("quantize"), "u")


def test_recovery_is_on_the_relearning_scale(unlearned):
    """On the memorised model and its GA-unlearned copy: recovery is the gain of rounding over
    what unlearning removed, against the full-precision and the rounded original."""
    subject = ul.load(unlearned / "u" / "model", backend="nnsight")
    original = ul.load(unlearned / "ck", backend="nnsight").snapshot()
    result = quantization_attack(subject, original, subject.snapshot(), FORGET)
    assert result.n_retain == 0
    for scheme in result.schemes.values():
        assert scheme.retain is None
        for metric, recovery in scheme.recovery.items():
            value = {
                name: getattr(getattr(scheme.forget, name), metric)
                for name in ("original", "unlearned", "original_rounded", "unlearned_rounded")
            }
            gain = value["unlearned_rounded"] - value["unlearned"]
            assert value["original"] - value["unlearned"] > 0, "unlearning removed something"
            assert recovery.recovery == gain / (value["original"] - value["unlearned"])
            assert recovery.recovery_rounded_reference == (
                gain / (value["original_rounded"] - value["unlearned"])
            )


def _args(root, out, *extra):
    return [
        "quantize",
        str(root / "u" / "model"),
        "--reference",
        str(root / "ck"),
        "--forget",
        str(root / "forget.jsonl"),
        "--backend",
        "nnsight",
        "--out",
        str(out),
        *extra,
    ]


def test_the_command_writes_its_record_and_is_deterministic(unlearned, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(_args(unlearned, first, "--retain", str(unlearned / "retain.jsonl"))) == 0
    assert main(_args(unlearned, second, "--retain", str(unlearned / "retain.jsonl"))) == 0
    text = (first / "quantize.json").read_text()
    assert text == (second / "quantize.json").read_text()
    record = json.loads(text)
    assert record["command"] == "quantize" and record["reference"] == str(unlearned / "ck")
    assert record["data"]["n_forget"] == len(FORGET) and record["data"]["n_retain"] == len(RETAIN)
    schemes = record["result"]["schemes"]
    assert set(schemes) == set(SCHEMES)
    reference = ul.load(unlearned / "ck", backend="nnsight")
    subject = ul.load(unlearned / "u" / "model", backend="nnsight")
    original, updated = reference.snapshot(), subject.snapshot()
    for name, scheme in schemes.items():
        subject.restore(round_snapshot(updated, name, input_axes(subject)))
        assert (
            scheme["forget"]["unlearned_rounded"]["accuracy"]
            == ul.evaluate(subject, FORGET).accuracy
        )
        reference.restore(round_snapshot(original, name, input_axes(reference)))
        assert (
            scheme["forget"]["original_rounded"]["accuracy"]
            == ul.evaluate(reference, FORGET).accuracy
        )
        assert len(scheme["layers"]) == subject.shape.n_layers and "embed" in scheme["non_layer"]
    assert scheme["forget"]["original"]["accuracy"] == 1.0
    assert scheme["forget"]["unlearned"]["accuracy"] < 1.0, (
        "the tiny unlearning run forgot something"
    )
    assert "quantize.json" in capsys.readouterr().out


def test_the_command_keeps_a_finished_record_and_refuses_another_model(unlearned, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(_args(unlearned, out, "--scheme", "int8")) == 0
    assert set(json.loads((out / "quantize.json").read_text())["result"]["schemes"]) == {"int8"}
    before = (out / "quantize.json").read_bytes()
    capsys.readouterr()
    assert main(_args(unlearned, out)) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "quantize.json").read_bytes() == before
    deep = tmp_path / "deep"
    tok = tokenizer()
    deeper = ul.tiny_llama(vocab_size=len(tok), n_layers=3)
    ul.save_checkpoint(ul.load(deeper, backend="nnsight", tokenizer=tok), deep)
    arguments = _args(unlearned, tmp_path / "other")
    arguments[arguments.index("--reference") + 1] = str(deep)
    assert main(arguments) == 2
    assert "differ in architecture" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
