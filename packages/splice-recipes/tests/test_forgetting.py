"""The ``forgetting`` recipe: config and sweep validation, the Pareto marking, and a tiny
end-to-end run that writes the table, the JSON summary and the frontier plot."""

from __future__ import annotations

import json

import pydantic
import pytest
from splice.cli import main
from splice.overrides import apply_overrides
from splice_recipes.forgetting import (
    MethodConfig,
    config,
    pareto_flags,
    point_config,
    quick,
    run,
    strength_label,
)

METHODS = ["full", "low_lr", "l2sp", "ewc", "kl", "lora", "qlora", "replay"]


def test_default_config_sweeps_every_method_over_four_strengths() -> None:
    cfg = config()
    assert [m.name for m in cfg.methods] == METHODS
    for m in cfg.methods[1:]:
        values = [v for v, _ in m.points()]
        assert len(values) >= 4 and len(set(values)) == len(values), m.name
    assert len(cfg.methods[0].points()) == 1  # full fine-tuning: the one baseline point
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg


def test_tasks_share_the_addition_and_differ_in_format() -> None:
    from splice.training.experiment import build_task

    cfg = config()
    a = build_task(cfg.old_task).format(37, 25)
    b = build_task(cfg.new_task).format(37, 25)
    assert (a.prompt, a.completion) == ("37+25=", "26")
    assert (b.prompt, b.completion) == ("37+25:", "cg")


def test_each_strength_lands_where_its_path_says() -> None:
    cfg = config()
    by_name = {m.name: m for m in cfg.methods}
    lows = [at.lr for _, at in by_name["low_lr"].points()]
    assert lows == by_name["low_lr"].values
    ewc = [at.regularizers[0].weight for _, at in by_name["ewc"].points()]
    assert ewc == by_name["ewc"].values
    assert all(at.regularizers[0].normalize == "mean" for _, at in by_name["ewc"].points())
    q = [at.adapter for _, at in by_name["qlora"].points()]
    assert [a.alpha for a in q] == by_name["qlora"].values and {a.r for a in q} == {8}
    assert {a.quantization.type for a in q} == {"nf4"}
    assert cfg.methods[1].lr is None  # points are copies: the method itself is unchanged


def test_point_experiments_carry_task_a_where_needed() -> None:
    cfg = config()
    by_name = {m.name: m for m in cfg.methods}
    _, replay = by_name["replay"].points()[1]  # 5% of task A
    exp = point_config(cfg, replay, "replay-1", init_from="pre")
    mix = exp.data.task
    assert mix.type == "mixture" and mix.weights == pytest.approx([0.95, 0.05])
    assert [t.separator for t in mix.tasks] == [":", "="]
    assert set(exp.eval.tasks) == {"new", "old"} and exp.reference_data is None
    _, ewc = by_name["ewc"].points()[0]
    exp = point_config(cfg, ewc, "ewc-0", init_from="pre")
    assert exp.data.task.separator == ":" and set(exp.eval.tasks) == {"old"}
    assert exp.reference_data is not None and exp.reference_data.task.separator == "="
    assert exp.init_from == "pre" and exp.train.optimizer.lr == cfg.finetune.optimizer.lr
    _, lora = by_name["lora"].points()[0]
    exp = point_config(cfg, lora, "lora-0", init_from="pre")
    assert exp.adapter.type == "lora" and exp.train.optimizer.lr == 3e-3


def test_replay_mixture_draws_its_share_of_task_a() -> None:
    """The replay share is what the fine-tuning data holds: count task-A prompts."""
    from splice.training.experiment import build_task

    cfg = config()
    by_name = {m.name: m for m in cfg.methods}
    for share, (_, at) in zip([0.05, 0.25], by_name["replay"].points()[1::2], strict=True):
        task = build_task(point_config(cfg, at, "r", init_from="pre").data.task)
        drawn = task.sample("train", 4000, seed=0)
        old = sum(ex.prompt.endswith("=") for ex in drawn) / len(drawn)
        assert old == pytest.approx(share, abs=0.015)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"strength": "lr"}, "needs values"),
        ({"values": [1.0]}, "no strength path"),
        ({"strength": "regularizers.0.weight", "values": [1.0]}, "index 0 out of range"),
        ({"strength": "lr", "values": [-1.0]}, "greater than 0"),
        ({"strength": "replay", "values": [1.0]}, "less than 1"),
        ({"strength": "values", "values": [1.0]}, "strength cannot be"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_problem(fields, match) -> None:
    with pytest.raises((pydantic.ValidationError, ValueError), match=match):
        MethodConfig(name="m", **fields)


def test_duplicate_method_names_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="names must be unique"):
        apply_overrides(config(), ['methods.1.name="full"'])


def test_strength_labels() -> None:
    by_name = {m.name: m for m in config().methods}
    assert strength_label(by_name["low_lr"], 1e-4) == "lr=0.0001"
    assert strength_label(by_name["kl"], 0.3) == "weight=0.3"
    assert strength_label(by_name["replay"], 0.05) == "replay=5%"
    assert strength_label(by_name["full"], None) == "-"


def test_pareto_marks_exactly_the_undominated_points() -> None:
    pts = [(0.0, 0.9), (0.5, 0.5), (0.4, 0.4), (0.5, 0.5), (1.0, 0.0), (0.9, 0.0), (0.2, 0.95)]
    # (0.4, 0.4) is dominated by (0.5, 0.5); (0.9, 0.0) by (1.0, 0.0); (0.0, 0.9) by
    # (0.2, 0.95); the two equal (0.5, 0.5) points do not dominate each other.
    assert pareto_flags(pts) == [False, True, False, True, True, False, True]


def test_tiny_run_writes_table_json_and_plot(tmp_path, capsys) -> None:
    report = run(apply_overrides(quick(), [f"output_dir={tmp_path}"]))
    rows = report["rows"]
    assert [r["method"] for r in rows] == ["full"] + [m for m in METHODS[1:] for _ in range(4)]
    for r in rows:
        assert 0.0 <= r["new_after"] <= 1.0 and 0.0 <= r["old_after"] <= 1.0
        assert r["trainable_params"] > 0 and r["train_time_s"] > 0
    params = {r["method"]: r["trainable_params"] for r in rows}
    assert params["lora"] < params["full"] and params["qlora"] == params["lora"]
    assert any(r["pareto"] for r in rows)
    table = (tmp_path / "forgetting.md").read_text()
    assert table.count("\n") == 3 + len(rows)  # header, rule, pre-trained row, points
    assert "| qlora | alpha=16 |" in table and "| replay | replay=25% |" in table
    saved = json.loads((tmp_path / "forgetting.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    png = (tmp_path / "forgetting.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (tmp_path / "ewc-3" / "metrics.jsonl").is_file()
    assert "| ewc | weight=100 |" in capsys.readouterr().out


def _small(tmp_path) -> list[str]:
    """The quick config, one method, as CLI ``--set`` overrides."""
    return [
        "--set=model.d_model=16", "--set=model.n_layers=1", "--set=pretrain.steps=4",
        "--set=pretrain.schedule.warmup_steps=1", "--set=finetune.steps=2",
        "--set=pretrain.batch_size=8", "--set=finetune.batch_size=8", "--set=eval_examples=6",
        "--set=plot=false",
        '--set=methods=[{"name": "l2sp", "strength": "regularizers.0.weight", '
        '"values": [0.5, 5], "regularizers": [{"type": "l2sp", "weight": 1}]}]',
        "--output-dir", str(tmp_path),
    ]  # fmt: skip


def test_cli_runs_the_recipe_by_name(tmp_path, capsys) -> None:
    assert main(["run", "forgetting", *_small(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| l2sp | weight=0.5 |" in out and "| l2sp | weight=5 |" in out
    assert not (tmp_path / "forgetting.png").exists()  # plot=false
    saved = json.loads((tmp_path / "forgetting.json").read_text())
    assert [r["strength"] for r in saved["rows"]] == ["weight=0.5", "weight=5"]


def test_pretraining_is_redone_when_the_code_changed(tmp_path, capsys, monkeypatch) -> None:
    """A matching config is not enough: a pre-training by other code is not reused."""
    import splice_recipes.forgetting as recipe

    cfg = apply_overrides(
        quick(), ['methods=[{"name": "full"}]', "plot=false", f"output_dir={tmp_path}"]
    )
    first = run(cfg)
    again = run(cfg)
    assert "reusing the pre-trained model" in capsys.readouterr().out
    # the point starts from the saved model: the same accuracies (only timing may differ)
    keys = ("new_after", "old_after", "final_train_loss")
    assert [first["rows"][0][k] for k in keys] == [again["rows"][0][k] for k in keys]
    monkeypatch.setattr(recipe, "code_fingerprint", lambda: "other code")
    run(cfg)
    out = capsys.readouterr().out
    assert "reusing" not in out and "the splice code changed since" in out


def test_code_fingerprint_covers_core_and_plugins() -> None:
    from splice_recipes.forgetting import fingerprinted_packages

    # the model's attention, the regularizers and the adapters shape the trained weights too
    assert {"splice", "splice_mha", "splice_forgetting", "splice_lora", "splice_qlora",
            "splice_recipes"} <= set(fingerprinted_packages())  # fmt: skip


@pytest.mark.slow
def test_replay_and_low_lr_keep_task_a_where_full_fine_tuning_forgets(tmp_path) -> None:
    """The recipe's own settings (seed 0, the default model, tasks and steps) on three
    methods: the figures are those of the full table, so the margins below come from it."""
    cfg = apply_overrides(config(), [
        'methods=[{"name": "full"}, {"name": "low_lr", "strength": "lr", "values": [1e-5]}, '
        '{"name": "replay", "strength": "replay", "values": [0.01, 0.25]}]',
        "plot=false", f"output_dir={tmp_path}",
    ])  # fmt: skip
    report = run(cfg)
    assert (
        report["pretrain"]["old_accuracy"] >= 0.95
    )  # task A is learnt: there is something to lose
    full, low, replay1, replay25 = report["rows"]
    # Full fine-tuning learns B and forgets A.
    assert full["new_after"] >= 0.7 and full["old_retained"] <= 0.2
    # A tiny learning rate keeps A but learns no B: the other end of the trade-off.
    assert low["old_retained"] >= 0.8 and low["new_after"] <= 0.1
    # Replay: retention rises with the share of task A.
    assert replay25["old_retained"] >= replay1["old_retained"] + 0.2
    assert replay25["new_after"] >= 0.5
