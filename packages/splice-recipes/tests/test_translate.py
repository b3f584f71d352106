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
    dev_and_test,
    exact_match,
    held_out_examples,
    recipe,
    run,
    with_lr,
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
    every = held_out_examples(TranslateConfig())  # the default: the whole test half, once each
    assert len(every) > 450 and len({ex.prompt for ex in every}) == len(every)
    train = {ex.prompt for ex in NumberWordsTask(cfg.task).all_examples("train")}
    assert not train & {ex.prompt for ex in every}
    assert cfg.precision == "float32" and cfg.seeds == 5 and cfg.workers == 2


def test_dev_and_test_halves_split_every_held_out_number_once() -> None:
    cfg = TranslateConfig()
    dev, test = dev_and_test(cfg)
    held_out = {ex.prompt for ex in NumberWordsTask(cfg.task).all_examples("held_out")}
    dev_p, test_p = {ex.prompt for ex in dev}, {ex.prompt for ex in test}
    assert len(dev_p) == len(dev) and len(test_p) == len(test)  # distinct
    assert not dev_p & test_p and dev_p | test_p == held_out  # disjoint, together every one
    assert abs(len(dev) - len(test)) <= 1
    assert test == held_out_examples(cfg)  # the reported numbers are the test half
    small_dev, small_test = dev_and_test(cfg.model_copy(update={"eval_examples": 40}))
    assert small_dev == dev[:40] and small_test == test[:40]


def test_learning_rates_come_from_the_dev_choice_and_tuning_seeds_stay_unreported() -> None:
    cfg = TranslateConfig(lrs={"decoder_only": 1e-3})
    assert with_lr(cfg, "decoder_only").train.optimizer.lr == 1e-3
    assert with_lr(cfg, "encoder_decoder").train.optimizer.lr == cfg.train.optimizer.lr
    assert with_lr(cfg, "encoder_decoder", 5e-4).train.optimizer.lr == 5e-4
    with pytest.raises(ValueError, match="tuning_seeds"):
        TranslateConfig(seeds=3, tuning_seeds=[1])
    with pytest.raises(ValueError, match="lrs"):
        TranslateConfig(lrs={"rnn": 1e-3})


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
            "workers": 1,
            "lr_candidates": [3e-3, 1e-3],
            "progress": False,
            "eval_examples": 4,
            "max_new_tokens": 4,
            "output_dir": str(tmp_path),
        }
    )
    report = run(cfg)
    assert report["held_out_examples"] == 4
    study = StudyResult.load(tmp_path)
    for name in ("encoder_decoder", "decoder_only"):
        for seed in (0, 1):
            r = study.figures[name][seed]
            assert 0.0 <= r["exact_match"] <= 1.0 and r["parameters"] > 0 and r["ms_per_step"] > 0
            assert (tmp_path / name / f"seed-{seed}" / "metrics.jsonl").is_file()
        assert len(study.extras["samples"][f"{name}/seed-0"]) == 4  # the first 5 at most
    tunings = {t["name"]: t for t in study.extras["tuning"]}
    assert set(tunings) == {"encoder_decoder", "decoder_only"}
    assert study.extras["dev_examples"] == 4
    for name, t in tunings.items():
        assert t["seeds"] == [100] and len(t["figures"]) == 2  # both candidates, tuning seed
        assert (tmp_path / "tuning" / f"{name}-lr1" / "seed-100" / "metrics.jsonl").is_file()
        assert study.config["lrs"][name] == t["value"]
    claim = study.claim("encoder-decoder-beats-decoder-only")
    assert claim.verdict in ("shown", "not shown") and len(claim.differences) == 2
    assert "encoder-decoder translates more held-out numbers" in capsys.readouterr().out
