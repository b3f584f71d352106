"""The ``translate`` recipe: registered, comparable models, end-to-end report on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from splice.data.examples import Example
from splice.models.decoder import DecoderLM
from splice.models.encoder_decoder import EncoderDecoderLM
from splice.registry import get_registry
from splice_recipes.translate import (
    TranslateConfig,
    exact_match,
    format_table,
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


def test_held_out_examples_are_fixed_by_the_seed() -> None:
    cfg = TranslateConfig(eval_examples=30)
    a, b = held_out_examples(cfg), held_out_examples(cfg)
    assert a == b and len(a) == 30
    assert held_out_examples(cfg.model_copy(update={"seed": 1})) != a


def test_exact_match_compares_stripped_text() -> None:
    exs = [Example("1", "one", "one"), Example("2", "two", "two")]
    assert exact_match([" one ", "too"], exs) == 0.5


def test_config_overrides_validate() -> None:
    data = TranslateConfig().model_dump()
    data["train"]["steps"] = 0
    with pytest.raises(ValueError, match="steps"):
        TranslateConfig.model_validate(data)


def test_run_reports_both_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
            "eval_examples": 6,
            "max_new_tokens": 4,
            "output_dir": str(tmp_path),
        }
    )
    report = run(cfg)
    for name in ("encoder_decoder", "decoder_only"):
        r = report[name]
        assert r["steps"] == 3 and r["parameters"] > 0
        assert 0.0 <= r["exact_match"] <= 1.0 and r["train_time_s"] > 0
        assert len(r["samples"]) == 5 and set(r["samples"][0]) == {"source", "target", "prediction"}
        assert (tmp_path / name / "metrics.jsonl").is_file()
    assert report["held_out_examples"] == 6
    assert report["table"] == format_table(
        {k: report[k] for k in ("encoder_decoder", "decoder_only")}
    )
    printed = capsys.readouterr().out
    assert "| encoder-decoder |" in printed and "| decoder-only |" in printed
    assert (tmp_path / "comparison.md").read_text().strip() == report["table"]
