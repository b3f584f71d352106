"""Recipe ``dpo``: preference learning from a model's own samples on verifiable arithmetic,
as a study (arms x seeds, paired intervals, a shown / not-shown verdict per claim).

Per seed (shared by that seed's arms, ``splice_recipes.dpo_data``): **SFT** a small decoder
briefly on addition, then sample ``samples_per_prompt`` answers per training prompt from
it, score them with the ``answer_match`` verifier and keep one (correct, incorrect) pair
per prompt where both occur (on-policy pairs), the same completions unpaired for KTO, and
the accepted samples for rejection-sampling FT.

Arms, each from that seed's SFT weights: ``sft`` (the start, untouched), ``dpo`` (sigmoid),
``dpo+nll`` (DPO plus SFT on the chosen side, RPO-style), ``ipo``, ``simpo``, ``orpo``,
``kto`` and ``rft``. Every run is scored by greedy exact match on every distinct held-out
problem once, disjoint from the training prompts (asserted), split by a fixed hash into a
dev half and a test half. **Each arm's strength** (its ``grid``: learning rate, beta, the
NLL weight of ``dpo+nll``) **is chosen on the dev half** with ``splice_recipes.study.tune``,
on tuning seeds that are never reported (their own SFT and pairs); the reported seeds run
the chosen settings and are read on the test half.

Claims: each arm beats ``sft`` on test accuracy; and the diagnosis of plain DPO, read on
all of a seed's pairs before and after training: the per-token log-prob of the *chosen*
answers falls (DPO widens the margin by pushing both sides down), while DPO + NLL keeps it
above plain DPO's. The plot ``logps-over-training.png`` draws both sides over training.

The seeds run in ``workers`` processes (the tuning seeds first, then the reported ones);
the figures do not depend on it.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from splice.config import ModelField, PreferenceLossField, SpliceConfig, TaskField
from splice.deprecation import deprecated_attribute
from splice.recipe import Recipe
from splice.training.configs import DataConfig, ExperimentConfig, ScheduleConfig, TrainConfig

from splice_recipes import dpo_data
from splice_recipes.common import addition_task, short_run, tiny_decoder
from splice_recipes.dpo_data import SeedData, no_eval, read_arm, seed_data
from splice_recipes.dpo_diagnosis import curves, plot_curves
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    pinned,
    run_and_report,
    run_seeds,
    seeds_in_workers,
    tune,
)
from splice_recipes.study.tuning import tuning_extras

VOCAB = 51  # pad/bos/eos + the 48 characters of the default alphabet (sampling can pick any id)
START = "sft"  # the arm every method is compared with: the SFT weights, untouched
STRENGTHS = ("lr", "beta", "sft_weight")  # what a method's grid may set
CURVE_WINDOW = 10  # training steps per point of the log-prob curves


class MethodConfig(SpliceConfig):
    """One arm: a preference loss on the pairs, KTO on the unpaired labels, or RFT, with the
    grid of strengths its setting is chosen from on the dev split.

    Attributes:
        name: the arm's name (also its run folder).
        kind: ``"preference"`` (the ``dpo`` objective with ``loss``), ``"kto"`` or ``"rft"``.
        loss: the preference loss (``{"type": "sigmoid", "beta": 0.1}``, ``ipo``, ``simpo``...).
        beta: KTO's beta (``kind="kto"`` only; a preference method's beta is ``loss.beta``).
        lr: learning rate; None uses ``preference_train``'s.
        sft_weight: > 0 composes the objective in config as ``weighted_sum``:
            ``preference loss + sft_weight · SFT on the chosen completions`` (RPO-style).
        grid: candidate values per strength (``lr``, ``beta``, ``sft_weight``); every
            combination is tried on the dev split, the first key varying slowest (on a tie
            the first listed wins: list the mildest first). Empty: the method runs as set.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    kind: Literal["preference", "kto", "rft"] = "preference"
    loss: PreferenceLossField | None = None  # type: ignore[valid-type]
    beta: PositiveFloat = 0.1
    lr: PositiveFloat | None = None
    sft_weight: float = Field(default=0.0, ge=0.0)
    grid: dict[str, list[PositiveFloat]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _loss_and_grid(self) -> MethodConfig:
        if (self.kind == "preference") != (self.loss is not None):
            raise ValueError(
                f"method {self.name!r}: a 'preference' method needs a loss; "
                "'kto' and 'rft' methods take none"
            )
        allowed = {"preference": STRENGTHS, "kto": ("lr", "beta"), "rft": ("lr",)}[self.kind]
        for key, values in self.grid.items():
            if key not in allowed or not values:
                raise ValueError(
                    f"method {self.name!r}: grid key {key!r} with values {values}: a "
                    f"{self.kind!r} method's grid sets {list(allowed)}, each with values"
                )
        if self.kind == "preference" and "beta" in self.grid and not hasattr(self.loss, "beta"):
            raise ValueError(f"method {self.name!r}: its loss {self.loss.type!r} has no beta")
        return self

    def candidates(self) -> list[dict[str, float]]:
        """Every combination of the grid, ``[{"lr": ..., "beta": ...}, ...]`` in grid order."""
        keys = list(self.grid)
        return [dict(zip(keys, vs)) for vs in itertools.product(*(self.grid[k] for k in keys))]

    def at(self, candidate: dict[str, float]) -> MethodConfig:
        """This method with ``candidate``'s strengths set and no grid left."""
        update: dict[str, Any] = {"grid": {}}
        for key, value in candidate.items():
            if key == "beta" and self.kind == "preference":
                update["loss"] = self.loss.model_copy(update={"beta": value})
            else:
                update[key] = value
        return self.model_copy(update=update)

    def setting(self) -> str:
        """The strengths it runs at, for tables: ``lr=5e-05 beta=0.1``."""
        parts = [f"lr={self.lr:g}" if self.lr is not None else "lr=default"]
        if self.kind == "preference" and hasattr(self.loss, "beta"):
            parts.append(f"beta={self.loss.beta:g}")
        elif self.kind == "kto":
            parts.append(f"beta={self.beta:g}")
        if self.sft_weight > 0:
            parts.append(f"nll={self.sft_weight:g}")
        return " ".join(parts)


def label(candidate: dict[str, float]) -> str:
    """A candidate as the tuning record names it: ``lr=5e-05 beta=0.1``."""
    names = {"sft_weight": "nll"}
    return " ".join(f"{names.get(k, k)}={v:g}" for k, v in candidate.items())


def _default_sft() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.1)
    return short_run(steps=400, batch_size=64, lr=3e-3, log_every=50, schedule=schedule,
                     plot_curves=False)  # fmt: skip


def _default_preference_train() -> TrainConfig:
    return short_run(steps=120, batch_size=32, lr=5e-5, log_every=1, plot_curves=False)


LRS = [2e-5, 1e-4, 5e-4]  # 120 steps of AdamW: from barely moving to far from the start


def _default_methods() -> list[MethodConfig]:
    sigmoid = {"type": "sigmoid", "beta": 0.1}
    return [
        MethodConfig(name="dpo", loss=sigmoid, grid={"lr": LRS, "beta": [0.5, 0.1]}),
        MethodConfig(name="dpo+nll", loss=sigmoid, sft_weight=1.0,
                     grid={"lr": LRS, "beta": [0.5, 0.1], "sft_weight": [0.2, 1.0]}),
        MethodConfig(name="ipo", loss={"type": "ipo", "beta": 0.1},
                     grid={"lr": LRS, "beta": [0.5, 0.1]}),
        MethodConfig(name="simpo", loss={"type": "simpo", "beta": 2.0, "gamma": 1.0},
                     grid={"lr": LRS, "beta": [2.0, 5.0]}),
        MethodConfig(name="orpo", loss={"type": "orpo", "beta": 0.5},
                     grid={"lr": LRS, "beta": [0.1, 0.5]}),
        MethodConfig(name="kto", kind="kto", grid={"lr": LRS, "beta": [0.5, 0.1]}),
        MethodConfig(name="rft", kind="rft", grid={"lr": [1e-4, 5e-4, 2.5e-3]}),
    ]  # fmt: skip


class DPOStudy(TunedStudyConfig):
    """The study: SFT per seed, on-policy data from it, one arm per method.

    Attributes:
        sft: the SFT stage's trainer settings.
        prompts: training prompts sampled from (each gives at most one pair).
        samples_per_prompt / temperature: the on-policy sampling.
        reference_as_chosen: a prompt with no correct sample gets the reference answer as
            its chosen side and as its RFT example (off-policy; the smoke test's untrained
            model needs it, the default run does not).
        preference_train: the trainer settings of every method arm (``lr`` per method).
        methods: the arms besides ``sft`` (names must differ from ``sft``), each with the
            grid its setting is chosen from.
        tuning_seeds: seeds of the dev-split runs that choose each method's setting (each
            with its own SFT and pairs; disjoint from the reported seeds).
        held_out_examples: held-out problems asked for; each distinct one is scored once
            (the split holds ~1,000, fewer are returned than asked).
        dev_fraction: share of the distinct held-out problems set aside (by a hash of the
            prompt) as the dev split, read for choosing settings, never reported.
        workers: seeds run at once, one process each (every run uses one thread; the
            figures do not depend on it).
    """

    name: str = "dpo"
    seeds: int = 5
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
    tuning_seeds: list[NonNegativeInt] = Field(default_factory=lambda: [100, 101], min_length=1)
    held_out_examples: PositiveInt = 5000
    dev_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_new_tokens: PositiveInt = 5
    workers: PositiveInt = 2

    @field_validator("methods")
    @classmethod
    def _arm_names(cls, methods: list[MethodConfig]) -> list[MethodConfig]:
        names = [m.name for m in methods]
        if START in names or len(set(names)) != len(names):
            raise ValueError(f"methods: names must be unique and not {START!r}, got {names}")
        return methods

    def arms(self) -> list[str]:
        return [START, *(m.name for m in self.methods)]

    def method(self, name: str) -> MethodConfig:
        return next(m for m in self.methods if m.name == name)


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
        task = {
            "type": "preference_jsonl",
            "train": str(data / "pairs.jsonl"),
            "layout": dpo_data.LAYOUT,  # the layout pair_logps reads the arms in
        }
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
        eval=no_eval(),
        init_from=init_from,
    )
    return pinned(exp, config, seed=seed, folder=folder)


def train_method(
    config: DPOStudy,
    method: MethodConfig,
    data: SeedData,
    seed: int,
    folder: Path,
    splits: tuple[str, ...] = ("dev", "test"),
) -> dict[str, float]:
    """Train one method from the seed's SFT weights into ``folder`` and read it on
    ``splits`` (``dpo_data.read_arm``), with its log-prob changes against the start."""
    from splice.training.experiment import run_experiment

    exp = method_config(config, method, data=data.folder, seed=seed, folder=folder,
                        init_from=str(data.folder / "sft"))  # fmt: skip
    report = run_experiment(exp, overwrite=True)
    out = {"train_time_s": float(report["train_time_s"]), **read_arm(config, data, folder, splits)}
    for side in ("chosen", "rejected"):
        out[f"{side}_logp_change"] = out[f"{side}_logp"] - data.counts[f"sft_{side}_logp"]
    return out


def run_one(config: DPOStudy, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported arm x seed: the start is read, a method trained then read."""
    data = seed_data(config, seed)
    if arm == START:
        out = read_arm(config, data, data.folder / "sft")
    else:
        out = train_method(config, config.method(arm), data, seed, folder)
    return {**out, "test_examples": float(len(data.test)), **data.counts}


#: every arm of one reported seed, the start first: one worker's share
run_seed = functools.partial(every_arm, run_one, DPOStudy.arms)


def tuning_runs(config: DPOStudy, seed: int) -> dict[str, dict[str, float]]:
    """Every candidate of every method with a grid, on one tuning seed, scored on the dev
    split only: ``{"<method>/<candidate index>": figures}`` (and ``sft``: the start's)."""
    data = seed_data(config, seed)
    root = Path(config.run_dir()) / "tuning"
    out = {START: read_arm(config, data, data.folder / "sft", splits=("dev",))}
    for method in config.methods:
        for i, cand in enumerate(method.candidates() if method.grid else []):
            folder = root / f"{method.name}-{i}" / f"seed-{seed}"
            out[f"{method.name}/{i}"] = train_method(
                config, method.at(cand), data, seed, folder, splits=("dev",)
            )
    return out


def choose_settings(config: DPOStudy) -> tuple[DPOStudy, list[Tuning], dict[int, dict]]:
    """Run the tuning seeds (in ``workers`` processes) and choose each method's setting by
    its mean dev accuracy (``study.tune``); returns the config with the chosen settings (no
    grids left), the tuning records and the tuning seeds' figures."""
    if not any(m.grid for m in config.methods):
        return config, [], {}
    seeds = list(config.tuning_seeds)
    runs = run_seeds(tuning_runs, config, seeds, config.workers) or {
        s: tuning_runs(config, s) for s in seeds
    }
    tunings: list[Tuning] = []
    methods = []
    for method in config.methods:
        if not method.grid:
            methods.append(method)
            continue
        cands = method.candidates()
        labels = [label(c) for c in cands]

        def on_dev(name: str, seed: int, key: str = method.name, labels: list = labels) -> dict:
            return runs[seed][f"{key}/{labels.index(name)}"]

        t = tune(method.name, labels, on_dev, metric="dev_acc", seeds=seeds)
        tunings.append(t)
        methods.append(method.at(cands[t.chosen]))
    return config.model_copy(update={"methods": methods}), tunings, runs


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
        Claim(f"{m.name}-beats-sft", m.name, START, "test_acc", "higher", scale=100, unit=" pt",
              text=CLAIM_TEXT.get(m.name, f"{m.name} beats its SFT start") + " (test accuracy)")
        for m in config.methods
    ]  # fmt: skip
    names = {m.name for m in config.methods}
    if "dpo" in names:
        out.append(Claim(
            "dpo-chosen-logp-falls", "dpo", START, "chosen_logp", "lower",
            text="diagnosis: plain DPO lowers the per-token log-prob of the chosen (correct) "
            "answers it is trained to prefer (all pairs, after vs before)"))  # fmt: skip
    if {"dpo", "dpo+nll"} <= names:
        out.append(Claim(
            "nll-keeps-chosen-logp", "dpo+nll", "dpo", "chosen_logp", "higher",
            text="the NLL term keeps the chosen answers' log-prob above plain DPO's"))  # fmt: skip
    return out


def side_table(result: StudyResult, config: DPOStudy) -> str:
    """Per arm: the setting chosen on dev, dev and test accuracy, and the chosen / rejected
    per-token log-prob change on all pairs; means with half-widths over seeds."""

    def cell(arm: str, metric: str, pct: bool) -> str:
        if metric not in result.figures[arm][result.seeds[0]]:
            return "-"
        iv = result.interval(arm, metric)
        if pct:
            return f"{iv.mean:.1%} ± {iv.half_width:.1%}"
        return f"{iv.mean:+.3f} ± {iv.half_width:.3f}"

    lines = [
        "| arm | setting (chosen on dev) | dev accuracy | test accuracy "
        "| Δ log-prob chosen | Δ log-prob rejected |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for arm in config.arms():
        setting = "-" if arm == START else config.method(arm).setting()
        lines.append(
            f"| {arm} | {setting} | {cell(arm, 'dev_acc', True)} | {cell(arm, 'test_acc', True)} "
            f"| {cell(arm, 'chosen_logp_change', False)} "
            f"| {cell(arm, 'rejected_logp_change', False)} |"
        )
    return "\n".join(lines)


def diagnosis(result: StudyResult, config: DPOStudy) -> dict[str, Any]:
    """The log-prob curves of plain DPO (and DPO + NLL, for contrast) over training, as a
    JSON record and ``logps-over-training.png`` in the study folder."""
    arms = [a for a in ("dpo", "dpo+nll") if a in result.figures]
    if not arms:
        return {}
    dirs = {a: [config.arm_dir(a, s) for s in result.seeds] for a in arms}
    data = curves(dirs, CURVE_WINDOW)
    start = {
        side: sum(result.figures[START][s][f"{side}_logp"] for s in result.seeds)
        / len(result.seeds)
        for side in ("chosen", "rejected")
    }
    png = plot_curves(data, start, Path(config.run_dir()) / "logps-over-training.png",
                      seeds=len(result.seeds))  # fmt: skip
    return {"logp_curves": data, "logp_curve_window": CURVE_WINDOW, "logp_plot": png.name}


def run(config: DPOStudy) -> dict[str, Any]:
    """Choose each method's setting on the dev split (tuning seeds), run every arm over the
    reported seeds, print the side table and each claim's verdict."""
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    chosen, tunings, tuned_runs = choose_settings(config)
    for t in tunings:
        print(f"{t.name}: chose {t.value} on the dev split "
              f"(dev accuracy {t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip

    def extras(result: StudyResult) -> dict[str, Any]:
        return {
            **tuning_extras(tunings, scale=100, unit="%"),
            "tuning_start_dev_acc": {str(s): r[START]["dev_acc"] for s, r in tuned_runs.items()},
            "side_table": side_table(result, chosen),
            **diagnosis(result, chosen),
        }

    return run_and_report(
        chosen,
        arms=chosen.arms(),
        run_one=seeds_in_workers(run_seed, chosen, functools.partial(run_one, chosen)),
        claims=claims(chosen),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


__getattr__ = deprecated_attribute(
    __name__,
    {
        "sft_config": ("splice_recipes.dpo_data.sft_config", lambda: dpo_data.sft_config),
        "dev_test_split": (
            "splice_recipes.dpo_data.dev_test_split",
            lambda: dpo_data.dev_test_split,
        ),
    },
    removed_in="splice-recipes 0.3.0",
)


def config() -> DPOStudy:
    return DPOStudy()


recipe = Recipe(
    name="dpo",
    description="SFT on addition, then DPO / DPO+NLL / IPO / SimPO / ORPO / KTO on pairs from "
    "the model's own verified samples and rejection-sampling FT, each at the setting chosen "
    "on a dev split, over seeds: each against its SFT start with paired intervals, and "
    "plain DPO's chosen and rejected log-probs over training",
    config=config,
    run=run,
)
