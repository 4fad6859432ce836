"""Every failure path of the CLI, as a table: bad input and impossible settings end in one line
naming the problem, exit status 2, no traceback, and every directory exactly as it was.

All cases share one workspace: a tiny random checkpoint (context 128 tokens), data files good
and bad, a finished run and a directory of the user's own files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import pytest
import torch
from memorised import CITIES, CONTROL, COUNTRIES, FORGET, RETAIN, tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

import unlearn_lens as ul
from unlearn_lens.cli import main

CONTEXT = 128
"""`tiny_llama`'s max_position_embeddings: the longest item the tiny checkpoint takes."""


def _jsonl(path: Path, items) -> None:
    path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    tok = tokenizer()
    subject = ul.load(ul.tiny_llama(vocab_size=len(tok)), tokenizer=tok, backend="nnsight")
    ul.save_checkpoint(subject, root / "ck")
    # Checkpoints that do not fit `ck`: wider, deeper, or with another word at one token id.
    wide = LlamaConfig.from_dict({**subject.model.config.to_dict(), "hidden_size": 48})
    for name, model, words in (
        ("wide", LlamaForCausalLM(wide), tok),
        ("deep", ul.tiny_llama(len(tok), n_layers=3), tok),
        (
            "othertok",
            ul.tiny_llama(len(tok)),
            ul.tiny_tokenizer((*COUNTRIES[:-1], "Elsewhere", *CITIES)),
        ),
    ):
        model.save_pretrained(root / name)
        words.save_pretrained(root / name)
    # Checkpoints whose config.json disagrees with their own tensors (saved from `ck`, config edited).
    for name, edit in (
        ("badconfig", {"hidden_size": 48}),
        ("layersconfig", {"num_hidden_layers": 3}),
        ("kvconfig", {"num_key_value_heads": 4}),
    ):
        ul.save_checkpoint(subject, root / name)
        config = json.loads((root / name / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps({**config, **edit}))
    ul.save_checkpoint(subject, root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        _jsonl(root / f"{name}.jsonl", items)
    (root / "bad.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a",\n')
    # Line 2 (after a blank line) is one word past the context; the tiny tokenizer gives a token a word.
    (root / "long.jsonl").write_text(
        "\n" + json.dumps({"text": " ".join(["Veltravia"] * (CONTEXT + 1))}) + "\n"
    )
    _jsonl(root / "repeated.jsonl", [FORGET[0]] * 8)
    # An answer as long as the context: no prompt token fits beside it, so --truncate cannot help.
    (root / "long_answer.jsonl").write_text(
        json.dumps({"prompt": "The capital of", "answer": " ".join(["Veltravia"] * CONTEXT)}) + "\n"
    )
    # A dataset directory holding a loading script, which datasets no longer runs.
    (root / "scripted").mkdir()
    (root / "scripted" / "scripted.py").write_text("import datasets\n")
    datasets.Dataset.from_dict({"prompt": [], "answer": []}).save_to_disk(str(root / "empty_ds"))
    (root / "deep.json").write_text("[" * 100_000)  # json recurses past Python's limit
    (root / "options.toml").write_text("steps = 2\n\n[objective_options]\nbeta = 0.1\nbta = 1\n")
    (root / "infinite.toml").write_text("lr = inf\n")
    (root / "latin1.toml").write_bytes("# réglages\nsteps = 2\n".encode("latin-1"))
    (root / "adir").mkdir()
    (root / "readonly").mkdir(mode=0o555)
    (root / "afile").write_text("not a directory\n")
    (root / "list.json").write_text("[1, 2]\n")
    (root / "partial").mkdir()
    (root / "partial" / "results.json").write_text(
        '{"schema": "unlearn_lens.results", "version": 2}\n'
    )
    # A real results file whose depth column holds one value more than the model has layers.
    stored = json.loads((Path(__file__).parent / "data" / "results_v2_exact.json").read_text())
    columns = stored["methods"]["ga"]["localization"]["columns"]
    columns["delta_share"] = [*columns["delta_share"], 0.5]
    (root / "extra_layer").mkdir()
    (root / "extra_layer" / "results.json").write_text(json.dumps(stored))
    finished = root / "finished"
    (finished / "figures").mkdir(parents=True)
    (finished / "results.json").write_text(
        '{"schema": "unlearn_lens.results", "version": 2, "status": "complete"}\n'
    )
    (finished / "report.html").write_text("<html>the finished run's report</html>\n")
    (finished / "figures" / "ga-cka.png").write_bytes(b"\x89PNG\r\n\x1a\nfigure")
    (root / "finished-relearn").mkdir()
    (root / "finished-relearn" / "run.json").write_text('{"command": "relearn"}\n')
    (root / "dangling").symlink_to("nowhere")
    (root / "mine").mkdir()
    (root / "mine" / "report.html").write_text("<html>my own report</html>\n")
    (root / "mine" / "notes.txt").write_text("my notes\n")
    return root


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones too) with a digest of its content ('dir' for a
    directory, the target for a symbolic link)."""

    def entry(path: Path) -> str:
        if path.is_symlink():
            return f"link to {os.readlink(path)}"
        return "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()

    return {str(path.relative_to(root)): entry(path) for path in sorted(root.rglob("*"))}


AUDIT = [
    "audit",
    "--model",
    "ck",
    "--backend",
    "nnsight",
    "--forget",
    "forget.jsonl",
    "--retain",
    "retain.jsonl",
    "--control",
    "control.jsonl",
    "--keep-unknown",
    "--method",
    "ga",
    "--steps",
    "1",
    "--relearn-steps",
    "1",
]
UNLEARN = [
    "unlearn",
    "--model",
    "ck",
    "--backend",
    "nnsight",
    "--forget",
    "forget.jsonl",
    "--steps",
    "1",
]
COMPARE = ["compare", "ck", "ck", "--data", "forget.jsonl", "--no-fisher"]
RELEARN = [
    "relearn",
    "ck",
    "--backend",
    "nnsight",
    "--data",
    "forget.jsonl",
    "--control",
    "control.jsonl",
    "--steps",
    "1",
]
TOO_LONG = f"long.jsonl:2: the item is {CONTEXT + 1} tokens, more than the model's context of {CONTEXT} tokens"
LONG_ANSWER = (
    f"long_answer.jsonl:1: answer: {CONTEXT} tokens leave no room for a prompt within the "
    f"model's context of {CONTEXT} tokens"
)

CASES = {
    # Data loss: a forced rerun that fails leaves the finished run whole, before and after the model loads.
    "force over a run, bad data": (
        [*AUDIT, "--forget", "bad.jsonl", "--out", "finished", "--force"],
        "bad.jsonl:2: invalid JSON",
    ),
    "force over a run, item too long": (
        [*AUDIT, "--forget", "long.jsonl", "--out", "finished", "--force"],
        TOO_LONG,
    ),
    "audit into the user's directory": (
        [*AUDIT, "--out", "mine"],
        "--out mine holds other files ('notes.txt')",
    ),
    "unlearn into the user's directory": (
        [*UNLEARN, "--out", "mine"],
        "--out mine holds other files",
    ),
    "relearn into the user's directory": (
        [*RELEARN, "--out", "mine"],
        "--out mine holds other files",
    ),
    "relearn over a run": (
        [*RELEARN, "--out", "finished-relearn"],
        "--out finished-relearn already holds run.json; pass --force",
    ),
    "compare into the user's directory": (
        [*COMPARE, "--out", "mine"],
        "--out mine holds other files",
    ),
    # Validated before anything is written.
    "lr nan": ([*AUDIT, "--lr", "nan", "--out", "out"], "lr must be a finite number, got nan"),
    "lr inf": ([*AUDIT, "--lr", "inf", "--out", "out"], "lr must be a finite number, got inf"),
    "relearn lr inf": (
        [*AUDIT, "--relearn-lr=-inf", "--out", "out"],
        "relearn_lr must be a finite number, got -inf",
    ),
    "lr inf in study.toml": (
        [*AUDIT, "--config", "infinite.toml", "--out", "out"],
        "infinite.toml:1: lr must be a finite number",
    ),
    "relearn command lr inf": (
        [*RELEARN, "--lr", "inf", "--out", "out"],
        "lr must be a finite number, got inf",
    ),
    "relearn missing control": (
        [*RELEARN, "--control", "nowhere.jsonl", "--out", "out"],
        "nowhere.jsonl: no such file",
    ),
    "relearn missing checkpoint": (
        [*RELEARN[:1], "runs/gone/model", *RELEARN[2:], "--out", "out"],
        "runs/gone/model",
    ),
    "unlearn lr inf": (
        [*UNLEARN, "--lr", "inf", "--out", "out"],
        "lr must be a finite number, got inf",
    ),
    "more requests than items": (
        [*AUDIT, "--requests", "5", "--out", "out"],
        "requests=5 is more than the 4 forget items kept",
    ),
    "missing relearn source": (
        [*AUDIT, "--relearn-source", "nowhere.jsonl", "--out", "out"],
        "--relearn-source nowhere.jsonl: no such file",
    ),
    "unknown objective option": (
        [*AUDIT, "--config", "options.toml", "--out", "out"],
        "options.toml:5: [objective_options] unknown objective option(s) bta",
    ),
    # One line, never a traceback.
    "inspect top-k -1": (["inspect", "--top-k", "-1"], "--top-k must be at least 1, got -1"),
    "inspect top-k past the vocabulary": (
        ["inspect", "--model", "ck", "--top-k", "100000"],
        "--top-k 100000 is more than",
    ),
    "inspect unknown device": (
        ["inspect", "--model", "ck", "--device", "gpu0"],
        "--device 'gpu0' is not a torch device",
    ),
    "audit out is a file": ([*AUDIT, "--out", "afile"], "--out afile is a file"),
    "unlearn out is a file": ([*UNLEARN, "--out", "afile"], "--out afile is a file"),
    "audit out under a file": (
        [*AUDIT, "--out", "afile/run"],
        "--out afile/run: afile is a file, not a directory",
    ),
    "unlearn out under a file": (
        [*UNLEARN, "--out", "afile/run"],
        "afile is a file, not a directory",
    ),
    "report on a list": (["report", "list.json"], "list.json: expected a JSON object, got a list"),
    "report on more values than layers": (
        ["report", "extra_layer"],
        "extra_layer/results.json: methods.ga.localization.columns.delta_share: 3 per-layer values, "
        "but the model has 2 layers",
    ),
    "report on missing fields": (
        ["report", "partial"],
        "partial/results.json: config: Field required (and 1 more)",
    ),
    "report on a missing directory": (
        ["report", "gone"],
        "gone: no such run directory, so no results here; run `unlearn-lens audit --out gone`",
    ),
    "compare a truncated checkpoint": (
        ["compare", "truncated", "ck", "--data", "forget.jsonl"],
        "truncated/model.safetensors: its weights cannot be read",
    ),
    "config is a directory": ([*AUDIT, "--config", "adir", "--out", "out"], "adir: is a directory"),
    "config not UTF-8": (
        [*AUDIT, "--config", "latin1.toml", "--out", "out"],
        "latin1.toml: not UTF-8 text (byte 3)",
    ),
    "forget is a directory": (
        [*AUDIT, "--forget", "adir", "--out", "out"],
        "adir: not a directory written by Dataset.save_to_disk",
    ),
    # Inputs refused once the tokenizer is known, before anything is written.
    "audit item too long": ([*AUDIT, "--forget", "long.jsonl", "--out", "out"], TOO_LONG),
    "audit item over --max-tokens": (
        [*AUDIT, "--max-tokens", "5", "--out", "out"],
        "forget.jsonl:1: the item is 6 tokens, more than --max-tokens 5",
    ),
    "relearn item too long": ([*RELEARN, "--data", "long.jsonl", "--out", "out"], TOO_LONG),
    "unlearn item too long": ([*UNLEARN, "--forget", "long.jsonl", "--out", "out"], TOO_LONG),
    "audit answer too long to truncate": (
        [*AUDIT, "--forget", "long_answer.jsonl", "--truncate", "--out", "out"],
        LONG_ANSWER,
    ),
    "unlearn answer too long to truncate": (
        [*UNLEARN, "--forget", "long_answer.jsonl", "--truncate", "--out", "out"],
        LONG_ANSWER,
    ),
    "compare item too long": ([*COMPARE[:3], "--data", "long.jsonl", "--out", "out"], TOO_LONG),
    # A given checkpoint must be the original's architecture with its tokenizer, and have its own name.
    "given checkpoint of another width": (
        [*AUDIT, "--unlearned", "wide", "--out", "out"],
        "--unlearned wide: wide: tensor model.embed_tokens.weight is [96, 48] in the checkpoint, "
        "[96, 32] in the original",
    ),
    "given checkpoint with more layers": (
        [*AUDIT, "--unlearned", "deep", "--out", "out"],
        "--unlearned deep: deep: the checkpoint has tensor model.layers.2.",
    ),
    "given checkpoint with another tokenizer": (
        [*AUDIT, "--unlearned", "othertok", "--out", "out"],
        "--unlearned othertok: othertok: the tokenizer differs from the original's at id 87: "
        "'Elsewhere' in the checkpoint, 'Brisca' in the original",
    ),
    "given checkpoint missing": (
        [*AUDIT, "--unlearned", "runs/gone/model", "--out", "out"],
        "--unlearned gone: runs/gone/model: no such directory (and not a Hugging Face hub id)",
    ),
    "given checkpoints named alike": (
        [*AUDIT, "--unlearned", "x=ck", "--unlearned", "x=deep", "--out", "out"],
        "--unlearned: two checkpoints are named 'x' (ck and deep)",
    ),
    "given checkpoint named like a method": (
        [*AUDIT, "--unlearned", "ga=ck", "--out", "out"],
        "'ga' names both a method and an unlearned checkpoint (ck)",
    ),
    "given checkpoint force over a run": (
        [*AUDIT, "--unlearned", "wide", "--out", "finished", "--force"],
        "--unlearned wide: wide: tensor",
    ),
    # A checkpoint is checked against its own config.json before anything else.
    "given checkpoint wider in its config than its tensors": (
        [*AUDIT, "--unlearned", "badconfig", "--out", "out"],
        "--unlearned badconfig: badconfig: its config.json says hidden_size 48, but tensor "
        "model.embed_tokens.weight is [96, 32] in the checkpoint (32 where the config implies [96, 48])",
    ),
    "relearn a checkpoint wider in its config than its tensors": (
        [*RELEARN[:1], "badconfig", *RELEARN[2:], "--out", "out"],
        "badconfig: its config.json says hidden_size 48, but tensor model.embed_tokens.weight is [96, 32]",
    ),
    "compare a checkpoint wider in its config than its tensors": (
        [*COMPARE[:2], "badconfig", *COMPARE[3:]],
        "badconfig: its config.json says hidden_size 48, but tensor model.embed_tokens.weight is [96, 32]",
    ),
    "given checkpoint with more layers in its config than its tensors": (
        [*AUDIT, "--unlearned", "layersconfig", "--out", "out"],
        "layersconfig: its config.json says num_hidden_layers 3, but the checkpoint holds tensors "
        "of 2 layers (none of layer 2)",
    ),
    "relearn a checkpoint with more key-value heads in its config": (
        [*RELEARN[:1], "kvconfig", *RELEARN[2:], "--out", "out"],
        "kvconfig: its config.json says num_attention_heads × head_dim = 4 × 8 = 32, "
        "num_key_value_heads × head_dim = 4 × 8 = 32, hidden_size 32, but tensor "
        "model.layers.0.self_attn.k_proj.weight is [16, 32] in the checkpoint (16 where the "
        "config implies [32, 32])",
    ),
    # Whatever a data library raises is one line naming the spec.
    "hf dataset with a loading script": (
        [*AUDIT, "--forget", "hf:scripted:train", "--out", "out"],
        "hf:scripted:train: cannot load it: Dataset scripts are no longer supported",
    ),
    "relearn on a data set of 0 rows": (
        [*RELEARN, "--data", "empty_ds", "--out", "out"],
        "empty_ds: the data set has 0 rows; give at least one item",
    ),
    "JSON nested past the recursion limit": (
        [*COMPARE[:3], "--data", "deep.json"],
        "deep.json: cannot read it (RecursionError: maximum recursion depth exceeded",
    ),
    # A link as --out: a dangling one is refused before the model loads, naming the link.
    "audit out is a dangling link": (
        [*AUDIT, "--out", "dangling"],
        "--out dangling is a symbolic link to nowhere, which does not exist",
    ),
    "unlearn out is a dangling link": (
        [*UNLEARN, "--out", "dangling"],
        "--out dangling is a symbolic link to nowhere, which does not exist",
    ),
    "compare out is a dangling link": (
        [*COMPARE, "--out", "dangling"],
        "--out dangling is a symbolic link to nowhere, which does not exist",
    ),
    "audit repeated items": (
        [*AUDIT, "--forget", "repeated.jsonl", "--out", "out"],
        "forget set: only 1 distinct items (8 items, 7 of them repeats); debiased CKA needs at least 4",
    ),
    "compare repeated items": (
        [*COMPARE[:3], "--data", "repeated.jsonl"],
        "repeated.jsonl: only 1 distinct items",
    ),
}
if os.geteuid() != 0:  # root writes anywhere: the case needs an ordinary user
    CASES["audit out under a read-only directory"] = (
        [*AUDIT, "--out", "readonly/run"],
        "readonly is not writable",
    )
    CASES["unlearn out under a read-only directory"] = (
        [*UNLEARN, "--out", "readonly/run"],
        "readonly is not writable",
    )
if not torch.cuda.is_available():
    CASES["inspect on a missing GPU"] = (
        ["inspect", "--device", "cuda"],
        "--device cuda: this machine has no CUDA device",
    )


@pytest.mark.parametrize("argv, message", list(CASES.values()), ids=list(CASES))
def test_fails_in_one_line_with_exit_2_and_changes_nothing(
    workspace, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(workspace)
    before = _tree(workspace)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert _tree(workspace) == before, "a failed command must leave every directory as it was"


def test_audit_with_truncate_shortens_over_long_items_and_goes_on(workspace, monkeypatch, capsys):
    """Forget and control items are 6 tokens, retain items 5: with --max-tokens 5 --truncate the audit passes
    the length check (warning once per split truncated, the relearning file too) and stops at the next check."""
    monkeypatch.chdir(workspace)
    argv = [
        *AUDIT,
        "--max-tokens",
        "5",
        "--truncate",
        "--relearn-source",
        "control.jsonl",
        "--requests",
        "5",
        "--out",
        "out",
    ]
    assert main(argv) == 2
    err = " ".join(
        capsys.readouterr().err.split()
    )  # rich wraps the warnings to the test's 80 columns
    note = "of 4 items were longer than --max-tokens 5; truncated from the left to at most 5 tokens, answers kept whole"
    for split in ("forget", "control", "relearn"):
        assert f"warning: {split}: 4 {note}" in err
    assert "warning: retain:" not in err
    assert err.endswith(
        "error: requests=5 is more than the 4 forget items kept; each request needs at least one item"
    )
    assert not (workspace / "out").exists()
