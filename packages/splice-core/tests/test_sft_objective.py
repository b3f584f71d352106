"""SFT objective: completion-only loss, aux loss, chunked CE == plain CE (loss and gradients)."""

from __future__ import annotations

import pytest
import torch
from splice.data.collate import PackedSFTCollator, SFTCollator
from splice.data.examples import Example
from splice.data.tokenizer import CharTokenizer
from splice.interfaces import ModelOutput
from splice.models.build import build_model
from splice.objectives.chunked_ce import _softmax_grad_, linear_cross_entropy
from splice.objectives.configs import SFTConfig
from splice.objectives.sft import SFTObjective, shifted_targets
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

TOK = CharTokenizer()
EXAMPLES = [Example(f"{a}*{b}=", str(a * b)) for a, b in [(12, 34), (5, 6), (78, 9), (3, 210)]]


def tiny_model(*, tie: bool = True, vocab: int = TOK.vocab_size, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": vocab,
            "d_model": 32,
            "n_layers": 2,
            "max_seq_len": 128,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
            "tie_embeddings": tie,
        }
    )


def reference_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The textbook version: full logits, shift, mean CE over non-ignored targets."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
    )


def grads(model: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.mha
def test_loss_is_mean_over_completion_tokens_only() -> None:
    model = tiny_model()
    batch = SFTCollator(TOK, max_len=32)(EXAMPLES)
    out = SFTObjective().loss(model, batch)
    assert out.n_tokens == sum(len(ex.completion) + 1 for ex in EXAMPLES)  # completion + eos
    assert out.metrics["tokens"] == out.n_tokens
    assert out.loss.item() == pytest.approx(reference_loss(model, batch).item(), abs=1e-6)
    assert out.metrics["loss"] == pytest.approx(out.loss.item())
    # Prompt tokens carry no loss: changing a prompt's *target* label has no effect, but
    # the reference with prompt labels unmasked is different.
    unmasked = dict(
        batch, labels=torch.where(batch["attention_mask"] == 1, batch["input_ids"], -100)
    )
    assert abs(reference_loss(model, unmasked).item() - out.loss.item()) > 1e-3


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("collator", [SFTCollator, PackedSFTCollator])
@pytest.mark.mha
def test_chunked_matches_plain_loss_and_grads(tie: bool, collator: type) -> None:
    model = tiny_model(tie=tie)
    batch = collator(TOK, max_len=32)(EXAMPLES)
    plain = SFTObjective(SFTConfig(chunk_size=None)).loss(model, batch)
    chunked = SFTObjective(SFTConfig(chunk_size=5)).loss(model, batch)
    assert chunked.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)
    g_plain, g_chunked = grads(model, plain.loss), grads(model, chunked.loss)
    assert g_plain.keys() == g_chunked.keys()
    assert len(g_plain) == len(list(model.parameters()))  # every parameter got a gradient
    for name in g_plain:
        torch.testing.assert_close(g_chunked[name], g_plain[name], atol=1e-5, rtol=0, msg=name)


class HookedHead(nn.Module):
    """A head that is not a bare nn.Linear (like a LoRA-wrapped one): takes the checkpoint path."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) * self.scale


def test_checkpoint_path_matches_plain_for_wrapped_head() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(23, 16, requires_grad=True)
    head = HookedHead(nn.Linear(16, 40))
    targets = torch.randint(0, 40, (23,))
    targets[4] = -100
    plain = F.cross_entropy(head(hidden), targets, ignore_index=-100, reduction="sum")
    ref = torch.autograd.grad(plain, [hidden, *head.parameters()])
    chunked = linear_cross_entropy(hidden, head, targets, chunk_size=4)
    got = torch.autograd.grad(chunked, [hidden, *head.parameters()])
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-5)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [4, None])
def test_linear_path_handles_bias_frozen_weight_and_ignored_rows(chunk_size: int | None) -> None:
    torch.manual_seed(2)
    hidden = torch.randn(17, 8, requires_grad=True)
    head = nn.Linear(8, 30, bias=True)
    head.weight.requires_grad_(False)  # e.g. a frozen base under an adapter
    targets = torch.randint(0, 30, (17,))
    targets[[0, 9]] = -100
    plain = F.cross_entropy(head(hidden), targets, ignore_index=-100, reduction="sum")
    ref = torch.autograd.grad(plain, [hidden, head.bias])
    chunked = linear_cross_entropy(hidden, head, targets, chunk_size=chunk_size)
    got = torch.autograd.grad(chunked * 2.0, [hidden, head.bias])  # grad_out is applied
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-5)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, 2.0 * b, atol=1e-5, rtol=0)
    with torch.no_grad():
        no_grad = linear_cross_entropy(hidden, head, targets, chunk_size=chunk_size)
        assert no_grad.item() == pytest.approx(plain.item(), abs=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_fused_matches_reference_with_retained_graph(chunk_size: int | None) -> None:
    """float32: the fused paths equal ``F.cross_entropy`` (loss and every gradient), twice."""
    torch.manual_seed(3)
    hidden = torch.randn(29, 16, requires_grad=True)
    head = nn.Linear(16, 50, bias=True)
    targets = torch.randint(0, 50, (29,))
    targets[[3, 17]] = -100
    params = [hidden, head.weight, head.bias]
    plain = F.cross_entropy(head(hidden), targets, ignore_index=-100, reduction="sum")
    ref = torch.autograd.grad(plain * 0.5, params)
    fused = linear_cross_entropy(hidden, head, targets, chunk_size=chunk_size)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)  # a sum of 27 losses
    for _ in range(2):  # backward does not consume what forward saved
        got = torch.autograd.grad(fused * 0.5, params, retain_graph=True)
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_underflowing_target_probability_keeps_exact_loss() -> None:
    """A target ~100 nats below the log-sum-exp: p underflows float32, the loss must not."""
    torch.manual_seed(4)
    hidden = torch.randn(6, 8, requires_grad=True)
    head = nn.Linear(8, 20, bias=False)
    with torch.no_grad():
        head.weight.mul_(60.0)  # logits spread over hundreds of nats
    logits = head(hidden).detach()
    targets = logits.argmin(-1)  # the least likely class of each row
    plain = F.cross_entropy(head(hidden), targets, reduction="sum")
    assert plain.item() > 6 * 90  # really past float32's smallest normal probability
    fused = linear_cross_entropy(hidden, head, targets)
    assert torch.isfinite(fused) and fused.item() == pytest.approx(plain.item(), rel=1e-6)
    ref = torch.autograd.grad(plain, [hidden, head.weight])
    got = torch.autograd.grad(fused, [hidden, head.weight])
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_bf16_autocast_is_close_to_float32(chunk_size: int | None) -> None:
    """Under bf16 autocast the loss stays float32-accurate and the gradients are within bf16
    rounding of the float32 ones -- no further from them than the textbook bf16 path's."""
    torch.manual_seed(5)
    hidden = torch.randn(96, 64)
    head = nn.Linear(64, 1000, bias=False)
    targets = torch.randint(0, 1000, (96,))
    targets[::7] = -100

    def run(fn: object, bf16: bool) -> tuple[Tensor, ...]:
        h = hidden.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fn(h)  # type: ignore[operator]
        assert loss.dtype == torch.float32
        return (loss.detach(), *torch.autograd.grad(loss / 96, [h, head.weight]))

    def textbook(h: Tensor) -> Tensor:
        return F.cross_entropy(head(h).float(), targets, ignore_index=-100, reduction="sum")

    ref = run(textbook, bf16=False)
    plain_bf16 = run(textbook, bf16=True)
    fused_bf16 = run(lambda h: linear_cross_entropy(h, head, targets, chunk_size=chunk_size), True)
    assert fused_bf16[0].item() == pytest.approx(ref[0].item(), rel=1e-2)
    # the logits are bf16 either way, so the fused loss is the textbook bf16 loss
    assert fused_bf16[0].item() == pytest.approx(plain_bf16[0].item(), rel=1e-5)
    for got, textbook_bf16, want in zip(fused_bf16[1:], plain_bf16[1:], ref[1:], strict=True):
        err = ((got - want).norm() / want.norm()).item()
        assert err < 1e-2
        assert err <= 1.5 * ((textbook_bf16 - want).norm() / want.norm()).item()


def test_bf16_logit_gradient_is_float32_softmax_rounded_once() -> None:
    """In bf16, ``softmax - onehot`` is formed in float32 and rounded once: for confident
    targets (p ~ 0.97) a bf16-rounded ``p`` would lose most of ``p - 1`` to cancellation."""
    torch.manual_seed(6)
    logits32 = torch.randn(40, 300) * 2.0
    targets = logits32.argmax(-1)
    logits32[torch.arange(40), targets] += 8.0  # p(target) ~ 0.97
    targets[[5, 30]] = -100
    logits = logits32.bfloat16()
    x = logits.float()
    valid = targets != -100
    want = (x.softmax(-1) - F.one_hot(targets.clamp(min=0), 300)) * valid[:, None]
    want_loss = F.cross_entropy(x, targets, ignore_index=-100, reduction="sum")
    g = logits.clone()
    loss = _softmax_grad_(g, targets, torch.zeros(40, 1), torch.zeros(300, 1), None)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    torch.testing.assert_close(g, want.bfloat16())  # bf16 tolerance: ~1 rounding


class LargestLogits(TorchDispatchMode):
    """Records the largest tensor any op produces whose last dim is the vocabulary.

    A cheap, device-free proxy for the logits' share of peak memory: every ``(*, V)``
    activation or gradient passes through here.
    """

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            fresh = isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs
            if fresh and t.shape[-1:] == (self.vocab,):  # views/in-place ops are not new memory
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.mha
def test_chunked_never_materialises_full_logits() -> None:
    """Forward + backward: the plain loss makes an (N, V) tensor, the chunked one never does."""
    vocab = 1000  # not a multiple of any model width, so (*, V) tensors are logits-like
    model = tiny_model(vocab=vocab, tie=False)
    exs = [Example("1" * 4, "2" * 60)] * 8  # 8 rows, 61 target tokens each
    batch = SFTCollator(TOK, max_len=70)(exs)
    n = 8 * 61
    sizes = {}
    for chunk in (None, 16):
        objective = SFTObjective(SFTConfig(chunk_size=chunk))
        with LargestLogits(vocab) as probe:
            objective.loss(model, batch).loss.backward()
        sizes[chunk] = probe.largest
    assert sizes[None] == n * vocab  # the (N, V) logits of the target positions
    assert sizes[16] == 16 * vocab  # one chunk at a time, in forward and backward


class AuxModel(nn.Module):
    """A stand-in for an MoE model: a real lm_head plus a fixed auxiliary loss."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(TOK.vocab_size, 8)
        self.lm_head = nn.Linear(8, TOK.vocab_size, bias=False)
        self.aux = nn.Parameter(torch.tensor(0.25))

    def forward(self, input_ids: Tensor, *, return_logits: bool = True, **_: object) -> ModelOutput:
        h = self.embed(input_ids)
        return ModelOutput(logits=None, hidden=h, aux_loss=self.aux * 2.0)


def test_aux_loss_is_added_with_weight() -> None:
    torch.manual_seed(0)
    model = AuxModel()
    batch = SFTCollator(TOK, max_len=32)(EXAMPLES)
    base = SFTObjective(SFTConfig(aux_loss_weight=0.0)).loss(model, batch)
    weighted = SFTObjective(SFTConfig(aux_loss_weight=0.3)).loss(model, batch)
    assert weighted.loss.item() == pytest.approx(base.loss.item() + 0.3 * 0.5, abs=1e-6)
    assert weighted.metrics["aux_loss"] == pytest.approx(0.5)
    assert weighted.metrics["ce_loss"] == pytest.approx(base.loss.item(), abs=1e-6)
    weighted.loss.backward()
    assert model.aux.grad.item() == pytest.approx(0.6)


def test_shifted_targets_drop_cross_document_pairs() -> None:
    labels = torch.tensor([[-100, 5, 6, 7, 8]])
    doc_ids = torch.tensor([[0, 0, 1, 1, 2]])
    assert shifted_targets(labels).tolist() == [[5, 6, 7, 8]]
    assert shifted_targets(labels, doc_ids).tolist() == [[5, -100, 7, -100]]


@pytest.mark.mha
def test_all_targets_truncated_gives_zero_loss_with_graph() -> None:
    model = tiny_model()
    with pytest.warns(UserWarning):
        batch = SFTCollator(TOK, max_len=4)([Example("123=", "4")])
    out = SFTObjective().loss(model, batch)
    assert out.n_tokens == 0 and out.loss.item() == 0.0
    out.loss.backward()  # must not raise


@pytest.mark.mha
def test_missing_keys_error() -> None:
    with pytest.raises(ValueError, match="needs 'input_ids' and 'labels'"):
        SFTObjective().loss(tiny_model(), {"input_ids": torch.zeros(1, 3, dtype=torch.long)})
