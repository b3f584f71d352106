"""Training and experiment configs (torch-free, so ``splice config`` stays fast).

``ExperimentConfig`` is everything one run needs: model, tokenizer, data,
objective (+ regularizers), optimizer/schedule, evaluation, output folder. It
round-trips through JSON and each run saves it as ``config.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from splice.config import (
    AdapterField,
    ModelField,
    ObjectiveField,
    QuantizerField,
    RegularizerField,
    SpliceConfig,
    TaskField,
)
from splice.data.tokenizer import DEFAULT_ALPHABET
from splice.rewards.configs import RewardTermConfig

MAX_THREADS = 1024  # train.num_threads at most (no CPU splice runs on has more cores)


class OptimizerConfig(SpliceConfig):
    """The optimizer. Only parameters with ``requires_grad`` are given to it.

    ``adamw_8bit``, ``paged_adamw`` and ``paged_adamw_8bit`` are bitsandbytes' AdamW with
    8-bit state and/or paged (CUDA only) state; they need bitsandbytes (``uv add splice-qlora``).

    ``weight_decay`` applies to matrices (ndim >= 2) only; norms, biases and
    other vectors are not decayed (the usual GPT/Llama practice).
    """

    name: Literal["adamw", "sgd", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(default=0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # SGD only
    fused: bool | None = None  # None: fused AdamW where torch supports it on this device

    @model_validator(mode="after")
    def _check_betas(self) -> OptimizerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {list(self.betas)}")
        return self


class ScheduleConfig(SpliceConfig):
    """Learning-rate multiplier over optimizer steps: linear warmup, then constant/linear/cosine.

    The multiplier decays from 1 to ``min_lr_ratio`` between ``warmup_steps`` and the last step.
    """

    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)


class TrainConfig(SpliceConfig):
    """How the trainer runs.

    A *step* is one optimizer update over ``batch_size * grad_accum`` examples
    (``grad_accum`` micro-batches of ``batch_size``).
    """

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 32
    grad_accum: PositiveInt = 1
    max_grad_norm: PositiveFloat | None = 1.0
    # "auto": bf16 autocast where the device multiplies bf16 natively (CUDA with bf16, a CPU
    # with AVX512-BF16/AMX), else float32; see splice.training.precision.
    precision: Literal["auto", "float32", "bf16"] = "auto"
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    log_every: PositiveInt = 10
    # Write curves.png at the end (matplotlib): a sweep of many short runs can skip it, as the
    # plot costs more than the training of a tiny one.
    plot_curves: bool = True
    checkpoint_every: PositiveInt | None = None
    keep_last: PositiveInt | None = 2
    deterministic: bool = True
    progress: bool = True
    # torch.set_num_threads(100000) crashes the process (one OpenMP thread stack each);
    # no CPU this runs on has more than MAX_THREADS cores.
    num_threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    # Regional torch.compile of every block for training steps (seconds to compile; fuses
    # the elementwise work between matmuls). Generation and evaluation stay eager.
    compile: bool = False
    # On CPU, keep freed host memory in the process (glibc mallopt) so each step's tensors
    # reuse mapped pages instead of faulting fresh ones in; see splice.training.host_memory.
    retain_host_memory: bool = True
    # Data parallelism under torchrun (see docs/distributed.md); batch_size stays global.
    distributed: Literal["none", "ddp", "fsdp2"] = "none"


class EvalConfig(SpliceConfig):
    """In-training and final evaluation on held-out data.

    Attributes:
        every: evaluate every N optimizer steps (None: only at the end).
        loss_batches: held-out batches for loss / perplexity (0 disables).
        exact_match_examples: held-out problems generated greedily and compared to the answer.
        max_new_tokens: generation budget per problem.
        batch_size: problems generated per batch.
        split: the split evaluated: ``"held_out"`` (reported) or ``"dev"`` (for choosing
            hyperparameters; a task with a dev split, e.g. arithmetic with ``dev_fraction``).
        tasks: extra named tasks evaluated the same way (e.g. the old task, to measure forgetting).
        rewards: rule-based rewards (``splice.rewards``) that also score the greedy
            completions, logged as ``reward/<name>`` (e.g. answer match and format of a
            chain-of-thought task, where plain exact match of the whole completion says little).
    """

    every: PositiveInt | None = None
    loss_batches: NonNegativeInt = 4
    exact_match_examples: NonNegativeInt = 200
    max_new_tokens: PositiveInt = 8
    batch_size: PositiveInt = 100
    split: Literal["held_out", "dev"] = "held_out"
    tasks: dict[str, TaskField] = Field(default_factory=dict)
    rewards: list[RewardTermConfig] = Field(default_factory=list)


class TokenizerConfig(SpliceConfig):
    """The tokenizer: ``char``, a character-level one over ``alphabet`` (ids 0-2 are
    pad/bos/eos), or ``hf``, a Hugging Face ``tokenizer.json`` folder at ``path`` (e.g. the
    checkpoint a ``pretrained`` model is loaded from)."""

    type: Literal["char", "hf"] = "char"
    alphabet: str = DEFAULT_ALPHABET
    path: str | None = None

    @model_validator(mode="after")
    def _hf_needs_path(self) -> TokenizerConfig:
        if self.type == "hf" and self.path is None:
            raise ValueError("tokenizer.path: a 'hf' tokenizer needs the folder of tokenizer.json")
        return self


class DataConfig(SpliceConfig):
    """Training data: a registered task, tokenized and collated to at most ``max_len`` tokens."""

    task: TaskField
    max_len: PositiveInt = 64
    packing: bool = False


class RolloutConfig(SpliceConfig):
    """How an online objective (PPO, GRPO) samples its experience; ignored by offline ones.

    One training *step* of an online run = one rollout of ``prompts_per_step`` prompts from
    ``data.task``'s train split (``collect``), then the objective's updates on it (one
    optimizer update per minibatch it yields). The schedule, ``log_every``,
    ``checkpoint_every`` and ``steps`` count these steps.

    Attributes:
        prompts_per_step: prompts per rollout (the global batch under torchrun).
        max_new_tokens: generation budget per completion.
        temperature / top_k / top_p: sampling (``temperature=0`` is greedy).
        compile: decode through the compiled static-shape step (see ``SamplingConfig``).
        generate_chunk: prompts per ``generate`` call, each chunk with its own seed; set it
            to a divisor of each rank's share to sample the same tokens under any number of
            processes (None: one call per rank).
    """

    prompts_per_step: PositiveInt = 16
    max_new_tokens: PositiveInt = 32
    temperature: float = Field(default=1.0, ge=0.0)
    top_k: PositiveInt | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    compile: bool = False
    generate_chunk: PositiveInt | None = None


def _default_objective() -> dict[str, Any]:
    return {"type": "sft"}


class ExperimentConfig(SpliceConfig):
    """One run: ``splice run`` validates this, trains, evaluates and writes the run folder.

    Attributes:
        output_dir: the run folder (checkpoints, metrics.jsonl, plot, report);
            default ``runs/<name>``.
        init_from: a ``model.safetensors`` (or a run/checkpoint folder holding one) to start from.
        quantizer: quantize the model's linear layers after the weights are loaded and
            before any adapter is applied (e.g. ``{"type": "nf4"}`` from splice-qlora; its
            ``targets``/``exclude`` fields pick the layers). The quantized layers are frozen.
        adapter: an adapter (``{"type": "lora", ...}``) applied after ``init_from`` is loaded
            and before the objective is built; it freezes the base, so checkpoints then hold
            only the trainable (adapter) parameters and their optimizer state.
        reference_data: data given to the regularizers' ``setup`` (e.g. the old task for EWC);
            ``reference_batches`` batches of it.
        rollout: prompts and sampling of online objectives (PPO, GRPO); see ``RolloutConfig``.
    """

    name: str = "experiment"
    seed: int = 0
    model: ModelField
    tokenizer: TokenizerConfig = TokenizerConfig()
    data: DataConfig
    objective: ObjectiveField = Field(default_factory=_default_objective, validate_default=True)
    regularizers: list[RegularizerField] = Field(default_factory=list)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    output_dir: str | None = None
    init_from: str | None = None
    quantizer: QuantizerField | None = None
    adapter: AdapterField | None = None
    reference_data: DataConfig | None = None
    reference_batches: PositiveInt = 16
    rollout: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _check_vocab(self) -> ExperimentConfig:
        vocab = getattr(self.model, "vocab_size", None)
        if self.tokenizer.type != "char":
            return self
        need = 3 + len(self.tokenizer.alphabet)
        if isinstance(vocab, int) and vocab < need:
            raise ValueError(
                f"model.vocab_size={vocab} is smaller than the tokenizer's vocabulary ({need})"
            )
        return self

    @model_validator(mode="after")
    def _check_context(self) -> ExperimentConfig:
        # A decoder-only model sees whole training sequences: longer ones than its context
        # would fail deep inside the positional encoding. (Encoder-decoder models split
        # them into source and target, each with its own limit.)
        context = getattr(self.model, "max_seq_len", None)
        if not isinstance(context, int) or hasattr(self.model, "max_source_len"):
            return self
        for field, data in (("data", self.data), ("reference_data", self.reference_data)):
            if data is not None and data.max_len > context:
                raise ValueError(
                    f"{field}.max_len={data.max_len} exceeds the model's context "
                    f"(model.max_seq_len={context}); lower {field}.max_len or raise "
                    "model.max_seq_len"
                )
        return self

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"
