"""Offline pairs from a policy's own samples, scored by the answer_match verifier."""

from __future__ import annotations

from pathlib import Path

import torch
from splice.data.examples import Example
from splice.data.jsonl import read_jsonl
from splice.generation.sampling import SamplingConfig
from splice.rewards import build_rewards
from splice_dpo.data import read_preference_jsonl, write_preference_jsonl
from splice_dpo.offline import (
    ScoredSamples,
    accepted_examples,
    preference_pairs,
    sample_and_score,
    write_sft_jsonl,
)

SAMPLING = SamplingConfig(temperature=1.0, seed=0, max_new_tokens=4)


def _verifier():
    return build_rewards([{"reward": {"type": "answer_match"}}])


def test_pairs_and_rejection_sampling_from_scored_samples(tmp_path: Path) -> None:
    ex = [Example("1+1=", "2", "2"), Example("2+2=", "4", "4"), Example("3+3=", "6", "6")]
    scored = ScoredSamples(
        ex,
        samples=[["2", "3", "2", "5"], ["1", "7", "1", "1"], ["6", "6", "6", "6"]],
        accepted=[[True, False, True, False], [False] * 4, [True] * 4],
    )
    pairs = preference_pairs(scored, pairs_per_prompt=2)
    # prompt 1: one distinct correct ("2"), two wrong ("3", "5"); prompt 2: none correct;
    # prompt 3: none wrong.
    assert [p.prompt for p in pairs] == ["1+1=", "1+1="]
    assert {p.chosen for p in pairs} == {"2"} and {p.rejected for p in pairs} == {"3", "5"}
    with_ref = preference_pairs(scored, reference_as_chosen=True)
    assert [(p.prompt, p.chosen) for p in with_ref] == [("1+1=", "2"), ("2+2=", "4")]
    sft = accepted_examples(scored, per_prompt=3)
    assert [(e.prompt, e.completion) for e in sft] == [("1+1=", "2"), ("3+3=", "6")]
    write_preference_jsonl(tmp_path / "p.jsonl", pairs)
    assert read_preference_jsonl(tmp_path / "p.jsonl") == pairs
    write_sft_jsonl(tmp_path / "s.jsonl", sft)
    assert [(e.prompt, e.completion, e.answer) for e in read_jsonl(tmp_path / "s.jsonl")] == [
        ("1+1=", "2", "2"),
        ("3+3=", "6", "6"),
    ]


def test_sample_and_score_uses_the_model_and_verifier(make_model, tok) -> None:
    model = make_model(0)
    ex = [Example(f"{a}+{a}=", str(2 * a), str(2 * a)) for a in range(1, 7)]
    scored = sample_and_score(model, tok, ex, _verifier(), n=4, sampling=SAMPLING)
    assert len(scored.samples) == 6 and all(len(r) == 4 for r in scored.samples)
    for e, row, acc in zip(ex, scored.samples, scored.accepted):
        assert acc == [s == e.answer for s in row]  # the verifier's verdict, sample by sample
    assert "reward/answer_match" in scored.metrics
    again = sample_and_score(model, tok, ex, _verifier(), n=4, sampling=SAMPLING)
    assert again.samples == scored.samples  # seeded sampling: reproducible files
    assert model.training


def test_a_trained_model_gives_correct_samples(make_model, tok) -> None:
    """Sanity: after fitting ``a+a=`` by SFT, sampling finds correct answers the verifier accepts."""
    from splice.data.collate import SFTCollator
    from splice.objectives.sft import SFTObjective

    model = make_model(0)
    ex = [Example(f"{a}+{a}=", str(2 * a), str(2 * a)) for a in range(1, 7)]
    batch = SFTCollator(tok, max_len=32)(ex)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = SFTObjective().loss(model, batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    scored = sample_and_score(model, tok, ex, _verifier(), n=4, sampling=SAMPLING)
    assert scored.accept_rate > 0.5
