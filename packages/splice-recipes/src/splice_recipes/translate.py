"""Recipe ``translate``: encoder-decoder vs decoder-only on numerals -> English number words.

The same task (``"4071"`` -> ``"four thousand seventy one"``, held-out numbers never seen
in training) is learned twice, with the same optimizer, steps and batch size:

* **encoder-decoder**: the numeral is encoded bidirectionally; the decoder writes the
  words with causal self-attention plus cross-attention over the encoder output;
* **decoder-only** (GPT style): ``bos + "4071=" + words + eos`` as one causal sequence,
  loss on the words only; its depth is chosen so both models have about as many
  parameters.

The held-out numbers (every one once, in a fixed shuffled order) are cut in two: a **dev**
half, on which each model's learning rate is chosen (tuning seed 100, never reported), and a
**test** half, on which every reported run is scored. Both halves are disjoint from each
other and from the training numbers (asserted). Each reported seed fixes both models'
initialisation and their common example stream; each model trains at its own dev-chosen
rate. A run is scored by greedy decoding (exact match of the whole phrase) at its final
step, not as the mean of its last evaluations: the cosine schedule ends at 5% of the peak
rate, where the model moves little, and decoding at several checkpoints would double the
run. The claim: the encoder-decoder gets more held-out phrases right than the decoder-only
model. The study also reports parameters, step time and final train loss.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
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

from splice_recipes.study import (
    Claim,
    Clock,
    TunedStudyConfig,
    Tuning,
    every_arm,
    run_and_report,
    seeds_in_workers,
    tune_in_workers,
)
from splice_recipes.study.tuning import tuning_extras, with_chosen

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
        steps=500,
        batch_size=64,
        num_threads=1,
        log_every=50,
        progress=False,
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98)),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05),
    )


class TranslateConfig(TunedStudyConfig):
    """Everything the ``translate`` study runs (seeds, precision and folder: ``StudyConfig``;
    ``tuning_seeds``: ``TunedStudyConfig``).

    Attributes:
        task: the number-words task (digit range, direction, held-out share).
        encoder_decoder / decoder_only: the two models compared.
        train: optimizer, schedule, steps and batch size, shared by both runs (each arm's
            learning rate is its dev-split choice, ``lrs``).
        separator: ends the source in the decoder-only sequence (``"407=four hundred seven"``).
        eval_examples: test numbers scored by greedy exact match (0 = the whole test half,
            each number once; otherwise its first ``eval_examples``); the dev half is cut
            the same way.
        eval_batch_size: numbers decoded per generation batch.
        max_new_tokens: generation budget (the longest 4-digit phrase is 42 characters).
        lr_candidates: the peak learning rates tried on the dev half, per arm (on a tie the
            one listed first wins).
        tuning_seeds: seeds of the dev-half runs (disjoint from the reported seeds).
        lrs: each arm's learning rate, written by the dev-split choice (an arm not listed
            uses ``train``'s).
        workers: runs at once, one process each (every run uses one thread; the figures do
            not depend on it).
    """

    name: str = "translate"
    seeds: PositiveInt = 5
    task: NumberWordsTaskConfig = NumberWordsTaskConfig(max_digits=4)
    tokenizer: TokenizerConfig = TokenizerConfig()
    encoder_decoder: EncoderDecoderConfig = Field(default_factory=_default_encoder_decoder)
    decoder_only: DecoderConfig = Field(default_factory=_default_decoder_only)
    train: TrainConfig = Field(default_factory=_default_train)
    separator: str = "="
    eval_examples: NonNegativeInt = 0
    eval_batch_size: PositiveInt = 250
    max_new_tokens: PositiveInt = 48
    lr_candidates: list[PositiveFloat] = Field(default_factory=lambda: [3e-3, 1e-3], min_length=1)
    lrs: dict[str, PositiveFloat] = Field(default_factory=dict)
    workers: PositiveInt = 2

    @model_validator(mode="after")
    def _check(self) -> TranslateConfig:
        if unknown := sorted(set(self.lrs) - {"encoder_decoder", "decoder_only"}):
            raise ValueError(f"lrs: unknown arms {unknown}; arms are encoder_decoder, decoder_only")
        return self


def recipe_config() -> TranslateConfig:
    return TranslateConfig()


def dev_and_test(config: TranslateConfig) -> tuple[list[Example], list[Example]]:
    """The dev half and the test half of the held-out numbers: every held-out number once,
    in an order fixed by the task (not the seed), cut in two (each half then cut to
    ``eval_examples`` when that is set). The same for every seed and arm, so differences
    between seeds are the models'.

    Raises:
        RuntimeError: a number in both halves, or in a half and the training split.
    """
    task = NumberWordsTask(config.task)
    every = task.sample("held_out", len(task.all_examples("held_out")), seed=0)
    half = len(every) // 2
    dev, test = every[:half], every[half:]
    if config.eval_examples:
        dev, test = dev[: config.eval_examples], test[: config.eval_examples]
    train = {ex.prompt for ex in task.all_examples("train")}
    dev_p, test_p = {ex.prompt for ex in dev}, {ex.prompt for ex in test}
    if dev_p & test_p or train & (dev_p | test_p) or len(dev_p) != len(dev):
        raise RuntimeError("translate: the dev and test numbers must be distinct, disjoint "
                           "from each other and from the training numbers")  # fmt: skip
    return dev, test


def held_out_examples(config: TranslateConfig) -> list[Example]:
    """The reported (test) numbers: see ``dev_and_test``."""
    return dev_and_test(config)[1]


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


def _train(
    config: TranslateConfig, model: nn.Module, collate: Any, which: str, seed: int, folder: Path
) -> dict[str, Any]:
    task = NumberWordsTask(config.task)
    batches = TaskBatches(
        task,
        collate,
        batch_size=config.train.batch_size,
        seed=derive_seed(seed, "translate-train"),
    )  # same stream for both
    train = config.train.model_copy(update={"precision": config.precision, "progress": False})
    trainer = Trainer(
        model,
        SFTObjective(),
        batches,
        train,
        run_dir=folder,
        seed=seed,
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


def train_encoder_decoder(
    config: TranslateConfig, examples: list[Example], *, seed: int, folder: Path
) -> dict[str, Any]:
    """Train the encoder-decoder on the task; score greedy exact match on ``examples``."""
    tokenizer = CharTokenizer(config.tokenizer.alphabet)
    mc = config.encoder_decoder
    collate = Seq2SeqCollator(
        tokenizer, max_source_len=mc.max_source_len, max_target_len=mc.max_target_len
    )
    seed_everything(seed)
    model = EncoderDecoderLM(mc)
    result = _train(config, model, collate, "encoder_decoder", seed, folder)
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


def train_decoder_only(
    config: TranslateConfig, examples: list[Example], *, seed: int, folder: Path
) -> dict[str, Any]:
    """Train the decoder-only model on ``source + separator + target``; score as above."""
    tokenizer = CharTokenizer(config.tokenizer.alphabet)
    sft = SFTCollator(tokenizer, max_len=config.decoder_only.max_seq_len)

    def collate(batch: list[Example]) -> dict[str, Tensor]:
        return sft(with_separator(batch, config.separator))

    seed_everything(seed)
    model = DecoderLM(config.decoder_only)
    result = _train(config, model, collate, "decoder_only", seed, folder)
    started = time.perf_counter()
    preds = translate_decoder_only(
        model,
        tokenizer,
        with_separator(examples, config.separator),
        _sampling(config, tokenizer),
        batch_size=config.eval_batch_size,
    )
    return _score(result, preds, examples, started)


ARMS = {"encoder_decoder": train_encoder_decoder, "decoder_only": train_decoder_only}
CLAIMS = [
    Claim(
        "encoder-decoder-beats-decoder-only",
        "encoder_decoder",
        "decoder_only",
        "exact_match",
        "higher",
        "the encoder-decoder translates more held-out numbers exactly than a "
        "decoder-only model of about the same size",
        scale=100,
        unit=" pt",
    ),
]


def with_lr(config: TranslateConfig, arm: str, lr: float | None = None) -> TranslateConfig:
    """``config`` whose ``train`` runs at ``lr``, else at ``arm``'s dev-split choice
    (``config.lrs``), else at ``train``'s own rate."""
    lr = lr if lr is not None else config.lrs.get(arm, config.train.optimizer.lr)
    optimizer = config.train.optimizer.model_copy(update={"lr": lr})
    return config.model_copy(
        update={"train": config.train.model_copy(update={"optimizer": optimizer})}
    )


def figures(r: dict[str, Any]) -> dict[str, float]:
    """The study's figures of one trained and scored model."""
    return {
        "exact_match": r["exact_match"],
        "parameters": r["parameters"],
        "ms_per_step": 1000.0 * r["train_time_s"] / max(r["steps"], 1),
        "final_train_loss": r["final_train_loss"],
    }


def run_one(config: TranslateConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported run: ``arm`` at its chosen rate, scored on the test half; its first
    predictions are kept in ``folder/samples.json``."""
    r = ARMS[arm](with_lr(config, arm), held_out_examples(config), seed=seed, folder=folder)
    (folder / "samples.json").write_text(json.dumps(r["samples"], indent=1))
    return figures(r)


def dev_run(config: TranslateConfig, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: ``arm`` at ``lr`` on tuning seed ``seed``, scored on the dev half."""
    i = config.lr_candidates.index(lr)
    folder = Path(config.run_dir()) / "tuning" / f"{arm}-lr{i}" / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    dev = dev_and_test(config)[0]
    return figures(ARMS[arm](with_lr(config, arm, lr), dev, seed=seed, folder=folder))


def choose_lrs(config: TranslateConfig) -> list[Tuning]:
    """Each model's learning rate, chosen on the dev half by the tuning seeds (the runs go
    in ``config.workers`` processes): highest mean dev exact match, ties to the first listed."""
    return tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lr_candidates for arm in ARMS},
        metric="exact_match",
        seeds=config.tuning_seeds,
        workers=config.workers,
    )


def study_arms(config: TranslateConfig) -> list[str]:
    """The arms, in the order each seed runs them."""
    return list(ARMS)


#: both models of one seed: one worker's share (module-level, so it reaches the workers)
run_seed = functools.partial(every_arm, run_one, study_arms)


def run(config: TranslateConfig) -> dict[str, Any]:
    """Choose each model's learning rate on the dev half, train both models per seed at
    their rates, score them on the same test numbers, judge the claim."""
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    dev, test = dev_and_test(config)
    tunings = choose_lrs(config)
    chosen = with_chosen(config, "lrs", tunings)
    for t in tunings:
        print(f"{t.name}: lr {t.value:g} chosen on the dev half "
              f"(dev exact match {t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip

    def extras(result: Any) -> dict[str, Any]:
        samples = {
            f"{arm}/seed-{seed}": json.loads(
                (chosen.arm_dir(arm, seed) / "samples.json").read_text()
            )
            for arm in result.figures
            for seed in result.seeds
        }
        return {
            "dev_examples": len(dev),
            "held_out_examples": len(test),
            **tuning_extras(tunings, scale=100, unit="%"),
            "samples": samples,
        }

    c = config.task
    done = run_and_report(
        chosen,
        arms=list(ARMS),
        run_one=seeds_in_workers(
            run_seed, chosen, lambda arm, seed, folder: run_one(chosen, arm, seed, folder)
        ),
        claims=CLAIMS,
        extras=extras,
        clock=clock,
        show=("dev_choice",),
        notes=lambda result: [
            f"translate ({c.direction}, {c.min_digits}-{c.max_digits} digits): "
            f"{config.train.steps} steps x {config.train.batch_size} examples each, lr "
            + ", ".join(f"{arm} {lr:g}" for arm, lr in chosen.lrs.items())
            + f" (dev half, {len(dev)} numbers); exact match on the {len(test)} test numbers, "
            f"{len(result.seeds)} seeds"
        ],
    )
    return {**done, "held_out_examples": len(test)}


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
    description="Encoder-decoder vs decoder-only on numerals -> number words over seeds; "
    "held-out exact match with an interval.",
    config=recipe_config,
    run=run,
)

__all__ = [
    "TranslateConfig",
    "dev_and_test",
    "exact_match",
    "format_table",
    "held_out_examples",
    "recipe",
    "run",
    "translate_decoder_only",
    "translate_encoder_decoder",
    "with_lr",
]
