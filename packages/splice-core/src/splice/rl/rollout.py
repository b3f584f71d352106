"""What an online objective (PPO, GRPO) gets from the trainer: prompts and a bound generator.

Each training step of an online run takes one *prompt batch* from ``PromptBatches`` and
hands it, with a ``RolloutGenerator``, to ``OnlineObjective.collect``. Both are pure
functions of ``(seed, step)``: prompt batch ``k`` is ``task.sample("train", P,
seed=derive_seed(seed, "prompts", k))`` (for a finite dataset, an ``EpochTask`` such as a
JSONL file: prompts ``kP .. kP+P-1`` of its seeded epochs, one permutation per epoch, not a
reshuffle of the whole file per step) and the sampling seed of step ``k`` is
``derive_seed(seed, "rollout", k)``, so a resumed run regenerates exactly the rollouts an
uninterrupted run would have, with no generator state to save.

A prompt batch is a dict::

    prompts     list[str]          P prompt texts (as the task writes them, no bos)
    references  list[str]          P reference answers for rule-based rewards
    prompt_ids  list[list[int]]    P token-id lists (bos + prompt), what the generator takes
    index       (P,) long tensor   each prompt's position in the step's global batch; data
                                   parallelism shards every field by rows, so a rank keeps
                                   its prompts' global indices (generation seeds use them)

and, optionally, per-prompt model inputs (``PROMPT_MODEL_INPUTS``, one row per prompt)::

    images        (P, C, H, W)     a vision-language model's image of each prompt
    context       (P, S, D)        encoder output a cross-attention model reads every step
    context_mask  (P, S)           1 on real context positions

``PromptBatches`` stacks them from its examples' ``Example.model_inputs`` (one tensor per
prompt each). They travel with the rollout: generation conditions on them (``RolloutGenerator``),
``pack_rollout`` repeats each prompt's row for its completions, and an objective passes
them to every forward over those rows (policy, rollout policy and reference log-probs).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from splice.generation.sampling import GenerationOutput, SamplingConfig, generate
from splice.interfaces import EpochTask
from splice.training.stream import ListBatches, derive_seed

#: Prompt-batch keys that are model inputs with one row per prompt (see the module docstring).
PROMPT_MODEL_INPUTS = ("images", "context", "context_mask")


def model_inputs_of(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The ``PROMPT_MODEL_INPUTS`` tensors of a prompt batch or of packed rollout rows."""
    return {k: batch[k] for k in PROMPT_MODEL_INPUTS if isinstance(batch.get(k), Tensor)}


def stack_model_inputs(examples: Sequence[Any]) -> dict[str, Tensor]:
    """The examples' ``model_inputs`` stacked by name into ``(P, ...)`` rows, in order.

    Raises:
        ValueError: a name that is not in ``PROMPT_MODEL_INPUTS``, a prompt without an input
            the others of its batch have, or shapes that differ within the batch (each
            names the input and the prompt or shapes).
    """
    names = sorted({name for e in examples for name in e.model_inputs})
    stacked: dict[str, Tensor] = {}
    for name in names:
        if name not in PROMPT_MODEL_INPUTS:
            raise ValueError(
                f"example model input {name!r} is not a per-prompt model input; "
                f"expected one of {PROMPT_MODEL_INPUTS}"
            )
        lacking = [e.prompt for e in examples if name not in e.model_inputs]
        if lacking:
            raise ValueError(
                f"prompt {lacking[0]!r} has no model input {name!r}, which other prompts of "
                "its batch have"
            )
        rows = [torch.as_tensor(e.model_inputs[name]) for e in examples]
        shapes = sorted({tuple(r.shape) for r in rows})
        if len(shapes) > 1:
            raise ValueError(f"model input {name!r} has different shapes in one batch: {shapes}")
        stacked[name] = torch.stack(rows)
    return stacked


class PromptBatches:
    """Prompt batch ``k`` of an online run (a ``BatchSource``: restartable at any ``k``).

    An example's ``model_inputs`` (a VLM's image) join the batch as ``(P, ...)`` rows
    (``stack_model_inputs``).

    Args:
        task: a task object (``sample(split, n, seed=...)`` returning ``Example``s); an
            ``EpochTask`` is drawn in seeded epochs instead.
        tokenizer: encodes each prompt as ``bos + prompt``.
        prompts_per_step: ``P``, prompts per batch (the global batch under torchrun).
        seed: the run seed.
        max_prompt_len: longest allowed prompt in tokens (the model's context minus the
            generation budget); a longer prompt is an error naming it.
        encode: ``encode(example) -> prompt ids`` in place of ``bos + prompt`` (e.g. a VLM's
            prompt, whose image placeholders no text encodes).
    """

    def __init__(
        self,
        task: Any,
        tokenizer: Any,
        *,
        prompts_per_step: int,
        seed: int,
        max_prompt_len: int | None = None,
        split: str = "train",
        encode: Callable[[Any], list[int]] | None = None,
    ) -> None:
        self.task, self.tokenizer = task, tokenizer
        self.prompts_per_step, self.seed, self.split = prompts_per_step, seed, split
        self.max_prompt_len, self.encode = max_prompt_len, encode
        # a finite training set: its seeded epochs (each prompt once per epoch)
        self.epochs = None
        if split == "train" and isinstance(task, EpochTask):
            self.epochs = ListBatches(
                task.epoch_examples(), list, batch_size=prompts_per_step,
                seed=derive_seed(seed, "prompts"),
            )  # fmt: skip

    def batch(self, k: int) -> dict[str, Any]:
        """Prompt batch ``k`` (see the module docstring for its fields)."""
        if self.epochs is not None:
            examples = next(self.epochs.batches(k))
        else:
            examples = self.task.sample(
                self.split, self.prompts_per_step, seed=derive_seed(self.seed, "prompts", k)
            )
        if self.encode is not None:
            ids = [list(self.encode(e)) for e in examples]
        else:
            ids = [self.tokenizer.encode(e.prompt, bos=True) for e in examples]
        if self.max_prompt_len is not None:
            for e, p in zip(examples, ids):
                if len(p) > self.max_prompt_len:
                    raise ValueError(
                        f"prompt {e.prompt!r} is {len(p)} tokens; with the generation budget "
                        f"the model's context allows at most {self.max_prompt_len} "
                        "(raise model.max_seq_len or lower rollout.max_new_tokens)"
                    )
        return {
            "prompts": [e.prompt for e in examples],
            "references": [(e.answer or e.completion).strip() for e in examples],
            "prompt_ids": ids,
            "index": torch.arange(len(examples)),
            **stack_model_inputs(examples),
        }

    def batches(self, start: int = 0) -> Iterator[dict[str, Any]]:
        for k in itertools.count(start):
            yield self.batch(k)


class RolloutGenerator:
    """``splice.generation.generate`` bound to a run's sampling config, tokenizer and seed.

    ``gen(model, prompt_ids, n=G)`` continues each prompt ``n`` times (eos always stops a
    row). Prompts are generated in chunks of ``chunk`` prompts (default: all at once);
    chunk ``c`` (counted over the step's *global* prompt batch) samples with its own seed
    ``derive_seed(seed, c)``, so when ``chunk`` divides every rank's share, one process and
    several produce the same tokens for the same prompt.

    Args:
        sampling: temperature, top-k/top-p, ``max_new_tokens``, compile (``n`` is per call).
        tokenizer: gives ``pad_id``/``eos_id`` and decodes completions (``texts``).
        seed: this step's sampling seed.
        first_index: global index of the first prompt this process holds.
        chunk: prompts per ``generate`` call, or None for one call.
    """

    def __init__(
        self,
        sampling: SamplingConfig,
        tokenizer: Any,
        *,
        seed: int,
        first_index: int = 0,
        chunk: int | None = None,
    ) -> None:
        eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
        stops = sorted({*sampling.stop_token_ids, *eos})
        self.sampling = sampling.model_copy(update={"stop_token_ids": stops})
        self.tokenizer, self.seed = tokenizer, seed
        self.first_index, self.chunk = first_index, chunk
        self.pad_id: int = tokenizer.pad_id

    def __call__(
        self,
        model: nn.Module,
        prompt_ids: Sequence[list[int]],
        *,
        model_inputs: Mapping[str, Tensor] | None = None,
        **overrides: Any,
    ) -> GenerationOutput:
        """``GenerationOutput`` with ``len(prompt_ids) * n`` rows (a prompt's samples adjacent).

        ``model_inputs`` are per-prompt tensors (``PROMPT_MODEL_INPUTS``, one row per prompt):
        ``context``/``context_mask`` are read at every step, the others (``images``) at the
        prefill. ``overrides`` replace sampling fields for this call (e.g. ``n=8``).
        """
        sampling = self.sampling.model_copy(update=overrides) if overrides else self.sampling
        if sampling.max_new_tokens < 1:  # model_copy skips validation
            raise ValueError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
        size = self.chunk or len(prompt_ids)
        parts: list[GenerationOutput] = []
        for start in range(0, len(prompt_ids), size):
            global_chunk = (self.first_index + start) // size
            seeded = sampling.model_copy(update={"seed": derive_seed(self.seed, global_chunk)})
            rows = {k: v[start : start + size] for k, v in (model_inputs or {}).items()}
            parts.append(
                generate(
                    model,
                    list(prompt_ids[start : start + size]),
                    seeded,
                    pad_id=self.pad_id,
                    context=rows.pop("context", None),
                    context_mask=rows.pop("context_mask", None),
                    model_inputs=rows,
                )
            )
        return concat_generations(parts, self.pad_id)

    def texts(self, out: GenerationOutput) -> list[str]:
        """Each row's completion text, cut before its stop token."""
        stops = set(self.sampling.stop_token_ids)
        texts = []
        for ids in out.completions():
            kept = ids[:-1] if ids and ids[-1] in stops else ids
            texts.append(self.tokenizer.decode(kept))
        return texts


class Rollouts:
    """Makes each step's ``RolloutGenerator``: same sampling, seed ``derive_seed(seed, "rollout", step)``."""

    def __init__(
        self,
        sampling: SamplingConfig,
        tokenizer: Any,
        *,
        seed: int,
        chunk: int | None = None,
        prompts_per_step: int = 0,
    ) -> None:
        self.sampling, self.tokenizer, self.seed, self.chunk = sampling, tokenizer, seed, chunk
        self.prompts_per_step = prompts_per_step  # recorded in checkpoints as "examples"

    def generator(self, step: int, first_index: int = 0) -> RolloutGenerator:
        """The generator of training step ``step`` for a process whose first prompt is
        ``first_index`` of the global batch."""
        return RolloutGenerator(
            self.sampling,
            self.tokenizer,
            seed=derive_seed(self.seed, "rollout", step),
            first_index=first_index,
            chunk=self.chunk,
        )


def concat_generations(parts: list[GenerationOutput], pad_id: int) -> GenerationOutput:
    """Stack chunks' outputs row-wise, right-padding to the longest ``L``."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[1] for p in parts)

    def pad(t: Tensor, value: Any) -> Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    offsets = list(itertools.accumulate([0] + [int(p.prompt_index.max()) + 1 for p in parts]))
    return GenerationOutput(
        tokens=torch.cat([pad(p.tokens, pad_id) for p in parts]),
        logprobs=torch.cat([pad(p.logprobs, 0.0) for p in parts]),
        mask=torch.cat([pad(p.mask, False) for p in parts]),
        prompt_index=torch.cat([p.prompt_index + o for p, o in zip(parts, offsets)]),
    )


def pack_rollout(
    prompt_ids: Sequence[list[int]],
    out: GenerationOutput,
    pad_id: int,
    model_inputs: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Prompt + completion rows for a training forward, right-padded.

    Row ``i`` is ``prompt_ids[out.prompt_index[i]]`` followed by its generated tokens, then
    padding. Padding only follows real tokens, so a causal model needs no attention mask
    and default positions ``0..T-1`` are each token's true position.

    Returns:
        ``input_ids (N, T)`` long; ``completion_mask (N, T)`` bool, True on generated tokens
        (stop token included) -- the ``score_mask`` of ``token_logprobs``;
        ``lengths (N,)`` completion lengths; and each of ``model_inputs`` (per-prompt
        tensors) with its prompt's row repeated for each completion (``images (N, C, H, W)``).
    """
    rows = out.tokens.shape[0]
    prompt_len = [len(prompt_ids[int(j)]) for j in out.prompt_index]
    lengths = out.mask.sum(-1)  # (N,)
    width = max(p + int(n) for p, n in zip(prompt_len, lengths.tolist()))
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((rows, width), dtype=torch.bool)
    tokens, mask = out.tokens.cpu(), out.mask.cpu()
    for i in range(rows):
        p = prompt_len[i]
        gen = tokens[i][mask[i]]
        input_ids[i, :p] = torch.tensor(prompt_ids[int(out.prompt_index[i])])
        input_ids[i, p : p + gen.numel()] = gen
        completion_mask[i, p : p + gen.numel()] = True
    device = out.tokens.device
    rows_of = out.prompt_index
    return {
        "input_ids": input_ids.to(device),
        "completion_mask": completion_mask.to(device),
        "lengths": lengths,
        **{k: v[rows_of.to(v.device)] for k, v in (model_inputs or {}).items()},
    }


__all__ = [
    "PROMPT_MODEL_INPUTS",
    "PromptBatches",
    "RolloutGenerator",
    "Rollouts",
    "concat_generations",
    "model_inputs_of",
    "pack_rollout",
    "stack_model_inputs",
]
