"""``splice config`` / ``splice run``: recipe lookup, --set overrides, validation errors, a tiny run."""

from __future__ import annotations

import json
import textwrap

import pytest
from pydantic import ValidationError
from splice.cli import main
from splice.overrides import apply_overrides, parse_assignment
from splice.training.configs import ExperimentConfig

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


RECIPE = textwrap.dedent(
    '''
    """A tiny one-digit addition run."""
    from splice.training.configs import ExperimentConfig


    def config():
        return ExperimentConfig(
            name="tiny",
            model={"type": "decoder", "vocab_size": 52, "d_model": 16, "n_layers": 1,
                   "max_seq_len": 12, "block": {"type": "pre_norm",
                                                "token_mixer": {"type": "mha", "n_heads": 2}}},
            data={"task": {"type": "arithmetic", "max_digits": 1}, "max_len": 12},
            train={"steps": 6, "batch_size": 4, "log_every": 2, "checkpoint_every": 3,
                   "progress": False, "num_threads": 1},
            eval={"loss_batches": 1, "exact_match_examples": 3, "max_new_tokens": 3},
        )
    '''
)


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "tiny_recipe.py"
    path.write_text(RECIPE)
    return path


def base() -> ExperimentConfig:
    from splice.recipe import Recipe  # noqa: F401  (the file's config builder is what we test)

    ns: dict = {}
    exec(RECIPE, ns)
    return ns["config"]()


def test_parse_assignment_values():
    assert parse_assignment("train.steps=10") == (["train", "steps"], 10)
    assert parse_assignment("train.optimizer.lr=3e-4") == (["train", "optimizer", "lr"], 3e-4)
    assert parse_assignment("name=run-2") == (["name"], "run-2")
    assert parse_assignment("init_from=null") == (["init_from"], None)
    assert parse_assignment('model.final_norm={"type": "rmsnorm"}')[1] == {"type": "rmsnorm"}
    with pytest.raises(ValueError, match=r"dotted\.key=value"):
        parse_assignment("train.steps")


def test_overrides_apply_and_revalidate():
    cfg = apply_overrides(
        base(),
        [
            "train.steps=99",
            'model.final_norm={"type": "rmsnorm"}',
            'eval.tasks.sub={"type": "arithmetic", "op": "-"}',
        ],
    )
    assert cfg.train.steps == 99
    assert type(cfg.model.final_norm).__name__ == "RMSNormConfig"
    assert cfg.eval.tasks["sub"].op == "-"
    assert base().train.steps == 6  # the original is untouched


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.stpes=5", "train.stpes"),
        ("train.steps=-1", "train.steps"),
        ("model.block.token_mixer.n_heads=3", "n_heads"),
        ("train.optimizer.lr=fast", "train.optimizer.lr"),
        ("objective.type=nope", "objective"),
    ],
)
def test_bad_override_fails_naming_the_field(override, field):
    with pytest.raises(ValidationError) as err:
        apply_overrides(base(), [override])
    assert field in str(err.value)


def test_config_json_round_trips():
    cfg = base()
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.model_dump() == cfg.model_dump()


def test_splice_config_prints_validated_json(recipe_file, capsys):
    assert main(["config", str(recipe_file), "--set", "train.steps=7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and printed["objective"]["type"] == "sft"


def test_splice_config_reports_bad_field_and_unknown_recipe(recipe_file, capsys):
    assert main(["config", str(recipe_file), "--set", "train.batch_size=0"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert main(["config", "no-such-recipe"]) == 2
    assert "unknown recipe type 'no-such-recipe'" in capsys.readouterr().err


def test_splice_run_end_to_end(recipe_file, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert (
        main(["run", str(recipe_file), "--output-dir", str(out_dir), "--set", "name=cli-test"]) == 0
    )
    printed = capsys.readouterr().out
    assert "== cli-test ==" in printed and "exact_match:" in printed
    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["name"] == "cli-test" and saved["output_dir"] == str(out_dir)
    ExperimentConfig.model_validate(saved)  # the saved config is a valid config
    assert sorted(p.name for p in (out_dir / "checkpoints").iterdir()) == [
        "step-000003",
        "step-000006",
    ]
    for name in ("metrics.jsonl", "curves.png", "report.md"):
        assert (out_dir / name).is_file(), name
    # Resuming a finished run trains nothing more and reports the same final step.
    assert main(["run", str(recipe_file), "--output-dir", str(out_dir), "--resume"]) == 0
    assert "steps: 6" in capsys.readouterr().out


def test_splice_run_non_finite_exits_1(recipe_file, tmp_path, capsys):
    code = main(
        [
            "run",
            str(recipe_file),
            "--output-dir",
            str(tmp_path / "nan"),
            "--set",
            "train.optimizer.lr=1e30",
            "--set",
            "train.max_grad_norm=null",
            "--set",
            "train.steps=40",
            "--set",
            "train.log_every=1",
        ]
    )
    assert code == 1
    assert "non-finite" in capsys.readouterr().err


def test_run_help_states_what_a_recipe_file_must_define(capsys):
    from splice.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "config()" in out and "ExperimentConfig" in out
    assert "splice.recipe.Recipe" in out and "docs/config-reference.md" in out
