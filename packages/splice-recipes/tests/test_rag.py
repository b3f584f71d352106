"""The ``rag`` study: registered, valid, and runnable end to end on a tiny base at a few steps
(plumbing, not accuracy): shared retrievers saved once per seed, every arm's figures, the
accuracy-against-k plot."""

from __future__ import annotations

import json

import pytest
from splice.cli import main
from splice.cli.run import load_recipe
from splice_recipes.rag import ARMS, RagStudy
from splice_recipes.rag_kb import make_facts
from splice_recipes.study import StudyResult


def test_recipe_is_registered_and_its_config_is_valid():
    cfg = load_recipe("rag").config()
    assert isinstance(cfg, RagStudy) and cfg.precision == "float32" and cfg.seeds == 3
    assert RagStudy.model_validate_json(cfg.model_dump_json()) == cfg
    facts = make_facts(cfg.people)
    assert len(facts) == 4 * cfg.people >= 2000  # thousands of facts
    assert len({f.passage for f in facts}) == len(facts)
    assert all(f.answer in f.passage.split() for f in facts)


@pytest.mark.slow
def test_study_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2, "workers": 2, "progress": "false", "last_evals": 1, "people": 20, "train_people": 15,
        "ks": "[1,3]", "dense.epochs": 1,
        "experiment.train.steps": 4, "experiment.train.batch_size": 8,
        "experiment.train.checkpoint_every": 4, "experiment.eval.every": 4,
        "experiment.eval.exact_match_examples": 8, "experiment.eval.loss_batches": 1,
        "experiment.model.d_model": 32, "experiment.model.n_layers": 1,
    }  # fmt: skip
    args = ["run", "rag", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fine-tuning on retrieved passages beats retrieval at inference only" in printed
    study = StudyResult.load(out)
    assert set(study.figures) == set(ARMS)
    # the two seeds ran in two worker processes, each writing its own run folders
    assert all(len(study.figures[arm]) == 2 for arm in ARMS)
    assert all((out / "raft_bm25" / f"seed-{s}" / "metrics.jsonl").is_file() for s in (0, 1))
    for arm in ("raft_bm25", "raft_dense", "raft_hybrid"):
        got = study.figures[arm][0]
        assert {"exact_match", "em@1", "em@3", "recall@1", "recall@3", "mrr"} <= set(got)
        assert 0.0 <= got["recall@1"] <= got["recall@3"] <= 1.0
    shared = out / "shared" / "seed-0" / "retrievers"
    assert {p.name for p in shared.iterdir()} == {"bm25", "dense", "hybrid"}
    saved = json.loads((out / "raft_dense" / "seed-0" / "config.json").read_text())
    assert saved["data"]["task"]["retriever_dir"] == str(shared / "dense")
    assert (out / "accuracy_vs_k.png").is_file() and (out / "report.md").is_file()
