"""The ``vlm-moe`` study: equal active parameters across arms, learning rates chosen per arm
on the dev split (the tuning seed's held-out scenes), held-out scenes checked distinct and
disjoint, and a tiny end-to-end run over two seeds (in this process) that writes its claims
with intervals and the expert-load plot."""

from __future__ import annotations

import functools

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.study import StudyResult, check_sendable
from splice_recipes.vlm_moe import (
    ARMS,
    active_params,
    build_vlm,
    check_disjoint,
    config,
    dev_run,
    dev_scenes,
    image_key,
    run,
    run_seed,
)
from splice_vision.data import ShapesTask

TINY = [
    "d_model=32",
    "n_layers=1",
    "n_heads=2",
    "hidden=16",
    "seeds=2",
    "progress=false",
    "train.steps=4",
    "train.batch_size=4",
    "eval_scenes=2",
]


def test_arms_have_equal_active_parameters_up_to_the_router() -> None:
    cfg = config()
    assert cfg.precision == "float32" and cfg.workers == 2 and cfg.train.decay
    active = {arm: active_params(build_vlm(cfg, arm)) for arm in ARMS}
    router = cfg.n_layers * cfg.d_model * 4  # the (E, D) router of each MoE layer
    assert active["moe-shared"] == active["moe-isolated"] == active["dense"] + router


def test_dev_scenes_are_the_tuning_seeds_held_out_scenes_and_checks_catch_repeats() -> None:
    cfg, task = config(), ShapesTask()
    dev = dev_scenes(cfg, task)
    assert len(dev) == cfg.eval_scenes
    test = task.sample("held_out", cfg.eval_scenes, seed=0)
    check_disjoint(test, {image_key(s) for s in dev}, where="test vs dev")
    with pytest.raises(RuntimeError, match="2 are also in the other set"):
        check_disjoint(test[:2], {image_key(s) for s in test}, where="x")
    with pytest.raises(RuntimeError, match="1 scenes repeat"):
        check_disjoint([test[0], test[0]], set(), where="x")


@pytest.mark.parametrize(
    ("override", "match"),
    [("tuning_seeds=[0]", "also reported seeds"), ('arm_lrs={"moe": 0.1}', "unknown arms")],
)
def test_bad_configs_are_rejected(override: str, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        apply_overrides(config(), [override])


def test_tiny_study_prints_claims_with_intervals(tmp_path, capsys) -> None:
    # In this process (workers=1): each spawned worker imports torch and the plugins afresh
    # (~8 s), four per study, which made this test 36 s where it now takes 2-3 s. The
    # figures do not depend on the workers (test_study_runner, test_study_tuning; vlm-compare
    # runs its tiny study in workers); what a worker is sent must pickle.
    cfg = apply_overrides(
        config(),
        [*TINY, "lrs=[0.001, 0.004]", 'arm_lrs={"dense": 0.002}', "workers=1",
         f"output_dir={tmp_path}"],
    )  # fmt: skip
    for job in (run_seed, functools.partial(dev_run, cfg)):
        check_sendable(job)  # raises, naming the function, if a worker could not get it
    report = run(cfg)
    study = StudyResult.load(tmp_path)
    assert len(study.claims) == 4
    for c in study.claims:
        assert c.verdict in ("shown", "not shown") and len(c.differences) == 2
    out = capsys.readouterr().out
    assert "modality-isolated MoE has lower held-out VQA loss than dense" in out
    assert (tmp_path / "expert-load.png").stat().st_size > 0
    # dense was pinned; each MoE arm chose its own on the dev split
    tunings = study.extras["tuning"]
    assert [t["name"] for t in tunings] == ["moe-shared", "moe-isolated"]
    for t in tunings:
        assert t["seeds"] == [100] and t["direction"] == "lower"
        assert t["scores"][t["chosen"]] == min(t["scores"])
    assert study.extras["lr"] == {
        "dense": 0.002, "moe-shared": tunings[0]["value"], "moe-isolated": tunings[1]["value"]
    }  # fmt: skip
    iso = study.figures["moe-isolated"][study.seeds[0]]
    # isolation: text tokens only on experts 0-1, image tokens only on 2-3
    assert iso["load_text_e2"] == iso["load_text_e3"] == iso["load_image_e0"] == 0.0
    assert iso["load_image_e2"] + iso["load_image_e3"] == pytest.approx(1.0)
    assert "dev choice" in (tmp_path / "report.md").read_text()
    assert all(k.startswith("claim ") or k in report for k in report)
