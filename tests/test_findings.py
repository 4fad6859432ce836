"""The findings at a glance: the default methods' contrast on a tiny model, the report's cards
(parsed from report.html), shares that separate small values, and quiet piped output."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from memorised import CONTROL, FORGET, RETAIN, memorised_subject
from rich.console import Console

from unlearn_lens.numbers import percent, share
from unlearn_lens.report.findings import QUESTIONS, finding
from unlearn_lens.report.render import REPORT_FILE, render_run
from unlearn_lens.study.audit import audit
from unlearn_lens.study.config import DEFAULT_METHODS, StudyConfig

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The default methods at the default steps, on the tiny model that memorised a few facts
    (its learning rates scaled up as a tiny model needs), audited and rendered."""
    root = tmp_path_factory.mktemp("findings")
    config = StudyConfig(
        model="tiny",
        forget=_write(root / "forget.jsonl", FORGET),
        retain=_write(root / "retain.jsonl", RETAIN),
        control=_write(root / "control.jsonl", CONTROL),
        lr=1e-2,
        batch_size=4,
        relearn_lr=1e-2,
        max_items=None,
    )
    assert config.methods == DEFAULT_METHODS
    results = audit(
        config,
        out=root / "run",
        subject=memorised_subject(),
        progress=False,
        console=Console(file=io.StringIO()),
    )
    console = Console(record=True, width=200, file=io.StringIO())
    render_run(results, root / "run", console)
    return results, root / "run", console.export_text()


def test_default_methods_differ_in_a_verdict(run):
    results, _, _ = run
    verdicts = [results.methods[m].regime for m in DEFAULT_METHODS]
    fields = [(v.label, v.reversible, v.catastrophic) for v in verdicts]
    assert fields[0] != fields[1], fields


class _Cards(HTMLParser):
    """Each card's badge and its answers by question, read back from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, dict[str, str]] = {}
        self._card: str | None = None
        self._question: str | None = None
        self._into: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "data-card" in attrs:
            self._card = attrs["data-card"]
            self.cards[self._card] = {}
        elif "data-question" in attrs:
            self._question = attrs["data-question"]
        elif "badge" in classes:
            self._into = "regime"
        elif "a" in classes and self._question is not None:
            self._into = self._question

    def handle_data(self, data):
        if self._into is not None and self._card is not None:
            self.cards[self._card][self._into] = data
            self._into = None


def test_card_answers_each_question_per_method(run):
    results, run_dir, _ = run
    page = (run_dir / REPORT_FILE).read_text()
    parser = _Cards()
    parser.feed(page)
    assert set(parser.cards) == set(DEFAULT_METHODS)
    assert page.index("data-card=") < page.index("<h2>Summary"), "the cards open the report"
    for method, card in parser.cards.items():
        result = results.methods[method]
        verdict, summary = result.regime, result.localization
        assert card["regime"] == verdict.label
        assert set(QUESTIONS) <= set(card)
        forgotten = verdict.evidence["forgotten"] >= verdict.thresholds.min_forgotten
        assert card["forgotten"].startswith("yes" if forgotten else "no")
        drop = verdict.evidence["forget_unlearned"] - verdict.evidence["forget_original"]
        assert f"{abs(drop):.2f}" in card["forgotten"]
        expected = {True: "yes", False: "no", None: verdict.label}[verdict.reversible]
        comes_back = card["comes back"]
        if result.intervals is not None and result.intervals.borderline is not None:
            assert comes_back.startswith(f"borderline ({result.intervals.borderline}): ")
            comes_back = comes_back.split("): ", 1)[1]
        assert comes_back.startswith(expected) or verdict.evidence["recovery"] is None
        if verdict.evidence["recovery"] is not None:
            assert f"{verdict.evidence['recovery']:.2f} of the loss" in card["comes back"]
        depth, n_layers = summary.forgetting_depth, summary.n_layers
        depth_text = f"{depth}/{n_layers}" if depth is not None else f">{n_layers}"
        assert f"depth {depth_text} blocks" in card["where"]
        assert card["catastrophic"].startswith("yes" if verdict.catastrophic else "no")
        assert page.count(f"data-card='{method}'") == 1


def test_terminal_prints_one_findings_line_per_method_and_evidence_on_request(run):
    results, _, text = run
    for method in DEFAULT_METHODS:
        # rich wraps long lines: compare without whitespace.
        assert "".join(finding(results, results.methods[method]).line().split()) in "".join(
            text.split()
        )
    assert "[thresholds:" not in text and "per layer" not in text, "evidence only with --verbose"
    console = Console(record=True, width=200, file=io.StringIO())
    render_run(results, None, console, verbose=True)
    verbose = console.export_text()
    assert "[thresholds:" in verbose and "per layer" in verbose


def test_head_shares_never_read_zero_percent_when_they_differ(run):
    results, _, _ = run
    console = Console(record=True, width=400, file=io.StringIO())
    render_run(results, None, console, verbose=True)
    lines = [line for line in console.export_text().splitlines() if "top heads" in line]
    assert lines
    for method, line in zip(DEFAULT_METHODS, lines, strict=True):
        heads = results.methods[method].attribution.attribution.single_patches.heads(fraction=True)
        printed = re.findall(r"L\d+H\d+ ([-0-9.e]+)", line)
        assert printed and "%" not in line.split("top heads")[1]
        values = sorted(heads.ravel(), reverse=True)[: len(printed)]
        for text, value in zip(printed, values, strict=True):
            assert math.isclose(float(text), value, rel_tol=0.05, abs_tol=1e-12), (text, value)


@pytest.mark.parametrize(
    "values", [(0.0042, 0.0038, 0.0011), (0.21, 0.19, 0.0005), (3.2e-8, 1.1e-8), (-0.004, 0.004)]
)
def test_shares_separate_small_values_that_percent_rounds_together(values):
    printed = [share(v) for v in values]
    assert len(set(printed)) == len(values), printed
    for text, value in zip(printed, values, strict=True):
        assert math.isclose(float(text), value, rel_tol=0.05), (text, value)
        assert "%" not in text
    assert percent(0.0042) == percent(0.0038) == "0 %", "the unit this replaces"


_BARS = """
import sys
from unlearn_lens.quiet import quiet_third_party_bars
if sys.argv[1] == "quiet":
    quiet_third_party_bars()
from transformers.utils.logging import tqdm
for _ in tqdm(range(50), desc="Loading weights", mininterval=0):
    pass
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_piped_output_has_no_carriage_return_bars(quiet):
    """transformers' own "Loading weights" bar, drawn into a pipe: silenced, it writes nothing;
    left on (the control), it prints its bar lines."""
    done = subprocess.run(
        [sys.executable, "-c", _BARS, "quiet" if quiet else "loud"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    output = done.stderr + done.stdout
    assert "\r" not in output if quiet else "Loading weights" in output
    assert ("Loading weights" in output) is not quiet


def test_piped_report_command_prints_plain_lines(run):
    _, run_dir, _ = run
    done = subprocess.run(
        [sys.executable, "-m", "unlearn_lens.cli", "report", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    assert "forgotten?" in done.stdout and "evidence, thresholds" in done.stdout
