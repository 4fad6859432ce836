"""Audit settings: TOML file, flags on top, one-line errors naming file, line and setting."""

from __future__ import annotations

import json

import pytest

from unlearn_lens.atomic import write_json_atomic
from unlearn_lens.errors import ConfigError
from unlearn_lens.schema import dump
from unlearn_lens.study.config import StudyConfig, load_config


def test_toml_then_flags_win(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(
        'methods = ["npo", "ga_gd"]\nlr = 3e-5\nsteps = 4\n[objective_options]\nbeta = 0.2\n'
    )
    config = load_config(path)
    assert config.methods == ("npo", "ga_gd") and config.lr == 3e-5 and config.steps == 4
    assert config.objective_options == {"beta": 0.2}
    merged = config.merged({"lr": 1e-4, "steps": None})
    assert merged.lr == 1e-4 and merged.steps == 4, "flags win; absent flags keep the file's value"
    assert StudyConfig.from_dict(dump(merged)) == merged


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr = 1e-5\nsteps = 'ten'\n", ":2: setting 'steps' must be int"),
        ("\n\nstepz = 3\n", ":3: unknown setting 'stepz'"),
        ("steps = 0\n", ":1: steps must be positive"),
        ("methods = []\n", "methods is empty"),
        ("steps = [\n", "invalid TOML"),
        ("max_items = 2\n", "at least 4"),
        ('verdict_metric = "tokens"\n', "verdict_metric must be one of token, exact, got 'tokens'"),
    ],
)
def test_bad_config_is_named(tmp_path, text, message):
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_verdict_metric_defaults_to_token_accuracy_and_the_flag_sets_it():
    from unlearn_lens.cli import build_parser
    from unlearn_lens.commands.audit import settings

    parser = build_parser()
    assert settings(parser.parse_args(["audit"])).verdict_metric == "token"
    assert settings(parser.parse_args(["audit", "--verdict-metric", "exact"])).verdict_metric == (
        "exact"
    )


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_atomic_json_leaves_no_partial_file(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"a": 1.0, "inf": float("inf")})
    assert json.loads(target.read_text()) == {"a": 1.0, "inf": None}

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": 1.0, "inf": None}, (
        "a failed write keeps the old file"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "no temporary file left behind"
