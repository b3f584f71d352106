"""Errors people can act on: one ``splice <cmd>: error:`` line (traceback with --debug),
standard JSON from ``splice eval``, ``splice generate`` on a splice run folder."""

from __future__ import annotations

import json
import math

import torch
from splice.checkpoint import save_model_weights
from splice.cli import main


def strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_runtime_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(
    tiny_recipe, tmp_path, capsys
):
    argv = ["run", str(tiny_recipe), "--output-dir", str(tmp_path / "r"),
            "--set", f"init_from={tmp_path / 'missing.safetensors'}"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("splice run: error: model weights not found: ")
    assert err[0].endswith("(hint: check the path)")
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "splice run: error:" in err


def test_eval_writes_standard_json_with_null_for_non_finite(tiny_recipe, tmp_path, capsys):
    from splice.cli.run import load_recipe
    from splice.models.build import build_model

    config = load_recipe(str(tiny_recipe)).config()  # no training needed: only its config
    (tmp_path / "config.json").write_text(config.model_dump_json())
    model = build_model(config.model)
    with torch.no_grad():
        next(model.parameters()).fill_(math.inf)  # a model whose loss is not finite
    broken = tmp_path / "broken"
    broken.mkdir()
    save_model_weights(model, broken / "model.safetensors")
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(broken / "model.safetensors"),
            "--config", str(tmp_path / "config.json"), "--examples", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    printed = strict_json(out[: out.rindex("}") + 1])
    saved = strict_json((broken / "eval.json").read_text())
    assert printed["eval_loss"] is None and saved["eval_loss"] is None


def test_generate_accepts_a_run_folder_and_a_checkpoint(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(tiny_recipe), "--output-dir", str(run)]) == 0
    capsys.readouterr()
    for target in (run, run / "checkpoints" / "step-000002"):
        argv = ["generate", "--model", str(target), "--prompt", "1+2=", "--max-new-tokens", "3"]
        assert main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and len(out[0]) <= 3
        assert set(out[0]) <= set("0123456789+-*/=()?:., abcdefghijklmnopqrstuvwxyz")
