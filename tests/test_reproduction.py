"""The validation study: its shipped grid file, cells read off their audits (features equal to
those measured afresh) on tiny models, and the page's claim rules."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.errors import ConfigError
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.numbers import percent
from unlearn_lens.predict.features import PREDICTOR_INPUTS, ReversibilityFeatures
from unlearn_lens.predict.model import validate
from unlearn_lens.regimes import RegimeThresholds, RegimeVerdict
from unlearn_lens.reproduction.cells import audit_features, read_study, study_cell
from unlearn_lens.reproduction.claims import check_claims
from unlearn_lens.reproduction.fitting import feature_matrix, setting, train_predictor
from unlearn_lens.reproduction.grid import (
    GRID_OBJECTIVES,
    STUDY_GRID,
    Cell,
    CellResult,
    GridSettings,
    study_grid,
)
from unlearn_lens.reproduction.kl_terms import KLMeasurement, TermRun, TermStep
from unlearn_lens.reproduction.page import write_page
from unlearn_lens.schema import dump, read
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.results import AuditResults


def test_settings_reject_bad_grids():
    with pytest.raises(ConfigError, match="unknown domain 'law'"):
        GridSettings(domains=("law",))
    with pytest.raises(ConfigError, match=r"unknown objective|unknown method"):
        GridSettings(methods=("forget_everything",))
    with pytest.raises(ConfigError, match="unknown protocol"):
        GridSettings(protocols=("batch",))
    with pytest.raises(ConfigError, match="at least 4"):
        GridSettings(n_items=3)


def test_the_shipped_grid_file_spans_the_study():
    spec, settings = study_grid()
    assert settings == GridSettings() and spec.path == str(STUDY_GRID)
    cells = [study_cell(cell) for cell in spec.cells]
    assert cells == settings.cells() and len(cells) == 3 * 4 * 2 * 2 == len(set(cells))
    assert {c.method for c in cells} == set(GRID_OBJECTIVES)  # the study's six less the KL twins
    assert {c.lr for c in cells} == {3e-6, 3e-5}
    assert [c.domain for c in cells[:3]] == ["text", "code", "math"]  # domains innermost
    for cell, grid_cell in zip(cells, spec.cells, strict=True):
        config = grid_cell.config
        assert (config.domain, config.methods, config.lr) == (cell.domain, (cell.method,), cell.lr)
        assert config.requests == (1 if cell.protocol == "single" else 4)
        assert (config.max_items, config.steps, config.batch_size) == (16, 8, 8)
    # The grid relearns with the audit's default steps and learning rate (see GridSettings for why).
    audit = StudyConfig()
    assert (settings.relearn_steps, settings.relearn_lr) == (audit.relearn_steps, audit.relearn_lr)


def test_a_grid_file_without_the_studys_axes_is_refused_in_one_line(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[axes]\nmethod = ["ga"]\ndomain = ["text"]\n')
    with pytest.raises(
        ConfigError,
        match=r"study\.toml: a study grid has the axes protocol, lr, "
        r"method, domain in this order, not method, domain",
    ) as refused:
        study_grid(path)
    assert "\n" not in str(refused.value)


STUDY = """\
[fixed]
model = "{root}/ck"
backend = "nnsight"
forget = "{root}/forget.jsonl"
retain = "{root}/retain.jsonl"
control = "{root}/control.jsonl"
steps = 3
batch_size = 4
relearn_steps = 4
relearn_lr = 1e-2
localization = "exact"

[axes]
protocol = [{{ requests = 1 }}, {{ requests = 2 }}]
lr = [3e-3]
method = ["ga"]
domain = ["text"]   # the cells' label: their data are the memorised facts above
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A 2-cell study grid of audits of the memorised model, run by `unlearn-lens grid`'s runner."""
    root = tmp_path_factory.mktemp("study")
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    ul.save_checkpoint(memorised_subject(), root / "ck")
    (root / "study.toml").write_text(STUDY.format(root=root))
    spec, settings = study_grid(root / "study.toml")
    ul.audit_grid(spec, root / "out", console=Console(file=io.StringIO()))
    return root, spec, settings


def test_study_cells_read_what_their_audits_measured(study_run):
    root, spec, settings = study_run
    results = read_study(spec, root / "out")
    assert (
        [r.cell for r in results]
        == settings.cells()
        == [
            Cell("text", "ga", 3e-3, "single"),
            Cell("text", "ga", 3e-3, "continual"),
        ]
    )
    for result, grid_cell in zip(results, spec.cells, strict=True):
        cell_dir = root / "out" / "cells" / grid_cell.id
        audited = AuditResults.load(cell_dir).methods["ga"]
        record = json.loads((cell_dir / "cell.json").read_text())
        assert result.regime == audited.regime and result.recovery == pytest.approx(
            audited.relearn.recovery["accuracy"].recovery
        )
        lost = result.original["forget"].accuracy - result.unlearned["forget"].accuracy
        relearned = audited.relearn.forget_after.accuracy - result.unlearned["forget"].accuracy
        assert result.recovery == pytest.approx(relearned / lost)
        assert result.seconds["total"] == pytest.approx(record["seconds"], abs=0.01)
        # The head-only reversion of the exact sweep is what the page quotes as the head's restore.
        assert result.head_restore["nll"] == audited.reversion.head.effect_nll
        assert read(CellResult, json.loads(json.dumps(dump(result)))) == result


def test_features_read_off_an_audit_equal_the_features_measured_afresh(study_run):
    root, spec, _ = study_run
    cell_dir = root / "out" / "cells" / spec.cells[0].id
    audited = AuditResults.load(cell_dir)
    # Independent reference: the audit's own unlearning redone by hand, then measure_features.
    subject = ul.load(str(root / "ck"), backend="nnsight")
    original = subject.snapshot()
    config = audited.config
    ul.unlearn(
        subject, FORGET, RETAIN, "ga", lr=config.lr, steps=config.steps,
        batch_size=config.batch_size, seed=config.seed, progress=False, keep_snapshots=False,
    )  # fmt: skip
    measured = ul.measure_features(subject, original, FORGET)
    read_off = audit_features(audited.methods["ga"])
    assert read_off.depth == measured.depth
    assert read_off.values == pytest.approx(measured.values, rel=1e-5, abs=1e-7, nan_ok=True)
    assert read_off.cka_forget == pytest.approx(measured.cka_forget, rel=1e-5, abs=1e-7)
    assert read_off.delta_share == pytest.approx(measured.delta_share, rel=1e-6)


# ----- the page's rules, on cells whose outcome is known ---------------------------------------


def _metrics(accuracy: float) -> TokenMetrics:
    return TokenMetrics(
        accuracy=accuracy,
        nll=1.0 - accuracy,
        perplexity=1.0,
        exact_match=accuracy,
        n_tokens=10,
        n_sequences=4,
    )


def _cell(
    domain, method, lr, protocol, *, reversible, catastrophic, cka, depth, recovery, rng, head=0.1
) -> CellResult:
    n_layers = 10
    # Blocks hold 80 % of the update, evenly; the last 3 (TOP_FRACTION of 10, rounded up) hold
    # 24 % of it, 30 % of the blocks'.
    values = {
        "cka_lower": cka,
        "cka_upper": cka - 0.05,
        "depth_fraction": depth / n_layers,
        "delta_share_top": 0.3,
        "delta_relative": lr * 10 + rng.normal() * 1e-6,
        "fisher_change": -cka + rng.normal() * 0.01,
    }
    label = {
        (True, False): "suppressed",
        (True, True): "collapsed but recoverable",
        (False, False): "forgotten",
        (False, True): "destroyed",
    }[(reversible, catastrophic)]
    return CellResult(
        cell=Cell(domain, method, lr, protocol),
        original={"forget": _metrics(1.0), "retain": _metrics(1.0)},
        unlearned={"forget": _metrics(0.1), "retain": _metrics(0.5 if catastrophic else 0.95)},
        relearned={"forget": _metrics(0.1 + 0.9 * recovery), "retain": _metrics(0.9)},
        control_before=0.0,
        control_after=0.1,
        recovery=recovery,
        peak_excess=recovery - 0.1 / 0.9,
        regime=RegimeVerdict(
            reversible=reversible,
            catastrophic=catastrophic,
            label=label,
            evidence={},
            thresholds=RegimeThresholds(),
        ),
        features=ReversibilityFeatures(
            values=values,
            cka_forget=[cka] * n_layers,
            delta_share=[0.08] * n_layers,
            fisher_change=[],
            depth=int(depth),  # an int, as the measurement gives it (not a numpy integer)
            depth_probes={},
        ),
        head_restore={"nll": head, "accuracy": head / 2},
        stop_reason="completed",
        seconds={"total": 1.0},
    )


def _synthetic_grid(settings: GridSettings) -> list[CellResult]:
    """Gentle single requests: reversible, intact; everything harsher: destroyed, lower CKA; all deep;
    recovery rising with the lower-half CKA."""
    rng = np.random.default_rng(0)
    cells = []
    for cell in settings.cells():
        gentle = cell.lr == min(settings.lrs) and cell.protocol == "single"
        cka = 0.985 + rng.uniform(0, 0.01) if gentle else 0.90 + rng.uniform(0, 0.02)
        cells.append(
            _cell(
                cell.domain,
                cell.method,
                cell.lr,
                cell.protocol,
                reversible=gentle,
                catastrophic=not gentle,
                cka=cka,
                depth=9,
                recovery=0.1 + 9 * (cka - 0.9),
                rng=rng,
            )
        )
    return cells


SYNTHETIC = GridSettings(
    domains=("text", "code"),
    methods=("ga", "npo"),
    lrs=(1e-6, 1e-4),
    protocols=("single", "continual"),
)


def test_a_cell_survives_its_json_round_trip():
    cell = _synthetic_grid(SYNTHETIC)[0]
    assert read(CellResult, json.loads(json.dumps(dump(cell)))) == cell
    assert dump(dataclasses.replace(cell, peak_excess=None))["peak_excess"] is None


def test_claims_follow_their_stated_rules():
    claims = check_claims(_synthetic_grid(SYNTHETIC), SYNTHETIC)
    assert [c.verdict for c in claims] == ["holds", "holds", "does not hold", "partly holds"]
    assert (
        "100 % are reversible" in claims[0].evidence
        and "mean lower-half CKA 0.99" in claims[0].evidence
    )
    assert "0 % of 16 forgotten cells have a forgetting depth ≤ 2 of 10" in claims[2].evidence
    assert (
        "learning rate: 1e-06 50 %, 0.0001 0 % (spread 50 %)" in claims[3].evidence
    )  # domain spread 0: partly


def test_page_and_figures_are_written(tmp_path):
    results = _synthetic_grid(SYNTHETIC)
    fit = train_predictor(results, SYNTHETIC)
    assert (
        fit.by_domain.spearman > 0.8
    )  # recovery follows CKA in these cells: held-out ranking finds it
    written = write_page(
        results,
        fit,
        SYNTHETIC,
        page=tmp_path / "validation.md",
        figure_dir=tmp_path / "figures",
        command="python benchmarks/validation.py",
        runtime_seconds=16.0,
    )
    text = (tmp_path / "validation.md").read_text()
    assert text.splitlines()[5] == "python benchmarks/validation.py"  # the command at the top
    assert "**16 cells**" in text and "| ga | 1e-06 | single | 1.00→0.10→0.9" in text
    assert (
        "leave one domain out" in text and "![Held-out predictions](figures/prediction.png)" in text
    )
    # Head restore is the 9th column; every synthetic cell restores 0.10 of its NLL with the head alone.
    assert "| depth | head restore | CKA lower |" in text and "| 9 | 0.10 | 0.9" in text
    assert "restores a median 0.10 of the forget NLL, 80 % or more in 0 % of the cells" in text
    # Blocks hold 0.08 each of the whole update; the top 3 of 10 hold 30 % of the blocks' and 24 % of the whole.
    assert "carry 30 % of the blocks' Σ‖ΔW‖²" in text and "and 24 % of the whole update's" in text
    assert (
        "every distinct weight tensor, a tied embedding and unembedding matrix counted once" in text
    )
    assert "(embeddings, final norm, unembedding) carry 20 % of it" in text
    # Reversible share of the forgotten cells: the gentle single-request quarter, so the base rate is 75 %.
    for held in fit.held_out:
        assert held.base_rate == 0.75
        assert f"| {percent(held.reversible_calls_correct)} | 75 % |" in text
    for path in written[1:]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A call that only ties the base rate is said to, by scheme, and the reader is sent to the ranking.
    beaten = [
        held.scheme for held in fit.held_out if held.reversible_calls_correct > held.base_rate
    ]
    tied = dataclasses.replace(
        fit, by_setting=dataclasses.replace(fit.by_setting, reversible_calls_correct=0.75)
    )
    text_tied = write_page(
        results,
        tied,
        SYNTHETIC,
        page=tmp_path / "tied.md",
        figure_dir=tmp_path / "figures",
        command="x",
        runtime_seconds=1.0,
    )[0].read_text()
    unbeaten = [scheme for scheme in ("leave one domain out",) if scheme not in beaten] + [
        "leave one setting out"
    ]
    assert f"does not beat the base rate ({', '.join(unbeaten)})" in text_tied
    assert ("does not beat the base rate" in text) == (len(beaten) < 2)


def _with_inconclusive(results: list[CellResult], domain: str) -> list[CellResult]:
    """`domain`'s irreversible cells made inconclusive: the budget taught their control 0.05,
    below `min_control_gain`."""
    return [
        dataclasses.replace(
            r,
            control_after=0.05,
            regime=dataclasses.replace(r.regime, label="inconclusive", reversible=None),
        )
        if r.cell.domain == domain and not r.regime.reversible
        else r
        for r in results
    ]


def test_inconclusive_cells_are_counted_and_left_out_of_every_reversible_share(tmp_path):
    settings = dataclasses.replace(SYNTHETIC, relearn_steps=6, relearn_lr=3e-5)
    results = _with_inconclusive(_synthetic_grid(settings), "code")
    # Classified: text's 8 cells (its 2 gentle ones reversible) and code's 2 gentle ones (reversible);
    # code's 6 harsher cells are inconclusive. Counted as irreversible, code's share would be 25 % like text's.
    claims = check_claims(results, settings)
    assert "by domain: text 25 %, code 100 % (spread 75 %)" in claims[3].evidence
    assert (
        "lr 0.0001 or continual requests: 12 forgotten cells, 6 of them inconclusive (the budget taught the control "
        "too little) and left out; of the 6 classified 100 % irreversible"
    ) in claims[1].evidence
    assert "4 of 4 cells forgot; of the 4 classified 100 % are reversible" in claims[0].evidence
    fit = train_predictor(results, settings)
    assert len(fit.cells) == 10 and fit.predictor.trained_on["inconclusive_left_out"] == 6
    text = write_page(
        results,
        fit,
        settings,
        page=tmp_path / "v.md",
        figure_dir=tmp_path / "figures",
        command="x",
        runtime_seconds=1.0,
    )[0].read_text()
    assert (
        "*Inconclusive*: 6 of the 16 forgotten cells" in text
        and "Fitted on the 10 classified cells" in text
    )
    assert (
        "| lr | protocol | destroyed | inconclusive | suppressed | mean recovery (classified) |"
        in text
    )
    assert "| 1e-06 | continual | 2 | 2 | 0 |" in text
    # The relearning budget beside the unlearning budget, and what it taught the control (10 cells 0.10, 6 cells 0.05).
    assert (
        "Relearning attack: 6 steps of 8 at lr 3e-05 on the forget set (3 epochs of its 16 items)"
        in text
        and "Unlearning, for comparison: 8 steps of 8 per request, 8 (single) or 32 (continual) in all, at lr 1e-06, "
        "0.0001. Across the 16 cells it raised the control's token accuracy by a median 0.10 (range 0.05 to 0.10)."
        in text
    )
    assert (
        "*inconclusive* when recovery < 0.5 but the budget raised the control's token accuracy by less than 0.1"
        in text
    )


def test_a_grid_too_small_to_validate_gets_a_page_without_a_predictor(tmp_path):
    settings = GridSettings(domains=("math",), methods=("npo",), lrs=(2e-5,), protocols=("single",))
    results = _synthetic_grid(settings)
    with pytest.raises(ValueError, match="at least two domains"):
        train_predictor(results, settings)
    written = write_page(
        results,
        None,
        settings,
        page=tmp_path / "mine.md",
        figure_dir=tmp_path / "figures",
        command="python benchmarks/validation.py --methods npo",
        runtime_seconds=1.0,
    )
    text = written[0].read_text()
    assert "Not fitted: held-out validation needs" in text and "| npo | 2e-05 | single |" in text
    assert not (tmp_path / "figures" / "prediction.png").exists()


def test_the_gentle_claim_is_judged_at_the_gentlest_setting_that_forgets():
    settings = GridSettings(
        domains=("text", "code"),
        methods=("ga", "npo"),
        lrs=(1e-7, 1e-6, 1e-4),
        protocols=("single", "continual"),
    )
    results = _synthetic_grid(dataclasses.replace(settings, lrs=(1e-6, 1e-4)))
    for cell in settings.cells():
        if cell.lr == 1e-7:  # too gentle to forget
            r = _cell(
                cell.domain,
                cell.method,
                cell.lr,
                cell.protocol,
                reversible=True,
                catastrophic=False,
                cka=1.0,
                depth=9,
                recovery=1.0,
                rng=np.random.default_rng(1),
            )
            results.append(
                dataclasses.replace(
                    r,
                    regime=dataclasses.replace(
                        r.regime, label="not forgotten", reversible=None, catastrophic=False
                    ),
                )
            )
    claims = check_claims(results, settings)
    assert claims[0].verdict == "holds"
    assert (
        "lr 1e-06, single request (none of the 4 single-request cells at lower learning rates forgot)"
        in claims[0].evidence
    )


TWINS = GridSettings(
    domains=("text", "code"),
    methods=("ga", "ga_kl", "npo", "npo_kl"),
    lrs=(1e-6, 1e-5, 1e-4),
    protocols=("single", "continual"),
)


def _twin_grid() -> list[CellResult]:
    """Each setting's four objectives leave the same features and recovery (twins), as on the real grid."""
    rng = np.random.default_rng(3)
    by_setting = {}
    cells = []
    for cell in TWINS.cells():
        key = (cell.domain, cell.lr, cell.protocol)
        if key not in by_setting:
            by_setting[key] = (0.9 + rng.uniform(0, 0.1), rng.uniform(0, 1), rng.integers(1, 10))
        cka, recovery, depth = by_setting[key]
        twin = _cell(
            cell.domain,
            cell.method,
            cell.lr,
            cell.protocol,
            reversible=recovery >= 0.5,
            catastrophic=False,
            cka=cka,
            depth=depth,
            recovery=recovery,
            rng=np.random.default_rng(int(depth)),
        )
        cells.append(twin)
    return cells


def test_leave_one_setting_out_never_splits_a_setting():
    cells = _twin_grid()
    fit = train_predictor(cells, TWINS)
    settings = {setting(r) for r in cells}
    assert len(settings) == 12 and set(fit.by_setting.per_group) == settings
    assert all(
        len(
            {
                setting(r)
                for r in cells
                if r.cell.lr == lr and r.cell.domain == d and r.cell.protocol == p
            }
        )
        == 1
        for d, lr, p in [("text", 1e-5, "single"), ("code", 1e-4, "continual")]
    )
    X, y = feature_matrix(cells), np.array([r.recovery for r in cells])
    # Moving every target of one setting must leave that setting's held-out predictions exactly where they were...
    held = np.array([setting(r) == "text lr 1e-05 single" for r in cells])
    moved = np.where(held, 1.0 - y, y)
    again = validate(
        X, moved, [setting(r) for r in cells], PREDICTOR_INPUTS, "leave one setting out"
    )
    np.testing.assert_allclose(
        again.predictions[held], fit.by_setting.predictions[held], rtol=1e-12
    )
    # ...while holding out one objective at a time lets the fit see the held-out cells' twins.
    by_method = validate(
        X, y, [r.cell.method for r in cells], PREDICTOR_INPUTS, "leave one objective out"
    )
    leaked = validate(
        X, moved, [r.cell.method for r in cells], PREDICTOR_INPUTS, "leave one objective out"
    )
    assert not np.allclose(leaked.predictions[held], by_method.predictions[held])


def _kl_measurement() -> KLMeasurement:
    """ga_kl's KL gradient 1e-6 of GA's at step 1, 0.02 at step 2; the variants part at kl_weight 100 (ga_kl)
    and never (npo_kl)."""

    def steps(ga_cosine):
        return [
            TermStep(1, -2.0, 0.0, 100.0, 1e-4, -0.1, ga_cosine),
            TermStep(2, -5.0, 0.04, 150.0, 3.0, -0.8, ga_cosine),
        ]

    def run(method, weight, forget, retain=0.4):
        return TermRun(
            method,
            weight,
            forget,
            retain,
            9.0,
            2.5,
            steps(None if method == "ga_kl" else 0.99) if weight else [],
        )

    return KLMeasurement(
        cell={
            "domain": "text",
            "lr": 1e-5,
            "protocol": "single",
            "n_items": 16,
            "steps": 2,
            "batch_size": 8,
            "seed": 0,
        },
        runs=[
            run("ga", 0.0, 0.11),
            run("npo", 0.0, 0.12),
            run("ga_kl", 1.0, 0.11),
            run("ga_kl", 100.0, 0.3, 0.6),
            run("npo_kl", 1.0, 0.12),
            run("npo_kl", 100.0, 0.125),
        ],
    )


def test_the_page_explains_coinciding_objectives_with_the_kl_measurement(tmp_path):
    cells = _twin_grid()
    common = {
        "results": cells,
        "fit": None,
        "settings": TWINS,
        "figure_dir": tmp_path / "figures",
        "command": "x",
        "runtime_seconds": 1.0,
    }
    text = write_page(page=tmp_path / "v.md", kl=_kl_measurement(), **common)[0].read_text()
    assert (
        "ga, ga_kl, npo, npo_kl leave the same forget accuracy (to two decimals) in 12 of 12"
        in text
    )
    assert (
        "vanishes only at the first step, on the reference weights (KL 0, ‖∇KL‖/‖∇GA‖ 1e-06)"
        in text
    )
    assert (
        "at kl_weight 1 (the grid's), the KL reaches 0.04, ‖∇KL‖/‖∇GA‖ 0.02 to 0.02 (ga_kl)" in text
    )
    assert (
        "point against each other (cosine -0.80 to -0.80). Yet the runs end where the plain objectives do"
        in text
    )
    assert "(cosine at least 0.990 at every step of npo_kl)" in text
    assert (
        "ga_kl 1: 0.11/0.40 (forget NLL 9.0), 100: 0.30/0.60 (forget NLL 9.0), against ga's forget NLL 9.0"
        in text
    )
    assert (
        "Retain accuracy first moves by 0.01 or more from the plain objective's for ga_kl at "
        "kl_weight 100 and npo_kl at "
        "none up to 100; forget accuracy for ga_kl at kl_weight 100 and npo_kl at none up to 100."
    ) in text
    assert "gradient is zero at the reference" not in text  # the old, unmeasured explanation
    plain = write_page(page=tmp_path / "w.md", **common)[0].read_text()
    assert "Why is not measured here: run `benchmarks/kl_gradients.py`." in plain


def test_a_grid_without_the_kl_variants_says_they_were_left_out_and_why(tmp_path):
    settings = dataclasses.replace(TWINS, methods=GRID_OBJECTIVES)
    twins = {(r.cell.domain, r.cell.lr, r.cell.protocol, r.cell.method): r for r in _twin_grid()}
    cells = [
        twins.get((c.domain, c.lr, c.protocol, c.method))
        or dataclasses.replace(
            twins[(c.domain, c.lr, c.protocol, "ga")],
            cell=c,
            unlearned={
                **twins[(c.domain, c.lr, c.protocol, "ga")].unlearned,
                "forget": _metrics(0.5),
            },
        )
        for c in settings.cells()
    ]
    text = write_page(
        cells,
        None,
        settings,
        page=tmp_path / "v.md",
        figure_dir=tmp_path / "figures",
        command="x",
        runtime_seconds=1.0,
        kl=_kl_measurement(),
    )[0].read_text()
    assert (
        "- Objectives: ga, ga_gd, npo, rlabel (the study's ga_kl and npo_kl are left out: see *Also measured*)"
        in text
    )
    # ga and npo are twins here, ga_gd and rlabel are not part of the comparison.
    assert (
        "ga, npo leave the same forget accuracy (to two decimals) in 12 of 12 domain × learning-rate × protocol groups"
        in text
    )
    assert (
        "ga_kl and npo_kl, the study's KL variants, are left out of this grid: at the default kl_weight 1 they end "
        "where ga and npo do, so their cells would be twins."
    ) in text
    assert (
        "Yet the runs end where the plain objectives do" in text
    )  # the measurement that justifies leaving them out
