"""A symbolic link as `--out`: written through (said in one line), `--force` replaces the target's
contents and leaves the link, and nothing else is left beside them, after success or failure."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

from unlearn_lens.atomic import staged_directory
from unlearn_lens.cli import main
from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.results import AuditResults


def _write(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
    return str(path)


def _entries(directory: Path) -> dict[str, str]:
    """The names in `directory`, each a link's target or 'dir' / 'file'."""
    return {
        path.name: f"link to {os.readlink(path)}"
        if path.is_symlink()
        else ("dir" if path.is_dir() else "file")
        for path in directory.iterdir()
    }


def test_audit_force_through_a_link_replaces_the_target_and_keeps_the_link(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = StudyConfig(
        model="tiny",
        forget=_write(data / "forget.jsonl", FORGET),
        retain=_write(data / "retain.jsonl", RETAIN),
        control=_write(data / "control.jsonl", CONTROL),
        methods=("ga",),
        lr=1e-2,
        steps=2,
        batch_size=4,
        relearn_steps=2,
        relearn_lr=1e-2,
        max_items=None,
    )
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "link").symlink_to("runs/target")
    subject = memorised_subject()
    audit(
        config,
        out=runs / "target",
        subject=subject,
        progress=False,
        console=Console(file=io.StringIO()),
    )
    (runs / "target" / "notes.txt").write_text("the old run's file\n")
    log = io.StringIO()
    replacement = config.with_values(steps=3)
    audit(
        replacement,
        out=tmp_path / "link",
        force=True,
        subject=subject,
        progress=False,
        console=Console(file=log, width=400),
    )
    assert (
        f"note: --out {tmp_path / 'link'} is a symbolic link: writing into its target {runs / 'target'}"
        in log.getvalue().splitlines()
    )
    assert _entries(tmp_path) == {"data": "dir", "runs": "dir", "link": "link to runs/target"}
    assert _entries(runs) == {"target": "dir"}, "no staging, retired copy or lock file is left"
    assert _entries(runs / "target") == {"results.json": "file"}, "the target was replaced whole"
    assert AuditResults.load(tmp_path / "link").config == replacement


def test_compare_force_through_a_link_and_a_failure_through_it(tmp_path, monkeypatch, capsys):
    from memorised import tokenizer

    import unlearn_lens as ul

    tok = tokenizer()
    ul.save_checkpoint(
        ul.load(ul.tiny_llama(len(tok)), tokenizer=tok, backend="nnsight"), tmp_path / "ck"
    )
    _write(tmp_path / "forget.jsonl", FORGET)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a",\n')
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "comparison.json").write_text("{}\n")
    (tmp_path / "out").symlink_to("target")
    monkeypatch.chdir(tmp_path)
    compare = [
        "compare",
        "ck",
        "ck",
        "--no-fisher",
        "--backend",
        "nnsight",
        "--out",
        "out",
        "--force",
    ]
    link_note = f"note: --out out is a symbolic link: writing into its target {tmp_path / 'target'}"

    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert main([*compare, "--data", "bad.jsonl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == link_note, err
    assert err[1].startswith("error: bad.jsonl:1: invalid JSON"), err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert sorted(_entries(tmp_path)) == ["bad.jsonl", "ck", "forget.jsonl", "out", "target"]

    assert main([*compare, "--data", "forget.jsonl"]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [link_note]
    assert _entries(tmp_path)["out"] == "link to target"
    assert sorted(_entries(tmp_path)) == ["bad.jsonl", "ck", "forget.jsonl", "out", "target"]
    written = json.loads((tmp_path / "target" / "comparison.json").read_text())
    assert written["reference"] == "ck" and written["n_items"] == len(FORGET)


def test_staged_directory_through_a_link_replaces_the_target(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "old.txt").write_text("old\n")
    (tmp_path / "link").symlink_to("target")
    with staged_directory(tmp_path / "link") as staging:
        (staging / "new.txt").write_text("new\n")
    assert _entries(tmp_path) == {"link": "link to target", "target": "dir"}
    assert _entries(tmp_path / "target") == {"new.txt": "file"}
