"""A multi-stage recipe (stages are sub-runs below one root folder) holds its root for the
whole run: a second copy is refused while the first runs, a new run never overwrites an
earlier run's stages unless ``--overwrite``, and a refusal writes nothing."""

from __future__ import annotations

import json
import textwrap

import pytest
from splice.cli import main
from splice.cli.run import _takes
from splice.registry import get_registry


def staged_recipes():
    reg = get_registry()
    names = []
    for name in reg.tags("recipe"):
        recipe = reg.get("recipe", name).resolve_factory()
        if recipe.run is not None and not _takes(recipe.run, "resume"):
            names.append(name)
    return names


def test_every_multi_stage_recipe_is_found():
    assert {"dpo", "r1-zero", "forgetting", "ppo"} <= set(staged_recipes())


@pytest.mark.parametrize("name", ["dpo", "r1-zero"])
def test_a_second_copy_is_refused_while_the_first_runs(tmp_path, capsys, hold_folder, name):
    # The reported bug: the second copy deleted the first's SFT checkpoint (its sub-runs
    # pass overwrite=True and each was locked only while it ran) and overwrote its files.
    root = tmp_path / "study"
    holder = hold_folder(root)
    assert main(["run", name, "--output-dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"in use by another run (PID {holder.pid})" in err
    assert sorted(p.name for p in root.iterdir()) == ["splice.lock"]  # nothing written


@pytest.mark.parametrize("name", ["dpo", "r1-zero", "forgetting", "ppo"])
def test_an_earlier_runs_stages_are_kept_and_the_refusal_names_accepted_flags(
    tmp_path, capsys, name
):
    root = tmp_path / "study"
    (root / "sft" / "checkpoints" / "step-000010").mkdir(parents=True)
    (root / "config.json").write_text('{"seed": 0}')
    assert main(["run", name, "--output-dir", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert "already holds an earlier run's stages (sft)" in err, err
    assert "--output-dir" in err and "--overwrite" in err and "--resume" not in err
    assert (root / "config.json").read_text() == '{"seed": 0}'  # not the refused run's
    assert (root / "sft" / "checkpoints" / "step-000010").is_dir()


STUDY = textwrap.dedent(
    '''
    """Two tiny stages, the second starting from the first."""
    import json
    from pathlib import Path

    from pydantic import BaseModel
    from splice.recipe import Recipe
    from splice.training.experiment import run_experiment
    from splice.training.configs import ExperimentConfig


    class Study(BaseModel):
        output_dir: str = "runs/study"
        steps: int = 2


    def stage(config, name, **extra):
        return ExperimentConfig(
            name=name,
            model={"type": "decoder", "vocab_size": 52, "d_model": 16, "n_layers": 1,
                   "max_seq_len": 12, "block": {"type": "pre_norm",
                                                "token_mixer": {"type": "mha", "n_heads": 2}}},
            data={"task": {"type": "arithmetic", "max_digits": 1}, "max_len": 12},
            train={"steps": config.steps, "batch_size": 4, "progress": False,
                   "num_threads": 1, "precision": "float32"},
            eval={"loss_batches": 0, "exact_match_examples": 0},
            output_dir=str(Path(config.output_dir) / name),
            **extra,
        )


    def run(config):
        Path(config.output_dir, "config.json").write_text(json.dumps(config.model_dump()))
        first = stage(config, "first")
        run_experiment(first, overwrite=True)
        run_experiment(stage(config, "second", init_from=first.run_dir()), overwrite=True)
        return {"name": "study"}


    recipe = Recipe(name="study", description="two stages", config=Study, run=run)
    '''
)


def test_overwrite_replaces_an_earlier_runs_stages(tmp_path, capsys):
    recipe = tmp_path / "study.py"
    recipe.write_text(STUDY)
    root = tmp_path / "study"
    assert main(["run", str(recipe), "--output-dir", str(root)]) == 0
    capsys.readouterr()
    assert main(["run", str(recipe), "--output-dir", str(root), "--set", "steps=3"]) == 1
    assert "already holds an earlier run's stages (first, second)" in capsys.readouterr().err
    assert json.loads((root / "config.json").read_text())["steps"] == 2
    assert main(["run", str(recipe), "--output-dir", str(root), "--overwrite",
                 "--set", "steps=3"]) == 0  # fmt: skip
    for stage in ("first", "second"):
        assert sorted(p.name for p in (root / stage / "checkpoints").iterdir()) == ["step-000003"]
    assert main(["run", str(recipe), "--output-dir", str(root), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
