"""Recipe ``dpo``: preference learning from a model's own samples on verifiable arithmetic,
as a study (arms x seeds, paired intervals, a shown / not-shown verdict per claim).

Per seed (shared by that seed's arms, under ``<study>/shared/seed-<s>``):

1. **SFT** a small decoder briefly on addition (it ends up right on part of the problems).
2. **On-policy data**: sample ``samples_per_prompt`` answers per training prompt from the SFT
   model, score them with the ``answer_match`` verifier, keep one (correct, incorrect) pair
   per prompt where both occur (``pairs.jsonl``), the same completions unpaired and labelled
   for KTO (``unpaired.jsonl``), and the accepted samples for rejection-sampling FT
   (``accepted.jsonl``).

Arms, each from that seed's SFT weights: ``sft`` (no further training: the start), ``dpo``
(sigmoid), ``dpo+nll`` (DPO plus SFT on the chosen side, RPO-style), ``ipo``, ``simpo``,
``orpo``, ``kto`` and ``rft`` (SFT on accepted samples). Every run is scored by greedy exact
match on every distinct held-out problem once, disjoint from the training prompts
(asserted), split by a fixed hash into a dev half (for choosing beta and lr with
``--set``) and a test half (the reported figure). Claims: each arm against ``sft`` on the
test half, and plain DPO's failure as a diagnosis: the per-token log-prob of the *chosen*
answers falls over training (both sides are pushed down; only the gap grows).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from splice.config import ModelField, PreferenceLossField, SpliceConfig, TaskField
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.common import addition_task, short_run, tiny_decoder
from splice_recipes.study import Claim, StudyConfig, StudyResult, pinned, run_and_report

VOCAB = 51  # pad/bos/eos + the 48 characters of the default alphabet (sampling can pick any id)
START = "sft"  # the arm every method is compared with: the SFT weights, untouched


class MethodConfig(SpliceConfig):
    """One arm: a preference loss on the pairs, KTO on the unpaired labels, or RFT.

    Attributes:
        name: the arm's name (also its run folder).
        kind: ``"preference"`` (the ``dpo`` objective with ``loss``), ``"kto"`` or ``"rft"``.
        loss: the preference loss (``{"type": "sigmoid", "beta": 0.1}``, ``ipo``, ``simpo``...).
        beta: KTO's beta (``kind="kto"`` only).
        lr: learning rate; None uses ``preference_train``'s.
        sft_weight: > 0 composes the objective in config as ``weighted_sum``:
            ``preference loss + sft_weight · SFT on the chosen completions`` (RPO-style).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    kind: Literal["preference", "kto", "rft"] = "preference"
    loss: PreferenceLossField | None = None  # type: ignore[valid-type]
    beta: PositiveFloat = 0.1
    lr: PositiveFloat | None = None
    sft_weight: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _loss_for_preference(self) -> MethodConfig:
        if (self.kind == "preference") != (self.loss is not None):
            raise ValueError(
                f"method {self.name!r}: a 'preference' method needs a loss; "
                "'kto' and 'rft' methods take none"
            )
        return self


def _default_sft() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.1)
    return short_run(steps=400, batch_size=64, lr=3e-3, log_every=50, schedule=schedule)


def _default_preference_train() -> TrainConfig:
    return short_run(steps=120, batch_size=32, lr=5e-5, log_every=10)


def _default_methods() -> list[MethodConfig]:
    return [
        MethodConfig(name="dpo", loss={"type": "sigmoid", "beta": 0.1}),
        MethodConfig(name="dpo+nll", loss={"type": "sigmoid", "beta": 0.1}, sft_weight=1.0),
        MethodConfig(name="ipo", loss={"type": "ipo", "beta": 0.1}),
        MethodConfig(name="simpo", loss={"type": "simpo", "beta": 2.0, "gamma": 1.0}),
        MethodConfig(name="orpo", loss={"type": "orpo", "beta": 0.5}),
        MethodConfig(name="kto", kind="kto", beta=0.1),
        MethodConfig(name="rft", kind="rft"),
    ]


class DPOStudy(StudyConfig):
    """The study: SFT per seed, on-policy data from it, one arm per method.

    Attributes:
        sft: the SFT stage's trainer settings.
        prompts: training prompts sampled from (each gives at most one pair).
        samples_per_prompt / temperature: the on-policy sampling.
        reference_as_chosen: a prompt with no correct sample gets the reference answer as
            its chosen side and as its RFT example (off-policy; the smoke test's untrained
            model needs it, the default run does not).
        preference_train: the trainer settings of every method arm (``lr`` per method).
        methods: the arms besides ``sft`` (names must differ from ``sft``).
        held_out_examples: held-out problems asked for; each distinct one is scored once
            (the split holds ~1,000, fewer are returned than asked).
        dev_fraction: share of the distinct held-out problems set aside (by a hash of the
            prompt) as the dev split, read for choosing hyperparameters, never reported.
    """

    name: str = "dpo"
    seeds: int = 3
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
    held_out_examples: PositiveInt = 5000
    dev_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_new_tokens: PositiveInt = 5

    @model_validator(mode="after")
    def _arm_names(self) -> DPOStudy:
        names = [m.name for m in self.methods]
        if START in names or len(set(names)) != len(names):
            raise ValueError(f"methods: names must be unique and not {START!r}, got {names}")
        return self

    def arms(self) -> list[str]:
        return [START, *(m.name for m in self.methods)]


def _no_eval() -> EvalConfig:
    return EvalConfig(loss_batches=0, exact_match_examples=0)


def sft_config(config: DPOStudy, seed: int, folder: Path) -> ExperimentConfig:
    exp = ExperimentConfig(
        name=f"{config.name}-sft",
        model=config.model,
        data=DataConfig(task=config.task, max_len=config.max_len),
        train=config.sft,
        eval=_no_eval(),
    )
    return pinned(exp, config, seed=seed, folder=folder)


def method_config(
    config: DPOStudy, method: MethodConfig, *, data: Path, seed: int, folder: Path, init_from: str
) -> ExperimentConfig:
    """One method arm's run from the SFT weights; ``data`` is the seed's shared folder."""
    train = config.preference_train
    if method.lr is not None:
        train = train.model_copy(
            update={"optimizer": train.optimizer.model_copy(update={"lr": method.lr})}
        )
    objective: dict[str, Any]
    if method.kind == "rft":
        task: dict[str, Any] = {"type": "jsonl", "train": str(data / "accepted.jsonl")}
        objective = {"type": "sft"}
    elif method.kind == "kto":
        task = {"type": "unpaired_jsonl", "train": str(data / "unpaired.jsonl")}
        objective = {"type": "kto", "beta": method.beta}
    else:
        task = {"type": "preference_jsonl", "train": str(data / "pairs.jsonl")}
        objective = {"type": "dpo", "loss": method.loss}
        if method.sft_weight > 0:
            objective = {
                "type": "weighted_sum",
                "terms": [
                    {"objective": objective, "name": "dpo"},
                    {"objective": {"type": "sft"}, "weight": method.sft_weight, "name": "sft"},
                ],
            }
    exp = ExperimentConfig(
        name=f"{config.name}-{method.name}",
        model=config.model,
        data=DataConfig(task=task, max_len=config.max_len),
        objective=objective,
        train=train,
        eval=_no_eval(),
        init_from=init_from,
    )
    return pinned(exp, config, seed=seed, folder=folder)


def dev_test_split(held_out: list[Any], train: list[Any], dev_fraction: float) -> tuple[list, list]:
    """Distinct held-out problems -> (dev, test) by a fixed hash of each prompt.

    Raises:
        ValueError: a held-out prompt repeats, or is also a training prompt.
    """
    prompts = [ex.prompt for ex in held_out]
    if len(set(prompts)) != len(prompts):
        raise ValueError("held-out problems repeat: each must be scored once")
    overlap = set(prompts) & {ex.prompt for ex in train}
    if overlap:
        raise ValueError(
            f"{len(overlap)} held-out problems are training prompts, e.g. {sorted(overlap)[:3]}"
        )
    cut = int(dev_fraction * 1000)
    dev = [ex for ex in held_out if zlib.crc32(ex.prompt.encode()) % 1000 < cut]
    test = [ex for ex in held_out if zlib.crc32(ex.prompt.encode()) % 1000 >= cut]
    return dev, test


def logp_change(metrics_path: Path, side: str, window: int = 3) -> float:
    """Change of the mean per-token log-prob of the ``side`` answers (``chosen`` or
    ``rejected``) over training: mean of the last ``window`` logged values minus the first
    ``window``'s (any key ending in ``logps/<side>``, so a composed objective's too).

    Raises:
        ValueError: no training record of the file logged it.
    """
    from splice.training.metrics import read_metrics

    key = f"logps/{side}"
    vals = [
        float(v)
        for r in read_metrics(metrics_path)
        if r.get("kind") == "train"
        for k, v in r.items()
        if k.endswith(key) and v is not None
    ]
    if not vals:
        raise ValueError(f"{metrics_path}: no training record has {key!r}")
    head, tail = vals[:window], vals[-window:]
    return sum(tail) / len(tail) - sum(head) / len(head)


def _accuracy(model: Any, tokenizer: Any, examples: list[Any], max_new_tokens: int) -> float:
    import torch
    from splice.evaluation import exact_match
    from splice.generation.sampling import SamplingConfig

    model.eval()
    with torch.no_grad():
        res = exact_match(model, tokenizer, examples, SamplingConfig(max_new_tokens=max_new_tokens))
    return float(res["accuracy"])


def _load(config: DPOStudy, run: str | Path) -> Any:
    from splice.checkpoint import load_model_weights
    from splice.models.build import build_model

    model = build_model(config.model)
    load_model_weights(model, str(run))
    return model


def _write_unpaired(path: Path, pairs: list[Any]) -> None:
    """KTO's data: each pair's two completions, chosen labelled desirable."""
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            for completion, label in ((p.chosen, True), (p.rejected, False)):
                row = {"prompt": p.prompt, "completion": completion, "label": label}
                f.write(json.dumps(row) + "\n")


def build_seed(config: DPOStudy, seed: int, folder: Path, tokenizer: Any, task: Any) -> dict:
    """SFT and the on-policy data of one seed, in ``folder``; returns their counts."""
    import torch
    from splice.generation.sampling import SamplingConfig
    from splice.rewards import build_rewards
    from splice.training.experiment import run_experiment
    from splice_dpo.data import write_preference_jsonl
    from splice_dpo.offline import (
        accepted_examples,
        preference_pairs,
        sample_and_score,
        write_sft_jsonl,
    )

    run_experiment(sft_config(config, seed, folder / "sft"), overwrite=True)
    model = _load(config, folder / "sft")
    prompts = task.sample("train", config.prompts, seed=seed + 1)
    verifier = build_rewards([{"reward": {"type": "answer_match"}}])
    torch.manual_seed(seed)
    sampling = SamplingConfig(
        temperature=config.temperature, seed=seed, max_new_tokens=config.max_new_tokens
    )
    scored = sample_and_score(
        model, tokenizer, prompts, verifier, n=config.samples_per_prompt, sampling=sampling
    )
    pairs = preference_pairs(scored, seed=seed, reference_as_chosen=config.reference_as_chosen)
    accepted = accepted_examples(scored, per_prompt=1)
    if config.reference_as_chosen:
        from splice.data.examples import Example

        have = {ex.prompt for ex in accepted}
        accepted += [Example(p.prompt, p.chosen, p.answer) for p in pairs if p.prompt not in have]
    if not pairs or not accepted:
        raise ValueError(
            f"seed {seed}: {len(pairs)} pairs, {len(accepted)} accepted samples: the SFT "
            "model's samples were all right or all wrong; change sft.steps or temperature"
        )
    write_preference_jsonl(folder / "pairs.jsonl", pairs)
    _write_unpaired(folder / "unpaired.jsonl", pairs)
    write_sft_jsonl(folder / "accepted.jsonl", accepted)
    return {
        "prompts": prompts,
        "sample_accuracy": scored.accept_rate,
        "pairs": len(pairs),
        "accepted": len(accepted),
    }


CLAIM_TEXT = {
    "dpo": "plain DPO on on-policy pairs beats its SFT start",
    "dpo+nll": "DPO + NLL on the chosen side beats its SFT start",
    "ipo": "IPO beats its SFT start",
    "simpo": "SimPO beats its SFT start",
    "orpo": "ORPO beats its SFT start",
    "kto": "KTO beats its SFT start",
    "rft": "rejection-sampling fine-tuning beats its SFT start",
}


def claims(config: DPOStudy) -> list[Claim]:
    """Each method against the SFT start (test accuracy), and the diagnosis of plain DPO."""
    out = [
        Claim(
            f"{m.name}-beats-sft",
            m.name,
            START,
            "test_acc",
            "higher",
            scale=100,
            unit=" pt",
            text=CLAIM_TEXT.get(m.name, f"{m.name} beats its SFT start") + " (test accuracy)",
        )
        for m in config.methods
    ]
    if any(m.name == "dpo" for m in config.methods):
        out.append(
            Claim(
                "dpo-chosen-logp-falls",
                "dpo",
                0.0,
                "chosen_logp_change",
                "lower",
                text="diagnosis: plain DPO lowers the log-prob of the chosen (correct) "
                "answers it is trained to prefer",
            )
        )
    return out


def side_table(result: StudyResult, config: DPOStudy) -> str:
    """Per arm: dev and test accuracy, and the chosen / rejected log-prob change over
    training; means with half-widths over seeds."""

    def cell(arm: str, metric: str, pct: bool) -> str:
        if metric not in result.figures[arm][result.seeds[0]]:
            return "-"
        iv = result.interval(arm, metric)
        return (
            f"{iv.mean:.1%} ± {iv.half_width:.1%}"
            if pct
            else f"{iv.mean:+.3f} ± {iv.half_width:.3f}"
        )

    lines = [
        "| arm | dev accuracy | test accuracy | Δ log-prob chosen | Δ log-prob rejected |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in config.arms():
        lines.append(
            f"| {arm} | {cell(arm, 'dev_acc', True)} | {cell(arm, 'test_acc', True)} "
            f"| {cell(arm, 'chosen_logp_change', False)} "
            f"| {cell(arm, 'rejected_logp_change', False)} |"
        )
    return "\n".join(lines)


def run(config: DPOStudy) -> dict[str, Any]:
    """Run every arm over the seeds; print the side table and each claim's verdict."""
    from splice.training.experiment import build_task, build_tokenizer

    root = Path(config.run_dir())
    tokenizer = build_tokenizer(sft_config(config, 0, root).tokenizer)
    task = build_task(config.task)
    held_out = task.sample("held_out", config.held_out_examples, seed=0)
    methods = {m.name: m for m in config.methods}
    seeds: dict[int, dict[str, Any]] = {}

    def shared(seed: int) -> dict[str, Any]:
        if seed not in seeds:
            folder = root / "shared" / f"seed-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            info = build_seed(config, seed, folder, tokenizer, task)
            dev, test = dev_test_split(held_out, info.pop("prompts"), config.dev_fraction)
            seeds[seed] = {"folder": folder, "dev": dev, "test": test, **info}
        return seeds[seed]

    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        from splice.training.experiment import run_experiment

        s = shared(seed)
        sft_dir = s["folder"] / "sft"
        out: dict[str, float] = {}
        if arm == START:
            weights: Path = sft_dir
        else:
            exp = method_config(
                config,
                methods[arm],
                data=s["folder"],
                seed=seed,
                folder=folder,
                init_from=str(sft_dir),
            )
            rep = run_experiment(exp, overwrite=True)
            out["train_time_s"] = float(rep["train_time_s"])
            if methods[arm].kind != "rft":
                for side in ("chosen", "rejected"):
                    out[f"{side}_logp_change"] = logp_change(folder / "metrics.jsonl", side)
            weights = folder
        model = _load(config, weights)
        out["dev_acc"] = _accuracy(model, tokenizer, s["dev"], config.max_new_tokens)
        out["test_acc"] = _accuracy(model, tokenizer, s["test"], config.max_new_tokens)
        out["test_examples"] = float(len(s["test"]))
        out["pairs"] = float(s["pairs"])
        out["sample_accuracy"] = float(s["sample_accuracy"])
        return out

    return run_and_report(
        config,
        arms=config.arms(),
        run_one=run_one,
        claims=claims(config),
        extras=lambda r: {"side_table": side_table(r, config)},
    )


def config() -> DPOStudy:
    return DPOStudy()


recipe = Recipe(
    name="dpo",
    description="SFT on addition, then DPO / DPO+NLL / IPO / SimPO / ORPO / KTO on pairs from "
    "the model's own verified samples and rejection-sampling FT, over seeds: each against "
    "its SFT start with paired intervals, and plain DPO's falling chosen log-probs",
    config=config,
    run=run,
)
