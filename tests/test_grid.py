"""Grids of audits on the tiny memorised model: in this process and on a local Ray the same
numbers, a killed worker's cell recomputed, a failing cell reported while the others finish, an
interrupted grid resumed without redoing finished cells, and grid-file errors in one line."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.cli import main
from unlearn_lens.grid import (
    CellStore,
    LocalExecutor,
    RayExecutor,
    audit_grid,
    load_grid,
    run_grid,
    summary_rows,
    write_summary,
)
from unlearn_lens.grid.cells import CELL_FILE, ERROR_FILE
from unlearn_lens.study.audit import audit
from unlearn_lens.study.results import RESULTS_FILE, AuditResults

GRID = """\
[fixed]
model = "{root}/ck"
backend = "nnsight"
forget = "{root}/forget.jsonl"
retain = "{root}/retain.jsonl"
control = "{root}/control.jsonl"
steps = 4
batch_size = 4
relearn_steps = 4
relearn_lr = 1e-2
max_items = 8

[axes]
method = ["ga", "npo"]
{lr_axis}

[resources]
num_cpus = 1
memory = "1GiB"
"""
"""A 4-cell grid (method × lr) of audits that take about half a second each."""
LR_AXIS = "lr = [1e-2, 3e-2]"
TIMINGS = {"seconds", "started", "environment"}
"""Keys whose values are wall-clock times or the machine, not numbers an audit computed."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The memorised model saved as `ck`, and its three sets as JSONL files."""
    root = tmp_path_factory.mktemp("grid")
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    ul.save_checkpoint(memorised_subject(), root / "ck")
    return root


def _grid_file(root: Path, name: str = "grid.toml", lr_axis: str = LR_AXIS) -> Path:
    path = root / name
    path.write_text(GRID.format(root=root, lr_axis=lr_axis))
    return path


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def local_run(workspace) -> Path:
    """The 4-cell grid run in this process, once for the module."""
    out = workspace / "local"
    run = audit_grid(_grid_file(workspace), out, console=_quiet())
    assert [run.records[cell.id].status for cell in run.cells] == ["complete"] * 4
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs, started by the test, shut down after the module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _numbers(data):
    """Results data without wall-clock times and environment."""
    if isinstance(data, dict):
        return {key: _numbers(value) for key, value in data.items() if key not in TIMINGS}
    if isinstance(data, list):
        return [_numbers(value) for value in data]
    return data


def _cell_numbers(out: Path) -> dict[str, dict]:
    return {
        directory.name: _numbers(json.loads((directory / RESULTS_FILE).read_text()))
        for directory in sorted((out / "cells").iterdir())
    }


def test_a_cell_is_the_plain_audit_of_its_settings(workspace, local_run):
    """Independent reference: the audit run directly on one cell's settings gives its numbers."""
    spec = load_grid(_grid_file(workspace))
    assert len(spec.cells) == 4 and len({cell.id for cell in spec.cells}) == 4
    cell = spec.cells[-1]
    assert cell.axes == {"method": "npo", "lr": 3e-2} and cell.config.methods == ("npo",)
    direct = audit(cell.config, progress=False, console=_quiet())
    stored = AuditResults.load(local_run / "cells" / cell.id)
    assert _numbers(direct.to_json()) == _numbers(stored.to_json())


def test_local_and_ray_give_the_same_numbers_cell_for_cell(workspace, local_run, ray_cluster):
    spec = load_grid(_grid_file(workspace))
    executor = RayExecutor(None, spec.resources)
    assert executor.slots == 2, "2 CPUs, one per cell"
    run = run_grid(spec, workspace / "ray", executor, console=_quiet())
    executor.close()
    assert ray_cluster.is_initialized(), "a Ray found running is left running"
    assert all(record.status == "complete" for record in run.records.values())
    workers = {record.worker for record in run.records.values()}
    assert all(int(worker.rsplit(":", 1)[1]) != os.getpid() for worker in workers)
    assert _cell_numbers(workspace / "ray") == _cell_numbers(local_run)


def _kill_first_cell_task(killed: list[int], stop: threading.Event) -> None:
    """Kill (SIGKILL) the first process that Ray titles as running a cell."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::run_cell"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
                return
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's worker by its /proc title")
def test_a_worker_killed_mid_cell_is_retried_and_the_cell_recomputed(
    workspace, local_run, ray_cluster
):
    spec = load_grid(_grid_file(workspace))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_cell_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        run = run_grid(
            spec, workspace / "killed", RayExecutor(None, spec.resources), console=_quiet()
        )
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "a worker was killed while it ran a cell"
    assert all(record.status == "complete" for record in run.records.values())
    assert all(not record.worker.endswith(f":{killed[0]}") for record in run.records.values()), (
        "the killed worker's cell was computed again elsewhere"
    )
    assert not [p for p in (workspace / "killed" / "cells").iterdir() if p.name.startswith(".")]
    assert _cell_numbers(workspace / "killed") == _cell_numbers(local_run)


def test_a_failing_cell_is_reported_the_others_finish_and_retry_failed_reruns_it(workspace, capsys):
    later = workspace / "later.jsonl"  # does not exist yet: a bad data spec in one axis value
    grid = workspace / "failing.toml"
    text = GRID.format(root=workspace, lr_axis="").replace(
        f'forget = "{workspace}/forget.jsonl"\n', ""
    )
    grid.write_text(
        text.replace(
            'method = ["ga", "npo"]',
            f'method = ["ga"]\nforget = ["{workspace}/forget.jsonl", "{later}"]',
        )
    )
    out = workspace / "failing"
    assert main(["grid", str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 cells failed" in err and "--retry-failed" in err
    spec = load_grid(grid)
    good, bad = spec.cells
    assert (out / "cells" / good.id / RESULTS_FILE).is_file()
    error = (out / "cells" / bad.id / ERROR_FILE).read_text()
    assert error == f"{later}: no such file\n"
    rows = {row["cell"]: row for row in summary_rows(spec, _records(spec, out), out)}
    assert rows[bad.id]["status"] == "failed" and rows[bad.id]["error"] == error.strip()
    assert rows[good.id]["regime"] is not None
    assert error.strip() in (out / "summary.html").read_text()

    finished = (out / "cells" / good.id / CELL_FILE).stat().st_mtime_ns
    assert main(["grid", str(grid), "--out", str(out)]) == 2, (
        "without --retry-failed it stays failed"
    )
    later.write_text((workspace / "forget.jsonl").read_text())
    assert main(["grid", str(grid), "--out", str(out), "--retry-failed"]) == 0
    assert (out / "cells" / bad.id / RESULTS_FILE).is_file()
    assert not (out / "cells" / bad.id / ERROR_FILE).exists()
    assert (out / "cells" / good.id / CELL_FILE).stat().st_mtime_ns == finished


def _records(spec, out):
    from unlearn_lens.grid.runner import GridRun

    store = CellStore(out)
    return GridRun(spec.cells, {c.id: r for c in spec.cells if (r := store.record(c))})


class CountingExecutor(LocalExecutor):
    """In this process, counting the cells it runs; with `interrupt_at`, ^C arrives as that
    cell starts."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.ran: list[str] = []
        self.interrupt_at = interrupt_at

    def map(self, fn, tasks):
        def counted(task):
            if len(self.ran) == self.interrupt_at:
                raise KeyboardInterrupt
            self.ran.append(task.id)
            return fn(task)

        return super().map(counted, tasks)


def test_an_interrupted_grid_resumes_without_rerunning_finished_cells(workspace, local_run):
    spec = load_grid(_grid_file(workspace))
    out = workspace / "interrupted"
    first = CountingExecutor(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec, out, first, console=_quiet())
    cells = out / "cells"
    assert sorted(p.name for p in cells.iterdir()) == sorted(first.ran), "no half-written cell"
    stamps = {name: (cells / name / CELL_FILE).stat().st_mtime_ns for name in first.ran}

    second = CountingExecutor()
    console = _quiet()
    run = run_grid(spec, out, second, console=console)
    assert sorted(second.ran) == sorted(c.id for c in spec.cells if c.id not in first.ran)
    assert {name: (cells / name / CELL_FILE).stat().st_mtime_ns for name in first.ran} == stamps
    assert "2 finished, 0 failed" in console.file.getvalue()
    assert "(stored) on 1 slot(s)" in console.file.getvalue(), "estimated from the stored cells"
    assert all(record.status == "complete" for record in run.records.values())
    assert _cell_numbers(out) == _cell_numbers(local_run)

    third = CountingExecutor()
    run_grid(spec, out, third, console=_quiet())
    assert third.ran == [], "a finished grid runs nothing"


def test_summary_files_agree_and_the_page_is_self_contained(workspace, local_run):
    import pyarrow.parquet as pq

    spec = load_grid(_grid_file(workspace))
    rows = summary_rows(spec, _records(spec, local_run), local_run)
    assert [(row["method"], row["lr"]) for row in rows] == [
        ("ga", 1e-2),
        ("ga", 3e-2),
        ("npo", 1e-2),
        ("npo", 3e-2),
    ]
    for row in rows:
        results = AuditResults.load(local_run / "cells" / row["cell"])
        verdict = results.methods[row["method"]].regime
        assert row["regime"] == verdict.label and row["recovery"] == verdict.evidence["recovery"]
        assert row["decided_by"] == verdict.decided_by
        battery = results.methods[row["method"]].battery
        readings = {r.attack: r for r in battery.readings} if battery else {}
        for key in (k for k in row if k.startswith("battery_")):
            attack, _, field = key.removeprefix("battery_").rpartition("_")
            reading = readings.get(attack)
            assert row[key] == (None if reading is None else getattr(reading, field)), key
    attacks = {k for k in rows[0] if k.startswith("battery_")}
    assert all(set(row) >= attacks for row in rows), "every row has every attack's columns"
    assert attacks, "the memorised model forgets at these rates: the battery ran"
    table = pq.read_table(local_run / "summary.parquet").to_pylist()
    assert table == rows
    csv_lines = (local_run / "summary.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["cell", "lr", "method"] and len(csv_lines) == 5
    page = (local_run / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.split("<body>")[1]
    paths = write_summary(spec, _records(spec, local_run), local_run)
    assert paths["html"].read_text() == page, "a summary is a pure rendering of the cells"


def test_cell_ids_are_stable_and_follow_the_settings(workspace):
    first = [cell.id for cell in load_grid(_grid_file(workspace)).cells]
    assert first == [cell.id for cell in load_grid(_grid_file(workspace)).cells]
    assert first[0].startswith("method=ga_lr=0.01-")
    changed = _grid_file(workspace, "changed.toml")
    changed.write_text(changed.read_text().replace("steps = 4\n", "steps = 5\n"))
    assert not set(first) & {cell.id for cell in load_grid(changed).cells}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fixed]\nsteps = 4\n[axis]\nlr = [1]\n", "g.toml:3: unknown table 'axis'"),
        (
            "[fixed]\nmodel = 'x'\nsteps = 'many'\n",
            "g.toml:3: [fixed]: setting 'steps' must be int",
        ),
        (
            "[axes]\nmethod = ['ga']\nlr = [1e-2, 'fast']\n",
            "g.toml:3: [axes] lr[1]: setting 'lr' must be float",
        ),
        ("[axes]\nlr = 1e-2\n", "g.toml:2: [axes] lr must be a non-empty list"),
        (
            "[axes]\ndata = [{ forgot = 'f.jsonl' }]\n",
            "g.toml:2: [axes] data[0]: unknown setting 'forgot'",
        ),
        ("[axes]\ndata = ['f.jsonl']\n", "g.toml:2: [axes] data[0]: 'data' is not a setting"),
        (
            "[fixed]\nlr = 1e-2\n\n[axes]\nlr = [1e-3]\n",
            "g.toml:5: [axes] lr sets 'lr', which [fixed] sets too",
        ),
        ("[axes]\nmethod = ['ga', 'unknown_method']\n", "g.toml:2: [axes] method[1]"),
        (
            "[resources]\nnum_gpus = 1\nmemory = 'lots'\n",
            "g.toml:3: [resources] memory: must be bytes or a size",
        ),
        ("[resources]\ngpus = 1\n", "g.toml:2: [resources] gpus: unknown resource"),
        ("[fixed]\nsteps = 4\nsteps = 5\n", "g.toml: invalid TOML"),
    ],
)
def test_grid_file_errors_name_file_line_and_key(tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("g.toml").write_text(text)
    assert main(["grid", "g.toml", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}"), err
    assert len(err.splitlines()) == 1 and not Path("out").exists()


def test_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch, workspace):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert (
        main(["grid", str(_grid_file(workspace)), "--out", str(tmp_path / "o"), "--ray", "auto"])
        == 2
    )
    err = capsys.readouterr().err
    assert "pip install 'unlearn-lens[ray]'" in err and not (tmp_path / "o").exists()
