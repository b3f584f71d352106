"""Recipe ``forgetting``: how much of task A survives fine-tuning on task B, per method.

A small decoder is pre-trained once on the *old* task A (addition), then fine-tuned
from those weights on the *new* task B (subtraction, same prompt format, so the two
tasks compete for the same circuits) in several *arms*:

* ``full``: full fine-tuning at a normal learning rate (the baseline that forgets);
* ``low_lr``: full fine-tuning at a low learning rate;
* ``l2sp``: full fine-tuning + L2-SP (pull toward the pre-trained weights);
* ``ewc``: full fine-tuning + EWC (diagonal Fisher estimated on task A's data);
* ``kl``: full fine-tuning + KL to the pre-trained model's token distribution.

LoRA rows join once ``splice-lora`` exists: an arm will then name an adapter
(``ArmConfig`` grows an ``adapter`` field, applied before training); until then
there is no LoRA row rather than a fake one.

Every arm is a plain ``ExperimentConfig`` run by ``run_experiment`` (its own run folder
under ``<output_dir>/<arm>``), evaluated by greedy exact match on the same held-out
problems of both tasks. The report is a table: accuracy on B after, accuracy on A
before and after, trainable parameters, training time.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from splice.config import ModelField, RegularizerField, SpliceConfig, TaskField
from splice.recipe import Recipe
from splice.registry import ENTRY_POINT_GROUP
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

VOCAB = 52  # pad/bos/eos + the default character alphabet


class ArmConfig(SpliceConfig):
    """One fine-tuning method: a learning rate and the regularizers added to the SFT loss.

    Attributes:
        name: the row's label (also its run folder).
        lr: peak learning rate; None uses ``finetune.optimizer.lr``.
        regularizers: e.g. ``[{"type": "ewc", "weight": 100}]`` (splice-forgetting).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    lr: PositiveFloat | None = None
    regularizers: list[RegularizerField] = Field(default_factory=list)  # type: ignore[valid-type]


def _default_model() -> dict[str, Any]:
    return {
        "type": "decoder",
        "vocab_size": VOCAB,
        "d_model": 64,
        "n_layers": 2,
        "max_seq_len": 16,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
    }


def _task(op: str) -> dict[str, Any]:
    return {
        "type": "arithmetic",
        "op": op,
        "min_digits": 1,
        "max_digits": 2,
        "reverse_answer": True,
    }


def _default_pretrain() -> TrainConfig:
    return TrainConfig(
        steps=1500,  # 1000 reached 82-100% on task A, depending on float rounding
        batch_size=64,
        log_every=50,
        keep_last=1,
        num_threads=1,  # tiny matmuls: a second thread costs more in sync than it gains
        optimizer=OptimizerConfig(lr=3e-3, betas=(0.9, 0.98)),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05),
    )


def _default_finetune() -> TrainConfig:
    return TrainConfig(
        steps=600,
        batch_size=64,
        log_every=50,
        keep_last=1,
        num_threads=1,
        optimizer=OptimizerConfig(lr=1e-3, betas=(0.9, 0.98)),
    )


def _default_arms() -> list[ArmConfig]:
    return [
        ArmConfig(name="full"),
        ArmConfig(name="low_lr", lr=1e-4),
        ArmConfig(name="l2sp", regularizers=[{"type": "l2sp", "weight": 0.1}]),
        # Mean-normalised Fisher: the same average stiffness as L2-SP at the same weight,
        # redistributed toward the weights that mattered for task A.
        ArmConfig(
            name="ewc",
            regularizers=[{"type": "ewc", "weight": 1.0, "n_batches": 16, "normalize": "mean"}],
        ),
        ArmConfig(name="kl", regularizers=[{"type": "kl_reference", "weight": 0.3}]),
        # LoRA slot: ArmConfig(name="lora", adapter={"type": "lora", "rank": 8}) once splice-lora
        # registers an adapter and ExperimentConfig applies it.
    ]


class ForgettingConfig(SpliceConfig):
    """Pre-train on ``old_task``, then fine-tune on ``new_task`` once per arm.

    Attributes:
        model: the decoder (built once; every arm starts from the same pre-trained weights).
        old_task / new_task: task A (pre-training) and task B (fine-tuning).
        pretrain / finetune: trainer settings; an arm's ``lr`` overrides ``finetune``'s.
        arms: the methods compared, one table row each.
        eval_examples: held-out problems per task scored by greedy exact match.
        reference_batches: task-A batches handed to the regularizers' ``setup``
            (EWC estimates its Fisher on them).
        reuse_pretrained: skip pre-training when ``<output_dir>/pretrain`` holds a finished
            run of the identical pre-training config (handy when sweeping the arms).
        output_dir: run folder; ``pretrain/`` and one sub-folder per arm go inside.
    """

    name: str = "forgetting"
    seed: int = 0
    model: ModelField = Field(default_factory=_default_model, validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=lambda: _task("+"), validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=lambda: _task("-"), validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    arms: list[ArmConfig] = Field(default_factory=_default_arms)
    eval_examples: NonNegativeInt = 300
    max_new_tokens: PositiveInt = 5
    reference_batches: PositiveInt = 16
    reuse_pretrained: bool = True
    output_dir: str | None = None

    @model_validator(mode="after")
    def _unique_arms(self) -> ForgettingConfig:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arms: names must be unique, {dupes} repeat")
        return self

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def _experiment(
    config: ForgettingConfig,
    name: str,
    *,
    task: Any,
    other: tuple[str, Any],
    train: TrainConfig,
    **extra: Any,
) -> ExperimentConfig:
    """One run of the study: train on ``task``, also score ``other`` (the other task)."""
    return ExperimentConfig(
        name=f"{config.name}-{name}",
        seed=config.seed,
        model=config.model,
        data=DataConfig(task=task, max_len=config.max_len),
        train=train,
        eval=EvalConfig(
            loss_batches=0,
            exact_match_examples=config.eval_examples,
            max_new_tokens=config.max_new_tokens,
            tasks={other[0]: other[1]},
        ),
        output_dir=str(Path(config.run_dir()) / name),
        **extra,
    )


def pretrain_config(config: ForgettingConfig) -> ExperimentConfig:
    """Task A from scratch; task B scored too (the "before" column of both)."""
    return _experiment(
        config,
        "pretrain",
        task=config.old_task,
        other=("new", config.new_task),
        train=config.pretrain,
    )


def arm_config(config: ForgettingConfig, arm: ArmConfig, init_from: str) -> ExperimentConfig:
    """Task B from the pre-trained weights with the arm's learning rate and regularizers."""
    train = config.finetune
    if arm.lr is not None:
        train = train.model_copy(
            update={"optimizer": train.optimizer.model_copy(update={"lr": arm.lr})}
        )
    return _experiment(
        config,
        arm.name,
        task=config.new_task,
        other=("old", config.old_task),
        train=train,
        regularizers=arm.regularizers,
        init_from=init_from,
        reference_data=DataConfig(task=config.old_task, max_len=config.max_len),
        reference_batches=config.reference_batches,
    )


def _describe(arm: ArmConfig, lr: float) -> str:
    regs = ", ".join(
        f"{r.type}(weight={r.weight:g})"
        for r in arm.regularizers  # type: ignore[attr-defined]
    )
    return f"lr={lr:g}" + (f" + {regs}" if regs else "")


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """The report as a Markdown table, one row per arm."""
    head = (
        "| arm | method | acc B after | acc A before | acc A after | A lost (points) "
        "| trainable params | train time (s) |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['method']} | {r['new_after']:.1%} | {r['old_before']:.1%} "
            f"| {r['old_after']:.1%} | {100 * (r['old_before'] - r['old_after']):.1f} "
            f"| {r['trainable_params']:,} | {r['train_time_s']:.1f} |"
        )
    return "\n".join(lines)


def _pretrain(config: ForgettingConfig) -> dict[str, Any]:
    """Run (or, with ``reuse_pretrained``, reuse) the task-A pre-training; its report.

    The arms load the pre-trained weights from the pre-training run folder (its latest
    checkpoint), so a copied or moved folder still works.
    """
    from splice.checkpoint import CheckpointManager
    from splice.training.experiment import run_experiment

    exp = pretrain_config(config)
    folder = Path(exp.run_dir())
    summary = folder / "summary.json"
    wanted = exp.model_dump(mode="json", exclude={"output_dir"})
    code = code_fingerprint()
    if config.reuse_pretrained and summary.is_file():
        saved = json.loads(summary.read_text())
        done = CheckpointManager(folder / "checkpoints").latest() is not None
        if saved.get("config") == wanted and done:
            if saved.get("code") == code:
                print(f"reusing the pre-trained model in {folder}", flush=True)
                return saved["report"]  # type: ignore[no-any-return]
            print(f"the splice code changed since {folder} was pre-trained: again", flush=True)
    # The recipe decided to (re)train: an older pre-training in the folder is replaced.
    report = run_experiment(exp, overwrite=True)
    summary.write_text(json.dumps({"config": wanted, "code": code, "report": report}, indent=2))
    return report


def code_fingerprint() -> str:
    """SHA-256 of the Python sources of splice-core, its installed plugins and the recipes.

    A pre-trained model is reused only if the code that trained it is the code running now:
    a change that only alters float rounding moves the pre-trained model, and every arm with
    it (a new RoPE backward took pre-training from 100% to 82% at 1000 steps). The packages
    are those of the ``splice`` entry points (every installed plugin), editable or not.
    """
    digest = hashlib.sha256()
    for root in fingerprinted_packages():
        for directory in getattr(importlib.import_module(root), "__path__", []):
            for path in sorted(Path(directory).rglob("*.py")):
                digest.update(f"{root}/{path.relative_to(directory).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprinted_packages() -> list[str]:
    """splice-core, the recipes and the top-level package of every ``splice`` entry point."""
    roots = {"splice", "splice_recipes"}
    roots |= {ep.value.split(":")[0].split(".")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(roots)


def run(config: ForgettingConfig) -> dict[str, Any]:
    """Pre-train once, fine-tune each arm, print and save the table; returns it as a dict.

    Returns:
        ``{"name", "run_dir", "pretrain": {...}, "rows": {arm: {...}}}``; each row holds
        ``method``, ``new_after``, ``new_before``, ``old_before``, ``old_after``,
        ``trainable_params``, ``train_time_s``, ``final_train_loss``.
    """
    from splice.training.experiment import run_experiment

    run_dir = Path(config.run_dir())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))

    pre = _pretrain(config)
    old_before = float(pre["eval"]["exact_match"])
    new_before = float(pre["eval"]["new/exact_match"])
    print(
        f"pre-trained on task A: A {old_before:.1%}, B {new_before:.1%} "
        f"({pre['train_time_s']:.0f} s)",
        flush=True,
    )

    rows: dict[str, dict[str, Any]] = {}
    for arm in config.arms:
        exp = arm_config(config, arm, init_from=str(Path(config.run_dir()) / "pretrain"))
        rep = run_experiment(exp, overwrite=True)  # each run of the recipe redoes every arm
        rows[arm.name] = {
            "method": _describe(arm, exp.train.optimizer.lr),
            "new_after": float(rep["eval"]["exact_match"]),
            "new_before": new_before,
            "old_before": old_before,
            "old_after": float(rep["eval"]["old/exact_match"]),
            "trainable_params": int(rep["trainable_params"]),
            "train_time_s": float(rep["train_time_s"]),
            "final_train_loss": float(rep["final_train_loss"]),
        }
        r = rows[arm.name]
        print(
            f"{arm.name}: B {r['new_after']:.1%}, A {r['old_before']:.1%} -> "
            f"{r['old_after']:.1%} ({r['train_time_s']:.0f} s)",
            flush=True,
        )

    table = markdown_table(rows)
    (run_dir / "forgetting.md").write_text(table + "\n")
    print(table)
    pretrain_summary = {
        "old_accuracy": old_before,
        "new_accuracy": new_before,
        "train_time_s": float(pre["train_time_s"]),
        "steps": int(pre["steps"]),
    }
    report = {
        "name": config.name,
        "run_dir": str(run_dir),
        "pretrain": pretrain_summary,
        "rows": rows,
    }
    (run_dir / "forgetting.json").write_text(json.dumps(report, indent=2))
    return report


def config() -> ForgettingConfig:
    return ForgettingConfig()


recipe = Recipe(
    name="forgetting",
    description="pre-train on addition, fine-tune on subtraction: how much addition each "
    "method (low LR, L2-SP, EWC, KL) keeps",
    config=config,
    run=run,
)
