"""The whole study on a tiny model that memorised a few facts: results, resume, reports, CLI errors."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

from unlearn_lens.atomic import json_safe
from unlearn_lens.cli import main
from unlearn_lens.errors import ConfigError
from unlearn_lens.localize import MAX_POINTS
from unlearn_lens.report.render import REPORT_FILE, render_run
from unlearn_lens.schema import dump
from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.results import AuditResults


def _write(path, items):
    path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
    return str(path)


@pytest.fixture
def tiny_config(tmp_path):
    return StudyConfig(
        model="tiny",
        forget=_write(tmp_path / "forget.jsonl", FORGET),
        retain=_write(tmp_path / "retain.jsonl", RETAIN),
        control=_write(tmp_path / "control.jsonl", CONTROL),
        methods=("ga", "npo"),
        lr=1e-2,
        steps=4,
        batch_size=4,
        relearn_steps=4,
        relearn_lr=1e-2,
        max_items=None,
    )


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_audit_runs_every_stage_and_round_trips(tmp_path, tiny_config):
    subject = memorised_subject()
    original = subject.snapshot()
    results = audit(
        tiny_config, out=tmp_path / "run", subject=subject, progress=False, console=_quiet()
    )
    assert results.status == "complete"
    for method in ("ga", "npo"):
        result = results.methods[method]
        assert (
            result.regime is not None
            and result.localization is not None
            and result.logit_lens is not None
        )
        recovery = result.relearn.recovery["accuracy"]
        assert recovery.unlearned < recovery.original, "unlearning must lower forget accuracy"
        assert set(result.comparisons) == {
            "unlearned/forget",
            "unlearned/retain",
            "relearned/forget",
            "relearned/retain",
        }
        # The default localisation: attribution with the exact depth search it summarises.
        assert result.reversion is None and result.heads is None
        assert result.localization.forgetting_depth == result.attribution.depth.forgetting_depth
        assert result.localization.columns[
            "attribution_nll"
        ] == result.attribution.attribution.forget.blocks(fraction=True)
    assert all((subject.weight(k).cpu() == original[k]).all() for k in subject.keys()), (
        "audit leaves the original weights"
    )
    loaded = AuditResults.load(tmp_path / "run")
    # Everything written comes back (non-finite values are stored as null and read back as NaN).
    assert json_safe(loaded.to_json()) == json.loads(
        (tmp_path / "run" / "results.json").read_text()
    )
    assert not (tmp_path / "run" / "snapshots").exists(), (
        "snapshots are dropped once the run is complete"
    )


def test_interrupted_audit_keeps_finished_stages_and_resumes(tmp_path, tiny_config):
    stages_seen = []

    def interrupt_after_first_relearn(results: AuditResults) -> None:
        ga = results.methods.get("ga")
        stages_seen.append(ga is not None and ga.relearn is not None)
        if (
            ga is not None
            and ga.relearn is not None
            and ga.localization is None
            and not ga.comparisons
        ):
            raise KeyboardInterrupt

    subject = memorised_subject()
    with pytest.raises(KeyboardInterrupt):
        audit(
            tiny_config,
            out=tmp_path / "run",
            subject=subject,
            progress=False,
            console=_quiet(),
            on_stage=interrupt_after_first_relearn,
        )
    saved = AuditResults.load(tmp_path / "run")
    assert saved.status == "interrupted"
    assert saved.methods["ga"].unlearn is not None and saved.methods["ga"].relearn is not None
    assert not saved.methods["ga"].comparisons
    unlearn_history = dump(saved.methods["ga"].unlearn)

    with pytest.raises(ConfigError, match="already holds"):
        audit(tiny_config, out=tmp_path / "run", subject=subject, progress=False, console=_quiet())
    with pytest.raises(ConfigError, match="other settings"):
        audit(
            tiny_config.with_values(steps=5),
            out=tmp_path / "run",
            resume=True,
            subject=subject,
            progress=False,
            console=_quiet(),
        )

    resumed = audit(
        tiny_config,
        out=tmp_path / "run",
        resume=True,
        subject=subject,
        progress=False,
        console=_quiet(),
    )
    assert resumed.status == "complete"
    assert dump(resumed.methods["ga"].unlearn) == unlearn_history, "finished stages are not redone"
    assert resumed.methods["ga"].regime is not None and resumed.methods["npo"].regime is not None


def test_localization_modes_measure_the_same_depth(tiny_config):
    """Same seed, same unlearned model: the attribution mode's bisection finds the depth the exact
    sweep's full last-k curve implies, and its exact reversions are the sweep's numbers."""
    config = tiny_config.with_values(methods=("ga",))
    attributed = audit(
        config, subject=memorised_subject(), progress=False, console=_quiet()
    ).methods["ga"]
    exact = audit(
        config.with_values(localization="exact"),
        subject=memorised_subject(),
        progress=False,
        console=_quiet(),
    ).methods["ga"]
    assert exact.attribution is None and exact.reversion is not None and exact.heads is not None
    assert (
        attributed.comparisons["unlearned/forget"].updated_metrics
        == exact.comparisons["unlearned/forget"].updated_metrics
    )
    sweep, localized = exact.reversion, attributed.attribution
    effects = sweep.last_k_effects()
    depth = attributed.localization.forgetting_depth
    assert (
        depth is not None
        and effects[depth] >= sweep.restore_fraction
        and (depth == 0 or effects[depth - 1] < sweep.restore_fraction)
    )
    if all(b >= a for a, b in itertools.pairwise(effects)):
        assert depth == sweep.forgetting_depth
    for k, effect in localized.depth.last_k.items():
        assert effect == pytest.approx(effects[k], rel=1e-5, abs=1e-6)
    check = localized.check
    assert check.block_exact == pytest.approx(
        [sweep.layer_effects()[layer] for layer in check.blocks], rel=1e-5, abs=1e-6
    )
    attribution = localized.attribution
    assert attribution.forget.heads().shape == (2, 4)
    # GA at lr 1e-2 takes the tiny model's forget NLL from 0.02 to 17 along a sharp path: the rule is
    # refined to its last size, and a residual still above tolerance is a warning.
    converged = [line for line in localized.warnings() if "did not converge" in line]
    assert (attribution.converged and not converged) or (
        attribution.points == MAX_POINTS and converged
    ), attribution.residual


@pytest.mark.parametrize("terminal", [False, True])
def test_off_a_terminal_each_stage_ends_with_one_timed_line(tiny_config, terminal):
    """CI logs and pipes get a line per stage and method (transient bars would leave nothing); a terminal gets bars."""
    console = Console(file=io.StringIO(), force_terminal=terminal, width=200)
    audit(tiny_config, subject=memorised_subject(), console=console)
    lines = re.findall(r"^(.+) done in \d+\.\d s$", console.file.getvalue(), flags=re.MULTILINE)
    stages = ["unlearn", "relearn", "diagnostics", "battery", "localization"]
    expected = ["data (checks, known filter, original metrics)"] + [
        f"{m}: {stage}" for m in ("ga", "npo") for stage in stages
    ]
    assert lines == ([] if terminal else expected)


def test_unknown_localization_is_refused():
    with pytest.raises(ConfigError, match="localization must be one of attribution, exact"):
        StudyConfig(localization="sweep").validate()


@pytest.mark.parametrize("localization", ["attribution", "exact"])
def test_report_renders_terminal_figures_and_self_contained_html(
    tmp_path, tiny_config, localization
):
    results = audit(
        tiny_config.with_values(methods=("ga",), localization=localization),
        out=tmp_path / "run",
        subject=memorised_subject(),
        progress=False,
        console=_quiet(),
    )
    console = Console(record=True, width=200, file=io.StringIO())
    render_run(results, tmp_path / "run", console, verbose=True)
    text = console.export_text()
    assert "Audit summary" in text and "ga" in text and "per layer" in text
    ga = results.methods["ga"]
    source, control = ga.relearn.work["source"], ga.relearn.work["control"]
    assert (
        f"relearning attack: {source.steps} steps at lr {source.lr:g}, {source.epochs:.2f} epochs"
        in text
    )
    assert f"control: {control.steps} steps, {control.epochs:.2f} epochs" in text
    assert (
        f"unlearning: {ga.unlearn.run.steps_run} steps × {ga.unlearn.run.config.batch_size} items"
        in text
    )
    assert "relearning vs unlearning: overall cosine" in text and "‖ΔW‖ by unlearning step:" in text
    assert re.search(r"│\s*embed \(input\)( \(tied\))?\s*│", text) and re.search(
        r"│\s*head( \(tied\))?\s*│", text
    )
    assert "[thresholds:forgotten≥50%" in "".join(text.split())  # wrapped lines
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    by_mode = {
        "exact": ("ga-reversion.png", "ga-heads.png"),
        "attribution": ("ga-attribution.png", "ga-head-attribution.png"),
    }
    if localization == "attribution":
        assert (
            "weight attribution over 8 heads: completeness residual" in text and "top heads" in text
        )
        assert "attributed ℓ: nll" in text and "revert ℓ: nll" not in text
    for expected in (
        "ga-cka.png",
        "ga-pc1.png",
        "ga-pca-shift.png",
        "ga-delta-share.png",
        *by_mode[localization],
        "ga-training.png",
        "ga-where.png",
        "ga-recovery.png",
        "ga-updates.png",
        "ga-correlations.png",
    ):
        assert expected in figures
        assert (tmp_path / "run" / "figures" / expected).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "run" / REPORT_FILE).read_text()
    assert page.count("data:image/png;base64,") >= 11
    # The first screen carries the findings: the cards, then where the forgetting lives beside
    # the recovery curves, with the verdicts' evidence and thresholds one click away.
    summary = page.index("<h2>Summary")
    assert (
        page.index("class='card'")
        < page.index("Findings: ga")
        < page.index("Where the forgetting lives")
        < page.index("<summary>Evidence and thresholds</summary>")
        < summary
    )
    assert page.index("Recovery curves") < summary
    assert "<details><summary>Per-layer evidence" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), (
        "the report must not fetch anything"
    )
    assert results.methods["ga"].regime.label in page
    assert ("Verification: share of the forget NLL effect" in page) == (
        localization == "attribution"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["audit", "--method", "gaa"], "unknown"),
        (["audit", "--domain", "bio"], "--domain 'bio' is unknown"),
        (["audit", "--forget", "/nonexistent.jsonl"], "--forget /nonexistent.jsonl: no such file"),
        (["audit", "--lr", "-1"], "lr must be positive"),
        (["report", "/nonexistent-run"], "no results here"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if args[0] == "audit" else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def _numbers(payload, path=""):
    """Every number in a results payload by its path, leaving out wall-clock times and the environment."""
    if isinstance(payload, dict):
        return {
            key: value
            for name, item in payload.items()
            if name not in ("seconds", "environment", "status")
            for key, value in _numbers(item, f"{path}.{name}").items()
        }
    if isinstance(payload, list):
        return {
            key: value
            for index, item in enumerate(payload)
            for key, value in _numbers(item, f"{path}[{index}]").items()
        }
    return {path: payload}


def _assert_same_numbers(results: AuditResults, expected: AuditResults) -> None:
    got, want = _numbers(json_safe(results.to_json())), _numbers(json_safe(expected.to_json()))
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float) and not isinstance(got[key], bool):
            assert got[key] == pytest.approx(value, rel=1e-6, abs=0), key
        else:
            assert got[key] == value, key


class Interrupt:
    """Ctrl-C in the middle of the audit: a KeyboardInterrupt raised from the subject's `n`-th forward pass."""

    def __init__(self, subject, at: int | None = None) -> None:
        self.subject, self.at, self.calls, self.run = subject, at, 0, subject.run
        subject.run = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.run(*args, **kwargs)

    def remove(self) -> None:
        del self.subject.run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One audit run through without a stop, with the forward-pass count at each saved stage."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config = StudyConfig(
        model="tiny",
        forget=_write(root / "forget.jsonl", FORGET),
        retain=_write(root / "retain.jsonl", RETAIN),
        control=_write(root / "control.jsonl", CONTROL),
        methods=("ga", "npo"),
        lr=1e-2,
        steps=3,
        batch_size=4,
        relearn_steps=3,
        relearn_lr=1e-2,
        max_items=None,
    )
    subject = memorised_subject()
    counter = Interrupt(subject)
    stages = []
    results = audit(
        config,
        out=root / "run",
        subject=subject,
        progress=False,
        console=_quiet(),
        on_stage=lambda _: stages.append(counter.calls),
    )
    counter.remove()
    return config, subject, results, stages


def test_same_seed_gives_identical_numbers(uninterrupted, tmp_path):
    config, subject, expected, _ = uninterrupted
    again = audit(config, out=tmp_path / "again", subject=subject, progress=False, console=_quiet())
    got, want = _numbers(json_safe(again.to_json())), _numbers(json_safe(expected.to_json()))
    assert got == want


STAGES = (
    "data",
    "ga unlearn",
    "ga relearn",
    "ga diagnostics",
    "ga localisation",
    "npo unlearn",
    "npo relearn",
    "npo diagnostics",
    "npo localisation",
)


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_interrupted_in_any_stage_resumes_to_the_uninterrupted_numbers(
    uninterrupted, tmp_path, stage
):
    config, subject, expected, stages = uninterrupted
    # Stage boundaries are the forward-pass counts at each save (the regime saves without a pass).
    boundaries = sorted({0, *stages})
    at = (boundaries[stage] + boundaries[stage + 1]) // 2 + 1
    interrupt = Interrupt(subject, at=at)
    try:
        with pytest.raises(KeyboardInterrupt):
            audit(config, out=tmp_path / "run", subject=subject, progress=False, console=_quiet())
    finally:
        interrupt.remove()
    resumed = audit(
        config, out=tmp_path / "run", resume=True, subject=subject, progress=False, console=_quiet()
    )
    assert resumed.status == "complete"
    _assert_same_numbers(resumed, expected)


def test_force_replaces_a_finished_run_only_once_the_new_one_completes(uninterrupted, tmp_path):
    config, subject, _, _ = uninterrupted
    config = config.with_values(methods=("ga",))
    out = tmp_path / "run"
    audit(config, out=out, subject=subject, progress=False, console=_quiet())
    (out / "notes.txt").write_text("kept until the replacement is complete\n")
    finished = {path.name: path.read_bytes() for path in out.iterdir()}
    replacement = config.with_values(steps=2)

    def stop_after_unlearning(results: AuditResults) -> None:
        if results.methods.get("ga") is not None and results.methods["ga"].unlearn is not None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit(
            replacement,
            out=out,
            force=True,
            subject=subject,
            progress=False,
            console=_quiet(),
            on_stage=stop_after_unlearning,
        )
    assert {path.name: path.read_bytes() for path in out.iterdir()} == finished, (
        "the old run is whole while the new one runs"
    )
    with pytest.raises(ConfigError, match="other settings"):
        audit(config, out=out, resume=True, subject=subject, progress=False, console=_quiet())

    resumed = audit(
        replacement, out=out, resume=True, subject=subject, progress=False, console=_quiet()
    )
    assert resumed.status == "complete" and AuditResults.load(out).config == replacement
    assert sorted(path.name for path in out.iterdir()) == ["results.json"], (
        "the replacement takes the directory whole"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"], (
        "no staging or retired directory is left"
    )
