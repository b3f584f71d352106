"""A run folder alone never imports a module: the code a run's config names (a
``callable`` reward) is imported by ``splice eval --run`` / ``splice generate`` only from the
allow-list (splice, ``splice_*`` plugins, ``SPLICE_TRUSTED_MODULES``) or with ``--trust-code``."""

from __future__ import annotations

import json
import sys

import pytest
from splice.cli import main


@pytest.fixture
def planted(tiny_recipe, tmp_path, capsys):
    """A finished run whose config.json was edited to name ``this:s`` as a reward (importing
    ``this`` prints the Zen of Python: the visible sign that code ran)."""
    run = tmp_path / "run"
    assert main(["run", str(tiny_recipe), "--output-dir", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["objective"] = {
        "type": "grpo",
        "rewards": [{"reward": {"type": "callable", "path": "this:s"}}],
    }
    (run / "config.json").write_text(json.dumps(cfg))
    sys.modules.pop("this", None)
    capsys.readouterr()
    return run


def test_eval_of_a_run_folder_imports_no_code(planted, capsys):
    assert main(["eval", "--run", str(planted), "--no-write", "--examples", "1"]) == 1
    out = capsys.readouterr()
    assert "Beautiful is better than ugly" not in out.out and "this" not in sys.modules
    assert "'this'" in out.err and "--trust-code" in out.err and str(planted) in out.err


def test_generate_from_a_run_folder_imports_no_code(planted, capsys):
    from splice.evaluation.from_run import load_splice_model
    from splice.rewards import build_rewards
    from splice.rewards.callable import untrusted_configs

    load_splice_model(planted)  # builds model and tokenizer: no reward, nothing imported
    with untrusted_configs(f"the config of {planted}"), pytest.raises(ValueError) as err:
        build_rewards(json.loads((planted / "config.json").read_text())["objective"]["rewards"])
    assert "not allow-listed" in str(err.value) and "this" not in sys.modules
    argv = ["generate", "--model", str(planted), "--prompt", "1+1=", "--max-new-tokens", "2"]
    assert main(argv) == 0
    assert "Beautiful" not in capsys.readouterr().out


def test_trust_code_and_the_allow_list_import_it(planted, capsys, monkeypatch):
    # Trusted, the module is imported (the Zen is printed); `this.s` is a string, not a
    # function, so the build then stops there: past the trust check.
    argv = ["eval", "--run", str(planted), "--no-write", "--examples", "1"]
    assert main([*argv, "--trust-code"]) == 1
    out = capsys.readouterr()
    assert "Beautiful is better than ugly" in out.out and "not a callable" in out.err
    sys.modules.pop("this", None)
    monkeypatch.setenv("SPLICE_TRUSTED_MODULES", "other,this")
    assert main(argv) == 1
    out = capsys.readouterr()
    assert "Beautiful is better than ugly" in out.out and "not a callable" in out.err
    sys.modules.pop("this", None)
