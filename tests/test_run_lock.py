"""The run lock between real processes: a second run into the same `--out` refuses at once, naming
the directory and the holder's process id, and a lock left by a killed process is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from memorised import FORGET, tokenizer

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.errors import RunLockedError
from unlearn_lens.run_lock import lock_path, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys\n"
    "from unlearn_lens.run_lock import run_lock\n"
    "with run_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)
"""A process that holds the run lock of a directory until its stdin closes (or it is killed)."""
WAIT = 120
"""Seconds a subprocess may take; a refusal that waited for the lock would run into it."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _holder(directory: Path) -> subprocess.Popen:
    """A second process holding the run lock of `directory` once this returns."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny checkpoint `ck` and forget items, enough for `compare ck ck --out DIR` to run."""
    root = tmp_path_factory.mktemp("locks")
    tok = tokenizer()
    ul.save_checkpoint(
        ul.load(ul.tiny_llama(len(tok)), tokenizer=tok, backend="nnsight"), root / "ck"
    )
    (root / "forget.jsonl").write_text(
        "".join(json.dumps(item.to_dict()) + "\n" for item in FORGET)
    )
    return root


COMPARE = ["compare", "ck", "ck", "--data", "forget.jsonl", "--no-fisher", "--backend", "nnsight"]


@pytest.mark.parametrize(
    "argv",
    [
        [*COMPARE, "--out", "out"],
        ["audit", "--model", "ck", "--forget", "forget.jsonl", "--out", "out"],
        ["unlearn", "--model", "ck", "--forget", "forget.jsonl", "--out", "out"],
        ["relearn", "ck", "--data", "forget.jsonl", "--out", "out"],
    ],
    ids=["compare", "audit", "unlearn", "relearn"],
)
def test_a_second_process_refuses_at_once_naming_the_directory_and_the_holder(workspace, argv):
    holder = _holder(workspace / "out")
    try:
        before = _tree(workspace)
        second = subprocess.run(
            [sys.executable, "-m", "unlearn_lens.cli", *argv],
            check=False,
            cwd=workspace,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=WAIT,  # the holder never lets go: a second run that waited would time out
        )
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert lines[0].startswith(f"error: out is in use by process {holder.pid} "), lines[0]
        assert _tree(workspace) == before, "the refused run wrote nothing"
        assert holder.poll() is None, "the holder still runs and holds the lock"
    finally:
        holder.stdin.close()
        holder.wait(timeout=WAIT)
    assert not lock_path(workspace / "out").exists(), "the holder removes its lock file"
    assert not (workspace / "out").exists()


def test_force_over_a_run_is_refused_while_another_process_writes_there(workspace, monkeypatch):
    """`--force` replaces a run whole (written beside it, then swapped in): the lock covers the
    directory's place, so a forced run cannot start its replacement under a running one."""
    finished = workspace / "finished"
    finished.mkdir()
    (finished / "comparison.json").write_text("{}\n")
    holder = _holder(finished)
    try:
        monkeypatch.chdir(workspace)
        with (
            pytest.raises(RunLockedError, match=f"finished is in use by process {holder.pid}"),
            run_lock(finished),
        ):
            pass
        assert main([*COMPARE, "--out", "finished", "--force"]) == 2
        assert (finished / "comparison.json").read_text() == "{}\n"
    finally:
        holder.stdin.close()
        holder.wait(timeout=WAIT)


def test_a_lock_left_by_a_killed_process_is_taken_over_in_one_line(workspace, monkeypatch, capsys):
    holder = _holder(workspace / "taken")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=WAIT)
    left = lock_path(workspace / "taken")
    assert left.read_text().strip() == str(holder.pid), "a killed holder leaves its lock file"
    monkeypatch.chdir(workspace)
    before = set(_tree(workspace))
    assert main([*COMPARE, "--out", "taken"]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "lock" in line]
    assert notes == [
        f"note: taken: took over the run lock left by process {holder.pid}, which is no longer running"
    ], err
    assert (workspace / "taken" / "comparison.json").is_file()
    after = set(_tree(workspace))
    assert after - before == {
        str(p.relative_to(workspace)) for p in (workspace / "taken").rglob("*")
    } | {"taken"}
    assert before - after == {left.name}, "the taken-over lock file is gone once the run ends"


def test_nested_locks_in_one_process_share_it_and_leave_nothing(tmp_path):
    out = tmp_path / "runs" / "new" / "out"
    with run_lock(out):
        with run_lock(out):  # the CLI holds --out, the library's audit locks it again
            assert lock_path(out).read_text().strip() == str(os.getpid())
        assert lock_path(out).exists(), "the outer lock still holds"
    assert list(tmp_path.iterdir()) == [], "the lock file and the parents it made are removed"


def test_a_lock_through_a_link_is_the_lock_of_its_target(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to("target")
    assert (
        lock_path(tmp_path / "link") == lock_path(tmp_path / "target") == tmp_path / ".target.lock"
    )
