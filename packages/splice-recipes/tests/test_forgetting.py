"""The ``forgetting`` study: config and candidate validation, dev / held-out splits, the
claims, and a tiny end-to-end run whose dev-split choices are checked against the dev runs'
own metrics."""

from __future__ import annotations

import json

import pydantic
import pytest
from splice.cli import main
from splice.overrides import apply_overrides
from splice_recipes.forgetting import (
    MethodConfig,
    claims,
    config,
    pareto_flags,
    point_config,
    pretrain_config,
    quick,
    run,
    strength_label,
)
from splice_recipes.study import StudyResult, mean_of_last_evals

METHODS = ["full", "low_lr", "l2sp", "ewc", "kl", "lora", "qlora", "replay"]


def test_default_config_has_every_method_with_dev_candidates() -> None:
    cfg = config()
    assert [m.name for m in cfg.methods] == METHODS
    for m in cfg.methods[1:]:
        values = [v for v, _ in m.points()]
        assert len(values) >= 3 and len(set(values)) == len(values), m.name
    assert len(cfg.methods[0].points()) == 1  # full fine-tuning: the baseline, no strength
    assert cfg.precision == "float32" and cfg.seeds == 3
    assert not set(cfg.tuning_seeds) & set(cfg.seed_list())
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg


def test_tasks_share_the_addition_and_split_the_same_pairs_three_ways() -> None:
    from splice.training.experiment import build_task

    cfg = config()
    a, b = build_task(cfg.old_task), build_task(cfg.new_task)
    ea, eb = a.format(37, 25), b.format(37, 25)
    assert (ea.prompt, ea.completion) == ("37+25=", "26")
    assert (eb.prompt, eb.completion) == ("37+25:", "cg")
    splits = {}
    for s in ("train", "dev", "held_out"):
        pairs_a = {ex.prompt[:-1] for ex in a.all_examples(s)}
        assert pairs_a == {ex.prompt[:-1] for ex in b.all_examples(s)}  # same pairs, B format
        splits[s] = pairs_a
    assert not splits["dev"] & splits["held_out"] and not splits["train"] & splits["dev"]
    assert not splits["train"] & splits["held_out"]
    # about 1,000 problems each: one problem is about 0.1 point
    assert 800 < len(splits["dev"]) < 1200 and 800 < len(splits["held_out"]) < 1200


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


def test_point_experiments_carry_task_a_and_the_split() -> None:
    cfg = config()
    by_name = {m.name: m for m in cfg.methods}
    _, replay = by_name["replay"].points()[0]  # 5% of task A
    exp = point_config(cfg, replay, "replay", init_from="pre")
    mix = exp.data.task
    assert mix.type == "mixture" and mix.weights == pytest.approx([0.95, 0.05])
    assert [t.separator for t in mix.tasks] == [":", "="]
    assert set(exp.eval.tasks) == {"new", "old"} and exp.reference_data is None
    assert exp.eval.split == "held_out" and exp.eval.every == cfg.eval_every
    _, ewc = by_name["ewc"].points()[0]
    exp = point_config(cfg, ewc, "ewc", init_from="pre", split="dev")
    assert exp.eval.split == "dev"  # a candidate is scored on the dev split only
    assert exp.data.task.separator == ":" and set(exp.eval.tasks) == {"old"}
    assert exp.reference_data is not None and exp.reference_data.task.separator == "="
    assert exp.init_from == "pre" and exp.train.optimizer.lr == cfg.finetune.optimizer.lr
    _, lora = by_name["lora"].points()[0]
    exp = point_config(cfg, lora, "lora", init_from="pre")
    assert exp.adapter.type == "lora" and exp.train.optimizer.lr == 3e-3
    assert pretrain_config(cfg, "dev").eval.split == "dev"


def test_replay_mixture_draws_its_share_of_task_a() -> None:
    """The replay share is what the fine-tuning data holds: count task-A prompts."""
    from splice.training.experiment import build_task

    cfg = config()
    by_name = {m.name: m for m in cfg.methods}
    for share, (_, at) in zip([0.05, 0.25], by_name["replay"].points()[::2], strict=True):
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
def test_bad_candidates_are_refused_naming_the_problem(fields, match) -> None:
    with pytest.raises((pydantic.ValidationError, ValueError), match=match):
        MethodConfig(name="m", **fields)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ('methods.1.name="full"', "names must be unique"),
        ('methods=[{"name": "ewc2"}, {"name": "x"}]', "one named 'full'"),
        ("tuning_seeds=[1]", r"tuning_seeds \[1\] are also reported seeds"),
    ],
)
def test_bad_study_configs_are_refused(override, match) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        apply_overrides(config(), [override])


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


def test_claims_pair_every_method_with_full_fine_tuning() -> None:
    cs = claims(config())
    assert len(cs) == 2 * (len(METHODS) - 1) and {c.baseline for c in cs} == {"full"}
    keeps = {c.arm: c for c in cs if c.metric == "acc_a"}
    costs = {c.arm: c for c in cs if c.metric == "acc_b"}
    assert set(keeps) == set(costs) == set(METHODS[1:])
    assert all(c.direction == "higher" and c.margin == 0 for c in keeps.values())
    # "loses at most 10 points of B": non-inferiority, the interval must clear -0.10
    assert all(c.margin == pytest.approx(-0.10) for c in costs.values())
    assert "at most 10 points" in costs["replay"].sentence


def _tiny(tmp_path, methods: str) -> object:
    return apply_overrides(quick(), [f"methods={methods}", f"output_dir={tmp_path}"])


def test_tiny_study_chooses_on_dev_and_reports_on_held_out(tmp_path, capsys) -> None:
    methods = (
        '[{"name": "full"}, {"name": "replay", "strength": "replay", "values": [0.05, 0.25]},'
        ' {"name": "ewc", "strength": "regularizers.0.weight", "values": [10, 100],'
        ' "regularizers": [{"type": "ewc", "weight": 1, "n_batches": 2, "normalize": "mean"}]}]'
    )
    cfg = _tiny(tmp_path, methods)
    summary = run(cfg)
    study = StudyResult.load(tmp_path)
    assert list(study.figures) == ["full", "replay", "ewc"] and study.seeds == [0, 1]
    assert {c.claim.name for c in study.claims} == {
        "replay-keeps-a", "replay-b-cost", "ewc-keeps-a", "ewc-b-cost"
    }  # fmt: skip
    assert summary["cpu_time_s"] > 0 and study.cpu_time_s == pytest.approx(
        summary["cpu_time_s"], abs=0.05
    )
    tunings = {t["name"]: t for t in study.extras["tuning"]}
    assert set(tunings) == {"replay", "ewc"}
    for name, t in tunings.items():
        assert t["seeds"] == cfg.tuning_seeds and len(t["scores"]) == 2
        # the recorded dev score is what the dev runs logged, and the choice is its argmax
        for i, score in enumerate(t["scores"]):
            run_dir = tmp_path / "tuning" / f"{name}-{i}" / "seed-100"
            saved = json.loads((run_dir / "config.json").read_text())
            assert saved["eval"]["split"] == "dev"
            b_key = "new/exact_match" if name == "replay" else "exact_match"
            a = mean_of_last_evals(run_dir / "metrics.jsonl", "old/exact_match", cfg.last_evals)
            b = mean_of_last_evals(run_dir / "metrics.jsonl", b_key, cfg.last_evals)
            assert score == pytest.approx((a + b) / 2)
        best = max(t["scores"])
        assert t["chosen"] == t["scores"].index(best) and t["value"] == t["candidates"][t["chosen"]]
    # every reported run is scored on the held-out split, at the strength chosen on dev
    for seed in (0, 1):
        saved = json.loads((tmp_path / "replay" / f"seed-{seed}" / "config.json").read_text())
        assert saved["eval"]["split"] == "held_out" and saved["seed"] == seed
        share = tunings["replay"]["value"]
        assert saved["data"]["task"]["weights"] == pytest.approx([1 - share, share])
        ewc = json.loads((tmp_path / "ewc" / f"seed-{seed}" / "config.json").read_text())
        assert ewc["regularizers"][0]["weight"] == tunings["ewc"]["value"]
        assert saved["init_from"] == str(tmp_path / "shared" / f"seed-{seed}" / "pretrain")
    # the pre-training of a tuning seed is scored on dev, of a reported seed on held-out
    pre = json.loads((tmp_path / "shared" / "seed-100" / "pretrain" / "config.json").read_text())
    assert pre["eval"]["split"] == "dev"
    for arm in study.figures:
        for seed in study.seeds:
            fig = study.figures[arm][seed]
            assert 0.0 <= fig["acc_a"] <= 1.0 and 0.0 <= fig["acc_b"] <= 1.0
            assert fig["trainable_params"] > 0
    png = (tmp_path / "frontier.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "## dev choice" in report and "Rule: highest dev mean_acc" in report
    assert "## side table" in report and "| replay | replay=" in report
    out = capsys.readouterr().out
    assert "replay: chose replay=" in out and "ewc keeps more of task A" in out


def test_cli_runs_the_recipe_by_name(tmp_path, capsys) -> None:
    small = [
        "--set=model.d_model=16", "--set=model.n_layers=1", "--set=pretrain.steps=4",
        "--set=pretrain.schedule.warmup_steps=1", "--set=finetune.steps=2",
        "--set=finetune.schedule.warmup_steps=1", "--set=eval_every=1",
        "--set=pretrain.batch_size=8", "--set=finetune.batch_size=8", "--set=eval_examples=6",
        "--set=plot=false", "--set=seeds=2", "--set=progress=false",
        '--set=methods=[{"name": "full"}, {"name": "l2sp", "strength": "regularizers.0.weight", '
        '"values": [0.5], "regularizers": [{"type": "l2sp", "weight": 1}]}]',
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(["run", "forgetting", *small]) == 0
    out = capsys.readouterr().out
    assert "l2sp: chose weight=0.5 on the dev split" in out
    assert not (tmp_path / "frontier.png").exists()  # plot=false
    study = StudyResult.load(tmp_path)
    assert [c.claim.name for c in study.claims] == ["l2sp-keeps-a", "l2sp-b-cost"]


@pytest.mark.slow
def test_replay_keeps_task_a_where_full_fine_tuning_forgets(tmp_path) -> None:
    """The recipe's own settings (model, tasks, steps, evaluation) on two arms over two
    seeds, replay fixed at the 25% the default dev split chose (no dev runs: the test needs
    no tuning seed). The margins come from the published study, where full FT reaches B
    96.7-99.4% with A 0%, and replay 25% keeps A at 100%; they hold under AVX2 float32
    kernels too (emulated, docs/precision.md: full FT B 99.2 / 97.6%, replay A 99.9 /
    98.8%), where seed 1's B is learnt later."""
    cfg = apply_overrides(config(), [
        'methods=[{"name": "full"}, {"name": "replay", "replay": 0.25}]',
        "seeds=2", "plot=false", "progress=false", f"output_dir={tmp_path}",
    ])  # fmt: skip
    run(cfg)
    study = StudyResult.load(tmp_path)
    assert not study.extras["tuning"]  # replay's share is fixed: no dev-split runs
    per_seed = {
        arm: {s: (round(100 * f["acc_b"], 1), round(100 * f["acc_a"], 1))
              for s, f in study.figures[arm].items()}
        for arm in ("full", "replay")
    }  # fmt: skip
    print(f"per seed (B %, A %): {per_seed}; pre-trained: {study.extras['pretrained']}")
    # task A is learnt, so there is something to lose
    assert all(p["acc_a"] >= 0.95 for p in study.extras["pretrained"].values()), per_seed
    assert all(b >= 0.85 for b in study.values("full", "acc_b")), per_seed  # full FT learns B
    assert all(a <= 0.05 for a in study.values("full", "acc_a")), per_seed  # ... and forgets A
    assert all(a >= 0.9 for a in study.values("replay", "acc_a")), per_seed  # replay keeps A
    kept = [r - f for r, f in zip(study.values("replay", "acc_a"), study.values("full", "acc_a"))]
    assert study.claim("replay-keeps-a").differences == pytest.approx(kept)
