"""Configs of the built-in tasks (kind ``"task"``); kept apart from the task code so that
loading the registry imports neither the tasks nor torch. Built by ``splice.data.tasks``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from splice.config import ComponentConfig, TaskField


class ArithmeticTaskConfig(ComponentConfig):
    """Synthetic arithmetic ``"a op b="`` -> ``"result"`` (see ``ArithmeticTask``)."""

    type: Literal["arithmetic"] = "arithmetic"
    op: Literal["+", "-", "*"] = "+"
    min_digits: int = Field(default=1, ge=1)
    max_digits: int = Field(default=2, ge=1)
    held_out_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    # Share of problems set aside for choosing hyperparameters (split "dev"; 0: no dev split).
    dev_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    reverse_answer: bool = False
    chain_of_thought: bool = False
    # With chain_of_thought: the share of examples that work the carries out (the others
    # answer after an empty think block).
    reasoning_share: float = Field(default=1.0, ge=0.0, le=1.0)
    # The prompt's last character(s): a variant with its own answer format can have its own,
    # so that one model can tell both formats apart ("37+25=" -> "26", "37+25:" -> "62").
    separator: str = Field(default="=", min_length=1)
    # The ten characters the answer's digits 0-9 are written with ("abcdefghij": a new
    # output script for the same arithmetic).
    answer_digits: str = Field(default="0123456789", min_length=10, max_length=10)

    @model_validator(mode="after")
    def _digits(self) -> ArithmeticTaskConfig:
        if self.min_digits > self.max_digits:
            raise ValueError(
                f"min_digits={self.min_digits} must be <= max_digits={self.max_digits}"
            )
        if self.chain_of_thought and (self.op != "+" or self.reverse_answer):
            raise ValueError(
                "chain_of_thought is defined for op '+' without reverse_answer, got "
                f"op={self.op!r}, reverse_answer={self.reverse_answer}"
            )
        if len(set(self.answer_digits)) != 10 or "-" in self.answer_digits:
            raise ValueError(
                f"answer_digits={self.answer_digits!r}: expected 10 distinct characters, "
                "none of them '-' (the sign of a negative answer)"
            )
        if self.chain_of_thought and self.answer_digits != "0123456789":
            raise ValueError("chain_of_thought uses the default answer_digits")
        return self


class MixtureTaskConfig(ComponentConfig):
    """Several tasks drawn together: each example comes from task ``i`` with probability
    ``weights[i]`` (normalised; default equal), e.g. a new skill mixed with an old one.

    Attributes:
        tasks: the component tasks (any registered task configs).
        weights: one non-negative weight per task, or None for equal weights.
    """

    type: Literal["mixture"] = "mixture"
    tasks: list[TaskField] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self) -> MixtureTaskConfig:
        w = self.weights
        if w is not None and (len(w) != len(self.tasks) or min(w) < 0 or sum(w) <= 0):
            raise ValueError(
                f"weights={w}: expected {len(self.tasks)} non-negative values with a positive sum"
            )
        return self


class JsonlTaskConfig(ComponentConfig):
    """Examples from JSONL files (prompt/completion or chat lines). Training reads the train
    split in epochs: each example once per epoch, in a new order per epoch seeded by the run.

    Attributes:
        train: path of the training file (relative paths: to the working directory).
        held_out: path of the evaluation file, or None to split ``train``.
        format: ``"auto"`` (per line: ``messages`` -> chat), ``"prompt_completion"`` or ``"chat"``.
        held_out_fraction: share of ``train`` set aside when ``held_out`` is None
            (0 = no held-out split; asking for one is then an error).
        chat_template: how chat lines become prompt + completion: a preset name
            (``simple``, ``chatml``, ``llama3``, ``plain``) or a template object (see
            ``splice.data.chat``); None is ``simple`` (``"user: ...\nassistant: "``).
    """

    type: Literal["jsonl"] = "jsonl"
    train: str
    held_out: str | None = None
    format: Literal["auto", "prompt_completion", "chat"] = "auto"
    held_out_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    chat_template: str | dict[str, Any] | None = None


__all__ = ["ArithmeticTaskConfig", "JsonlTaskConfig", "MixtureTaskConfig"]


#: Largest numbers the number-words task spells (below one million).
MAX_NUMBER_WORDS_DIGITS = 6


class NumberWordsTaskConfig(ComponentConfig):
    """Numerals to English number words (``"407"`` -> ``"four hundred seven"``), or back."""

    type: Literal["number_words"] = "number_words"
    min_digits: PositiveInt = 1
    max_digits: PositiveInt = 4
    direction: Literal["to_words", "to_digits"] = "to_words"
    held_out_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _digits(self) -> NumberWordsTaskConfig:
        if not self.min_digits <= self.max_digits <= MAX_NUMBER_WORDS_DIGITS:
            raise ValueError(
                f"need min_digits <= max_digits <= {MAX_NUMBER_WORDS_DIGITS}, got "
                f"min_digits={self.min_digits}, max_digits={self.max_digits}"
            )
        return self
