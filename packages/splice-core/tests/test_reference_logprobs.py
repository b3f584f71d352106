"""token_logprobs, adapters_disabled and ReferenceModel on a tiny decoder with real tensors."""

from __future__ import annotations

import pytest
import torch
from splice.adapters import adapters_disabled, has_adapters
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from splice.nn.configs import PreNormBlockConfig, RMSNormConfig, SwiGLUConfig
from splice.objectives.logprobs import token_logprobs
from splice.rl.reference import ReferenceModel
from torch import Tensor, nn

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


def tiny_decoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        DecoderConfig(
            vocab_size=23,
            d_model=16,
            n_layers=2,
            max_seq_len=32,
            block=PreNormBlockConfig(
                token_mixer={"type": "mha", "n_heads": 2},
                channel_mixer=SwiGLUConfig(),
                norm=RMSNormConfig(),
            ),
        )
    )


class ToyLoRA(nn.Module):
    """A minimal adapter layer: base linear + a delta that can be switched off."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.delta = nn.Parameter(torch.randn_like(base.weight) * 0.5)
        self.adapters_enabled = True

    def set_adapters_enabled(self, enabled: bool) -> None:
        self.adapters_enabled = enabled

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        return y + x @ self.delta.T if self.adapters_enabled else y


def test_token_logprobs_equal_log_softmax_of_full_logits() -> None:
    model = tiny_decoder().eval()
    ids = torch.randint(3, 23, (3, 10))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 4:] = True
    mask[2, 8:] = False
    out = token_logprobs(model, ids, mask, with_entropy=True)
    logits = model(ids).logits.float()
    full = logits[:, :-1].log_softmax(-1)
    want = full.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
    torch.testing.assert_close(out.logprobs, want, atol=1e-5, rtol=1e-5)
    ent = -(full.exp() * full).sum(-1) * mask[:, 1:]
    torch.testing.assert_close(out.entropy, ent, atol=1e-5, rtol=1e-5)
    assert out.count().tolist() == [6, 6, 4]


def test_token_logprobs_have_gradients() -> None:
    model = tiny_decoder()
    ids = torch.randint(3, 23, (2, 8))
    out = token_logprobs(model, ids, torch.ones_like(ids, dtype=torch.bool))
    out.sum().sum().backward()
    assert model.lm_head.weight.grad is not None
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_token_logprobs_rejects_mismatched_mask() -> None:
    model = tiny_decoder()
    with pytest.raises(ValueError, match="score_mask shape"):
        token_logprobs(model, torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4))


def test_adapters_disabled_restores_state_and_reference_shares_weights() -> None:
    model = tiny_decoder().eval()
    block = model.blocks[0]
    mixer = block.ffn
    name = next(n for n, m in mixer.named_children() if isinstance(m, nn.Linear))
    setattr(mixer, name, ToyLoRA(getattr(mixer, name)))
    assert has_adapters(model)
    ids = torch.randint(3, 23, (2, 8))
    mask = torch.ones_like(ids, dtype=torch.bool)
    with_delta = token_logprobs(model, ids, mask).logprobs
    with adapters_disabled(model):
        without = token_logprobs(model, ids, mask).logprobs
    assert getattr(mixer, name).adapters_enabled
    assert not torch.allclose(with_delta, without)
    ref = ReferenceModel(model)
    assert ref.mode == "adapters_off" and ref.shares_weights
    torch.testing.assert_close(ref.token_logprobs(ids, mask), without)
    assert getattr(mixer, name).adapters_enabled  # restored after the reference forward


def test_copy_reference_is_frozen_at_creation() -> None:
    model = tiny_decoder()
    ids = torch.randint(3, 23, (2, 8))
    mask = torch.ones_like(ids, dtype=torch.bool)
    ref = ReferenceModel(model)
    assert ref.mode == "copy" and not ref.shares_weights
    before = ref.token_logprobs(ids, mask)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    torch.testing.assert_close(ref.token_logprobs(ids, mask), before)
    with pytest.raises(ValueError, match="adapters_off"):
        ReferenceModel(model, mode="adapters_off")
