"""Batched autoregressive generation with a pre-allocated KV cache.

``generate`` left-pads prompts of different lengths, prefills them once, repeats the
cache ``n`` times for ``n`` samples per prompt, then decodes one token per step for
every row. Positions count real tokens only, so a left-padded prompt sees exactly the
positions it would see alone, and padded keys are masked out of every step.

Per-step work is batched tensor code; the only host sync is one "all rows stopped?"
check per step, and only when stop tokens are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from splice.generation.configs import SamplingConfig
from splice.generation.kv_cache import KVCache
from splice.generation.logits import sample_next
from splice.generation.static import CompiledStep, StaticKVCache
from splice.nn.fused import fused_projections


@dataclass
class GenerationOutput:
    """Generated continuations, one row per (prompt, sample).

    Attributes:
        tokens: ``(N, L)`` long, ``N = B * n`` (the ``n`` samples of a prompt are adjacent),
            ``L <= max_new_tokens`` (generation stops early once every row has stopped);
            ``pad_id`` after a row's stop token.
        logprobs: ``(N, L)`` float32, log-probability of each generated token under the model's
            own distribution (``log_softmax`` of the raw logits: temperature 1, no top-k/top-p),
            i.e. exactly what a training forward pass over prompt + completion computes;
            ``0`` where ``mask`` is False.
        mask: ``(N, L)`` bool, True for generated tokens including the stop token.
        prompt_index: ``(N,)`` long, the prompt each row continues.
    """

    tokens: Tensor
    logprobs: Tensor
    mask: Tensor
    prompt_index: Tensor

    def completions(self) -> list[list[int]]:
        """Each row's generated ids (stop token included), as Python lists."""
        return [row[m].tolist() for row, m in zip(self.tokens, self.mask)]


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(ids (B, P), mask (B, P))``: prompts right-aligned, ``mask`` 1 on real tokens."""
    if not prompts:
        raise ValueError("prompts is empty; expected at least one prompt")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty; every prompt needs >= 1 token")
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _check_length(model: nn.Module, total: int) -> None:
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    if isinstance(limit, int) and total > limit:
        raise ValueError(
            f"longest prompt + max_new_tokens = {total} exceeds the model's max_seq_len {limit}; "
            "lower max_new_tokens or shorten the prompts"
        )


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _generator(sampling: SamplingConfig, device: torch.device) -> torch.Generator | None:
    if sampling.temperature == 0.0:
        return None
    seed = sampling.seed
    if seed is None:  # still reproducible under torch.manual_seed
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed)


def generate(
    model: nn.Module,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    *,
    pad_id: int,
    context: Tensor | None = None,
    context_mask: Tensor | None = None,
    model_inputs: Mapping[str, Tensor] | None = None,
) -> GenerationOutput:
    """Continue each prompt ``sampling.n`` times.

    Args:
        model: any model with the ``DecoderLM`` call signature and ``new_cache(max_len)``.
        prompts: ``B`` lists of token ids (different lengths are fine).
        sampling: temperature, top-k/top-p, ``n``, stop tokens, length, seed.
        pad_id: id written after a row stops (and used to pad prompts; it is always masked).
        context: ``(B, S_ctx, D_ctx)`` encoder output for cross-attention, per prompt.
        context_mask: ``(B, S_ctx)`` 1 for real context positions.
        model_inputs: more keyword inputs of the model, each ``(B, ...)`` with one row per
            prompt, given to the prefill forward only (decode steps read the KV cache):
            a vision-language model's ``images (B, C, H, W)``.

    Returns:
        ``GenerationOutput`` with ``N = B * n`` rows.

    Raises:
        ValueError: an empty prompt, or prompt + ``max_new_tokens`` beyond the model's length.
    """
    device = _model_device(model)
    ids, prompt_mask = left_pad(prompts, pad_id, device)
    b, p = ids.shape
    n, steps = sampling.n, sampling.max_new_tokens
    _check_length(model, p + steps)
    if context is not None and context.shape[0] != b:
        raise ValueError(f"context has batch {context.shape[0]}, expected one row per prompt ({b})")
    for name, value in (model_inputs or {}).items():
        if value.shape[0] != b:
            raise ValueError(
                f"model_inputs[{name!r}] has {value.shape[0]} rows, expected one per prompt ({b})"
            )
    generator = _generator(sampling, device)
    was_training = model.training
    model.eval()
    try:
        # Weights are fixed for this call: Q/K/V and gate/up may run as one matmul each.
        # Blocks compiled for training run eagerly here: decode shapes change every step.
        with torch.inference_mode(), fused_projections(), torch.compiler.set_stance("force_eager"):
            out = _decode(
                model,
                ids,
                prompt_mask,
                sampling,
                pad_id=pad_id,
                n=n,
                steps=steps,
                context=context,
                context_mask=context_mask,
                model_inputs=model_inputs or {},
                generator=generator,
            )
    finally:
        model.train(was_training)
    # Clone outside inference mode so callers may use the results in autograd (e.g. gather).
    tokens, logprobs, mask = (t.clone() for t in out)
    prompt_index = torch.arange(b, device=device).repeat_interleave(n)
    return GenerationOutput(tokens=tokens, logprobs=logprobs, mask=mask, prompt_index=prompt_index)


def _decode(
    model: nn.Module,
    ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingConfig,
    *,
    pad_id: int,
    n: int,
    steps: int,
    context: Tensor | None,
    context_mask: Tensor | None,
    model_inputs: Mapping[str, Tensor],
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The prefill + decode loop; returns ``tokens, logprobs, mask``, each ``(B*n, L)``."""
    b, p = ids.shape
    rows, device = b * n, ids.device
    padded = bool((prompt_mask == 0).any())
    # generate() requires `new_cache(max_len)`; nn.Module attribute lookups are untyped.
    cache = cast(Callable[[int], KVCache], model.new_cache)(p + steps)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P) counts real tokens only
    out = model(
        ids,
        attention_mask=prompt_mask if padded else None,
        positions=positions,
        cache=cache,
        context=context,
        context_mask=context_mask,
        **model_inputs,
    )
    last = out.logits[:, -1]  # (B, V)
    next_pos = positions[:, -1:] + 1  # (B, 1)
    if n > 1:  # n samples share one prefill
        cache.repeat_interleave(n)
        last, next_pos = last.repeat_interleave(n, 0), next_pos.repeat_interleave(n, 0)
        if context is not None:
            context = context.repeat_interleave(n, 0)
        if context_mask is not None:
            context_mask = context_mask.repeat_interleave(n, 0)
    # Key mask over all p + steps positions, in one buffer (no re-allocation per step).
    step: Callable[..., Tensor] = _eager_step
    decode_cache: KVCache | StaticKVCache = cache
    key_mask = None
    if sampling.compile:  # static shapes: every slot attended, unwritten ones masked
        decode_cache = StaticKVCache(cache)
        key_mask = torch.zeros(rows, p + steps, dtype=torch.bool, device=device)
        key_mask[:, :p] = prompt_mask.repeat_interleave(n, 0).bool()
        step = CompiledStep()
    elif padded:  # eager: the step reads the columns written so far
        key_mask = torch.ones(rows, p + steps, dtype=torch.long, device=device)
        key_mask[:, :p] = prompt_mask.repeat_interleave(n, 0)
    stop_ids = torch.tensor(sampling.stop_token_ids, dtype=torch.long, device=device)
    use_stop = stop_ids.numel() > 0
    finished = torch.zeros(rows, 1, dtype=torch.bool, device=device)
    # Per-step columns are kept in lists and concatenated once: two ops fewer per step.
    token_cols: list[Tensor] = []
    logprob_cols: list[Tensor] = []
    live_cols: list[Tensor] = []
    suppress = None
    if sampling.suppress_token_ids:
        if (
            max(sampling.suppress_token_ids) >= last.shape[-1]
            or min(sampling.suppress_token_ids) < 0
        ):
            raise ValueError(
                f"suppress_token_ids {sampling.suppress_token_ids} must be ids of the model's "
                f"vocabulary [0, {last.shape[-1]})"
            )
        suppress = torch.tensor(sampling.suppress_token_ids, dtype=torch.long, device=device)
    for i in range(steps):
        scores = last if last.dtype == torch.float32 else last.float()  # (N, V)
        tok = sample_next(
            scores if suppress is None else scores.index_fill(-1, suppress, float("-inf")),
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            generator=generator,
        ).unsqueeze(1)  # (N, 1)
        lp = scores.log_softmax(-1).gather(-1, tok)  # (N, 1); one fused pass
        if use_stop:
            live = ~finished
            tok = torch.where(live, tok, pad_id)
            lp = torch.where(live, lp, 0.0)
            live_cols.append(live)
            finished |= torch.isin(tok, stop_ids) & live
        token_cols.append(tok)
        logprob_cols.append(lp)
        if i == steps - 1 or (use_stop and bool(finished.all())):
            break
        last = step(model, tok, next_pos, key_mask, decode_cache, context, context_mask)
        next_pos = next_pos + 1
    tokens = torch.cat(token_cols, dim=1)  # (N, L)
    logprobs = torch.cat(logprob_cols, dim=1)
    if live_cols:
        mask = torch.cat(live_cols, dim=1)
    else:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    return tokens, logprobs, mask


def _eager_step(
    model: nn.Module,
    tok: Tensor,
    positions: Tensor,
    key_mask: Tensor | None,
    cache: KVCache,
    context: Tensor | None,
    context_mask: Tensor | None,
) -> Tensor:
    """One decode step on the growing cache: ``(N, V)`` logits of the next token."""
    out = model(
        tok,
        positions=positions,
        cache=cache,
        context=context,
        context_mask=context_mask,
        attention_mask=key_mask[:, : cache.length + 1] if key_mask is not None else None,
    )
    logits: Tensor = out.logits[:, -1]
    return logits


def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    sampling: SamplingConfig,
    *,
    bos: bool = True,
) -> list[str]:
    """Encode ``prompts``, generate, and decode each completion up to (not incl.) a stop token."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]  # HF tokenizers may have none
    sampling = sampling.model_copy(
        update={"stop_token_ids": sorted({*sampling.stop_token_ids, *eos})}
    )
    encoded = [tokenizer.encode(text, bos=bos) for text in prompts]
    out = generate(model, encoded, sampling, pad_id=tokenizer.pad_id)
    stops = set(sampling.stop_token_ids)
    texts = []
    for ids in out.completions():
        kept = ids[:-1] if ids and ids[-1] in stops else ids
        texts.append(tokenizer.decode(kept))
    return texts


__all__ = ["GenerationOutput", "SamplingConfig", "generate", "generate_text", "left_pad"]
