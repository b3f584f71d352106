"""The ``vlm-moe`` study: equal active parameters across arms, and a tiny end-to-end run
over two seeds that writes its claims with intervals and the expert-load plot."""

from __future__ import annotations

import pytest
from splice.overrides import apply_overrides
from splice_recipes.study import StudyResult
from splice_recipes.vlm_moe import ARMS, active_params, build_vlm, config, run

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
    assert cfg.precision == "float32"
    active = {arm: active_params(build_vlm(cfg, arm)) for arm in ARMS}
    router = cfg.n_layers * cfg.d_model * 4  # the (E, D) router of each MoE layer
    assert active["moe-shared"] == active["moe-isolated"] == active["dense"] + router


def test_tiny_study_prints_claims_with_intervals(tmp_path, capsys) -> None:
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    report = run(cfg)
    study = StudyResult.load(tmp_path)
    assert len(study.claims) == 4
    for c in study.claims:
        assert c.verdict in ("shown", "not shown") and len(c.differences) == 2
    out = capsys.readouterr().out
    assert "modality-isolated MoE has lower held-out VQA loss than dense" in out
    assert (tmp_path / "expert-load.png").stat().st_size > 0
    iso = study.figures["moe-isolated"][study.seeds[0]]
    # isolation: text tokens only on experts 0-1, image tokens only on 2-3
    assert iso["load_text_e2"] == iso["load_text_e3"] == iso["load_image_e0"] == 0.0
    assert iso["load_image_e2"] + iso["load_image_e3"] == pytest.approx(1.0)
    assert all(k.startswith("claim ") or k in report for k in report)
