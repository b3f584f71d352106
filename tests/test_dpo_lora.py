"""DPO on a LoRA policy: the reference is the policy with its adapters off (no second copy),
and it stays the base model while the adapters train; precomputed values agree with it."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("splice_dpo", reason="needs splice-dpo")
pytest.importorskip("splice_lora", reason="needs splice-lora (the LoRA adapters)")

from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.models.build import build_model
from splice.objectives.logprobs import token_logprobs
from splice.registry import get_registry
from splice_dpo.configs import DPOConfig
from splice_dpo.data import PreferenceCollator, PreferenceExample
from splice_dpo.objective import DPOObjective
from splice_dpo.precompute import precompute_reference_logps

TOK = CharTokenizer()


def test_lora_policy_is_its_own_reference() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = build_model(
        {
            "type": "decoder",
            "vocab_size": TOK.vocab_size,
            "d_model": 32,
            "n_layers": 2,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )
    frozen_base = copy.deepcopy(base).eval()
    from splice_lora.configs import LoRAConfig

    policy = get_registry().build("adapter", LoRAConfig(r=4, targets="all-linear")).apply(base)
    pairs = [
        PreferenceExample(ex.prompt, ex.completion, str(int(ex.answer) + 5), ex.answer)
        for ex in ArithmeticTask("+").sample("train", 8)
    ]
    collate = PreferenceCollator(TOK, max_len=32)  # pairs packed, each prompt once
    batch = collate(pairs)
    obj = DPOObjective(DPOConfig(loss={"type": "sigmoid", "beta": 0.5}))
    obj.setup(policy)
    assert obj.reference is not None and obj.reference.shares_weights  # adapters off, no copy
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-2)
    first = obj.loss(policy, batch)
    assert first.loss.item() == pytest.approx(0.6931472, abs=1e-5)  # LoRA starts as the identity
    for _ in range(15):
        out = obj.loss(policy, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = obj.loss(policy, batch)
    assert last.loss.item() < first.loss.item() and last.metrics["rewards/margin"] > 0
    # the reference (adapters off) is still exactly the base model
    rows = PreferenceCollator(TOK, max_len=32, layout="padded")(pairs)  # a row per sequence
    ids, mask, att = rows["input_ids"], rows["score_mask"], rows["attention_mask"]
    ref = obj.reference.token_logprobs(ids, mask, attention_mask=att).sum(-1)
    with torch.no_grad():
        want = token_logprobs(frozen_base, ids, mask, attention_mask=att).sum()
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=1e-5)
    # while the policy (adapters on) has moved away from it
    with torch.no_grad():
        now = token_logprobs(policy, ids, mask, attention_mask=att).sum()
    assert (now - want).abs().max() > 1e-2
    # precomputing on the trained LoRA policy scores with adapters off: the base again
    table = precompute_reference_logps(policy, pairs, collate, batch_size=3)
    torch.testing.assert_close(table[:, 0], want[:8], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(table[:, 1], want[8:], atol=1e-5, rtol=1e-5)
