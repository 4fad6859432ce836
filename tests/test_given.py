"""Auditing checkpoints unlearned elsewhere: the same study from the given weights, the checks
against the original before any work, naming, mixing with methods, resume, and reading
checkpoints (sharded, saved from the base model, from the hub)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from memorised import memorised_subject, unlearned_workspace
from rich.console import Console

import unlearn_lens as ul
from unlearn_lens.atomic import json_safe
from unlearn_lens.cli import main
from unlearn_lens.errors import ConfigError, ModelSourceError
from unlearn_lens.evaluation import evaluate
from unlearn_lens.models.checkpoints import check_checkpoint, checkpoint_directory, read_snapshot
from unlearn_lens.report.render import REPORT_FILE, render_run
from unlearn_lens.schema import dump
from unlearn_lens.study.audit import SNAPSHOT_DIR, audit
from unlearn_lens.study.config import StudyConfig, load_config
from unlearn_lens.study.given import checkpoint_name
from unlearn_lens.study.results import AuditResults

NOT_COMPARED = ("method", "given", "unlearn", "tracking", "seconds")
"""What differs between a method unlearned in the audit and the same weights given: its name,
where it came from, the unlearning record only the audit has, and wall-clock times."""


def _quiet() -> Console:
    return Console(file=io.StringIO())


def _numbers(payload, path=""):
    """Every number in a payload by its path, leaving out wall-clock times."""
    if isinstance(payload, dict):
        return {
            key: value
            for name, item in payload.items()
            if name != "seconds"
            for key, value in _numbers(item, f"{path}.{name}").items()
        }
    if isinstance(payload, list):
        return {
            key: value
            for index, item in enumerate(payload)
            for key, value in _numbers(item, f"{path}[{index}]").items()
        }
    return {path: payload}


def _study_numbers(result) -> dict:
    return _numbers(json_safe({k: v for k, v in dump(result).items() if k not in NOT_COMPARED}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data files, the memorised model saved as `ck`, and `u1`: the --out of `unlearn-lens unlearn` on it."""
    return unlearned_workspace(tmp_path_factory.mktemp("given"), "u1")


@pytest.fixture
def config(workspace):
    return StudyConfig(
        model=str(workspace / "ck"),
        backend="nnsight",
        forget=str(workspace / "forget.jsonl"),
        retain=str(workspace / "retain.jsonl"),
        control=str(workspace / "control.jsonl"),
        methods=("ga",),
        lr=1e-2,
        steps=3,
        batch_size=4,
        relearn_steps=3,
        relearn_lr=1e-2,
        max_items=None,
    )


def test_given_weights_give_the_numbers_of_the_same_weights_unlearned_in_the_audit(
    config, tmp_path
):
    """Golden reference: save the weights GA reached inside one audit, give them to a second audit,
    and every relearning, diagnostic, localisation and verdict number is the same."""
    subject = memorised_subject()

    def save_unlearned(results: AuditResults) -> None:
        ga = results.methods.get("ga")
        if (
            ga is not None
            and ga.unlearn is not None
            and ga.relearn is None
            and not (tmp_path / "ext").exists()
        ):
            ul.save_checkpoint(
                subject, tmp_path / "ext"
            )  # the subject holds GA's unlearned weights right now

    unlearned_here = audit(
        config, subject=subject, progress=False, console=_quiet(), on_stage=save_unlearned
    )
    given = audit(
        config,
        unlearned={"ext": str(tmp_path / "ext")},
        out=tmp_path / "run",
        subject=subject,
        progress=False,
        console=_quiet(),
    )
    assert list(given.methods) == ["ga", "ext"], "methods first, then the given checkpoints"
    ext = given.methods["ext"]
    assert ext.unlearn is None and ext.tracking == []
    assert ext.given.source == str(tmp_path / "ext") and ext.given.directory == str(
        tmp_path / "ext"
    )
    assert ext.given.run_file is None and ext.given.unlearning is None
    assert _study_numbers(ext) == _study_numbers(unlearned_here.methods["ga"])
    assert _study_numbers(given.methods["ga"]) == _study_numbers(unlearned_here.methods["ga"])
    # The "unlearned" metrics are those of the checkpoint evaluated on its own.
    reloaded = ul.load(tmp_path / "ext", backend="nnsight")
    for split in ("forget", "retain"):
        assert ext.comparisons[f"unlearned/{split}"].updated_metrics == evaluate(
            reloaded, given.data.items[split]
        )
    assert AuditResults.load(tmp_path / "run").to_json() == given.to_json()
    console = Console(record=True, width=300, file=io.StringIO())
    render_run(given, None, console, verbose=True)
    text = console.export_text()
    assert (
        "ext budgets — unlearning: unknown (a given checkpoint with no run.json beside it); relearning attack"
        in text
    )
    assert (
        f"ext given checkpoint {tmp_path / 'ext'}; no run.json of unlearn-lens unlearn beside it"
        in text
    )
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["results.json"]


def test_only_given_checkpoints_are_audited_without_a_method(workspace, tmp_path, monkeypatch):
    """`--unlearned` alone audits only the checkpoint; `unlearn-lens unlearn`'s run.json beside it
    is read from OUT as from OUT/model, and the report marks it given with its unlearning budget."""
    monkeypatch.chdir(workspace)
    argv = [
        "audit",
        "--model",
        "ck",
        "--backend",
        "nnsight",
        "--forget",
        "forget.jsonl",
        "--retain",
        "retain.jsonl",
        "--control",
        "control.jsonl",
        "--relearn-steps",
        "2",
        "--batch-size",
        "4",
        "--unlearned",
        "u1",
    ]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    results = AuditResults.load(tmp_path / "run")
    assert results.config.methods == () and results.config.unlearned == {"u1": "u1"}
    assert list(results.methods) == ["u1"]
    given = results.methods["u1"].given
    assert (
        given.source == "u1" and given.directory == "u1/model" and given.run_file == "u1/run.json"
    )
    record = json.loads((workspace / "u1" / "run.json").read_text())
    assert dump(given.unlearning) == record["result"] and given.unlearned_from == str(
        workspace / "ck"
    )
    console = Console(record=True, width=300, file=io.StringIO())
    render_run(results, tmp_path / "run", console, verbose=True)
    text = console.export_text()
    assert "u1 (given)" in text
    assert (
        "u1 given checkpoint u1 (read from u1/model); its u1/run.json: ga at lr 0.01, 3 steps in 1 request(s), "
        f"from {workspace / 'ck'}"
    ) in text
    assert (
        "budgets — unlearning: 3 steps × 4 items at lr 0.01 (12 answer tokens, from u1/run.json); "
        "relearning attack: 2 steps" in text
    )
    page = (tmp_path / "run" / REPORT_FILE).read_text()
    assert (
        "Findings: u1 (given checkpoint)" in page
        and "given checkpoint u1 (read from u1/model)" in page
    )
    figures = sorted(path.name for path in (tmp_path / "run" / "figures").iterdir())
    assert "u1-recovery.png" in figures and "u1-training.png" not in figures, (
        "no unlearning history to draw"
    )


def test_methods_and_given_checkpoints_mix_under_their_names(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    argv = [
        "audit",
        "--model",
        "ck",
        "--backend",
        "nnsight",
        "--forget",
        "forget.jsonl",
        "--retain",
        "retain.jsonl",
        "--control",
        "control.jsonl",
        "--steps",
        "2",
        "--relearn-steps",
        "2",
        "--batch-size",
        "4",
        "--method",
        "ga",
        "--unlearned",
        "npo-elsewhere=u1/model",
    ]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    results = AuditResults.load(tmp_path / "run")
    assert list(results.methods) == ["ga", "npo-elsewhere"]
    assert results.methods["ga"].given is None and results.methods["ga"].unlearn is not None
    assert results.methods["npo-elsewhere"].given.run_file == "u1/run.json"
    assert results.methods["npo-elsewhere"].regime is not None


def test_resume_rereads_the_given_checkpoint_and_keeps_no_copy(config, workspace, tmp_path):
    config = config.with_values(methods=(), unlearned={"u1": str(workspace / "u1")})
    subject = memorised_subject()
    expected = audit(config, subject=subject, progress=False, console=_quiet())
    snapshots = []

    def stop_after_relearning(results: AuditResults) -> None:
        u1 = results.methods.get("u1")
        if u1 is not None and u1.relearn is not None and not u1.comparisons and not snapshots:
            snapshots.extend(
                sorted(path.name for path in (tmp_path / "run" / SNAPSHOT_DIR).iterdir())
            )
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit(
            config,
            out=tmp_path / "run",
            subject=subject,
            progress=False,
            console=_quiet(),
            on_stage=stop_after_relearning,
        )
    assert snapshots == ["u1-relearned.safetensors"], (
        "the given weights are read from the checkpoint, never copied"
    )
    resumed = audit(
        config, out=tmp_path / "run", resume=True, subject=subject, progress=False, console=_quiet()
    )
    assert resumed.status == "complete"
    assert _study_numbers(resumed.methods["u1"]) == _study_numbers(expected.methods["u1"])


def test_resume_refuses_a_given_checkpoint_whose_weights_changed(config, workspace, tmp_path):
    """The run records the SHA-256 of the weights it read; other weights at the same path are
    refused in one line before anything is written, the same weights resume."""
    shutil.copytree(workspace / "u1", tmp_path / "u1")
    config = config.with_values(methods=(), unlearned={"u1": str(tmp_path / "u1")})
    subject = memorised_subject()

    def stop_after_relearning(results: AuditResults) -> None:
        if results.methods.get("u1") is not None and results.methods["u1"].relearn is not None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit(
            config,
            out=tmp_path / "run",
            subject=subject,
            progress=False,
            console=_quiet(),
            on_stage=stop_after_relearning,
        )
    recorded = AuditResults.load(tmp_path / "run").methods["u1"].given.weights_sha256
    assert recorded is not None and len(recorded) == 64
    before = (tmp_path / "run" / "results.json").read_bytes()
    ul.save_checkpoint(memorised_subject(), tmp_path / "u1" / "model")  # other weights, same path
    with pytest.raises(ConfigError) as info:
        audit(
            config,
            out=tmp_path / "run",
            resume=True,
            subject=subject,
            progress=False,
            console=_quiet(),
        )
    assert "u1: the weights in" in str(info.value) and "changed since this run began" in str(
        info.value
    )
    assert (
        "\n" not in str(info.value) and (tmp_path / "run" / "results.json").read_bytes() == before
    )


@pytest.mark.parametrize(
    "unlearned, message",
    [
        ({"ga": "u1"}, "'ga' names both a method and an unlearned checkpoint (u1)"),
        ({"a b": "u1"}, "unlearned checkpoint name 'a b' is not usable"),
        (
            {"x": "nowhere/at/all"},
            "--unlearned x: nowhere/at/all: no such directory (and not a Hugging Face hub id)",
        ),
    ],
)
def test_bad_given_checkpoints_fail_before_the_model_loads(
    config, workspace, tmp_path, monkeypatch, unlearned, message
):
    monkeypatch.chdir(workspace)
    with pytest.raises((ConfigError, ModelSourceError)) as info:
        audit(
            config.with_values(model="never-loaded"),
            unlearned=unlearned,
            out=tmp_path / "run",
            progress=False,
            console=_quiet(),
        )
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_hub_id_offline_and_not_cached_is_one_line(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        ModelSourceError,
        match="no-such-org/no-such-model: no such directory, and not a model on the "
        r"Hugging Face hub \(offline \(HF_HUB_OFFLINE or no network\)",
    ):
        checkpoint_directory("no-such-org/no-such-model")


def test_the_out_of_unlearn_loads_as_its_model_everywhere(workspace):
    """`load` itself reads the --out of `unlearn-lens unlearn` as its `model/` (so audit, compare,
    relearn and given checkpoints all take it): the same weights as loading `model/`."""
    from_out = ul.load(str(workspace / "u1"), backend="nnsight").snapshot()
    from_model = ul.load(str(workspace / "u1" / "model"), backend="nnsight").snapshot()
    assert from_out.keys() == from_model.keys() and all(
        torch.equal(from_out[k], from_model[k]) for k in from_out
    )
    assert checkpoint_directory(workspace / "u1") == workspace / "u1" / "model"


def test_names_come_from_the_directory_or_the_run_around_model(tmp_path):
    (tmp_path / "runs" / "npo-run" / "model").mkdir(parents=True)
    assert checkpoint_name(str(tmp_path / "runs" / "npo-run" / "model")) == "npo-run"
    assert checkpoint_name(str(tmp_path / "runs" / "npo-run")) == "npo-run"
    assert checkpoint_name("org/npo-tofu") == "npo-tofu"
    assert checkpoint_name("runs/absent/model") == "absent"


def test_study_toml_names_checkpoints_in_a_table(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('relearn_steps = 2\n[unlearned]\nnpo-hub = "org/model"\n')
    assert load_config(path).methods == () and load_config(path).unlearned == {
        "npo-hub": "org/model"
    }
    path.write_text('methods = ["npo"]\n[unlearned]\nga = "runs/u/model"\n')
    assert load_config(path).methods == ("npo",)
    path.write_text('methods = ["ga"]\n[unlearned]\nga = "runs/u/model"\n')
    with pytest.raises(
        ConfigError, match=r"study.toml:\d: 'ga' names both a method and an unlearned checkpoint"
    ):
        load_config(path)
    path.write_text('unlearned = ["runs/u/model"]\n')
    with pytest.raises(ConfigError, match=r"study.toml:1: setting 'unlearned' must be a table"):
        load_config(path)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sharded_and_base_model_checkpoints_read_as_the_subjects_snapshot(tmp_path, family):
    """Shards named by an index, and tensor names without the base model's prefix (GPT-2's own
    checkpoints), read back exactly; a tied unembedding left out is fine."""
    subject = memorised_subject(family=family)
    with torch.no_grad():
        for param in subject.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    subject.model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    subject.tokenizer.save_pretrained(tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    base = tmp_path / "base"
    ul.save_checkpoint(subject, base)
    from safetensors.torch import load_file, save_file

    prefix = f"{subject.model.base_model_prefix}."
    save_file(
        {
            name.removeprefix(prefix): tensor
            for name, tensor in load_file(base / "model.safetensors").items()
        },
        base / "model.safetensors",
    )
    for directory in (tmp_path / "sharded", base):
        assert check_checkpoint(subject, directory, str(directory)) is None
        snapshot, expected = read_snapshot(subject, directory), subject.snapshot()
        assert snapshot.keys() == expected.keys()
        assert all(torch.equal(snapshot[key], expected[key]) for key in expected)


def test_a_changed_weight_the_audit_cannot_swap_in_is_refused(tmp_path):
    """A parameter outside the audit's weights (here the final norm, dropped from the subject's
    specs as a family whose layout lacks it would) keeps the original's values when the checkpoint
    is swapped in: equal in the checkpoint, it passes; changed, it is refused in one line."""
    original = memorised_subject()
    ul.save_checkpoint(original, tmp_path / "same")
    changed = memorised_subject()
    norm = next(spec for spec in changed.specs if spec.component == "final_norm")
    with torch.no_grad():
        changed.weight(norm.key).mul_(1.5)
    ul.save_checkpoint(changed, tmp_path / "changed")
    original.specs = [spec for spec in original.specs if spec.component != "final_norm"]
    assert check_checkpoint(original, tmp_path / "same", "same") is None
    with pytest.raises(ModelSourceError) as info:
        check_checkpoint(original, tmp_path / "changed", "changed")
    assert f"tensor {norm.param} differs from the original's" in str(
        info.value
    ) and "\n" not in str(info.value)
