"""The small interfaces that plugins implement.

Shapes: ``B`` batch, ``T`` query length, ``S`` key length (cache + new tokens, or
encoder length for cross-attention), ``D`` model width, ``V`` vocabulary.
Every interface is either an abstract ``nn.Module`` base (for layers) or a
``typing.Protocol`` (for things that are not modules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from splice.generation.kv_cache import CrossKVCache, LayerKVCache


# --------------------------------------------------------------------------- build context
@dataclass
class BuildContext:
    """What a factory needs to know besides its own config.

    Attributes:
        d_model: width of the residual stream ``D``.
        max_seq_len: longest sequence the model must handle (cache size, learned positions).
        layer_idx: index of the block being built (``-1`` outside blocks).
        n_layers: number of blocks in the stack.
        rotary: the model's rotary embedding, if it uses RoPE, else None.
        d_context: width of cross-attention context (encoder output), if any.
        causal: whether self-attention in this stack is causal.
        extra: free-form values for plugins (e.g. ``n_experts`` overrides).
    """

    d_model: int
    max_seq_len: int = 2048
    layer_idx: int = -1
    n_layers: int = 1
    rotary: nn.Module | None = None
    d_context: int | None = None
    causal: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- token mixing
@dataclass
class AttentionInputs:
    """Everything a TokenMixer may need besides ``x``, built once per model forward.

    Attributes:
        positions: ``(B, T)`` absolute positions of the query tokens (for RoPE).
        attn_mask: ``(B, 1, T, S)`` bool, True = may attend; None means "use ``is_causal``".
        is_causal: plain causal attention over ``T == S`` (the fast SDPA path).
        cache: this layer's KV cache; the mixer appends its new K/V and attends to all of it.
            A cross-attention mixer gets the layer's ``CrossKVCache`` instead: the context's
            K/V, projected at the prefill and reused by every decode step.
        context: ``(B, S_ctx, D_ctx)`` encoder output / image features for cross-attention.
        context_mask: ``(B, 1, T, S_ctx)`` bool mask over the context, or None for "all visible".
        aux_losses: channel mixers' auxiliary losses (e.g. MoE balancing) are appended here.
        rope: ``(cos, signed sin)``, each ``(B, 1, T, d)``, for ``positions`` (see
            ``RotaryEmbedding.cos_sin``): computed once per forward
            by a RoPE model so that every layer does not gather them again.
    """

    positions: Tensor
    attn_mask: Tensor | None = None
    is_causal: bool = True
    cache: LayerKVCache | CrossKVCache | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None
    aux_losses: list[Tensor | PooledAuxLoss] = field(default_factory=list)
    rope: tuple[Tensor, Tensor] | None = None

    def for_layer(self, cache: LayerKVCache | CrossKVCache | None) -> AttentionInputs:
        """The same inputs with one layer's cache (aux losses are shared)."""
        return AttentionInputs(
            self.positions,
            self.attn_mask,
            self.is_causal,
            cache,
            self.context,
            self.context_mask,
            self.aux_losses,
            self.rope,
        )


class TokenMixer(nn.Module, ABC):
    """Attention-like layer: mixes information across positions.

    ``forward(x (B, T, D), inputs) -> (B, T, D)``. Self-attention reads
    ``inputs.positions``, ``attn_mask``/``is_causal`` and ``cache``;
    cross-attention reads ``inputs.context`` and ``context_mask``.
    """

    @abstractmethod
    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor: ...


# --------------------------------------------------------------------------- channel mixing
@dataclass
class ChannelMixerOutput:
    """A channel mixer's output with an auxiliary loss (e.g. MoE load balancing).

    The block adds ``aux_loss`` to ``AttentionInputs.aux_losses``; the model sums
    them into ``ModelOutput.aux_loss`` (pooling ``PooledAuxLoss`` entries first); objectives
    add that to their loss.
    """

    hidden: Tensor
    aux_loss: Tensor | PooledAuxLoss | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PooledAuxLoss:
    """An auxiliary loss computed once per model forward from statistics summed over layers.

    transformers' MoE load-balancing loss (Mixtral, Qwen-MoE) is one loss over all layers'
    routing, not a sum of per-layer losses. A layer reports its statistics as ``sums``; the
    model adds the ``sums`` of every entry with an equal ``finish`` and calls ``finish`` on
    each total once (``aux_losses_total``).

    Attributes:
        sums: statistics that add across layers (any shape, fixed per ``finish``).
        finish: summed statistics -> scalar loss; compared with ``==`` to group layers, so
            use a frozen dataclass (or another value-equal callable), not a lambda.
    """

    sums: Tensor
    finish: Callable[[Tensor], Tensor]

    def value(self) -> Tensor:
        """The loss of this entry alone (a pool of one layer)."""
        return self.finish(self.sums)


def aux_losses_total(losses: Sequence[Tensor | PooledAuxLoss]) -> Tensor | None:
    """Sum of plain aux losses plus one ``finish(sum of sums)`` per pool; None if empty."""
    plain = [t for t in losses if isinstance(t, Tensor)]
    pools: list[tuple[Callable[[Tensor], Tensor], Tensor]] = []
    for t in losses:
        if isinstance(t, PooledAuxLoss):
            i = next((i for i, (f, _) in enumerate(pools) if f == t.finish), None)
            if i is None:
                pools.append((t.finish, t.sums))
            else:
                pools[i] = (t.finish, pools[i][1] + t.sums)
    terms = plain + [finish(sums) for finish, sums in pools]
    return torch.stack(terms).sum() if terms else None


class ChannelMixer(nn.Module, ABC):
    """FFN-like layer applied to each position: ``(B, T, D) -> (B, T, D)``.

    May return ``ChannelMixerOutput`` instead of a tensor to report an auxiliary loss.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor | ChannelMixerOutput: ...


# --------------------------------------------------------------------------- blocks
class Block(nn.Module, ABC):
    """One transformer block built from a TokenMixer, a ChannelMixer and norms.

    ``forward(x (B, T, D), inputs) -> (B, T, D)``.
    """

    @abstractmethod
    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor: ...


# --------------------------------------------------------------------------- models
@dataclass
class ModelOutput:
    """What every splice language model returns.

    Attributes:
        logits: ``(B, T, V)``, or None when the caller asked for hidden states only
            (memory-frugal losses project chunks themselves).
        hidden: ``(B, T, D)`` final hidden states (after the final norm).
        aux_loss: sum of channel mixers' auxiliary losses, or None.
    """

    logits: Tensor | None
    hidden: Tensor
    aux_loss: Tensor | None = None


# --------------------------------------------------------------------------- adapters / quantizers
class Adapter(Protocol):
    """Wraps chosen modules of a built model (LoRA, QLoRA, ...).

    ``apply`` replaces target modules in place and freezes the base weights;
    ``merge`` folds the adapter into the base weights and returns a plain model.
    """

    def apply(self, model: nn.Module) -> nn.Module: ...

    def enable(self, model: nn.Module) -> None: ...

    def disable(self, model: nn.Module) -> None: ...

    def merge(self, model: nn.Module) -> nn.Module: ...

    def adapter_state_dict(self, model: nn.Module) -> dict[str, Tensor]: ...


class Quantizer(Protocol):
    """Turns a ``nn.Linear`` into a quantized module and back; reports storage bytes."""

    def quantize(self, linear: nn.Linear) -> nn.Module: ...

    def dequantize(self, module: nn.Module) -> nn.Linear: ...

    def nbytes(self, module: nn.Module) -> int: ...


# --------------------------------------------------------------------------- objectives
@dataclass
class LossOutput:
    """A scalar loss to backpropagate plus float metrics to log."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    n_tokens: int = 0


class Objective(Protocol):
    """Computes the training loss of a batch: ``loss(model, batch) -> LossOutput``.

    Offline objectives (SFT, DPO) read the batch; online ones (PPO, GRPO) first
    implement ``OnlineObjective.collect`` to generate and score experience.

    Two optional methods: ``setup(model, data)``, called by the Trainer at the starting
    weights before any resume (take a reference model, as a ``Regularizer`` does), and
    ``prepare(context)``, called by ``run_experiment`` with a
    ``splice.training.experiment.RunContext`` (model, task, collate, run_dir, ...) before
    training (dataset-level work such as precomputing reference log-probs).
    """

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput: ...


@runtime_checkable
class OnlineObjective(Protocol):
    """An objective that generates its own batches from prompts (PPO, GRPO).

    The trainer (``splice.training.online``) runs one *step* as::

        experience = objective.collect(policy, prompts, generate)
        for minibatch in objective.minibatches(experience):   # optional; default [experience]
            objective.loss(model, minibatch).loss.backward(); clip; optimizer.step()

    ``collect(model, prompts, generate)``:
        ``model`` is the policy (unwrapped from DDP, so it generates); ``prompts`` is a
        prompt batch of ``splice.rl.rollout.PromptBatches``: ``{"prompts": list[str],
        "references": list[str], "prompt_ids": list[list[int]] (bos + prompt), "index": (P,)
        long}``; ``generate`` is a ``splice.rl.rollout.RolloutGenerator``:
        ``generate(model, prompt_ids, n=G) -> GenerationOutput`` (the run's sampling config
        and this step's seed bound; KV cache, optionally the compiled decode step) and
        ``generate.texts(out) -> list[str]``. Returns a mapping; its optional
        ``"metrics"`` (``{name: float}``: reward, KL, length, ...) is logged with the step,
        and its optional ``"completion_mask"`` tensor counts the step's tokens.
    ``minibatches(experience) -> Iterator[Mapping]`` (optional): one optimizer update per
        yielded minibatch; may stop early (PPO's KL early stop) or yield the same data
        several times (GRPO's inner iterations). Under torchrun every rank must yield the
        same number (decide from the global metrics ``loss`` returns).
    ``loss(model, minibatch) -> LossOutput``: ``LossOutput.n_tokens`` is the count the loss
        is a mean over (tokens or sequences), used to weigh ranks under torchrun.
    ``setup(model, data=None)`` (optional): called once with the policy at its starting
        weights, before the optimizer is built and any checkpoint is loaded (take a reference
        copy here; create modules that ``trainable_modules`` returns).
    ``trainable_modules() -> dict[str, nn.Module]`` (optional): modules that train with the
        policy (PPO's value head); their parameters join the optimizer, their weights the
        checkpoints (``objective.safetensors``).
    ``state_dict() / load_state_dict(state)`` (optional): anything else exact resume needs
        (an adaptive KL coefficient, a reference copy); tensors are saved to
        ``objective.safetensors``, other JSON-able values to ``trainer_state.json``.
    """

    def collect(
        self, model: nn.Module, prompts: Mapping[str, Any], generate: Callable[..., Any]
    ) -> Mapping[str, Any]: ...

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput: ...


class Regularizer(Protocol):
    """A term added to any objective's loss (EWC, L2-SP, KL to a reference).

    ``setup`` runs once before training with the model at its starting weights
    (snapshot, Fisher estimation on old data); ``penalty`` is called each step.
    """

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None: ...

    def penalty(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor: ...


# --------------------------------------------------------------------------- optional capabilities
# What the Trainer and ``run_experiment`` call when a component has it. Each is checked with
# ``isinstance(x, Protocol)`` (never by probing a name) and has a conformance check in
# ``splice.testing.protocols``.


@runtime_checkable
class SetsUp(Protocol):
    """Set up once at the model's *starting* weights, before any checkpoint is loaded.

    Objectives (a reference copy) and regularizers (a snapshot, a Fisher estimate) implement
    it. An online objective is set up before the optimizer is built, so modules it creates
    here can be returned by ``HasTrainableModules``.
    """

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None: ...


@runtime_checkable
class Prepares(Protocol):
    """Dataset-level work before training (e.g. precomputing reference log-probs).

    ``run_experiment`` calls ``prepare(context)`` with a ``splice.training.experiment.RunContext``
    (model, tokenizer, task, collate, run_dir, batch_size, max_len, resume).
    """

    def prepare(self, context: Any) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    """State an exact resume needs beyond the model and optimizer (an adaptive KL
    coefficient, a reference copy): tensors go to ``objective.safetensors``, other JSON-able
    values to ``trainer_state.json``."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class HasTrainableModules(Protocol):
    """An objective's own modules that train with the policy (PPO's value head): their
    parameters join the optimizer, their weights the checkpoints."""

    def trainable_modules(self) -> Mapping[str, nn.Module]: ...


@runtime_checkable
class Minibatched(Protocol):
    """An online objective that splits one rollout into updates: one optimizer step per
    yielded minibatch (may stop early, or yield the same data several times)."""

    def minibatches(self, experience: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]: ...


@runtime_checkable
class ParamLRScaled(Protocol):
    """A module whose parameters train at a multiple of the scheduled learning rate.

    ``param_lr_scale`` maps the module's own parameter names (as its ``named_parameters()``
    spells them) to a multiplier, e.g. LoRA+ gives ``lora_B`` a larger rate.
    """

    param_lr_scale: Mapping[str, float]


@runtime_checkable
class AfterOptimizerStep(Protocol):
    """A module with state outside the optimizer, updated right after each optimizer step
    (an MoE router's aux-loss-free bias). The values it returns become step metrics,
    prefixed with the module's name; tensors are kept until the next flush (no host sync)."""

    def after_optimizer_step(self) -> Mapping[str, Any] | None: ...


@runtime_checkable
class SplitTask(Protocol):
    """A finite dataset: ``split("train" | "held_out") -> list[Example]``, fixed splits that
    the checks read whole (held-out disjoint from train)."""

    def split(self, split: Any) -> Sequence[Any]: ...


@runtime_checkable
class EpochTask(Protocol):
    """A finite dataset trained in reshuffled epochs instead of sampled per batch:
    ``epoch_examples()`` are the training items its collator takes; each is drawn once per
    epoch, in a new order per epoch seeded by the run (``splice.training.stream.ListBatches``),
    so a batch costs the same whatever the dataset's size."""

    def epoch_examples(self) -> Sequence[Any]: ...


@runtime_checkable
class CollatingTask(Protocol):
    """A task that batches its own examples (preference pairs):
    ``collator(tokenizer, *, max_len) -> (list[Example] -> dict of tensors)``."""

    def collator(self, tokenizer: Any, *, max_len: int) -> Callable[[list[Any]], Any]: ...


@runtime_checkable
class LocatedTask(Protocol):
    """A task read from files that says where each example came from: ``lines()`` yields
    ``(where, example)`` for every example of every file, ``where`` like ``"train.jsonl:12"``,
    so a check before step 1 (``splice.training.preflight``) names the line of a bad one."""

    def lines(self) -> Iterable[tuple[str, Any]]: ...


@runtime_checkable
class ClosedAlphabet(Protocol):
    """A tokenizer that knows a fixed set of characters (``CharTokenizer``): ``alphabet`` holds
    every character it can encode, and encoding any other raises ``ValueError``. A run checks
    its tasks' text against it before step 1 instead of failing mid-run."""

    alphabet: str

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: list[int], *, skip_special: bool = True) -> str: ...


@runtime_checkable
class RolloutFactory(Protocol):
    """What an online ``Trainer`` is given as ``rollouts`` (``splice.rl.rollout.Rollouts``):
    ``generator(step, first_index)`` makes the step's bound generator (the run's sampling
    config and a seed for that step; see ``OnlineObjective.collect``), and
    ``prompts_per_step`` is the prompts per step (recorded in checkpoints as examples seen)."""

    prompts_per_step: int

    def generator(self, step: int, first_index: int = 0) -> Callable[..., Any]: ...


# --------------------------------------------------------------------------- multimodal
class Connector(nn.Module, ABC):
    """Maps encoder features into the language model's embedding space.

    ``forward(features (B, N, D_enc)) -> (B, N', D)``; the model splices the
    result into the decoder's ``inputs_embeds`` at image-token positions.
    """

    @abstractmethod
    def forward(self, features: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------- rewards
class Reward(Protocol):
    """Scores completions: returns a float tensor ``(N,)``, one reward per completion."""

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> torch.Tensor: ...
