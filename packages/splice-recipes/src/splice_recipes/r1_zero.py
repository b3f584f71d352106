"""Recipe ``r1-zero``: DeepSeek-R1-Zero's three claims in miniature, as a study over seeds.

A small decoder adds five-digit numbers in R1's format. A problem can be answered at
once, ``51374+32258=`` -> ``<think></think><answer>83632</answer>``, or after working out
the carries, ``<think>4+8=12,7+5+1=13,3+2+1=6,1+2=3,5+3=8</think><answer>83632</answer>``.
Answered at once, the first digit written needs every carry in one step, which the 2-layer
decoder does not learn within its SFT budget; with the carries written out, each step is
one digit sum. Per seed:

1. **The start** (arm ``sft``): SFT on five-digit addition answered at once after ``=``
   (80%; the other 20% work the carries out), five-digit problems always worked out under
   their own cue ``:`` (so the start can reason when asked, as R1-Zero's base model
   could), and a second skill, two-digit addition answered directly in the same format
   (810 distinct held-out problems), which GRPO never sees. It is trained to its plateau
   once, offline (``r1-zero-start``), and shipped with the package
   (``splice_recipes.r1_shipped``); the arm evaluates it here. ``start="train"`` trains it
   in the run instead;
2. **GRPO** from that start on the ``=`` prompts with rule-based rewards only (answer match
   + format), once per KL weight of ``betas`` (0, small, large): arms
   ``grpo-beta-<label>``.

The claims, each judged on paired differences over seeds with a 95% interval
(``splice_recipes.study``): GRPO raises held-out accuracy; completions get longer and
more of them reason; a large KL weight keeps more of the second skill than none. The
accuracy each β costs is printed with the arms' figures. ``r1_zero.png`` shows accuracy,
completion length, KL to the reference and retention over GRPO steps, per β.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from splice.config import ModelField
from splice.data.tokenizer import DEFAULT_ALPHABET
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    RolloutConfig,
    ScheduleConfig,
    TokenizerConfig,
    TrainConfig,
)

from splice_recipes.common import short_run, tiny_decoder
from splice_recipes.r1_shipped import read_manifest, shipped_start
from splice_recipes.r1_start import probe_run, start_probes
from splice_recipes.rl_study import (
    RETENTION_TASK,
    eval_config,
    eval_curve,
    eval_figures,
    figures,
    records,
    records_curve,
)
from splice_recipes.study import Claim, StudyConfig, StudyResult, arms_in_workers, every_arm

ALPHABET = DEFAULT_ALPHABET + "<>"  # R1's tags
VOCAB = 3 + len(ALPHABET)
SFT_ARM = "sft"


def addition(reasoning_share: float = 0.2, digits: int = 5, cue: str = "=") -> dict[str, Any]:
    """``digits``-digit addition in R1's format; ``reasoning_share`` of the examples work
    the carries out, the others answer after an empty think block. ``cue``: the prompt's
    last character."""
    return {"type": "arithmetic", "op": "+", "min_digits": digits, "max_digits": digits,
            "chain_of_thought": True, "reasoning_share": reasoning_share, "separator": cue}  # fmt: skip


# Worked solutions under their own cue (``12345+56789:`` always works the carries out): the
# start can reason when asked, as R1-Zero's base model could, and answers the ``=`` form
# (GRPO's prompts) mostly at once. With the cue the reasoning mode reaches its plateau
# on every seed within the SFT budget; without it (reasoning only in 20-40% of the ``=``
# examples) two seeds in four were still learning to read the answer off their sums.
# Five digits and a small ``=`` share (1 in 6): with four digits, one seed of three learnt
# to answer directly (95% by step 4000), so the start was bimodal.
WORKED = addition(reasoning_share=1.0, cue=":")
# The second skill: two-digit addition answered directly in the same format
# (``37+25=`` -> ``<think></think><answer>62</answer>``; 810 distinct held-out problems).
# It shares the prompt, the format and the think-or-answer decision that GRPO moves on the
# five-digit prompts, so GRPO can overwrite it: what the KL term should prevent. (Earlier
# second skills, reversed-digit addition after a ":" and direct subtraction, never moved
# under GRPO at any beta: nothing for the KL term to keep.)
SECOND_SKILL = addition(reasoning_share=0.0, digits=2)
_THINKS = re.compile(r"\s*<think>[^<]+</think>")


def reasons(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[str | None]
) -> list[float]:
    """1.0 per completion whose think block is not empty (it works something out)."""
    return [float(_THINKS.match(c) is not None) for c in completions]


# the third term has weight 0: logged (rollouts and evaluations), never trained on
REASONING = {"type": "callable", "path": "splice_recipes.r1_zero:reasons"}
REWARDS = [
    {"reward": {"type": "answer_match"}, "weight": 1.0, "name": "accuracy"},
    {"reward": {"type": "format"}, "weight": 0.5, "name": "format"},
    {"reward": REASONING, "weight": 0.0, "name": "reasoning"},
]


def _default_sft() -> TrainConfig:
    # 4000 steps annealed to 5% of the peak rate: the second skill and the reasoning mode
    # flatten on every seed over the last 1000 steps (the curve in starts.json); weight
    # decay 0.1: with it an earlier design's starts came out closer together
    # (docs/concepts/grpo-r1.md)
    schedule = ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.05)
    run = short_run(steps=4000, batch_size=32, lr=3e-3, log_every=100, schedule=schedule,
                    progress=False)  # fmt: skip
    return run.model_copy(
        update={"optimizer": run.optimizer.model_copy(update={"weight_decay": 0.1})}
    )


def default_grpo_train() -> TrainConfig:
    # RL steps are small: Adam's first update moves every weight by ~lr whatever the
    # gradient's size (5e-4 collapsed an earlier start in one step; from the shipped starts
    # 3e-4 and 1e-4 reach the same accuracy on seed 0, and 3e-4 moves the shared weights
    # far enough to erode a second skill that is not fully learnt). batch_size is unused by
    # online runs (rollout.prompts_per_step).
    return short_run(steps=64, batch_size=1, lr=3e-4, log_every=4, betas=(0.9, 0.99),
                     max_grad_norm=1.0, progress=False)  # fmt: skip


class R1ZeroConfig(StudyConfig):
    """The SFT start, then GRPO once per ``betas`` value, over ``seeds`` seeds.

    Attributes:
        sft_task: what SFT trains on: five-digit addition, mostly answered directly
            (``=``), the same worked out under the ``:`` cue, and the second skill, 1:2:3.
        grpo_task / retention_task: GRPO's prompts, and the second skill it never sees.
        grpo_objective: the GRPO config (``beta`` is replaced by each value of ``betas``).
        betas: label -> KL weight; one GRPO arm ``grpo-beta-<label>`` each. The claims use
            the labels ``0``, ``small`` and ``large``.
        eval_examples: held-out problems per task, answered greedily.
        sft_eval_every: SFT steps between evaluations of the start (its curve: whether it
            flattened); None: once, at the end.
        workers: runs at once, one process each (every run uses one thread; the figures
            do not depend on it).
        start: ``"shipped"``: the ``sft`` arm evaluates the start shipped with the package
            for its seed (``splice_recipes.r1_shipped``; trained to its plateau offline by
            ``r1-zero-start``); ``"train"``: it trains the start in the run.
        shipped_starts: the folder of the shipped starts (None: the package's).
        eval_every: GRPO steps between evaluations (the curves; a run's result is the mean
            of its last ``last_evals`` evaluations).
    """

    name: str = "r1-zero"
    seeds: PositiveInt = 5
    last_evals: PositiveInt = 2
    model: ModelField = Field(
        default_factory=lambda: tiny_decoder(VOCAB, max_seq_len=112), validate_default=True
    )  # type: ignore[valid-type]
    tokenizer: TokenizerConfig = TokenizerConfig(alphabet=ALPHABET)
    sft_task: dict[str, Any] = Field(
        default_factory=lambda: {
            "type": "mixture",
            "tasks": [addition(), WORKED, SECOND_SKILL],
            "weights": [1, 2, 3],
        }
    )
    grpo_task: dict[str, Any] = Field(default_factory=addition)
    retention_task: dict[str, Any] = Field(default_factory=lambda: dict(SECOND_SKILL))
    max_len: PositiveInt = 112  # 99999+99999= and its 82-character reasoning completion
    sft: TrainConfig = Field(default_factory=_default_sft)
    grpo: TrainConfig = Field(default_factory=default_grpo_train)
    # temperature 0.7: at 1.0 nearly every sample of a briefly trained start is wrong (no
    # signal), and at 0.7 it still draws a reasoning completion for some samples
    rollout: RolloutConfig = RolloutConfig(prompts_per_step=16, max_new_tokens=84, temperature=0.7)
    grpo_objective: dict[str, Any] = Field(
        default_factory=lambda: {"type": "grpo", "group_size": 8, "rewards": REWARDS}
    )
    betas: dict[str, NonNegativeFloat] = Field(
        default_factory=lambda: {"0": 0.0, "small": 0.02, "large": 0.5}, min_length=1
    )
    eval_examples: NonNegativeInt = 200
    eval_every: PositiveInt = 16
    sft_eval_every: PositiveInt | None = 500
    start: Literal["shipped", "train"] = "shipped"
    shipped_starts: str | None = None
    workers: PositiveInt = 2

    def arms(self) -> list[str]:
        return [SFT_ARM, *(grpo_arm(label) for label in self.betas)]


def grpo_arm(label: str) -> str:
    return f"grpo-beta-{label}"


def held_out_eval(config: R1ZeroConfig, *, every: int | None, tasks: dict[str, Any]) -> EvalConfig:
    """The study's greedy evaluation: ``eval_examples`` held-out problems per task."""
    return eval_config(
        examples=config.eval_examples,
        max_new_tokens=config.rollout.max_new_tokens,
        tasks=tasks,
        rewards=REWARDS,
        every=every,
    )


def sft_config(
    config: R1ZeroConfig, seed: int = 0, folder: str | Path | None = None
) -> ExperimentConfig:
    """The SFT start of one seed (evaluated on addition ``add/`` and the second skill ``sub/``)."""
    return ExperimentConfig(
        name=f"{config.name}-sft",
        seed=seed,
        model=config.model,
        tokenizer=config.tokenizer,
        data=DataConfig(task=config.sft_task, max_len=config.max_len),
        train=config.sft.model_copy(update={"precision": config.precision}),
        eval=held_out_eval(
            config,
            every=config.sft_eval_every,
            tasks={"add": config.grpo_task, RETENTION_TASK: config.retention_task},
        ),
        output_dir=str(folder if folder is not None else Path(config.run_dir()) / "sft"),
    )


def grpo_config(
    config: R1ZeroConfig,
    beta: float,
    init_from: str,
    seed: int = 0,
    folder: str | Path | None = None,
) -> ExperimentConfig:
    """One GRPO run from ``init_from`` at KL weight ``beta``."""
    return ExperimentConfig(
        name=f"{config.name}-grpo-beta{beta:g}",
        seed=seed,
        model=config.model,
        tokenizer=config.tokenizer,
        data=DataConfig(task=config.grpo_task, max_len=config.max_len),
        objective={**config.grpo_objective, "beta": beta},
        train=config.grpo.model_copy(update={"precision": config.precision}),
        rollout=config.rollout,
        eval=held_out_eval(
            config, every=config.eval_every, tasks={RETENTION_TASK: config.retention_task}
        ),
        init_from=init_from,
        output_dir=str(
            folder if folder is not None else Path(config.run_dir()) / f"grpo-beta{beta:g}"
        ),
    )


def starts_folder(config: R1ZeroConfig) -> Path | None:
    """The folder of the shipped starts: ``shipped_starts``, or the package's (None)."""
    return Path(config.shipped_starts) if config.shipped_starts else None


def start_weights(config: R1ZeroConfig, seed: int) -> str:
    """Where seed ``seed``'s start is: the shipped weights (``start="shipped"``, checked
    against their manifest) or the ``sft`` arm's run folder (``start="train"``)."""
    if config.start == "shipped":
        return str(shipped_start(config, seed, starts_folder(config)))
    return str(config.arm_dir(SFT_ARM, seed))


def evaluate_start(config: R1ZeroConfig, seed: int, folder: Path) -> tuple[Any, Any]:
    """Evaluate the shipped start of ``seed`` as the SFT run's own evaluation does (the
    same held-out problems and rewards), log it to ``folder/metrics.jsonl`` as the run's
    eval record, and return ``(model, tokenizer)`` (for the probes)."""
    from splice.training.eval_schedule import evaluation_mode
    from splice.training.experiment import (
        build_evaluator,
        build_experiment_model,
        build_task,
        build_tokenizer,
    )
    from splice.training.metrics import MetricsLog

    from splice_recipes.study import pinned

    exp = pinned(sft_config(config), config, seed=seed, folder=folder)
    exp = exp.model_copy(update={"init_from": start_weights(config, seed)})
    model, tokenizer = build_experiment_model(exp), build_tokenizer(exp.tokenizer)
    evaluate = build_evaluator(exp, tokenizer, None, build_task(exp.data.task), with_loss=False)
    with evaluation_mode(model):
        metrics = evaluate(model)
    (folder / "metrics.jsonl").unlink(missing_ok=True)
    MetricsLog(folder / "metrics.jsonl").write(
        [{"kind": "eval", "step": exp.train.steps, **metrics}]
    )
    return model, tokenizer


def run_one(config: R1ZeroConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """Train one arm for one seed in ``folder``; its figures. The ``sft`` arm trains the
    start (``start="train"``) or evaluates the shipped one; GRPO arms start from it."""
    from splice.training.experiment import run_experiment

    from splice_recipes.study import pinned

    if arm == SFT_ARM:
        probe = {
            "examples": config.eval_examples,
            "temperature": config.rollout.temperature,
            "max_new_tokens": config.rollout.max_new_tokens,
        }
        if config.start == "train":
            sft = pinned(sft_config(config), config, seed=seed, folder=folder)
            run_experiment(sft, overwrite=True)
            probes = probe_run(folder, config.grpo_task, **probe)
        else:
            model, tokenizer = evaluate_start(config, seed, folder)
            probes = start_probes(model, tokenizer, config.grpo_task, **probe)
        return {**eval_figures(folder / "metrics.jsonl", "add/", 1), "kl": 0.0, **probes}
    label = arm.removeprefix("grpo-beta-")
    exp = grpo_config(config, config.betas[label], start_weights(config, seed))
    run_experiment(pinned(exp, config, seed=seed, folder=folder), overwrite=True)
    return figures(folder, config.last_evals)


#: every arm of one seed, in order (the start first), in one process: the sequential form
#: of what ``run`` hands to ``arms_in_workers`` one arm at a time
run_seed = functools.partial(every_arm, run_one, R1ZeroConfig.arms)


def claims(config: R1ZeroConfig) -> list[Claim]:
    """R1-Zero's three claims (accuracy, longer reasoning, the KL term keeping the start)."""
    labels = list(config.betas)
    main = grpo_arm("small" if "small" in config.betas else labels[0])
    out = [
        Claim("accuracy", main, SFT_ARM, "acc", "higher", scale=100, unit=" pt",
              text="GRPO raises held-out accuracy over the SFT start"),
        Claim("length", main, SFT_ARM, "length", "higher", unit=" chars",
              text="completions get longer"),
        Claim("reasoning", main, SFT_ARM, "reasoning", "higher", scale=100, unit=" pt",
              text="more completions reason (non-empty think block)"),
    ]  # fmt: skip
    if "0" in config.betas and "large" in config.betas:
        out.append(
            Claim("retention", grpo_arm("large"), grpo_arm("0"), "retention", "higher",
                  scale=100, unit=" pt",
                  text="a large KL weight keeps more of the second skill than none")
        )  # fmt: skip
    return out


def curves(config: R1ZeroConfig) -> dict[str, dict[str, list[list[float]]]]:
    """Per β label: ``{metric: [[step, mean over seeds], ...]}`` for accuracy, length, KL
    (train records) and retention, the SFT start as step 0."""
    seeds = config.seed_list()
    start = {s: records(config.arm_dir(SFT_ARM, s), "eval")[-1] for s in seeds}
    keys = {
        "acc": "reward/accuracy",
        "length": "completion_length",
        "retention": f"{RETENTION_TASK}/exact_match",
    }
    out: dict[str, dict[str, list[list[float]]]] = {}
    for label in config.betas:
        per: dict[str, dict[int, list[float]]] = {m: {} for m in (*keys, "kl")}
        for s in seeds:
            folder = config.arm_dir(grpo_arm(label), s)
            for m, key in keys.items():
                first = "add/" + key if m != "retention" else key
                per[m].setdefault(0, []).append(float(start[s][first]))
                for r in records(folder, "eval"):
                    per[m].setdefault(int(r["step"]), []).append(float(r[key]))
            for r in records(folder, "train"):
                if "kl" in r:
                    per["kl"].setdefault(int(r["step"]), []).append(float(r["kl"]))
        out[label] = {
            m: [[float(k), sum(v) / len(v)] for k, v in sorted(d.items())] for m, d in per.items()
        }
    return out


def plot(curve: dict[str, dict[str, list[list[float]]]], png: Path) -> Path:
    """Accuracy, completion length, KL to the reference and retention over GRPO steps, one
    line per β (each point the mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"acc": "held-out accuracy", "length": "completion length (chars)",
              "kl": "KL to the reference (k3, rollouts)", "retention": "2nd skill (retention)"}  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for ax, (metric, title) in zip(axes, titles.items()):
        for i, (label, per) in enumerate(curve.items()):  # one colour per β in every panel
            pts = per.get(metric, [])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, color=f"C{i}",
                        label=f"β {label}")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def arm_lines(result: StudyResult, config: R1ZeroConfig) -> list[str]:
    """Each arm's accuracy and retention (mean and interval half-width over seeds), and the
    accuracy each β costs against β = 0."""
    lines = []
    for arm in config.arms():
        acc, ret = result.interval(arm, "acc"), result.interval(arm, "retention")
        lines.append(
            f"  {arm:<18} accuracy {100 * acc.mean:5.1f} ± {100 * acc.half_width:.1f}  "
            f"retention {100 * ret.mean:5.1f} ± {100 * ret.half_width:.1f}  "
            f"length {result.interval(arm, 'length').mean:5.1f}  "
            f"reasoning {100 * result.interval(arm, 'reasoning').mean:5.1f}%"
        )
    if "0" in config.betas:
        base = result.values(grpo_arm("0"), "acc")
        for label in config.betas:
            if label != "0":
                cost = [b - a for a, b in zip(result.values(grpo_arm(label), "acc"), base)]
                lines.append(
                    f"  accuracy β {label} costs against β 0: {100 * sum(cost) / len(cost):+.1f} pt"
                )
    return lines


SFT_CURVE_KEYS = {
    "acc": "add/reward/accuracy",
    "reasoning": "add/reward/reasoning",
    "retention": f"{RETENTION_TASK}/exact_match",
}


def sft_curve(config: R1ZeroConfig) -> dict[str, list[list[float]]]:
    """The SFT start's held-out accuracy and retention over its steps, ``[[step, mean,
    min, max], ...]`` over seeds: the plateau (a flat tail, seeds close together). Shipped
    starts: the curve their manifest recorded when they were trained."""
    if config.start == "shipped":
        seeds = read_manifest(starts_folder(config))["seeds"]
        return records_curve([seeds[str(s)]["curve"] for s in config.seed_list()], SFT_CURVE_KEYS)
    folders = [config.arm_dir(SFT_ARM, s) for s in config.seed_list()]
    return eval_curve(folders, SFT_CURVE_KEYS)


def sft_lines(curve: dict[str, list[list[float]]]) -> list[str]:
    """One line per SFT evaluation: accuracy and retention, mean (min-max over seeds)."""
    lines = []
    for acc, ret in zip(curve["acc"], curve["retention"]):
        lines.append(
            f"  sft step {acc[0]:5.0f}: accuracy {100 * acc[1]:5.1f} ({100 * acc[2]:.1f}-"
            f"{100 * acc[3]:.1f})  retention {100 * ret[1]:5.1f} ({100 * ret[2]:.1f}-"
            f"{100 * ret[3]:.1f})"
        )
    return lines


def start_lines(starts: dict[int, dict[str, float]]) -> list[str]:
    """The SFT start of each seed: greedy accuracy, accuracy with the think block forced
    open, P(reasoning) at the rollout temperature, the second skill (how far apart the
    seeds' starts are)."""
    lines = []
    for seed, f in sorted(starts.items()):
        lines.append(
            f"  start seed {seed}: accuracy {100 * f['acc']:5.1f}  forced reasoning "
            f"{100 * f['forced']:5.1f}  P(reasoning) {100 * f['p_reason']:5.1f}  "
            f"second skill {100 * f['retention']:5.1f}"
        )
    return lines


def run(config: R1ZeroConfig) -> dict[str, Any]:
    """Every arm for every seed; prints each claim with its interval and verdict, the SFT
    start's curve, and the study's CPU seconds (its cost whatever the machine's load)."""
    from splice_recipes.study import claim_lines, run_study, summary

    curve: dict[str, Any] = {}
    # the first call runs every arm of every seed in the worker processes, inside the
    # study's clock: each seed's start first, its GRPO arms as soon as it is written
    one = arms_in_workers(run_one, config)

    def extras(result: StudyResult) -> dict[str, Any]:
        curve.update(curves(config))
        plot(curve, Path(config.run_dir()) / "r1_zero.png")
        return {"curves": curve, "sft_curve": sft_curve(config)}

    result = run_study(
        config,
        arms=config.arms(),
        run_one=one,
        claims=claims(config),
        extras=extras,
    )
    for line in [*claim_lines(result), *arm_lines(result, config)]:
        print(line)
    for line in [*start_lines(result.figures[SFT_ARM]), *sft_lines(result.extras["sft_curve"])]:
        print(line)
    print(
        f"figure: {Path(config.run_dir()) / 'r1_zero.png'}; wall {result.wall_time_s:.0f} s, "
        f"{result.cpu_time_s or 0:.0f} CPU s"
    )
    return summary(result, config.run_dir())


def config() -> R1ZeroConfig:
    return R1ZeroConfig()


recipe = Recipe(
    name="r1-zero",
    description="a shipped SFT start that mostly answers 4-digit additions directly, then GRPO with "
    "rule-based rewards at β 0 / small / large over seeds: accuracy, reasoning length, retention "
    "of a second skill",
    config=config,
    run=run,
)
