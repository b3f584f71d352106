"""Evaluation: pass@k against brute force, exact match on a scripted model, loss weighting."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest
import torch
from splice.data.examples import Example
from splice.data.tokenizer import CharTokenizer
from splice.evaluation import (
    Evaluator,
    evaluate_loss,
    evaluate_pass_at_k,
    exact_match,
    pass_at_k,
    write_results,
)
from splice.generation.kv_cache import KVCache
from splice.generation.sampling import SamplingConfig, generate_text
from splice.interfaces import LossOutput, ModelOutput
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")


TOK = CharTokenizer()


class BigramLM(nn.Module):
    """A real model with the DecoderLM call signature whose next token depends only on the last.

    ``table[a]`` are the logits after token ``a``; a bigram needs no KV cache, so
    ``new_cache`` returns one with no layers (generation only advances its length).
    """

    def __init__(self, rules: dict[str, dict[str, float]]) -> None:
        super().__init__()
        v = TOK.vocab_size
        table = torch.full((v, v), -30.0)
        table[:, TOK.eos_id] = 0.0  # default: stop
        for prev, nexts in rules.items():
            a = TOK.eos_id if prev == "<eos>" else TOK.encode(prev)[0]
            table[a] = -30.0
            for ch, logit in nexts.items():
                b = TOK.eos_id if ch == "<eos>" else TOK.encode(ch)[0]
                table[a, b] = logit
        self.table = nn.Parameter(table)

    def new_cache(self, max_len: int) -> KVCache:
        return KVCache(0, max_len)

    def forward(self, input_ids, *, cache=None, **_: object) -> ModelOutput:
        logits = self.table[input_ids]  # (B, T, V)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return ModelOutput(logits=logits, hidden=logits)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_brute_force_subset_count(n: int) -> None:
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            expected = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    n, c, k = 500, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(n, 0, k) == 0.0 and pass_at_k(n, n - k + 1, k) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(5, 1, 6)
    with pytest.raises(ValueError, match="c"):
        pass_at_k(5, 6, 1)


def test_exact_match_decodes_up_to_eos_strips_and_compares() -> None:
    # after "=" the model writes "42" then eos, whatever the prompt
    model = BigramLM({"=": {"4": 5.0}, "4": {"2": 5.0}, "2": {"<eos>": 5.0}})
    examples = [
        Example("40+2=", "42", answer="42"),
        Example("1+1=", "2", answer="2"),
        Example("20+22=", "42", answer=" 42 "),
        Example("39+3=", "42"),  # no answer: the completion is the reference
    ]
    result = exact_match(
        model,
        TOK,
        examples,
        SamplingConfig(max_new_tokens=6),
        batch_size=3,
        return_predictions=True,
    )
    assert result["predictions"] == ["42", "42", "42", "42"]
    assert (result["correct"], result["n"], result["accuracy"]) == (3, 4, 0.75)


def test_exact_match_stops_at_max_new_tokens_without_eos() -> None:
    model = BigramLM({"=": {"4": 5.0}, "4": {"4": 5.0}})  # "4444..." forever
    result = exact_match(
        model, TOK, [Example("1=", "444", answer="444")], SamplingConfig(max_new_tokens=3)
    )
    assert result["accuracy"] == 1.0
    result = exact_match(
        model, TOK, [Example("1=", "444", answer="444")], SamplingConfig(max_new_tokens=4)
    )
    assert result["accuracy"] == 0.0


class NoEosTokenizer:
    """CharTokenizer's ids with ``eos_id = None``, like a Hugging Face tokenizer without one."""

    eos_id = None
    pad_id = TOK.pad_id

    def encode(self, text: str, *, bos: bool = False) -> list[int]:
        return TOK.encode(text, bos=bos)

    def decode(self, ids: list[int]) -> str:
        return TOK.decode(ids)


def test_a_tokenizer_without_eos_stops_only_at_the_given_stop_tokens() -> None:
    model = BigramLM({"=": {"4": 5.0}, "4": {"2": 5.0}, "2": {":": 5.0}, ":": {":": 5.0}})
    sampling = SamplingConfig(max_new_tokens=6, stop_token_ids=TOK.encode(":"))
    result = exact_match(model, NoEosTokenizer(), [Example("1=", "42")], sampling)
    assert result["accuracy"] == 1.0
    assert generate_text(model, NoEosTokenizer(), ["1="], sampling) == ["42"]


def test_evaluate_pass_at_k_counts_correct_samples() -> None:
    # after "=": "4" or "5" with equal probability, then "2", then eos -> "42" is right half the time
    model = BigramLM(
        {"=": {"4": 3.0, "5": 3.0}, "4": {"2": 9.0}, "5": {"2": 9.0}, "2": {"<eos>": 9.0}}
    )
    examples = [Example("40+2=", "42"), Example("1+1=", "2")]
    sampling = SamplingConfig(max_new_tokens=5, temperature=1.0, n=20, seed=7)
    out = evaluate_pass_at_k(model, TOK, examples, sampling, ks=(1, 5, 20))
    c = out["correct_per_example"]
    assert c[1] == 0 and 3 <= c[0] <= 17  # "2" is never produced; "42" about half the time
    assert out["pass@1"] == pytest.approx(c[0] / 20 / 2)
    assert out["pass@5"] == pytest.approx(pass_at_k(20, c[0], 5) / 2)
    assert out["pass@20"] == pytest.approx(0.5)
    assert evaluate_pass_at_k(model, TOK, examples, sampling, ks=(1,))["correct_per_example"] == c
    with pytest.raises(ValueError, match="ks"):
        evaluate_pass_at_k(model, TOK, examples, sampling, ks=(21,))


class MeanCE:
    """A real token-mean next-token CE objective (no masking) for the weighting test."""

    def loss(self, model: nn.Module, batch: dict) -> LossOutput:
        ids = batch["input_ids"]
        logits = model(ids).logits[:, :-1]
        ce = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        n = ids[:, 1:].numel()
        return LossOutput(
            loss=ce, metrics={"loss": float(ce.detach()), "tokens": float(n)}, n_tokens=n
        )


def test_evaluate_loss_is_token_weighted_across_batches() -> None:
    torch.manual_seed(0)
    model = BigramLM({})
    with torch.no_grad():
        model.table.normal_()
    a = {"input_ids": torch.randint(3, 20, (2, 9))}  # 16 target tokens
    b = {"input_ids": torch.randint(3, 20, (6, 9))}  # 48 target tokens
    both = {"input_ids": torch.cat([a["input_ids"], b["input_ids"]])}
    split = evaluate_loss(model, MeanCE(), [a, b])
    whole = evaluate_loss(model, MeanCE(), [both])
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert split["tokens"] == 64 and split["batches"] == 2
    assert split["perplexity"] == pytest.approx(math.exp(whole["loss"]), rel=1e-6)
    unweighted = (
        MeanCE().loss(model, a).metrics["loss"] + MeanCE().loss(model, b).metrics["loss"]
    ) / 2
    assert split["loss"] != pytest.approx(unweighted, rel=1e-6)
    with pytest.raises(ValueError, match="no batches"):
        evaluate_loss(model, MeanCE(), [])


def test_evaluate_loss_with_sft_objective_reports_perplexity_of_ce() -> None:
    from splice.data.collate import SFTCollator
    from splice.objectives.sft import SFTObjective

    torch.manual_seed(0)
    model = BigramLM({})
    with torch.no_grad():
        model.table.normal_()
    model.lm_head = nn.Identity()  # SFT projects `hidden` with lm_head; here hidden are logits
    examples = [Example("1+2=", "3"), Example("12+30=", "42"), Example("7*8=", "56")]
    collate = SFTCollator(TOK, max_len=16)
    result = evaluate_loss(model, SFTObjective(), [collate(examples[:1]), collate(examples[1:])])
    whole = SFTObjective().loss(model, collate(examples))
    assert result["tokens"] == whole.n_tokens
    assert result["ce_loss"] == pytest.approx(whole.metrics["ce_loss"], rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(whole.metrics["ce_loss"]), rel=1e-5)


def test_evaluator_runs_every_part_and_results_are_written_as_json(tmp_path) -> None:
    model = BigramLM({"=": {"4": 3.0, "5": 3.0}, "4": {"2": 9.0}, "5": {"2": 9.0}})
    examples = [Example("40+2=", "42"), Example("1+1=", "2")]
    evaluator = Evaluator(
        TOK,
        objective=MeanCE(),
        loss_batches=[{"input_ids": torch.randint(3, 20, (2, 5))}],
        exact_match_examples=examples,
        pass_at_k_examples=examples,
        ks=(1, 4),
        sampling=SamplingConfig(max_new_tokens=4),
        prefix="add/",
    )
    metrics = evaluator(model)
    assert set(metrics) == {
        "add/eval_loss",
        "add/eval_perplexity",
        "add/exact_match",
        "add/pass@1",
        "add/pass@4",
    }
    assert metrics["add/exact_match"] in (0.0, 0.5)
    path = write_results(tmp_path / "run", {**metrics, "bad": math.inf})
    saved = json.loads(path.read_text())
    assert path.name == "eval.json" and saved["bad"] is None
    assert saved["add/pass@4"] == pytest.approx(metrics["add/pass@4"])


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("<think>7+5=12,3+2+1=6</think><answer>62</answer>", "62", True),  # chain of thought
        (" 62 ", "62", True),  # a task that answers directly
        ("<think>a</think><answer>62</answer>", "<think>a</think><answer>62</answer>", True),
        ("<think>62</think><answer>61</answer>", "62", False),  # the final answer counts
        ("<answer>62</answer><answer>62</answer>", "62", False),  # two answers: none
        ("<answer>062</answer>", "62", False),  # exact: no normalisation (answer_match has it)
    ],
)
def test_exact_match_compares_the_final_answer(
    completion: str, reference: str, expected: bool
) -> None:
    from splice.evaluation.exact_match import is_exact

    assert is_exact(completion, reference) is expected
