"""`calibrate`: build the known cases on the user's model and data, audit each exactly as
`audit --unlearned` does, and set what the audit found against what was built.

The built cases are saved as checkpoints in a temporary directory and handed to one `audit`
as checkpoints unlearned elsewhere (one data stage and one original pass for all of them); the
never-known case is a second audit of the original weights with novel items as its forget set.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.calibrate.cases import (
    BUILT_CASES,
    CASES,
    BuiltCase,
    CaseBudget,
    build_deep,
    build_shallow,
    build_sham,
    build_suppressed,
    relative_changes,
    sham_size,
)
from unlearn_lens.calibrate.checks import Check, Expectation, check_case
from unlearn_lens.data.items import Item
from unlearn_lens.errors import ConfigError
from unlearn_lens.models.saving import save_checkpoint
from unlearn_lens.models.sources import check_device, load
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.out_dir import check_not_foreign, check_out_location
from unlearn_lens.schema import Real, dump, read
from unlearn_lens.study.audit import audit, prepare_data, read_sets
from unlearn_lens.study.config import StudyConfig
from unlearn_lens.study.results import RESULTS_FILE, AuditResults, MethodResults, environment

KNOWN_AUDIT = "built"
"""The audit of the built cases (each a checkpoint given as unlearned)."""
NULL_AUDIT = "never_known"
"""The audit of the original weights with novel items as the forget set."""
CALIBRATION_SCHEMA = "unlearn_lens/calibration"
DEFAULT_CALIBRATION = StudyConfig(methods=(), max_items=8, relearn_steps=3, attacks=())
"""The audit settings a calibration runs under unless given others: 8 items per split, 3
relearning steps and no battery beyond same-data relearning. Measured on SmolLM2 (2 CPU cores):
the five cases take 5 min 9 s, against 4 min 18 s to 4 min 53 s for one default audit method;
with 16 items and 5 steps, 7 min 43 s (docs/howto/calibrate.md has the per-case times)."""


@dataclass
class CaseResult:
    """One known case: what was built, what the audit found, each check, and the time it took
    (`seconds["build"]`, and `seconds["audit"]`, the case's own audit stages)."""

    case: str
    built: str
    found: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, Real] = field(default_factory=dict)


@dataclass
class CalibrationResults:
    """A calibration: its settings, each case's result, and the audits the cases were read from
    (`audits["built"]`: the built cases; `audits["never_known"]`: the original on novel items)."""

    config: StudyConfig
    budget: CaseBudget
    cases: dict[str, CaseResult]
    audits: dict[str, AuditResults]
    environment: dict[str, Any]
    schema: str = CALIBRATION_SCHEMA

    @property
    def passed(self) -> bool:
        """Every case read as built."""
        return all(case.passed for case in self.cases.values())

    def save(self, directory: str | Path) -> Path:
        """Write `results.json` into `directory`, atomically."""
        return write_json_atomic(Path(directory) / RESULTS_FILE, dump(self))

    @classmethod
    def load(cls, directory: str | Path) -> CalibrationResults:
        """Read a calibration's `results.json` (the directory or the file)."""
        path = Path(directory)
        path = path if path.suffix == ".json" else path / RESULTS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: cannot be read as JSON ({error})") from None
        if not isinstance(data, dict) or data.get("schema") != CALIBRATION_SCHEMA:
            raise ConfigError(f"{path}: not a calibration's results.json")
        return read(cls, data, str(path))


def default_expectations(
    n_layers: int, budget: CaseBudget, config: StudyConfig
) -> dict[str, Expectation]:
    """What each case must read, from how it was built."""
    return {
        "shallow": Expectation(forgotten=True, max_depth=budget.blocks),
        "deep": Expectation(
            forgotten=True,
            min_depth=n_layers - budget.blocks,
            first_blocks=budget.blocks,
            first_blocks_share=0.5,
        ),
        "suppressed": Expectation(
            forgotten=True, max_depth=0, reversible=True, lens_reads_answer=True
        ),
        "sham": Expectation(forgotten=False, no_depth=True),
        "never_known": Expectation(
            forgotten=False, reversible=False, max_excess=config.control_margin
        ),
    }


def check_cases(cases: Sequence[str]) -> tuple[str, ...]:
    """The cases asked for, in their order; an unknown name is refused in one line."""
    for case in cases:
        if case not in CASES:
            raise ConfigError(f"--cases: unknown case {case!r}; choose from {', '.join(CASES)}")
    if not cases:
        raise ConfigError("--cases: name at least one case")
    return tuple(case for case in CASES if case in cases)


def _write_items(path: Path, items: Sequence[Item]) -> str:
    path.write_text("".join(json.dumps(dump(item)) + "\n" for item in items), encoding="utf-8")
    return str(path)


def _found(result: MethodResults) -> str:
    """What the audit read, in one line."""
    assert result.regime is not None and result.localization is not None
    return f"{result.regime.label}; {result.localization.verdict}"


class _Builder:
    """Builds each case from the original weights and saves it as a checkpoint."""

    def __init__(
        self, subject: Subject, original: Snapshot, items: dict[str, list[Item]], budget: CaseBudget
    ) -> None:
        self.subject, self.original, self.items, self.budget = subject, original, items, budget
        self.changes: list[float] = []
        """Relative changes of the weights the shallow and deep updates moved (the sham's size)."""

    def build(self, case: str) -> BuiltCase:
        subject, budget = self.subject, self.budget
        forget, retain = self.items["forget"], self.items["retain"]
        subject.restore(self.original)
        try:
            if case == "shallow":
                built = build_shallow(subject, forget, retain, budget)
                self.changes += relative_changes(subject, self.original, [built.weights])
            elif case == "deep":
                built = build_deep(subject, forget, retain, budget)
                self.changes += relative_changes(subject, self.original, [built.weights])
            elif case == "suppressed":
                built = build_suppressed(subject, forget, budget)
            else:
                built = build_sham(subject, self.original, self._sham_size(), budget.seed)
        finally:
            subject.restore(self.original)
        return built

    def _sham_size(self) -> float:
        """The budget's sham size, or the median relative change of the constructed updates (a
        shallow one is built to measure when none was)."""
        if self.budget.sham_relative is not None:
            return self.budget.sham_relative
        if not self.changes:
            forget, retain = self.items["forget"], self.items["retain"]
            update = build_shallow(self.subject, forget, retain, self.budget).weights
            self.subject.restore(self.original)
            self.changes = relative_changes(self.subject, self.original, [update])
        return sham_size(self.changes)

    def save(self, weights: Snapshot, directory: Path) -> str:
        self.subject.restore(weights)
        try:
            save_checkpoint(self.subject, directory)
        finally:
            self.subject.restore(self.original)
        return str(directory)


def calibrate(
    config: StudyConfig | None = None,
    *,
    cases: Sequence[str] = CASES,
    budget: CaseBudget | None = None,
    expectations: Mapping[str, Expectation] | None = None,
    out: str | Path | None = None,
    force: bool = False,
    subject: Subject | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> CalibrationResults:
    """Build the known `cases` on the model and data of `config` and audit each as
    `audit --unlearned` would; return, per case, what was built, what was found and whether the
    finding is the one the construction implies (`expectations` replaces any case's defaults,
    see `default_expectations`).

    `config` holds the model, the data and the audit settings (default `DEFAULT_CALIBRATION`);
    its methods are ignored. With `out`, results.json is written there. `subject` is a model
    already loaded with its original weights (otherwise `config.model` is loaded); they are
    put back afterwards.
    """
    config = (config or DEFAULT_CALIBRATION).with_values(methods=(), unlearned={})
    budget = budget or CaseBudget()
    cases = check_cases(cases)
    console = console or Console(stderr=True)
    if out is not None:
        out = Path(out)
        check_out_location(out)
        if (out / RESULTS_FILE).exists() and not force:
            raise ConfigError(f"{out} already holds a results.json; pass --force to replace it")
        check_not_foreign(out, force, (RESULTS_FILE,))
    if subject is None:
        check_device(config.device)
        subject = load(
            config.model, backend=config.backend, device=config.device,
            device_map=config.device_map, dtype=config.dtype,
        )  # fmt: skip
    data = prepare_data(subject, config, read_sets(config), console).items
    expected = {
        **default_expectations(subject.shape.n_layers, budget, config),
        **(expectations or {}),
    }
    original = subject.snapshot()
    results = CalibrationResults(config, budget, {}, {}, environment())
    with tempfile.TemporaryDirectory(prefix="unlearn-lens-calibrate-") as scratch:
        work = Path(scratch)
        files = {split: _write_items(work / f"{split}.jsonl", data[split]) for split in data}
        # The audits read exactly the items kept here: no second known filter, no second cap.
        plain = config.with_values(
            **files_settings(files), known_only=False, max_items=None, prompt_field=None,
            answer_field=None, text_field=None, chat_template=False,
        )  # fmt: skip
        builder = _Builder(subject, original, data, budget)
        built: dict[str, tuple[str, float]] = {}  # what was built, in how many seconds
        for case in (case for case in cases if case in BUILT_CASES):
            start = time.perf_counter()
            console.print(f"calibrate: building {case}", highlight=False)
            made = builder.build(case)
            builder.save(made.weights, work / case)  # the weights are on disk from here on
            built[case] = (made.built, time.perf_counter() - start)
        audits: dict[str, tuple[AuditResults, list[str]]] = {}  # each audit, and its cases
        if built:
            given = {case: str(work / case) for case in built}
            audits[KNOWN_AUDIT] = (
                audit(plain.with_values(unlearned=given), subject=subject, progress=progress,
                      console=console),
                list(built),
            )  # fmt: skip
        if "never_known" in cases:
            start = time.perf_counter()
            control = data["control"]
            half = len(control) // 2
            novel = plain.with_values(
                forget=_write_items(work / "novel-forget.jsonl", control[:half]),
                control=_write_items(work / "novel-control.jsonl", control[half:]),
                unlearned={"never_known": builder.save(original, work / "never_known")},
            )
            built["never_known"] = (
                f"the original weights, with {half} novel control items as the forget set "
                f"(the other {len(control) - half} as the control)",
                time.perf_counter() - start,
            )
            audits[NULL_AUDIT] = (
                audit(novel, subject=subject, progress=progress, console=console),
                ["never_known"],
            )
    subject.restore(original)
    for name, (audited, names) in audits.items():
        results.audits[name] = audited
        for case in names:
            description, seconds = built[case]
            method = audited.methods[case]
            checks = check_case(method, expected[case], config.verdict_metric)
            results.cases[case] = CaseResult(
                case=case,
                built=description,
                found=_found(method),
                passed=all(check.passed for check in checks),
                checks=checks,
                seconds={
                    "build": round(seconds, 2),
                    "audit": round(sum(method.seconds.values()), 2),
                },
            )
    results.cases = {case: results.cases[case] for case in cases}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        results.save(out)
    return results


def files_settings(files: Mapping[str, str]) -> dict[str, str]:
    """The data-file settings of an audit that reads the written splits."""
    return {split: files[split] for split in ("forget", "retain", "control")}
