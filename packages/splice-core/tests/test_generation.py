"""Generation: cached vs uncached decoding, left padding, sampling, stop tokens, log-probs."""

from __future__ import annotations

import pytest
import torch
from splice.generation.logits import sample_categorical, top_k_filter, top_p_filter
from splice.generation.sampling import SamplingConfig, generate
from splice.models.build import build_model

pytestmark = [pytest.mark.mha, pytest.mark.usefixtures("one_thread")]


PAD = 0


def tiny_model(*, positional: str = "rope", cross: bool = False, seed: int = 0) -> torch.nn.Module:
    """A 2-layer GQA decoder with peaked (large-init) logits so greedy has no near-ties."""
    block: dict = {
        "type": "pre_norm",
        "token_mixer": {"type": "mha", "n_heads": 4, "n_kv_heads": 2},
        "channel_mixer": {"type": "swiglu"},
        "norm": {"type": "rmsnorm"},
    }
    if cross:
        block["cross_attention"] = {"type": "cross_attention", "n_heads": 4}
    cfg = {
        "type": "decoder",
        "vocab_size": 40,
        "d_model": 32,
        "n_layers": 2,
        "max_seq_len": 64,
        "block": block,
        "positional": {"type": positional},
        "final_norm": {"type": "rmsnorm"},
        "tie_embeddings": False,
        "init_std": 0.3,
    }
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def greedy_uncached(model, prompt: list[int], steps: int, **kw) -> list[int]:
    """Reference: a full forward over the whole sequence for every new token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([seq]), **kw).logits
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


PROMPTS = [[5, 6, 7, 8, 9], [11, 3], [20, 21, 22]]


@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_cached_greedy_equals_uncached_full_forward(positional: str) -> None:
    model = tiny_model(positional=positional)
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12), pad_id=PAD)
    assert out.tokens.shape == (3, 12) and bool(out.mask.all())
    for row, prompt in enumerate(PROMPTS):
        assert out.tokens[row].tolist() == greedy_uncached(model, prompt, 12)


def test_left_padded_batch_matches_each_prompt_alone() -> None:
    model = tiny_model()
    batch = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10), pad_id=PAD)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], SamplingConfig(max_new_tokens=10), pad_id=PAD)
        assert batch.tokens[row].tolist() == alone.tokens[0].tolist()
        torch.testing.assert_close(batch.logprobs[row], alone.logprobs[0], atol=1e-5, rtol=0)


def test_logprobs_equal_a_separate_forward_pass() -> None:
    model = tiny_model()
    sampling = SamplingConfig(
        max_new_tokens=9, temperature=0.9, top_k=20, n=2, seed=3, stop_token_ids=[4]
    )
    out = generate(model, PROMPTS, sampling, pad_id=PAD)
    for row in range(out.tokens.shape[0]):
        prompt = PROMPTS[int(out.prompt_index[row])]
        completion = out.tokens[row][out.mask[row]].tolist()
        seq = torch.tensor([prompt + completion])
        with torch.no_grad():
            logp = model(seq).logits[0].float().log_softmax(-1)  # (T, V)
        # the token at sequence index j is predicted by position j - 1
        idx = torch.arange(len(prompt), len(prompt) + len(completion))
        expected = logp[idx - 1, seq[0, idx]]
        got = out.logprobs[row][out.mask[row]]
        assert (got - expected).abs().max().item() <= 1e-4
        assert bool((out.logprobs[row][~out.mask[row]] == 0).all())


def test_suppressed_tokens_are_never_sampled_and_logprobs_stay_the_models() -> None:
    model = tiny_model()
    greedy = generate(model, PROMPTS, SamplingConfig(max_new_tokens=6), pad_id=PAD)
    banned = sorted(set(greedy.tokens.flatten().tolist()))  # every token greedy picked
    for temperature in (0.0, 1.0):
        sampling = SamplingConfig(
            max_new_tokens=6, temperature=temperature, n=3, seed=1, suppress_token_ids=banned
        )
        out = generate(model, PROMPTS, sampling, pad_id=PAD)
        assert not bool(torch.isin(out.tokens, torch.tensor(banned)).any())
        for row in range(out.tokens.shape[0]):
            prompt = PROMPTS[int(out.prompt_index[row])]
            seq = torch.tensor([prompt + out.tokens[row].tolist()])
            with torch.no_grad():
                logp = model(seq).logits[0].float().log_softmax(-1)  # unsuppressed
            idx = torch.arange(len(prompt), seq.shape[1])
            torch.testing.assert_close(
                out.logprobs[row], logp[idx - 1, seq[0, idx]], atol=1e-4, rtol=0
            )
    with pytest.raises(ValueError, match=r"suppress_token_ids \[40\].*\[0, 40\)"):
        generate(model, PROMPTS, SamplingConfig(suppress_token_ids=[40]), pad_id=PAD)


def test_samples_reproduce_under_a_seed_and_vary_without_it() -> None:
    model = tiny_model()
    sampling = SamplingConfig(max_new_tokens=16, temperature=1.5, n=4, seed=123)
    a = generate(model, PROMPTS, sampling, pad_id=PAD)
    b = generate(model, PROMPTS, sampling, pad_id=PAD)
    assert a.tokens.shape == (12, 16)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert a.prompt_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    # the 4 samples of one prompt are not copies of each other
    assert len({tuple(r) for r in a.tokens[:4].tolist()}) > 1
    c = generate(model, PROMPTS, sampling.model_copy(update={"seed": 124}), pad_id=PAD)
    assert not torch.equal(a.tokens, c.tokens)


def test_n_samples_prefill_once_match_repeated_prompts() -> None:
    """Repeating the cache after one prefill gives the rows that n separate prompts would."""
    model = tiny_model()
    greedy = SamplingConfig(max_new_tokens=8, n=3)
    shared = generate(model, PROMPTS[:2], greedy, pad_id=PAD)
    repeated = generate(
        model, [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3, SamplingConfig(max_new_tokens=8), pad_id=PAD
    )
    assert torch.equal(shared.tokens, repeated.tokens)


def test_top_k_one_equals_greedy() -> None:
    model = tiny_model()
    greedy = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10), pad_id=PAD)
    k1 = generate(
        model,
        PROMPTS,
        SamplingConfig(max_new_tokens=10, temperature=1.0, top_k=1, seed=0),
        pad_id=PAD,
    )
    assert torch.equal(greedy.tokens, k1.tokens)


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.04, 0.7, 0.06, 0.2]])
    logits = probs.log()
    kept = torch.isfinite(top_p_filter(logits, 0.75))
    assert kept.tolist() == [[False, True, False, True], [False, True, False, True]]
    kept = torch.isfinite(top_p_filter(logits, 0.85))
    assert kept.tolist() == [[False, True, True, True], [False, True, False, True]]
    kept = torch.isfinite(top_p_filter(logits, 0.4))  # the top token alone suffices
    assert kept.tolist() == [[False, True, False, False], [False, True, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_k_filter_and_sampling_only_from_kept_tokens() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, True, False]]
    model = tiny_model()
    with torch.no_grad():
        top2 = model(torch.tensor([PROMPTS[0]])).logits[0, -1].topk(2).indices.tolist()
    out = generate(
        model,
        [PROMPTS[0]],
        SamplingConfig(max_new_tokens=1, temperature=5.0, top_k=2, n=64, seed=0),
        pad_id=PAD,
    )
    assert set(out.tokens[:, 0].tolist()) == set(top2)


def test_inverse_cdf_sampling_draws_each_id_at_its_probability() -> None:
    probs = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0])
    rows = probs.repeat(20000, 1) * 3.0  # unnormalised rows are fine
    g = torch.Generator().manual_seed(0)
    ids = sample_categorical(rows, generator=g)
    freq = torch.bincount(ids, minlength=5).float() / ids.numel()
    # 20000 draws: the standard error of a 0.5 share is 0.0035; 4 sigma of slack
    assert torch.allclose(freq, probs, atol=0.015), freq
    assert freq[1] == 0 and freq[4] == 0  # zero-probability ids are never drawn
    # a draw just below a row's total still lands on its last id with mass
    last = torch.tensor([[0.25, 0.75, 0.0]])
    assert sample_categorical(last, generator=torch.Generator().manual_seed(1)).item() in (0, 1)
    same = sample_categorical(rows[:64], generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, ids[:64])  # one uniform per row: a seed fixes the draws


def test_sampling_refuses_rows_without_finite_mass() -> None:
    with pytest.raises(ValueError, match="non-finite or zero mass"):
        sample_categorical(torch.tensor([[0.5, float("nan")], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="non-finite or zero mass"):
        sample_categorical(torch.zeros(1, 3))


def test_stop_token_ends_a_row_and_masks_after_it() -> None:
    model = tiny_model()
    free = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12), pad_id=PAD).tokens
    stop = int(free[0, 3])
    first = free[0].tolist().index(stop)
    out = generate(
        model, PROMPTS, SamplingConfig(max_new_tokens=12, stop_token_ids=[stop]), pad_id=PAD
    )
    for row in range(3):
        ids = free[row].tolist()
        end = ids.index(stop) + 1 if stop in ids else 12
        assert out.mask[row].tolist() == [j < end for j in range(out.tokens.shape[1])]
        assert out.tokens[row, :end].tolist() == ids[:end]
        assert bool((out.tokens[row, end:] == PAD).all())
    assert out.tokens[0, first] == stop


def test_generation_stops_early_when_every_row_stopped() -> None:
    model = tiny_model()
    free = generate(model, [PROMPTS[0]], SamplingConfig(max_new_tokens=12), pad_id=PAD).tokens
    out = generate(
        model,
        [PROMPTS[0]],
        SamplingConfig(max_new_tokens=12, stop_token_ids=[int(free[0, 2])]),
        pad_id=PAD,
    )
    assert out.tokens.shape[1] == free[0].tolist().index(int(free[0, 2])) + 1
    assert bool(out.mask.all())


def test_context_is_passed_and_repeated_for_cross_attention() -> None:
    model = tiny_model(cross=True)
    torch.manual_seed(1)
    context = torch.randn(2, 5, 32)
    context_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = generate(
        model,
        PROMPTS[:2],
        SamplingConfig(max_new_tokens=8, n=2),
        pad_id=PAD,
        context=context,
        context_mask=context_mask,
    )
    for row in range(2):
        ref = greedy_uncached(
            model,
            PROMPTS[row],
            8,
            context=context[row : row + 1],
            context_mask=context_mask[row : row + 1],
        )
        assert out.tokens[2 * row].tolist() == ref == out.tokens[2 * row + 1].tolist()
    other = generate(
        model,
        PROMPTS[:1],
        SamplingConfig(max_new_tokens=8),
        pad_id=PAD,
        context=-context[:1],
        context_mask=context_mask[:1],
    )
    assert other.tokens[0].tolist() != out.tokens[0].tolist()


def test_outputs_are_usable_in_autograd_and_training_mode_is_restored() -> None:
    model = tiny_model().train()
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=4), pad_id=PAD)
    assert model.training
    logits = model(out.tokens).logits  # (N, L, V)
    logits.gather(-1, out.tokens[..., None]).sum().backward()
    assert model.embed.weight.grad is not None


def test_bad_inputs_are_rejected_with_clear_messages() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, [[1] * 60], SamplingConfig(max_new_tokens=10), pad_id=PAD)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], SamplingConfig(), pad_id=PAD)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)


@pytest.mark.slow
def test_compiled_decode_matches_eager_and_compiles_once() -> None:
    """SamplingConfig(compile=True): left-padded prompts, n samples, stop tokens, sampling and
    cross-attention give eager decoding's tokens; one batch shape compiles one graph."""
    from torch._dynamo.utils import counters

    model = tiny_model(cross=True)
    torch.manual_seed(0)
    context = torch.randn(len(PROMPTS), 4, 32)
    context_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    kw = {"pad_id": PAD, "context": context, "context_mask": context_mask}
    runs = [
        SamplingConfig(max_new_tokens=9, n=2, stop_token_ids=[4]),
        SamplingConfig(max_new_tokens=9, n=2, temperature=0.8, top_k=10, seed=3),
    ]
    counters.clear()
    for sampling in runs:
        eager = generate(model, PROMPTS, sampling, **kw)
        compiled = generate(model, PROMPTS, sampling.model_copy(update={"compile": True}), **kw)
        assert torch.equal(compiled.tokens, eager.tokens)
        assert torch.equal(compiled.mask, eager.mask)
        torch.testing.assert_close(compiled.logprobs, eager.logprobs, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1  # the second run reused the first's graph
    assert counters["stats"]["calls_captured"] > 0
    # A new batch shape after steps that skipped guard checks: recompiled, still exact.
    two = {"pad_id": PAD, "context": context[:2], "context_mask": context_mask[:2]}
    eager = generate(model, PROMPTS[:2], runs[0], **two)
    compiled = generate(model, PROMPTS[:2], runs[0].model_copy(update={"compile": True}), **two)
    assert torch.equal(compiled.tokens, eager.tokens)
    assert counters["stats"]["unique_graphs"] == 2
    # ... and the first shape again picks its own graph.
    again = generate(model, PROMPTS, runs[0].model_copy(update={"compile": True}), **kw)
    assert torch.equal(again.tokens, generate(model, PROMPTS, runs[0], **kw).tokens)


def test_bf16_decoding_takes_the_decode_kernel_and_keeps_the_models_logprobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bf16 weights: decode steps run splice.nn.sdpa.decode_attention (left-padded rows,
    GQA), and each greedy token's log-prob equals a teacher-forced bf16 forward's within
    bf16 rounding, the token being that forward's argmax up to the same rounding."""
    import splice.nn.sdpa as sdpa

    calls = []
    kernel = sdpa.decode_attention

    def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(args[0].shape)
        return kernel(*args, **kw)

    monkeypatch.setattr(sdpa, "decode_attention", counted)
    model = tiny_model().to(torch.bfloat16)
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=8), pad_id=PAD)
    # 2 layers x (the padded prefill, whose mask holds the causality: 5 queries; 7 steps)
    assert [shape[2] for shape in calls] == [5] * 2 + [1] * 14
    for row, prompt in enumerate(PROMPTS):
        seq = torch.tensor([prompt + out.tokens[row].tolist()])
        with torch.no_grad():
            logp = model(seq).logits[0].float().log_softmax(-1)  # (T, V)
        idx = torch.arange(len(prompt), seq.shape[1])
        expected = logp[idx - 1, seq[0, idx]]
        assert (out.logprobs[row] - expected).abs().max().item() <= 0.1
        assert (logp[idx - 1].max(-1).values - expected).max().item() <= 0.1
