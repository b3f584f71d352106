"""The ``rag`` task: prompts carry the retrieved passages plus distractors, the gold passage is
forced into training prompts with probability ``gold_in_train``, and SFT trains on it."""

from __future__ import annotations

import json
import re

import pytest
from splice_rag.configs import RagTaskConfig
from splice_rag.store import save_retriever
from splice_rag.task import RagTask

from .conftest import facts

PASSAGE = re.compile(r"^\((\d+)\) (.*)$", re.M)


def _passages(prompt: str) -> list[str]:
    return [m.group(2) for m in PASSAGE.finditer(prompt)]


def _task(kb, **kw) -> RagTask:
    return RagTask(RagTaskConfig(passages=str(kb["passages"]), train=str(kb["train"]),
                                 held_out=str(kb["held_out"]), **kw))  # fmt: skip


def test_prompts_hold_the_retrieved_passages_and_distractors(kb):
    task = _task(kb, k=2, distractors=1)
    texts = {text: q for _, text, q, _ in facts()}
    for ex in task.sample("held_out", 8, seed=0):
        shown = _passages(ex.prompt)
        assert len(shown) == 3 and len(set(shown)) == 3
        question = ex.prompt.split("question: ")[1].split("\n")[0]
        name = question.split()[2]  # "when was NAME born?"
        assert any(name in p for p in shown)  # BM25 finds the person's passage
        assert ex.prompt.endswith("\nanswer:") and ex.completion == f" {ex.answer}"
        assert all(p in texts for p in shown)
    metrics = task.retrieval_metrics("held_out", [1, 2])
    assert metrics["recall@2"] >= metrics["recall@1"] >= 0.5 and 0 < metrics["mrr"] <= 1


def test_gold_forced_into_training_prompts_only(kb):
    gold = {q: text for _, text, q, _ in facts()}
    # k=1 from a retriever that cannot see the question's name: 'born' / 'live' words only
    never = _task(kb, k=1, distractors=0, gold_in_train=0.0)
    always = _task(kb, k=1, distractors=0, gold_in_train=1.0)
    for ex in always.sample("train", 8, seed=1):
        q = ex.prompt.split("question: ")[1].split("\n")[0]
        assert _passages(ex.prompt) == [gold[q]]
    misses = sum(
        _passages(ex.prompt) != [gold[ex.prompt.split("question: ")[1].split("\n")[0]]]
        for ex in never.sample("train", 8, seed=1)
    )
    recall = never.retrieval_metrics("train", [1])["recall@1"]
    assert misses == round(8 * (1 - recall))
    for ex in always.sample("held_out", 8, seed=1):  # never forced at evaluation
        assert len(_passages(ex.prompt)) == 1


def test_closed_book_and_errors(kb, tmp_path):
    ex = _task(kb, closed_book=True).sample("train", 1)[0]
    assert ex.prompt.startswith("question: ") and "(1)" not in ex.prompt
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a", "passage_id": "nope"}) + "\n")
    with pytest.raises(ValueError, match="passage_id 'nope' not in"):
        RagTask(RagTaskConfig(passages=str(kb["passages"]), train=str(bad), held_out=str(bad)))
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(
        ValueError, match=r"bad.jsonl:1: missing field\(s\) \['answer', 'passage_id'\]"
    ):
        RagTask(RagTaskConfig(passages=str(kb["passages"]), train=str(bad), held_out=str(bad)))


def test_saved_retriever_is_shared_through_retriever_dir(kb, tmp_path):
    built = _task(kb, k=2)
    folder = save_retriever(built.retriever, tmp_path / "run" / "retriever")
    loaded = _task(kb, k=2, retriever_dir=str(folder), retriever={"type": "dense"})
    assert type(loaded.retriever).__name__ == "BM25Retriever"  # the saved one, not the config's
    assert (loaded.ranked("held_out", 2) == built.ranked("held_out", 2)).all()


@pytest.mark.parametrize("objective", ["sft"])
def test_sft_trains_on_the_rag_task(kb, tmp_path, objective):
    """A splice run whose task is ``rag``: the loss falls, and evaluation scores exact match."""
    from splice.training.experiment import run_experiment

    config = {
        "name": "rag", "seed": 0, "output_dir": str(tmp_path / "run"),
        "model": {
            "type": "decoder", "vocab_size": 64, "d_model": 32, "n_layers": 1, "max_seq_len": 160,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        },
        "tokenizer": {"type": "char", "alphabet": "0123456789+-*/=()?:., abcdefghijklmnopqrstuvwxyz\n"},
        "objective": {"type": objective},
        "data": {"task": {"type": "rag", "passages": str(kb["passages"]), "train": str(kb["train"]),
                          "held_out": str(kb["held_out"]), "k": 1, "distractors": 1},
                 "max_len": 160},
        "train": {"steps": 30, "batch_size": 8, "log_every": 10, "checkpoint_every": 30,
                  "optimizer": {"lr": 3e-3}, "precision": "float32", "progress": False},
        "eval": {"loss_batches": 1, "exact_match_examples": 8, "max_new_tokens": 6},
    }  # fmt: skip
    report = run_experiment(config, overwrite=True)
    logged = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in logged if r.get("kind") == "train"]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert 0.0 <= report["eval"]["exact_match"] <= 1.0
