"""The ``dpo`` study: config validation, the dev-split grids, the dev/test split, the pairs'
log-probs against a hand computation, the training curves, and a tiny end-to-end run at a
few steps with its settings chosen on dev (plumbing, not accuracy)."""

from __future__ import annotations

import json

import pydantic
import pytest
import torch
from splice.cli import main
from splice.data.examples import Example
from splice_dpo.data import PreferenceExample
from splice_recipes import dpo_data
from splice_recipes.dpo import DPOStudy, MethodConfig, claims, config, label, method_config
from splice_recipes.dpo_data import dev_test_split, pair_logps
from splice_recipes.dpo_diagnosis import logged_logps, windowed_curve
from splice_recipes.study import StudyResult


def test_default_config_arms_claims_grids_and_method_runs(tmp_path):
    cfg = config()
    assert cfg.precision == "float32" and cfg.seeds == 5 and cfg.workers == 2
    assert cfg.arms() == ["sft", "dpo", "dpo+nll", "ipo", "simpo", "orpo", "kto", "rft"]
    assert not set(cfg.tuning_seeds) & set(cfg.seed_list())
    names = [c.name for c in claims(cfg)]
    assert "dpo+nll-beats-sft" in names and "dpo-chosen-logp-falls" in names
    assert "nll-keeps-chosen-logp" in names
    m = {x.name: x for x in cfg.methods}
    assert all(x.grid for x in cfg.methods)  # every arm's strength is chosen on dev
    assert len(m["dpo+nll"].candidates()) == 12 and len(m["rft"].candidates()) == 3
    common = {"data": tmp_path, "seed": 2, "init_from": "sft"}
    nll = method_config(cfg, m["dpo+nll"], folder=tmp_path / "a", **common)
    assert nll.objective.type == "weighted_sum" and nll.seed == 2
    assert nll.train.precision == "float32" and nll.output_dir == str(tmp_path / "a")
    assert nll.data.task.layout == dpo_data.LAYOUT  # the layout pair_logps reads in
    kto = method_config(cfg, m["kto"], folder=tmp_path / "b", **common)
    assert kto.objective.type == "kto" and kto.data.task.type == "unpaired_jsonl"
    rft = method_config(cfg, m["rft"], folder=tmp_path / "c", **common)
    assert rft.objective.type == "sft" and rft.data.task.type == "jsonl"
    assert DPOStudy.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(pydantic.ValidationError, match="needs a loss"):
        MethodConfig(name="x")
    with pytest.raises(pydantic.ValidationError, match="must be unique and not 'sft'"):
        DPOStudy(methods=[MethodConfig(name="sft", kind="rft")])
    with pytest.raises(pydantic.ValidationError, match="also reported seeds"):
        DPOStudy(tuning_seeds=[3])


def test_each_candidate_lands_where_its_strength_lives():
    dpo = MethodConfig(name="d", loss={"type": "sigmoid", "beta": 0.1},
                       grid={"lr": [1e-5, 1e-4], "beta": [0.5, 0.1], "sft_weight": [0.2]})  # fmt: skip
    cands = dpo.candidates()
    assert cands[0] == {"lr": 1e-5, "beta": 0.5, "sft_weight": 0.2}  # first key slowest
    assert [c["lr"] for c in cands] == [1e-5, 1e-5, 1e-4, 1e-4]
    at = dpo.at(cands[1])
    assert (at.lr, at.loss.beta, at.sft_weight, at.grid) == (1e-5, 0.1, 0.2, {})
    assert at.setting() == "lr=1e-05 beta=0.1 nll=0.2" and label(cands[1]) == at.setting()
    kto = MethodConfig(name="k", kind="kto", grid={"beta": [0.3]}).at({"beta": 0.3})
    assert kto.beta == 0.3 and kto.setting() == "lr=default beta=0.3"


def test_choose_settings_takes_the_best_mean_dev_accuracy_over_tuning_seeds(monkeypatch):
    import splice_recipes.dpo as dpo

    cfg = DPOStudy(
        workers=1,
        tuning_seeds=[100, 101],
        methods=[
            MethodConfig(name="dpo", loss={"type": "sigmoid", "beta": 0.1},
                         grid={"lr": [1e-5, 1e-4], "beta": [0.5, 0.1]}),
            MethodConfig(name="rft", kind="rft", lr=3e-4),  # no grid: runs as set
        ],
    )  # fmt: skip
    # dev accuracy per candidate (lr, beta order) and tuning seed; seed 100 alone would
    # pick candidate 3, the mean over both seeds picks candidate 1 (lr=1e-5, beta=0.1)
    dev = {100: [0.10, 0.30, 0.20, 0.40], 101: [0.10, 0.30, 0.25, 0.10]}
    calls = []

    def fake_runs(config, seed):
        calls.append(seed)
        return {
            "sft": {"dev_acc": 0.1},
            **{f"dpo/{i}": {"dev_acc": a} for i, a in enumerate(dev[seed])},
        }

    monkeypatch.setattr(dpo, "tuning_runs", fake_runs)
    chosen, tunings, runs = dpo.choose_settings(cfg)
    assert calls == [100, 101] and set(runs) == {100, 101}
    (t,) = tunings
    assert t.name == "dpo" and t.value == "lr=1e-05 beta=0.1"
    assert t.scores == pytest.approx([0.10, 0.30, 0.225, 0.25])
    d, r = chosen.methods
    assert (d.lr, d.loss.beta, d.grid) == (1e-5, 0.1, {})
    assert r == cfg.methods[1] and cfg.methods[0].grid  # the input config is unchanged


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "rft", "grid": {"beta": [0.1]}}, "grid key 'beta'"),
        ({"kind": "kto", "grid": {"sft_weight": [1.0]}}, "grid key 'sft_weight'"),
        ({"kind": "rft", "grid": {"lr": []}}, "each with values"),
        ({"kind": "rft", "grid": {"lr": [-1.0]}}, "greater than 0"),
    ],
)
def test_bad_grids_are_refused_naming_the_problem(fields, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        MethodConfig(name="m", **fields)


def test_dev_test_split_is_disjoint_and_refuses_repeats_and_leaks():
    held = [Example(f"{i}+1=", str(i + 1)) for i in range(200)]
    dev, test = dev_test_split(held, [Example("999+1=", "1000")], 0.5)
    assert len(dev) + len(test) == 200 and 60 < len(dev) < 140
    assert not {e.prompt for e in dev} & {e.prompt for e in test}
    with pytest.raises(ValueError, match="repeat"):
        dev_test_split([*held, held[0]], [], 0.5)
    with pytest.raises(ValueError, match="1 held-out problems are training prompts"):
        dev_test_split(held, [held[5]], 0.5)


@pytest.mark.parametrize("layout", ["shared_prompt", "packed", "padded"])
def test_pair_logps_are_per_token_means_over_all_pairs(layout):
    from splice.models.build import build_model
    from splice.training.experiment import build_tokenizer
    from splice_recipes.dpo_data import sft_config

    cfg = DPOStudy(model={**config().model.model_dump(), "d_model": 16, "n_layers": 1})
    tok = build_tokenizer(sft_config(cfg, 0, cfg.arm_dir("x", 0)).tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    pairs = [PreferenceExample("1+2=", "3", "4", "3"), PreferenceExample("12+3=", "51", "6", "51")]
    # batches must not matter; the default layout is the arms' (LAYOUT, shared_prompt)
    got = pair_logps(model, tok, pairs, cfg.max_len, batch_size=1, layout=layout)

    def by_hand(prompt: str, completion: str) -> tuple[float, int]:
        p = tok.encode(prompt, bos=True)
        c = tok.encode(completion, eos=True)
        ids = torch.tensor([p + c])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].double(), -1)  # (T, V)
        rows = range(len(p) - 1, len(p) + len(c) - 1)
        return float(sum(lp[i, ids[0, i + 1]] for i in rows)), len(c)

    for side in ("chosen", "rejected"):
        parts = [by_hand(p.prompt, getattr(p, side)) for p in pairs]
        want = sum(s for s, _ in parts) / sum(n for _, n in parts)
        assert got[f"{side}_logp"] == pytest.approx(want, abs=1e-5)
    assert got["chosen_logp"] < 0 and got["rejected_logp"] < 0


def test_curves_read_both_sides_and_average_runs_and_windows(tmp_path):
    rows = [{"kind": "train", "step": i, "dpo/logps/chosen": -1.0 - 0.1 * i,
             "dpo/logps/rejected": -2.0} for i in range(1, 6)]  # fmt: skip
    rows.insert(3, {"kind": "eval", "step": 3, "exact_match": 0.5})
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    chosen = logged_logps(path, "chosen")
    assert [s for s, _ in chosen] == [1, 2, 3, 4, 5] and chosen[0][1] == pytest.approx(-1.1)
    other = [(s, v + 1.0) for s, v in chosen]  # a second seed, 1 higher
    curve = windowed_curve([chosen, other], window=2)
    assert [p[0] for p in curve] == [2.0, 4.0, 5.0]  # steps 1-2, 3-4, 5
    assert curve[0][1] == pytest.approx((-1.1 - 1.2 + -0.1 - 0.2) / 4)
    assert curve[2][1] == pytest.approx((-1.5 - 0.5) / 2)
    path.write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}))
    with pytest.raises(ValueError, match="logps/rejected"):
        logged_logps(path, "rejected")


@pytest.mark.slow
def test_tiny_study_chooses_on_dev_and_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2,
        "workers": 1,
        "tuning_seeds": "[100]",
        "progress": "false",
        "model.d_model": 16,
        "model.n_layers": 1,
        "sft.steps": 3,
        "sft.schedule.warmup_steps": 1,
        "sft.batch_size": 8,
        "prompts": 12,
        "reference_as_chosen": "true",
        "samples_per_prompt": 4,
        "preference_train.steps": 4,
        "preference_train.batch_size": 4,
        "held_out_examples": 40,
        "methods.0.grid": '{"lr": [1e-5, 1e-3]}',
        "methods.1.grid": '{"sft_weight": [0.5]}',
        "methods.2.grid": "{}",
        "methods.3.grid": "{}",
        "methods.4.grid": "{}",
        "methods.5.grid": "{}",
        "methods.6.grid": '{"lr": [1e-4]}',
    }
    args = ["run", "dpo", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "DPO + NLL on the chosen side beats its SFT start" in printed
    assert "| arm | setting (chosen on dev) | dev accuracy | test accuracy |" in printed
    study = StudyResult.load(out)
    assert study.seeds == [0, 1] and study.environment["precision"] == "float32"
    assert set(study.figures) == set(config().arms())
    # the dev choice: two dpo candidates and one each for dpo+nll and rft, on seed 100 only
    tunings = {t["name"]: t for t in study.extras["tuning"]}
    assert set(tunings) == {"dpo", "dpo+nll", "rft"}
    assert tunings["dpo"]["candidates"] == ["lr=1e-05", "lr=0.001"]
    assert tunings["dpo"]["seeds"] == [100] and "test_acc" not in tunings["dpo"]["figures"][0][0]
    chosen_lr = float(tunings["dpo"]["value"].split("=")[1])
    assert (
        study.config["methods"][0]["lr"] == chosen_lr and study.config["methods"][0]["grid"] == {}
    )
    assert (out / "tuning" / "dpo-1" / "seed-100" / "metrics.jsonl").is_file()
    for seed in (0, 1):
        start = study.figures["sft"][seed]
        assert 0.0 <= start["test_acc"] <= 1.0 and start["test_examples"] > 0
        assert start["chosen_logp"] == pytest.approx(start["sft_chosen_logp"])
        dpo = study.figures["dpo"][seed]
        assert dpo["chosen_logp_change"] == pytest.approx(dpo["chosen_logp"] - start["chosen_logp"])
        assert "rejected_logp_change" in study.figures["kto"][seed]
        pairs = (out / "shared" / f"seed-{seed}" / "pairs.jsonl").read_text().splitlines()
        assert len(pairs) == start["pairs"] > 0
        assert all(json.loads(p)["chosen"] != json.loads(p)["rejected"] for p in pairs)
        saved = json.loads((out / "dpo" / f"seed-{seed}" / "config.json").read_text())
        assert saved["seed"] == seed and saved["train"]["precision"] == "float32"
        assert saved["train"]["optimizer"]["lr"] == chosen_lr
    curve = study.extras["logp_curves"]["dpo"]["chosen"]
    assert [p[0] for p in curve] == [4.0]  # 4 steps in one window of 10
    assert (out / "logps-over-training.png").is_file() and (out / "report.md").is_file()
    assert (out / "dpo-chosen-logp-falls.png").is_file()
