"""Recipe ``dpo``: preference learning from a model's own samples on verifiable arithmetic.

1. **SFT** a small decoder briefly on addition (it ends up right on part of the problems).
2. **Offline data**: sample ``samples_per_prompt`` answers per training prompt from the SFT
   model, score them with the ``answer_match`` verifier (``splice.rewards``), and keep a
   (correct, incorrect) pair per prompt where both occur: ``pairs.jsonl``. The accepted
   samples also make ``accepted.jsonl`` for rejection-sampling fine-tuning (RFT).
3. **One row per method**, each from the SFT weights, through ``run_experiment`` (what
   ``splice run`` does): DPO (sigmoid), DPO + SFT on the chosen side (composed in config with
   ``weighted_sum``), SimPO, ORPO on ``pairs.jsonl``; RFT = SFT on ``accepted.jsonl``.
4. Held-out accuracy (greedy exact match on the same problems) before and after, per method:
   ``method | acc before | acc after | Δ | train time (s)`` (the GRPO and PPO recipes print
   the same columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from splice.config import ModelField, PreferenceLossField, SpliceConfig, TaskField
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.common import (
    addition_task,
    save_config,
    save_report,
    save_table,
    short_run,
    tiny_decoder,
)

VOCAB = 51  # pad/bos/eos + the 48 characters of the default alphabet (sampling can pick any id)


class MethodConfig(SpliceConfig):
    """One row: a preference loss trained on the pairs, or RFT (SFT on accepted samples).

    Attributes:
        name: the row label (also its run folder).
        kind: ``"preference"`` (the ``dpo`` objective with ``loss``) or ``"rft"``.
        loss: the preference loss (``{"type": "sigmoid", "beta": 0.1}``, ``simpo``, ``orpo``...).
        lr: learning rate; None uses ``preference_train``'s.
        sft_weight: > 0 composes the objective in config as ``weighted_sum``:
            ``preference loss + sft_weight · SFT on the chosen completions`` (RPO-style).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    kind: Literal["preference", "rft"] = "preference"
    loss: PreferenceLossField | None = None  # type: ignore[valid-type]
    lr: PositiveFloat | None = None
    sft_weight: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _loss_for_preference(self) -> MethodConfig:
        if (self.kind == "preference") != (self.loss is not None):
            raise ValueError("a 'preference' method needs a loss; an 'rft' method takes none")
        return self


def _default_sft() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.1)
    return short_run(steps=400, batch_size=64, lr=3e-3, log_every=50, schedule=schedule)


def _default_preference_train() -> TrainConfig:
    return short_run(steps=120, batch_size=32, lr=5e-5, log_every=20)


def _default_methods() -> list[MethodConfig]:
    return [
        MethodConfig(name="dpo", loss={"type": "sigmoid", "beta": 0.1}),
        MethodConfig(name="dpo+sft", loss={"type": "sigmoid", "beta": 0.1}, sft_weight=1.0),
        MethodConfig(name="simpo", loss={"type": "simpo", "beta": 2.0, "gamma": 1.0}),
        MethodConfig(name="orpo", loss={"type": "orpo", "beta": 0.5}),
        MethodConfig(name="rft", kind="rft"),
    ]


class DPORecipeConfig(SpliceConfig):
    """SFT briefly, build pairs from the model's own samples, train each method, compare.

    Attributes:
        sft: the SFT stage's trainer settings.
        prompts: training prompts sampled from (each gives at most one pair).
        samples_per_prompt / temperature: the offline sampling.
        reference_as_chosen: a prompt with no correct sample gets the reference answer as
            its chosen side (off-policy) instead of no pair.
        preference_train: the trainer settings of every method row (``lr`` per method).
        methods: the rows.
        eval_examples: held-out problems scored by greedy exact match (same set for all).
    """

    name: str = "dpo"
    seed: int = 0
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    task: TaskField = Field(default_factory=addition_task, validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    sft: TrainConfig = Field(default_factory=_default_sft)
    prompts: PositiveInt = 1024
    samples_per_prompt: PositiveInt = 8
    temperature: PositiveFloat = 1.0
    reference_as_chosen: bool = False
    preference_train: TrainConfig = Field(default_factory=_default_preference_train)
    methods: list[MethodConfig] = Field(default_factory=_default_methods)
    eval_examples: NonNegativeInt = 400
    max_new_tokens: PositiveInt = 5
    output_dir: str | None = None

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def _no_eval() -> EvalConfig:
    return EvalConfig(loss_batches=0, exact_match_examples=0)


def sft_config(config: DPORecipeConfig) -> ExperimentConfig:
    return ExperimentConfig(
        name=f"{config.name}-sft",
        seed=config.seed,
        model=config.model,
        data=DataConfig(task=config.task, max_len=config.max_len),
        train=config.sft,
        eval=_no_eval(),
        output_dir=str(Path(config.run_dir()) / "sft"),
    )


def method_config(
    config: DPORecipeConfig, method: MethodConfig, *, pairs: Path, accepted: Path, init_from: str
) -> ExperimentConfig:
    train = config.preference_train
    if method.lr is not None:
        train = train.model_copy(
            update={"optimizer": train.optimizer.model_copy(update={"lr": method.lr})}
        )
    if method.kind == "rft":
        task: dict[str, Any] = {"type": "jsonl", "train": str(accepted)}
        objective: dict[str, Any] = {"type": "sft"}
    else:
        task = {"type": "preference_jsonl", "train": str(pairs)}
        objective = {"type": "dpo", "loss": method.loss}
        if method.sft_weight > 0:
            objective = {
                "type": "weighted_sum",
                "terms": [
                    {"objective": objective, "name": "dpo"},
                    {"objective": {"type": "sft"}, "weight": method.sft_weight, "name": "sft"},
                ],
            }
    return ExperimentConfig(
        name=f"{config.name}-{method.name}",
        seed=config.seed,
        model=config.model,
        data=DataConfig(task=task, max_len=config.max_len),
        objective=objective,
        train=train,
        eval=_no_eval(),
        init_from=init_from,
        output_dir=str(Path(config.run_dir()) / method.name),
    )


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """One row per method: ``method | acc before | acc after | Δ | train time (s) | data``."""
    lines = [
        "| method | acc before | acc after | Δ | train time (s) | data |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['acc_before']:.1%} | {r['acc_after']:.1%} "
            f"| {100 * (r['acc_after'] - r['acc_before']):+.1f} pts | {r['train_time_s']:.1f} "
            f"| {r['data']} |"
        )
    return "\n".join(lines)


def _accuracy(model: Any, tokenizer: Any, examples: list[Any], max_new_tokens: int) -> float:
    from splice.evaluation import exact_match
    from splice.generation.sampling import SamplingConfig

    was = model.training
    model.eval()
    try:
        import torch

        with torch.no_grad():
            res = exact_match(
                model, tokenizer, examples, SamplingConfig(max_new_tokens=max_new_tokens)
            )
    finally:
        model.train(was)
    return float(res["accuracy"])


def _load(config: DPORecipeConfig, run: str) -> Any:
    from splice.checkpoint import load_model_weights
    from splice.models.build import build_model

    model = build_model(config.model)
    load_model_weights(model, run)
    return model


def run(config: DPORecipeConfig) -> dict[str, Any]:
    """SFT, offline pairs, one run per method; prints and saves the table.

    Returns:
        ``{"name", "run_dir", "sft": {...}, "offline": {...}, "rows": {method: {...}}}``; each
        row holds ``acc_before``, ``acc_after``, ``train_time_s``, ``data``, ``final_train_loss``.
    """
    import torch
    from splice.rewards import build_rewards
    from splice.training.experiment import build_task, build_tokenizer, run_experiment
    from splice_dpo.data import write_preference_jsonl
    from splice_dpo.offline import (
        accepted_examples,
        preference_pairs,
        sample_and_score,
        write_sft_jsonl,
    )

    run_dir = Path(config.run_dir())
    save_config(run_dir, config)
    tokenizer = build_tokenizer(sft_config(config).tokenizer)
    task = build_task(config.task)
    held_out = task.sample("held_out", config.eval_examples, seed=config.seed)

    # 1. SFT
    # Every run of the recipe redoes each stage: its sub-run folders are the recipe's own.
    sft_report = run_experiment(sft_config(config), overwrite=True)
    sft_dir = str(run_dir / "sft")
    model = _load(config, sft_dir)
    before = _accuracy(model, tokenizer, held_out, config.max_new_tokens)
    print(f"SFT: held-out accuracy {before:.1%} ({sft_report['train_time_s']:.0f} s)", flush=True)

    # 2. offline data from the SFT model's own samples
    from splice.generation.sampling import SamplingConfig

    prompts = task.sample("train", config.prompts, seed=config.seed + 1)
    verifier = build_rewards([{"reward": {"type": "answer_match"}}])
    torch.manual_seed(config.seed)
    scored = sample_and_score(
        model,
        tokenizer,
        prompts,
        verifier,
        n=config.samples_per_prompt,
        sampling=SamplingConfig(
            temperature=config.temperature, seed=config.seed, max_new_tokens=config.max_new_tokens
        ),
    )
    pairs = preference_pairs(
        scored, seed=config.seed, reference_as_chosen=config.reference_as_chosen
    )
    accepted = accepted_examples(scored, per_prompt=1)
    pairs_path, accepted_path = run_dir / "pairs.jsonl", run_dir / "accepted.jsonl"
    write_preference_jsonl(pairs_path, pairs)
    write_sft_jsonl(accepted_path, accepted)
    offline = {
        "prompts": len(prompts),
        "samples_per_prompt": config.samples_per_prompt,
        "sample_accuracy": scored.accept_rate,
        "pairs": len(pairs),
        "accepted": len(accepted),
    }
    print(
        f"offline: {len(prompts)} prompts x {config.samples_per_prompt} samples, "
        f"{scored.accept_rate:.1%} correct -> {len(pairs)} pairs, {len(accepted)} accepted",
        flush=True,
    )
    if not pairs:
        raise ValueError(
            "no preference pairs: every prompt's samples were all right or all wrong; "
            "change sft.steps or temperature"
        )

    # 3. one run per method from the SFT weights
    rows: dict[str, dict[str, Any]] = {}
    for method in config.methods:
        if method.kind == "rft" and not accepted:
            raise ValueError(f"method {method.name!r}: no sample was accepted, nothing to SFT on")
        exp = method_config(
            config, method, pairs=pairs_path, accepted=accepted_path, init_from=sft_dir
        )
        rep = run_experiment(exp, overwrite=True)
        after = _accuracy(_load(config, exp.run_dir()), tokenizer, held_out, config.max_new_tokens)
        data = f"{len(accepted)} accepted" if method.kind == "rft" else f"{len(pairs)} pairs"
        rows[method.name] = {
            "acc_before": before,
            "acc_after": after,
            "train_time_s": float(rep["train_time_s"]),
            "final_train_loss": float(rep["final_train_loss"]),
            "data": data,
        }
        print(
            f"{method.name}: {before:.1%} -> {after:.1%} ({rep['train_time_s']:.0f} s)", flush=True
        )

    table = markdown_table(rows)
    save_table(run_dir, "dpo", table)
    print(table)
    report = {
        "name": config.name,
        "run_dir": str(run_dir),
        "sft": {"accuracy": before, "train_time_s": float(sft_report["train_time_s"])},
        "offline": offline,
        "rows": rows,
    }
    save_report(run_dir, "dpo", report)
    return report


def config() -> DPORecipeConfig:
    return DPORecipeConfig()


recipe = Recipe(
    name="dpo",
    description="SFT on addition, then DPO / SimPO / ORPO on pairs from the model's own "
    "verified samples, and rejection-sampling fine-tuning: held-out accuracy before and after",
    config=config,
    run=run,
)
