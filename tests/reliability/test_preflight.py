"""Every setting that used to fail late is rejected before step 1, and a failing final
evaluation never loses the training (the final checkpoint is written first)."""

from __future__ import annotations

import json

import pytest
import torch
from splice.cli import main


def run_cli(recipe, out, *sets, capsys):
    argv = ["run", str(recipe), "--output-dir", str(out)]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def nothing_trained(out):
    return not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_eval_max_new_tokens_beyond_the_context_fails_before_training(
    tiny_recipe, tmp_path, capsys
):
    out = tmp_path / "run"
    code, err = run_cli(tiny_recipe, out, "eval.max_new_tokens=10", capsys=capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("splice run: error: data: the longest evaluation prompt")
    assert "eval.max_new_tokens=10" in err[0] and "max_seq_len=12" in err[0]
    assert nothing_trained(out)


@pytest.mark.parametrize(
    ("override", "field", "says"),
    [
        ("data.max_len=64", "data.max_len=64 exceeds", "max_seq_len=12"),
        ("train.steps=true", "train.steps", "expected a number, got true"),
        ("train.checkpoint_every=false", "train.checkpoint_every", "expected a number"),
        ("eval.max_new_tokens=2.5", "eval.max_new_tokens", "integer"),
    ],
)
def test_bad_settings_fail_validation_naming_the_field(
    tiny_recipe, tmp_path, capsys, override, field, says
):
    out = tmp_path / "run"
    code, err = run_cli(tiny_recipe, out, override, capsys=capsys)
    text = "\n".join(err)
    assert code == 2 and field in text and says in text, text
    assert nothing_trained(out) and not (out / "config.json").exists()


def test_task_text_outside_the_alphabet_fails_before_training(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli(tiny_recipe, out, "tokenizer.alphabet=0123456789=", capsys=capsys)
    assert code == 1 and len(err) == 1, err
    assert (
        "data: task 'arithmetic'" in err[0]
        and "'+'" in err[0]
        and "is not in the tokenizer's alphabet" in err[0]
    )
    assert nothing_trained(out)


def write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def pc(prompt, completion):
    return json.dumps({"prompt": prompt, "completion": completion}).encode()


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([pc("1+1=", "2"), pc("2+2=", "4"), pc("3+3=", "six\u00e9")], ":3: character '\u00e9'"),
        ([pc("1+1=", "2"), b'{"prompt": "\xff", "completion": "1"}'], ":2: not valid UTF-8"),
        ([b"", b"  "], ": no examples (the file is empty"),
    ],
)
def test_jsonl_data_errors_name_file_and_line(tiny_recipe, tmp_path, capsys, lines, says):
    data = write_lines(tmp_path / "train.jsonl", lines)
    task = json.dumps({"type": "jsonl", "train": str(data), "held_out_fraction": 0.5})
    out = tmp_path / "run"
    code, err = run_cli(tiny_recipe, out, f"data.task={task}", capsys=capsys)
    assert code == 1 and len(err) == 1, err
    assert f"{data}{says}" in err[0], err[0]
    assert nothing_trained(out)


def test_held_out_fraction_message_is_true(tmp_path):
    from splice.data.tasks import JsonlTask, JsonlTaskConfig

    data = write_lines(tmp_path / "one.jsonl", [pc("1+1=", "2")])
    task = JsonlTask(JsonlTaskConfig(train=str(data), held_out_fraction=0.01))
    with pytest.raises(ValueError, match=r"none of its 1 examples fell in held_out_fraction=0.01"):
        task.split("held_out")


def test_a_failing_final_evaluation_keeps_the_final_checkpoint(tmp_path, make_trainer):
    trainer = make_trainer(tmp_path, steps=5, checkpoint_every=2)

    def broken(model):
        raise RuntimeError("evaluation broke")

    trainer.evals.evaluator = broken
    with pytest.raises(RuntimeError, match="evaluation broke"):
        trainer.fit()
    final = tmp_path / "checkpoints" / "step-000005"
    assert final.is_dir()
    from safetensors.torch import load_file

    assert torch.equal(load_file(final / "model.safetensors")["weight"], trainer.model.weight)
