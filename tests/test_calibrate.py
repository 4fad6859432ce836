"""Calibration: every known case, built on a tiny memorised model, reads as it was built (checked
here against the audit's own results and the weights themselves, not only the case's verdict); a
wrong expectation is reported as failed; bad input is refused in one line."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.calibrate import DEFAULT_CALIBRATION, CalibrationResults, Expectation
from unlearn_lens.calibrate.cases import build_suppressed, deep_keys, shallow_keys
from unlearn_lens.calibrate.report import print_calibration, render_calibration
from unlearn_lens.cli import main
from unlearn_lens.data.items import Item
from unlearn_lens.evaluation import evaluate, items_correct
from unlearn_lens.regimes import NOT_FORGOTTEN
from unlearn_lens.schema import dump
from unlearn_lens.unlearn import TrainConfig, train

NAMES = [f"land{i}" for i in range(24)]
PLACES = [f"town{i}" for i in range(24)]
FACTS = [Item(f"The capital of {n} is", p) for n, p in zip(NAMES, PLACES, strict=True)]
FORGET, RETAIN, CONTROL = FACTS[:8], FACTS[8:16], FACTS[16:]
N_LAYERS = 6
BUDGET = ul.CaseBudget(lr=1e-2, steps=5, batch_size=8, blocks=2, sham_relative=0.05)
"""GA at 1e-2 for 5 steps forgets on this model (at 3e-3 the shallow case forgets nothing). The
sham's size is set, not measured: the tiny model forgets only under updates of ~60 % of each
weight's norm (SmolLM2: far below 1 %), and noise that large destroys it."""


def _subject():
    """A 6-block tiny Llama that answers FORGET and RETAIN and never saw CONTROL."""
    tok = ul.tiny_tokenizer(tuple(NAMES + PLACES))
    model = ul.tiny_llama(vocab_size=len(tok), n_layers=N_LAYERS, seed=0)
    subject = ul.load(model, backend="nnsight", tokenizer=tok)
    train(
        subject, "finetune", FORGET + RETAIN,
        config=TrainConfig(lr=3e-3, steps=200, batch_size=8, eval_every=0, seed=0), progress=False,
    )  # fmt: skip
    assert all(items_correct(subject, FORGET + RETAIN))
    assert not any(items_correct(subject, CONTROL))
    return subject


def _files(tmp_path):
    for name, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(item.to_dict()) + "\n" for item in items)
        )
    return {name: str(tmp_path / f"{name}.jsonl") for name in ("forget", "retain", "control")}


def _config(tmp_path):
    return DEFAULT_CALIBRATION.with_values(
        backend="nnsight", **_files(tmp_path), relearn_steps=10, relearn_lr=1e-2, max_items=None
    )


@pytest.fixture(scope="module")
def subject():
    return _subject()


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, subject):
    tmp = tmp_path_factory.mktemp("calibrate")
    results = ul.calibrate(
        _config(tmp), budget=BUDGET, subject=subject, progress=False,
        console=Console(file=io.StringIO()), out=tmp / "run",
    )  # fmt: skip
    return results, tmp / "run"


def _method(results: CalibrationResults, case: str):
    audit = "never_known" if case == "never_known" else "built"
    return results.audits[audit].methods[case]


@pytest.mark.parametrize("case", ["shallow", "deep", "suppressed", "sham", "never_known"])
def test_each_case_passes(calibration, case):
    results, _ = calibration
    assert results.cases[case].passed, results.cases[case].checks
    assert results.cases[case].seconds["audit"] > 0


def test_shallow_case_reads_shallow(calibration):
    method = _method(calibration[0], "shallow")
    assert method.regime.label != NOT_FORGOTTEN
    assert method.localization.forgetting_depth is not None
    assert method.localization.forgetting_depth <= BUDGET.blocks


def test_deep_case_reads_deep_with_the_effect_in_the_first_blocks(calibration):
    method = _method(calibration[0], "deep")
    depth = method.localization.forgetting_depth
    assert method.regime.label != NOT_FORGOTTEN
    assert depth is None or depth >= N_LAYERS - BUDGET.blocks
    shares = method.localization.columns["attribution_nll"]
    assert sum(shares[: BUDGET.blocks]) >= 0.5 * sum(abs(v) for v in shares)


def test_suppressed_case_is_reversible_at_the_head_and_read_by_the_fixed_lens(calibration):
    method = _method(calibration[0], "suppressed")
    assert method.regime.reversible is True
    assert method.localization.forgetting_depth == 0
    lens = method.logit_lens
    original = lens.fixed_head["original"].median_rank()[-1]
    # Every block is the original's: through the original's head the last stream reads the answer
    # as the original does, while through its own (pushed) head the answer has lost the top rank.
    assert lens.fixed_head["unlearned"].median_rank()[-1] == original == 1
    assert lens.own_head["unlearned"].median_rank()[-1] > 1


def test_sham_case_is_not_forgotten_and_has_no_depth(calibration):
    method = _method(calibration[0], "sham")
    assert method.regime.label == NOT_FORGOTTEN
    assert method.localization.forgetting_depth is None


def test_never_known_case_finds_nothing_to_recover(calibration):
    method = _method(calibration[0], "never_known")
    assert method.regime.label == NOT_FORGOTTEN
    recovery = method.relearn.recovery["accuracy"]
    assert recovery.forget_gain - recovery.control_gain <= 0.25


def test_shallow_and_deep_constructions_touch_only_their_blocks(subject):
    """The trainable keys the cases use, against the weights the training actually changed."""
    original = subject.snapshot()
    last = shallow_keys(subject, 2)
    first = deep_keys(subject, 2)
    assert {subject.spec(k).layer for k in first} == {0, 1}
    assert {subject.spec(k).layer for k in last} - {None} == {N_LAYERS - 2, N_LAYERS - 1}
    assert "embed.weight" not in last + first  # tied: the input embedding must not move
    train(
        subject, "ga", FORGET, config=TrainConfig(lr=1e-2, steps=2, eval_every=0,
        trainable_keys=tuple(last)), progress=False,
    )  # fmt: skip
    changed = {k for k, w in subject.snapshot().items() if not torch.equal(w, original[k])}
    subject.restore(original)
    assert changed and changed <= set(last)


def test_suppression_changes_only_the_answer_rows_of_the_unembedding(subject):
    original = subject.snapshot()
    before = evaluate(subject, FORGET).accuracy
    built = build_suppressed(subject, FORGET, BUDGET)
    subject.restore(original)
    changed = {k for k, w in built.weights.items() if not torch.equal(w, original[k])}
    assert changed == {"embed.weight"}  # the tied unembedding
    rows = (built.weights["embed.weight"] != original["embed.weight"]).any(dim=1).nonzero()
    answers = {subject.tokenizer.convert_tokens_to_ids(item.answer) for item in FORGET}
    assert set(rows.flatten().tolist()) == answers
    subject.restore(built.weights)
    after = evaluate(subject, FORGET).accuracy
    subject.restore(original)
    assert after <= BUDGET.suppress_to * before


def test_wrong_expectation_is_reported_failed(tmp_path, subject):
    """Expecting the deep case to be shallow fails that case, visibly, with the depth measured."""
    results = ul.calibrate(
        _config(tmp_path), cases=["deep"], budget=BUDGET, subject=subject, progress=False,
        console=Console(file=io.StringIO()),
        expectations={"deep": Expectation(forgotten=True, max_depth=1)},
    )  # fmt: skip
    case = results.cases["deep"]
    assert not case.passed and not results.passed
    depth = next(check for check in case.checks if check.name == "depth")
    assert not depth.passed and int(depth.measured) > 1
    screen = Console(file=io.StringIO(), width=250)
    print_calibration(screen, results)
    assert "FAILED" in screen.file.getvalue()


def test_results_and_report_are_written_and_read_back(calibration):
    results, out = calibration
    assert dump(CalibrationResults.load(out)) == json.loads((out / "results.json").read_text())
    assert list(CalibrationResults.load(out).cases) == list(results.cases)
    render_calibration(results, out, Console(file=io.StringIO()))
    page = (out / "report.html").read_text()
    assert page.index("Calibration") < page.index("Findings at a glance")
    assert page.count("PASS") == 5
    assert any((out / "figures" / "built").glob("*.png"))  # the audits' own figures, embedded
    assert page.count("<img") >= len(results.cases)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cases", "bogus"], "--cases: unknown case 'bogus'"),
        (["--cases"], "expected at least one argument"),
        (["--forget", "missing.jsonl"], "--forget"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = None
    try:
        code = main(["calibrate", "--out", str(out), *args])
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_results_validate_against_the_shipped_schema(calibration):
    import jsonschema

    from unlearn_lens.schema_files import shipped_schema_dir

    schema = json.loads((shipped_schema_dir() / "calibration.schema.json").read_text())
    jsonschema.validate(json.loads((calibration[1] / "results.json").read_text()), schema)


def test_cli_reports_a_failed_case_and_exits_non_zero_only_with_strict(tmp_path, subject, capsys):
    """At the default lr 1e-4, 10 steps of ascent on two blocks leave this tiny model's answers in
    place: the shallow case is not forgotten, printed FAILED; only --strict turns that into exit 1."""
    ul.save_checkpoint(subject, tmp_path / "ck")
    files = _files(tmp_path)
    args = [
        "calibrate", "--model", str(tmp_path / "ck"), "--backend", "nnsight", "--cases", "shallow",
        "--forget", files["forget"], "--retain", files["retain"], "--control", files["control"],
        "--relearn-lr", "1e-2",
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "not forgotten" in printed
    results = CalibrationResults.load(tmp_path / "plain")
    assert not results.cases["shallow"].passed
    assert (tmp_path / "plain" / "report.html").is_file()
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--out", str(tmp_path / "strict"), "--strict"])
    assert stopped.value.code == 1
