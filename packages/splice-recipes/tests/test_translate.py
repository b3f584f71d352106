"""The ``translate`` recipe: registered, comparable models, end-to-end report on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from splice.data.examples import Example
from splice.data.translation import NumberWordsTask
from splice.models.decoder import DecoderLM
from splice.models.encoder_decoder import EncoderDecoderLM
from splice.registry import get_registry
from splice_recipes.study import StudyResult
from splice_recipes.translate import (
    TranslateConfig,
    exact_match,
    held_out_examples,
    recipe,
    run,
)


def test_recipe_is_registered() -> None:
    reg = get_registry().get("recipe", "translate")
    assert reg.resolve_factory() is recipe
    assert isinstance(recipe.config(), TranslateConfig)


def test_default_models_have_comparable_parameter_counts() -> None:
    cfg = TranslateConfig()
    enc_dec = EncoderDecoderLM(cfg.encoder_decoder).num_parameters()
    dec = DecoderLM(cfg.decoder_only).num_parameters()
    assert abs(enc_dec - dec) / enc_dec < 0.1, (enc_dec, dec)


def test_default_lengths_fit_the_task() -> None:
    cfg = TranslateConfig()
    longest = max(
        held_out_examples(cfg.model_copy(update={"eval_examples": 0})),
        key=lambda ex: len(ex.completion),
    )
    assert cfg.max_new_tokens >= len(longest.completion) + 1  # + eos
    assert cfg.encoder_decoder.max_target_len >= len(longest.completion) + 2  # bos, eos
    assert cfg.decoder_only.max_seq_len >= len(longest.prompt) + len(longest.completion) + 3


def test_held_out_examples_are_distinct_and_never_trained_on() -> None:
    cfg = TranslateConfig(eval_examples=30)
    a = held_out_examples(cfg)
    assert a == held_out_examples(cfg) and len({ex.prompt for ex in a}) == 30
    every = held_out_examples(TranslateConfig())  # the default: every held-out number once
    assert len(every) > 900 and len({ex.prompt for ex in every}) == len(every)
    train = {ex.prompt for ex in NumberWordsTask(cfg.task).all_examples("train")}
    assert not train & {ex.prompt for ex in every}
    assert cfg.precision == "float32" and cfg.seeds == 3


def test_exact_match_compares_stripped_text() -> None:
    exs = [Example("1", "one", "one"), Example("2", "two", "two")]
    assert exact_match([" one ", "too"], exs) == 0.5


def test_config_overrides_validate() -> None:
    data = TranslateConfig().model_dump()
    data["train"]["steps"] = 0
    with pytest.raises(ValueError, match="steps"):
        TranslateConfig.model_validate(data)


def test_study_runs_both_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TranslateConfig.model_validate(
        {
            "task": {"type": "number_words", "max_digits": 2},
            "encoder_decoder": {
                **TranslateConfig().encoder_decoder.model_dump(),
                "d_model": 16,
                "encoder_layers": 1,
                "decoder_layers": 1,
            },
            "decoder_only": {
                **TranslateConfig().decoder_only.model_dump(),
                "d_model": 16,
                "n_layers": 2,
            },
            "train": {
                "steps": 3,
                "batch_size": 8,
                "log_every": 1,
                "progress": False,
                "num_threads": 1,
            },
            "seeds": 2,
            "progress": False,
            "eval_examples": 6,
            "max_new_tokens": 4,
            "output_dir": str(tmp_path),
        }
    )
    report = run(cfg)
    assert report["held_out_examples"] == 6
    study = StudyResult.load(tmp_path)
    for name in ("encoder_decoder", "decoder_only"):
        for seed in (0, 1):
            r = study.figures[name][seed]
            assert 0.0 <= r["exact_match"] <= 1.0 and r["parameters"] > 0 and r["ms_per_step"] > 0
            assert (tmp_path / name / f"seed-{seed}" / "metrics.jsonl").is_file()
        assert len(study.extras["samples"][f"{name}/seed-0"]) == 5
    claim = study.claim("encoder-decoder-beats-decoder-only")
    assert claim.verdict in ("shown", "not shown") and len(claim.differences) == 2
    assert "encoder-decoder translates more held-out numbers" in capsys.readouterr().out
