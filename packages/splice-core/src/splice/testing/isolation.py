"""Isolation: a sequence's outputs depend on that sequence alone.

What packing, batched training and batched generation rely on.

Packed training puts several documents in one row; a mixer must not let a document see
the one before it, and ``positions`` restart at 0 in each document. Batched generation
left-pads prompts; a mixer must give a prompt the same outputs alone and left-padded
next to a longer one. Attention honours both through ``AttentionInputs.attn_mask`` and
``positions``; a mixer with other state (a convolution, a recurrence) must too. These
checks run a causal self-mixing component both ways and compare:

- ``check_packing_isolation``: two documents alone vs packed in one row
  (``doc_ids`` mask, per-document positions).
- ``check_padding_isolation``: a short sequence alone vs left-padded in a batch
  (``attention_mask`` over real tokens, positions counted over real tokens).
- ``check_batch_composition``: a row alone vs inside a batch of other rows (a mixer that
  normalises over the batch dimension fails).
- ``check_length_consistency``: the first ``t`` outputs of a longer sequence vs the
  outputs of its length-``t`` prefix (a mixer that scales by the sequence length fails).

Every check runs on perturbed parameters (``perturb_parameters``), not the initial ones.
Kinds: ``token_mixer`` and ``block`` (``x (B, T, D)`` + ``AttentionInputs`` built as the
models build them), ``channel_mixer`` and ``norm`` (``x (B, T, D)`` alone) and ``model``
(``model(ids, positions=, doc_ids=)`` / ``model(ids, attention_mask=)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from splice.interfaces import AttentionInputs, BuildContext
from splice.testing.checks import Prepare, build_seeded, perturb_parameters
from splice.testing.specs import kind_of

_KINDS = ("token_mixer", "block", "channel_mixer", "norm", "connector", "model")
_POINTWISE = ("channel_mixer", "norm", "connector")  # called on x alone


def _inputs(
    t: int, *, positions: Tensor, doc_ids: Tensor | None = None, mask: Tensor | None = None
) -> AttentionInputs:
    from splice.models.common import attention_inputs

    return attention_inputs(
        batch=positions.shape[0],
        t=t,
        device=positions.device,
        causal=True,
        positions=positions,
        attention_mask=mask,
        doc_ids=doc_ids,
        cache=None,
    )


def _call(
    module: nn.Module,
    kind: str,
    x: Tensor,
    *,
    positions: Tensor,
    doc_ids: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """One forward of ``module`` on ``x`` ((B, T, D) hidden or (B, T) ids)."""
    if kind == "model":
        kwargs: dict[str, Any] = {"positions": positions}
        if doc_ids is not None:
            kwargs["doc_ids"] = doc_ids
        if mask is not None:
            kwargs["attention_mask"] = mask
        out = module(x, **kwargs)
        return out.logits  # type: ignore[no-any-return]
    if kind in _POINTWISE:
        out = module(x)
        return out if isinstance(out, Tensor) else out.hidden
    out = module(x, _inputs(x.shape[1], positions=positions, doc_ids=doc_ids, mask=mask))
    return out if isinstance(out, Tensor) else out.hidden


def _sample(kind: str, config: Any, ctx: BuildContext | None, b: int, t: int, g: torch.Generator):  # type: ignore[no-untyped-def]
    if kind == "model":
        return torch.randint(3, int(config.vocab_size), (b, t), generator=g)
    assert ctx is not None, f"{kind} needs a BuildContext"
    width = ctx.d_context if kind == "connector" else ctx.d_model  # a connector reads features
    return torch.randn(b, t, width, generator=g)


def _setup(config: Any, ctx: BuildContext | None, kind: str | None, prepare: Prepare | None):  # type: ignore[no-untyped-def]
    kind = kind or kind_of(config)
    if kind not in _KINDS:
        raise ValueError(f"isolation checks support {_KINDS}, not {kind!r}")
    if kind not in ("model", "connector") and ctx is not None and not ctx.causal:
        raise ValueError("isolation checks are for causal self-mixing (ctx.causal=True)")
    module = build_seeded(config, ctx, kind=kind, prepare=prepare)
    return kind, perturb_parameters(module).eval()


def check_packing_isolation(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    lengths: tuple[int, int] = (5, 7),
    atol: float = 1e-5,
) -> None:
    """Each document's outputs are the same alone and packed after another document."""
    kind, module = _setup(config, ctx, kind, prepare)
    g = torch.Generator().manual_seed(7)
    a, b = lengths
    first, second = _sample(kind, config, ctx, 1, a, g), _sample(kind, config, ctx, 1, b, g)
    with torch.no_grad():
        alone = [
            _call(module, kind, doc, positions=torch.arange(doc.shape[1])[None])
            for doc in (first, second)
        ]
        packed = _call(
            module,
            kind,
            torch.cat([first, second], dim=1),
            positions=torch.cat([torch.arange(a), torch.arange(b)])[None],  # restart per doc
            doc_ids=torch.tensor([[0] * a + [1] * b]),
        )
    for name, want, got in (
        ("first", alone[0], packed[:, :a]),
        ("second", alone[1], packed[:, a:]),
    ):
        diff = (got - want).abs().max().item()
        assert diff <= atol, (
            f"{config.type}: the {name} document's outputs change by {diff:.3g} when packed "
            "with another document (information leaks across document boundaries: honour "
            "AttentionInputs.attn_mask / doc_ids and restart state where positions restart)"
        )


def check_padding_isolation(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    length: int = 5,
    padded_to: int = 9,
    atol: float = 1e-5,
) -> None:
    """A sequence's outputs are the same alone and left-padded in a batch (as ``generate``
    pads prompts): padding must be invisible, positions count real tokens only."""
    kind, module = _setup(config, ctx, kind, prepare)
    g = torch.Generator().manual_seed(8)
    short = _sample(kind, config, ctx, 1, length, g)
    other = _sample(kind, config, ctx, 1, padded_to, g)
    pad = padded_to - length
    filler = _sample(kind, config, ctx, 1, pad, g)  # junk under the padding: must not matter
    batch = torch.cat([torch.cat([filler, short], dim=1), other], dim=0)
    mask = torch.ones(2, padded_to, dtype=torch.long)
    mask[0, :pad] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = _call(module, kind, short, positions=torch.arange(length)[None])
        padded = _call(module, kind, batch, positions=positions, mask=mask)
    diff = (padded[:1, pad:] - alone).abs().max().item()
    assert diff <= atol, (
        f"{config.type}: a sequence's outputs change by {diff:.3g} when left-padded in a "
        "batch (padding leaks into real tokens: honour AttentionInputs.attn_mask and count "
        "positions over real tokens)"
    )


def check_batch_composition(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    seq_len: int = 6,
    atol: float = 1e-5,
) -> None:
    """A row's outputs are the same alone and in a batch beside other rows (in any order)."""
    kind, module = _setup(config, ctx, kind, prepare)
    g = torch.Generator().manual_seed(9)
    rows = _sample(kind, config, ctx, 3, seq_len, g)
    positions = torch.arange(seq_len)[None]
    with torch.no_grad():
        alone = _call(module, kind, rows[:1], positions=positions)
        together = _call(module, kind, rows, positions=positions.expand(3, seq_len))
        flipped = _call(module, kind, rows.flip(0), positions=positions.expand(3, seq_len))
    for where, got in (("first of three rows", together[:1]), ("last of three rows", flipped[2:])):
        diff = (got - alone).abs().max().item()
        assert diff <= atol, (
            f"{config.type}: a row's outputs change by {diff:.3g} as the {where} compared "
            "with alone (the component mixes information across the batch dimension: "
            "reduce over positions or features, never over rows)"
        )


def check_length_consistency(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    seq_len: int = 9,
    prefix: int = 4,
    atol: float = 1e-5,
) -> None:
    """The first ``prefix`` outputs of a sequence equal the outputs of that prefix alone
    (causal or pointwise components: an output may not depend on how long the rest is)."""
    kind, module = _setup(config, ctx, kind, prepare)
    g = torch.Generator().manual_seed(10)
    x = _sample(kind, config, ctx, 2, seq_len, g)
    with torch.no_grad():
        full = _call(module, kind, x, positions=torch.arange(seq_len).expand(2, seq_len))
        short = _call(module, kind, x[:, :prefix], positions=torch.arange(prefix).expand(2, prefix))
    diff = (full[:, :prefix] - short).abs().max().item()
    assert diff <= atol, (
        f"{config.type}: the first {prefix} outputs change by {diff:.3g} between a length-"
        f"{prefix} and a length-{seq_len} input (the output depends on the sequence length "
        "T, e.g. a scale by T or log(T); a causal token may see only itself and earlier ones)"
    )


__all__ = [
    "check_batch_composition",
    "check_length_consistency",
    "check_packing_isolation",
    "check_padding_isolation",
]
