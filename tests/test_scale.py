"""Beyond one CPU: `--dtype` and `--device-map` reach transformers, half-precision models still get
float64 diagnostics, and a remote (NDIF) subject refuses what needs local weights in one line."""

from __future__ import annotations

import io
import json

import pytest
import torch
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.study.audit import audit

PROBE = [
    ul.Item(text=f"The capital of {country} is {city} and {n} plus {n} equals {2 * n}")
    for n, (country, city) in enumerate(
        zip(
            ("Veltravia", "Drumlin", "Kessary", "Orsenne") * 2,
            ("Paris", "Rome", "France", "Italy") * 2,
            strict=True,
        )
    )
]
"""Eight different sentences in the tiny tokenizer's vocabulary."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved checkpoint of the memorised tiny model (float32)."""
    return ul.save_checkpoint(memorised_subject(), tmp_path_factory.mktemp("tiny") / "memorised")


@pytest.mark.parametrize("backend", ul.models.BACKENDS)
def test_dtype_and_device_map_are_applied(model_dir, backend):
    subject = ul.load(model_dir, backend=backend, dtype="bfloat16", device_map="cpu")
    assert {p.dtype for p in subject.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in subject.model.parameters()} == {"cpu"}
    assert {p.dtype for p in ul.load(model_dir, backend=backend).model.parameters()} == {
        torch.float32
    }


def test_bfloat16_model_compared_with_itself_has_cka_one(model_dir):
    """Diagnostics upcast: CKA of a bfloat16 model with a second copy of itself is 1 at every layer,
    and token metrics and Fisher come out finite."""
    first, second = (ul.load(model_dir, dtype="bfloat16") for _ in range(2))
    comparison = ul.compare(first, second, PROBE, progress=False)
    for layer in comparison.layers:
        assert layer.cka_debiased == pytest.approx(1.0, abs=1e-9)
        assert layer.cka_biased == pytest.approx(1.0, abs=1e-9)
    assert torch.isfinite(torch.tensor(comparison.updated_metrics.nll))
    assert comparison.fisher, "the Fisher information is computed in bfloat16 too"
    float32 = ul.load(model_dir)
    against_float32 = ul.compare(float32, first, PROBE, progress=False)
    # bfloat16 rounding (relative 2^-8) moves activations a little, not their geometry.
    assert min(layer.cka_debiased for layer in against_float32.layers) > 0.99


def test_audit_honours_device_map_and_dtype(model_dir, tmp_path):
    """A bfloat16 audit with device_map="cpu" runs every stage and records both settings."""
    rows = {"forget": FORGET, "retain": RETAIN, "control": CONTROL}
    specs = {}
    for split, items in rows.items():
        specs[split] = str(tmp_path / f"{split}.json")
        (tmp_path / f"{split}.json").write_text(
            json.dumps([{"question": i.prompt, "answer": i.answer} for i in items])
        )
    config = ul.StudyConfig(
        model=str(model_dir),
        backend="nnsight",
        **specs,
        methods=("ga",),
        lr=1e-2,
        steps=2,
        batch_size=4,
        relearn_steps=2,
        relearn_lr=1e-2,
        max_items=None,
        known_only=False,
        device_map="cpu",
        dtype="bfloat16",
    )
    results = audit(
        config, out=tmp_path / "run", progress=False, console=Console(file=io.StringIO())
    )
    assert results.status == "complete"
    assert results.config.dtype == "bfloat16" and results.config.device_map == "cpu"
    assert results.data.items["forget"] == FORGET
    cka = [
        layer.cka_debiased for layer in results.methods["ga"].comparisons["unlearned/retain"].layers
    ]
    assert all(-1.0 <= value <= 1.0 + 1e-9 for value in cka)


def test_audit_passes_device_map_to_transformers(model_dir, tmp_path, capsys):
    """`audit --device-map` used to be ignored; an invalid one now fails in one line, before any output."""
    out = tmp_path / "out"
    assert (
        main(["audit", "--model", str(model_dir), "--device-map", "nonsense", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonsense" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--dtype", "int8"],
        ["compare", "a", "b", "--data", "x.jsonl", "--dtype", "float64"],
        ["unlearn", "--out", "x", "--dtype", "half"],
    ],
)
def test_unknown_dtype_is_refused_by_every_model_command(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_study_toml_dtype_is_checked(tmp_path):
    (tmp_path / "study.toml").write_text('dtype = "float64"\n')
    with pytest.raises(
        ul.ConfigError, match=r"study.toml:1: dtype must be one of float32, bfloat16, float16"
    ):
        ul.load_config(tmp_path / "study.toml")


def test_remote_subject_refuses_weights_and_gradients_before_any_network(memorised_nnsight):
    """A remote subject (no call is made here: both refusals come before a trace) fails at once on
    what needs local weights or gradients, naming what it can do instead."""
    remote = ul.wrap(memorised_nnsight.lm, remote=True)
    for needs_local in (
        remote.snapshot,
        lambda: ul.unlearn(remote, FORGET, progress=False),
        lambda: ul.model_fisher(remote, FORGET),
    ):
        with pytest.raises(
            ul.ModelSourceError,
            match=r"runs on NDIF: .*remotely, use the forward-only diagnostics: "
            r"evaluate, collect_activations, compare\(\.\.\., fisher=False\)$",
        ):
            needs_local()


@pytest.fixture
def memorised_nnsight():
    return memorised_subject(backend="nnsight")
