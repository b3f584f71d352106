"""What a study is: its config (seeds, precision, how a run's result is read) and its claims.

A study runs every arm (a method compared) once per seed; a claim names two arms (or an arm
and a fixed number) and a metric, and says which way the difference should go. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from splice.config import SpliceConfig

from splice_recipes.study.stats import Direction


class StudyConfig(SpliceConfig):
    """Base of every recipe's config: the fields the study layer reads.

    Attributes:
        name: the study's name (its folder is ``runs/<name>`` unless ``output_dir``).
        seeds: how many seeds each arm runs (``--set seeds=N`` raises a recipe's default).
        first_seed: the first seed; seeds are ``first_seed .. first_seed + seeds - 1``.
        precision: the training precision every run pins (float32 unless the recipe is
            about precision; "auto" would make results depend on the machine).
        last_evals: a run's result is the mean of its last ``last_evals`` evaluations
            (neighbouring evaluations move by several points; one reading is noise).
        confidence: two-sided level of the intervals.
        progress: one progress bar over the whole study (arm x seed runs).
        output_dir: the study folder.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: PositiveInt = 3
    first_seed: NonNegativeInt = 0
    precision: Literal["float32", "bf16", "auto"] = "float32"
    last_evals: PositiveInt = 3
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    progress: bool = True
    output_dir: str | None = None

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def arm_dir(self, arm: str, seed: int) -> Path:
        """The folder of one run: ``<study>/<arm>/seed-<seed>``."""
        return Path(self.run_dir()) / arm / f"seed-{seed}"


class TunedStudyConfig(StudyConfig):
    """A study that chooses hyperparameters on a dev split (``study.tune``) on seeds of its
    own.

    Attributes:
        tuning_seeds: seeds of the dev-split runs; refused when one is also a reported seed
            (a choice made on a run must not be reported from it).
    """

    tuning_seeds: list[NonNegativeInt] = Field(default_factory=lambda: [100], min_length=1)

    @model_validator(mode="after")
    def _tuning_seeds_are_not_reported(self) -> TunedStudyConfig:
        shared = sorted(set(self.tuning_seeds) & set(self.seed_list()))
        if shared:
            raise ValueError(
                f"tuning_seeds {shared} are also reported seeds {self.seed_list()}: a choice "
                "made on a run must not be reported from it"
            )
        return self


@dataclass(frozen=True)
class Claim:
    """ "``arm`` beats ``baseline`` on ``metric``", paired by seed.

    Attributes:
        name: short identifier (file-name safe); the claim's plot is ``<name>.png``.
        arm / baseline: the arms compared; ``baseline`` may be a number (one-sample claim,
            e.g. accuracy against chance).
        metric: a key of the runs' result dicts.
        direction: ``"higher"`` when the claim is ``arm > baseline``, ``"lower"`` for
            ``arm < baseline`` (a loss, a step time).
        text: the claim as a sentence, for the report and the README.
        scale / unit: how differences are printed (``scale=100, unit=" pt"`` for accuracy).
        margin: the difference the interval must clear, in the metric's units (0: the claim
            is "better"; ``-0.1`` with ``"higher"``: "worse by less than 0.1", a
            non-inferiority claim such as "costs at most 10 points").
    """

    name: str
    arm: str
    baseline: str | float
    metric: str
    direction: Direction = "higher"
    text: str = ""
    scale: float = 1.0
    unit: str = ""
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(
                f"claim {self.name!r}: direction must be 'higher' or 'lower', "
                f"got {self.direction!r}"
            )
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"claim name {self.name!r}: need a file-name-safe identifier")

    @property
    def sentence(self) -> str:
        if self.text:
            return self.text
        side = ">" if self.direction == "higher" else "<"
        return f"{self.arm} {side} {self.baseline} on {self.metric}"
