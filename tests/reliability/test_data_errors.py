"""Data errors name file and line, and data that leaves nothing to train on is refused
before step 1 (it used to train every step at loss 0.0 and exit 0)."""

from __future__ import annotations

import json

import pytest
from splice.data.tokenizer import CharTokenizer
from splice.registry import get_registry
from splice.training.experiment import run_experiment
from splice.training.preflight import PreflightError, check_alphabet

TINY_MODEL = {
    "type": "decoder", "vocab_size": 52, "d_model": 16, "n_layers": 1, "max_seq_len": 32,
    "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
}  # fmt: skip


def preference_task(path):
    config = {"type": "preference_jsonl", "train": str(path)}
    reg = get_registry()
    cfg = reg.get("task", "preference_jsonl").config_cls.model_validate(config)
    return cfg, reg.build("task", cfg, None)


PAIR = {"prompt": "1+1=", "chosen": "2", "rejected": "3"}


def test_preference_jsonl_names_file_and_line_for_a_bad_byte(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps(PAIR).encode() + b'\n{"prompt": "1+\xff"}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not valid UTF-8 \(byte 0xff"):
        preference_task(path)[1].split("train")


def test_preference_jsonl_says_an_empty_file_is_empty(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError) as err:
        preference_task(path)[1].split("train")
    assert f"{path}: no examples" in str(err.value) and "held-out" not in str(err.value)


def test_preference_jsonl_unknown_character_names_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in (PAIR, {**PAIR, "chosen": "2é"})) + "\n")
    cfg, task = preference_task(path)
    with pytest.raises(PreflightError) as err:
        check_alphabet(cfg, task, CharTokenizer(), seed=0)
    assert str(err.value).startswith(f"{path}:2: character 'é'"), str(err.value)
    assert "held_out" not in str(err.value)


def test_data_with_no_trainable_token_is_refused_before_step_1(tmp_path):
    # The reported case: every example exceeds max_len, so no completion token survives.
    path = tmp_path / "long.jsonl"
    rows = [{"prompt": f"{i}+{i}=" * 4, "completion": str(2 * i)} for i in range(1, 9)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "name": "long",
        "model": TINY_MODEL,
        "data": {"task": {"type": "jsonl", "train": str(path)}, "max_len": 8},
        "train": {"steps": 2, "batch_size": 2, "progress": False, "num_threads": 1},
        "eval": {"loss_batches": 0, "exact_match_examples": 0},
        "output_dir": str(tmp_path / "run"),
    }
    with pytest.raises(PreflightError) as err:
        run_experiment(config)
    msg = str(err.value)
    assert str(path) in msg and "data.max_len=8" in msg and "nothing" in msg
    assert not (tmp_path / "run" / "checkpoints").exists()
    config["data"]["max_len"] = 24  # room for the completions: it trains
    assert run_experiment(config)["steps"] == 2
