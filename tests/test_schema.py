"""The results schema: stored files of the previous code read and write back unchanged, a fresh
tiny audit gives their numbers, the shipped JSON Schemas match the types and accept real files,
and malformed files fail in one line naming the field path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
from data.make_results_v2 import LOCALIZATIONS, run_stored
from test_audit import _numbers

from unlearn_lens.errors import ConfigError
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.schema import dump, read, schema_text
from unlearn_lens.schema_files import DOCS_SCHEMA_DIR, SCHEMA_FILES, shipped_schema_dir
from unlearn_lens.study.results import RESULTS_VERSION, AuditResults

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def _stored(localization: str) -> dict:
    return json.loads((DATA / f"results_v2_{localization}.json").read_text())


def _contains(new, old, path="") -> list[str]:
    """Where `new` differs from `old`, every key of `old` required (new keys are allowed)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [path]
        return [
            p for key in old for p in _contains(new.get(key, KeyError), old[key], f"{path}.{key}")
        ]
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [path]
        return [
            p
            for i, (n, o) in enumerate(zip(new, old, strict=True))
            for p in _contains(n, o, f"{path}[{i}]")
        ]
    return [] if new == old else [path]


@pytest.mark.parametrize("localization", LOCALIZATIONS)
def test_a_stored_results_file_reads_and_writes_back_unchanged(localization):
    stored = _stored(localization)
    assert stored["version"] == RESULTS_VERSION
    again = json.loads(json.dumps(AuditResults.from_json(stored, "stored").to_json()))
    assert _contains(again, stored) == []


@pytest.mark.parametrize("localization", LOCALIZATIONS)
def test_real_files_validate_against_the_shipped_schema(localization):
    schema = json.loads((shipped_schema_dir() / "results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(_stored(localization))


def test_shipped_schemas_match_the_types():
    for name, (cls, title) in SCHEMA_FILES.items():
        want = schema_text(cls, title)
        for directory in (shipped_schema_dir(), ROOT / DOCS_SCHEMA_DIR):
            assert (directory / name).read_text() == want, (
                f"{directory / name} is stale: run `python -m unlearn_lens.schema_files`"
            )


def test_a_fresh_tiny_audit_gives_the_stored_numbers(tmp_path):
    """The stored file came from the code before the pydantic schema; same settings, same
    numbers (to float32 training noise: the maths is unchanged, the tolerance only absorbs
    another CPU's kernels)."""
    fresh = run_stored(tmp_path, "attribution")
    got = _numbers(json.loads(json.dumps(fresh.to_json())))
    want = _numbers(_stored("attribution"))
    paths = (".config.forget", ".config.retain", ".config.control", ".data.source")
    want = {k: v for k, v in want.items() if not k.startswith(paths)}
    floats = {k for k, v in want.items() if isinstance(v, float)}
    assert {k: got[k] for k in floats} == pytest.approx(
        {k: want[k] for k in floats}, rel=1e-5, abs=1e-7
    )
    assert {k: got[k] for k in want.keys() - floats} == {k: want[k] for k in want.keys() - floats}


def test_a_malformed_field_is_named_by_its_path():
    stored = _stored("attribution")
    stored["methods"]["ga"]["relearn"]["curve"]["forget"][3]["accuracy"] = "high"
    with pytest.raises(ConfigError) as error:
        AuditResults.from_json(stored, "run/results.json")
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "run/results.json: methods.ga.relearn.curve.forget[3].accuracy: Input should be a valid number"
    )


def test_another_version_is_refused_by_number():
    stored = {**_stored("exact"), "version": 1}
    with pytest.raises(
        ConfigError, match=r"^old\.json: results version 1 is not 2; rerun the audit$"
    ):
        AuditResults.from_json(stored, "old.json")


def test_null_reads_back_as_nan_and_non_finite_writes_as_null():
    metrics = TokenMetrics(
        accuracy=0.5, nll=math.inf, perplexity=math.nan, exact_match=0.0, n_tokens=3, n_sequences=1
    )
    data = dump(metrics)
    assert data["nll"] is None and data["perplexity"] is None and data["accuracy"] == 0.5
    back = read(TokenMetrics, json.loads(json.dumps(data)))
    assert math.isnan(back.nll) and math.isnan(back.perplexity) and back.n_tokens == 3


def test_per_layer_lists_must_hold_one_value_per_layer():
    stored = _stored("exact")
    columns = stored["methods"]["ga"]["localization"]["columns"]
    name = next(iter(columns))
    columns[name] = [*columns[name], 0.5]  # one value more than the model has layers
    with pytest.raises(ConfigError) as error:
        AuditResults.from_json(stored, "run/results.json")
    message = str(error.value)
    assert message.startswith(
        f"run/results.json: methods.ga.localization.columns.{name}: 3 per-layer"
    )
    assert "the model has 2 layers" in message
