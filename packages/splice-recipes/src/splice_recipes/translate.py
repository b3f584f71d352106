"""Recipe ``translate``: encoder-decoder vs decoder-only on numerals -> English number words.

The same task (``"4071"`` -> ``"four thousand seventy one"``, held-out numbers never seen
in training) is learned twice, with the same optimizer, steps and batch size:

* **encoder-decoder**: the numeral is encoded bidirectionally; the decoder writes the
  words with causal self-attention plus cross-attention over the encoder output;
* **decoder-only** (GPT style): ``bos + "4071=" + words + eos`` as one causal sequence,
  loss on the words only; its depth is chosen so both models have about as many
  parameters.

Both are scored by greedy decoding on held-out numbers (exact match of the whole
phrase). The report holds parameter counts, train wall time, final train loss and
held-out exact match of each, and a Markdown table of them.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from splice.config import SpliceConfig
from splice.data.collate import SFTCollator
from splice.data.examples import Example
from splice.data.seq2seq import Seq2SeqCollator
from splice.data.tokenizer import CharTokenizer
from splice.data.translation import NumberWordsTask, NumberWordsTaskConfig, with_separator
from splice.generation.sampling import SamplingConfig, generate
from splice.models.configs import DecoderConfig, EncoderDecoderConfig
from splice.models.decoder import DecoderLM
from splice.models.encoder_decoder import EncoderDecoderLM
from splice.objectives.sft import SFTObjective
from splice.recipe import Recipe
from splice.training.configs import OptimizerConfig, ScheduleConfig, TokenizerConfig, TrainConfig
from splice.training.stream import TaskBatches, derive_seed
from splice.training.trainer import Trainer, seed_everything
from torch import Tensor, nn

VOCAB = 3 + len(TokenizerConfig().alphabet)  # pad/bos/eos + the default char alphabet
D_MODEL = 64
BLOCK: dict[str, Any] = {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}


def _default_encoder_decoder() -> EncoderDecoderConfig:
    return EncoderDecoderConfig.model_validate(
        {
            "vocab_size": VOCAB,
            "d_model": D_MODEL,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "block": BLOCK,
            "cross_attention": {"type": "cross_attention", "n_heads": 4},
            "max_source_len": 16,
            "max_target_len": 64,
        }
    )


def _default_decoder_only() -> DecoderConfig:
    # 5 self-attention layers ~ 2 encoder + 2 decoder layers with cross-attention (within 6%).
    return DecoderConfig.model_validate(
        {
            "vocab_size": VOCAB,
            "d_model": D_MODEL,
            "n_layers": 5,
            "block": BLOCK,
            "max_seq_len": 80,
        }
    )


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=600,
        batch_size=64,
        num_threads=2,
        log_every=50,
        progress=False,
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98)),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05),
    )


class TranslateConfig(SpliceConfig):
    """Everything the ``translate`` recipe runs.

    Attributes:
        task: the number-words task (digit range, direction, held-out share).
        encoder_decoder / decoder_only: the two models compared.
        train: optimizer, schedule, steps and batch size, shared by both runs.
        separator: ends the source in the decoder-only sequence (``"407=four hundred seven"``).
        eval_examples: held-out numbers scored by greedy exact match (0 = every held-out number).
        eval_batch_size: numbers decoded per generation batch.
        max_new_tokens: generation budget (the longest 4-digit phrase is 42 characters).
        output_dir: where both run folders go (``<output_dir>/encoder_decoder``, ...);
            None writes nothing to disk.
    """

    name: str = "translate"
    seed: int = 0
    task: NumberWordsTaskConfig = NumberWordsTaskConfig(max_digits=4)
    tokenizer: TokenizerConfig = TokenizerConfig()
    encoder_decoder: EncoderDecoderConfig = Field(default_factory=_default_encoder_decoder)
    decoder_only: DecoderConfig = Field(default_factory=_default_decoder_only)
    train: TrainConfig = Field(default_factory=_default_train)
    separator: str = "="
    eval_examples: NonNegativeInt = 500
    eval_batch_size: PositiveInt = 250
    max_new_tokens: PositiveInt = 48
    output_dir: str | None = None


def recipe_config() -> TranslateConfig:
    return TranslateConfig()


def held_out_examples(config: TranslateConfig) -> list[Example]:
    """The scored held-out numbers: all of them, or ``eval_examples`` drawn with the run's seed."""
    every = NumberWordsTask(config.task).all_examples("held_out")
    if config.eval_examples == 0 or config.eval_examples >= len(every):
        return every
    return random.Random(f"{config.seed}-translate-eval").sample(every, config.eval_examples)


def _sampling(config: TranslateConfig, tokenizer: CharTokenizer) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=config.max_new_tokens, stop_token_ids=[tokenizer.eos_id])


def _decode(tokenizer: CharTokenizer, completions: list[list[int]]) -> list[str]:
    """Token ids -> text, up to (not including) the first eos."""
    out = []
    for ids in completions:
        if tokenizer.eos_id in ids:
            ids = ids[: ids.index(tokenizer.eos_id)]
        out.append(tokenizer.decode(ids))
    return out


def translate_encoder_decoder(
    model: EncoderDecoderLM,
    tokenizer: CharTokenizer,
    collate: Seq2SeqCollator,
    sources: list[Example],
    sampling: SamplingConfig,
    *,
    batch_size: int,
) -> list[str]:
    """Greedy translations: encode each batch of sources once, decode from ``bos`` with a KV cache."""
    texts: list[str] = []
    model.eval()
    for i in range(0, len(sources), batch_size):
        chunk = sources[i : i + batch_size]
        src, src_mask = collate.sources(chunk)
        with torch.no_grad():
            memory = model.encode(src, src_mask)  # (B, S, D), reused at every decoding step
        out = generate(
            model,
            [[tokenizer.bos_id]] * len(chunk),
            sampling,
            pad_id=tokenizer.pad_id,
            context=memory,
            context_mask=src_mask,
        )
        texts += _decode(tokenizer, out.completions())
    return texts


def translate_decoder_only(
    model: nn.Module,
    tokenizer: CharTokenizer,
    prompts: list[Example],
    sampling: SamplingConfig,
    *,
    batch_size: int,
) -> list[str]:
    """Greedy continuations of ``bos + source + separator``."""
    texts: list[str] = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        encoded = [tokenizer.encode(ex.prompt, bos=True) for ex in chunk]
        out = generate(model, encoded, sampling, pad_id=tokenizer.pad_id)
        texts += _decode(tokenizer, out.completions())
    return texts


def exact_match(predictions: list[str], examples: list[Example]) -> float:
    """Share of predictions equal (after stripping) to the example's answer."""
    hits = sum(p.strip() == ex.answer.strip() for p, ex in zip(predictions, examples))
    return hits / max(len(examples), 1)


def _train(config: TranslateConfig, model: nn.Module, collate: Any, which: str) -> dict[str, Any]:
    task = NumberWordsTask(config.task)
    batches = TaskBatches(
        task,
        collate,
        batch_size=config.train.batch_size,
        seed=derive_seed(config.seed, "translate-train"),
    )  # same stream for both
    run_dir = Path(config.output_dir) / which if config.output_dir is not None else None
    trainer = Trainer(
        model,
        SFTObjective(),
        batches,
        config.train,
        run_dir=run_dir,
        seed=config.seed,
        title=f"{config.name}: {which}",
    )
    summary = trainer.fit(overwrite=True)  # each run of the recipe retrains both models
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_time_s": float(summary["train_time_s"]),
        "final_train_loss": float(summary["final_train_loss"]),
        "steps": int(summary["steps"]),
    }


def _score(
    result: dict[str, Any], predictions: list[str], examples: list[Example], started: float
) -> dict[str, Any]:
    result["exact_match"] = exact_match(predictions, examples)
    result["eval_time_s"] = round(time.perf_counter() - started, 2)
    result["samples"] = [
        {"source": ex.prompt, "target": ex.answer, "prediction": p}
        for ex, p in list(zip(examples, predictions))[:5]
    ]
    return result


def train_encoder_decoder(config: TranslateConfig, examples: list[Example]) -> dict[str, Any]:
    """Train the encoder-decoder on the task; score greedy exact match on ``examples``."""
    tokenizer = CharTokenizer(config.tokenizer.alphabet)
    mc = config.encoder_decoder
    collate = Seq2SeqCollator(
        tokenizer, max_source_len=mc.max_source_len, max_target_len=mc.max_target_len
    )
    seed_everything(config.seed)
    model = EncoderDecoderLM(mc)
    result = _train(config, model, collate, "encoder_decoder")
    started = time.perf_counter()
    preds = translate_encoder_decoder(
        model,
        tokenizer,
        collate,
        examples,
        _sampling(config, tokenizer),
        batch_size=config.eval_batch_size,
    )
    return _score(result, preds, examples, started)


def train_decoder_only(config: TranslateConfig, examples: list[Example]) -> dict[str, Any]:
    """Train the decoder-only model on ``source + separator + target``; score as above."""
    tokenizer = CharTokenizer(config.tokenizer.alphabet)
    sft = SFTCollator(tokenizer, max_len=config.decoder_only.max_seq_len)

    def collate(batch: list[Example]) -> dict[str, Tensor]:
        return sft(with_separator(batch, config.separator))

    seed_everything(config.seed)
    model = DecoderLM(config.decoder_only)
    result = _train(config, model, collate, "decoder_only")
    started = time.perf_counter()
    preds = translate_decoder_only(
        model,
        tokenizer,
        with_separator(examples, config.separator),
        _sampling(config, tokenizer),
        batch_size=config.eval_batch_size,
    )
    return _score(result, preds, examples, started)


def run(config: TranslateConfig) -> dict[str, Any]:
    """Train both models, score them on the same held-out numbers, print and return the comparison."""
    examples = held_out_examples(config)
    results = {
        "encoder_decoder": train_encoder_decoder(config, examples),
        "decoder_only": train_decoder_only(config, examples),
    }
    table = format_table(results)
    c = config.task
    print(
        f"translate ({c.direction}, {c.min_digits}-{c.max_digits} digits): "
        f"{config.train.steps} steps x {config.train.batch_size} examples each, "
        f"exact match on {len(examples)} held-out numbers"
    )
    print(table)
    report: dict[str, Any] = {
        "name": config.name,
        **results,
        "held_out_examples": len(examples),
        "table": table,
    }
    if config.output_dir is not None:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "comparison.md").write_text(table + "\n")
    return report


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per model."""
    lines = [
        "| model | parameters | train time (s) | final train loss | held-out exact match |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name.replace('_', '-')} | {r['parameters']:,} | {r['train_time_s']:.1f} | "
            f"{r['final_train_loss']:.4f} | {r['exact_match']:.3f} |"
        )
    return "\n".join(lines)


recipe = Recipe(
    name="translate",
    description="Encoder-decoder vs decoder-only on numerals -> number words; held-out exact match.",
    config=recipe_config,
    run=run,
)

__all__ = [
    "TranslateConfig",
    "exact_match",
    "format_table",
    "held_out_examples",
    "recipe",
    "run",
    "translate_decoder_only",
    "translate_encoder_decoder",
]
