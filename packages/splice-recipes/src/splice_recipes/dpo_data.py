"""One seed of the ``dpo`` study: its SFT start, the on-policy data sampled from it, the
dev / test halves of the held-out problems, and the two readings every arm gets (greedy
accuracy, and the per-token log-probs of the seed's pairs).

A seed's folder (``<study>/shared/seed-<s>``) holds ``sft/`` (the start), ``pairs.jsonl``
(one correct-vs-incorrect pair per prompt where both were sampled), ``unpaired.jsonl``
(the same completions, labelled, for KTO), ``accepted.jsonl`` (rejection-sampling FT data)
and ``data.json`` (counts and the settings that made them: a folder made with other
settings is rebuilt, never reused).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splice.training.configs import EvalConfig, ExperimentConfig

from splice_recipes.study import pinned

#: the config fields a seed's SFT and data depend on (``data.json`` records them)
SEED_FIELDS = ("model", "task", "max_len", "sft", "prompts", "samples_per_prompt",
               "temperature", "reference_as_chosen", "max_new_tokens")  # fmt: skip
#: how the preference arms' collator lays out a batch (``splice_dpo.packing``); the
#: log-prob readout (``pair_logps``) uses it too, so it runs the training's code path
LAYOUT = "shared_prompt"


@dataclass
class SeedData:
    """What every arm of one seed reads.

    Attributes:
        folder: the seed's shared folder (``sft/``, the ``.jsonl`` files).
        tokenizer: the study's character tokenizer.
        dev / test: the distinct held-out problems, split by a hash of the prompt.
        pairs: the on-policy preference pairs (``splice_dpo.data.PreferenceExample``).
        counts: ``pairs``, ``accepted``, ``sample_accuracy`` (share of correct samples), and
            the SFT start's ``sft_chosen_logp`` / ``sft_rejected_logp`` on the pairs.
    """

    folder: Path
    tokenizer: Any
    dev: list[Any]
    test: list[Any]
    pairs: list[Any]
    counts: dict[str, float]


def no_eval() -> EvalConfig:
    """Runs of this study are scored by the study itself, at the end (``read_arm``)."""
    return EvalConfig(loss_batches=0, exact_match_examples=0)


def sft_config(config: Any, seed: int, folder: Path) -> ExperimentConfig:
    """The SFT start of one seed: ``config.sft`` on the task, in ``folder``."""
    from splice.training.configs import DataConfig

    exp = ExperimentConfig(
        name=f"{config.name}-sft",
        model=config.model,
        data=DataConfig(task=config.task, max_len=config.max_len),
        train=config.sft,
        eval=no_eval(),
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


def accuracy(model: Any, tokenizer: Any, examples: list[Any], max_new_tokens: int) -> float:
    """Greedy exact match of ``model`` on ``examples`` (each scored once)."""
    import torch
    from splice.evaluation import exact_match
    from splice.generation.sampling import SamplingConfig

    model.eval()
    with torch.no_grad():
        res = exact_match(model, tokenizer, examples, SamplingConfig(max_new_tokens=max_new_tokens))
    return float(res["accuracy"])


def pair_logps(
    model: Any,
    tokenizer: Any,
    pairs: list[Any],
    max_len: int,
    batch_size: int = 128,
    layout: str = LAYOUT,
) -> dict[str, float]:
    """Per-token log-prob of the chosen and of the rejected completions over all ``pairs``
    (summed over every completion token, eos included, divided by the token count):
    ``{"chosen_logp", "rejected_logp"}``. Read on the same pairs before and after training,
    it says which side a method moved, free of the batch-to-batch noise of the logged
    training values. ``layout``: the batches' layout, by default the one the preference
    arms train with (``LAYOUT``), so the readout runs the training's code path."""
    from splice_dpo.data import PreferenceCollator
    from splice_dpo.readout import completion_logps

    collate = PreferenceCollator(tokenizer, max_len=max_len, layout=layout)  # type: ignore[arg-type]
    sums, counts = completion_logps(model, pairs, collate, batch_size=batch_size)  # (N, 2)
    per_token = sums.double().sum(0) / counts.double().sum(0).clamp(min=1)  # (2,)
    chosen, rejected = per_token.tolist()
    return {"chosen_logp": chosen, "rejected_logp": rejected}


def load_weights(config: Any, run: str | Path) -> Any:
    """The study's model with the weights of the run folder ``run``."""
    from splice.checkpoint import load_model_weights
    from splice.models.build import build_model

    model = build_model(config.model)
    load_model_weights(model, str(run))
    return model


def read_arm(
    config: Any, data: SeedData, weights: Path, splits: tuple[str, ...] = ("dev", "test")
) -> dict[str, float]:
    """An arm's figures from its final weights: accuracy on each of ``splits``
    (``<split>_acc``; tuning reads ``dev`` only) and the pairs' per-token log-probs."""
    model = load_weights(config, weights)
    out = {
        f"{split}_acc": accuracy(model, data.tokenizer, getattr(data, split), config.max_new_tokens)
        for split in splits
    }
    return {**out, **pair_logps(model, data.tokenizer, data.pairs, config.max_len)}


def _write_unpaired(path: Path, pairs: list[Any]) -> None:
    """KTO's data: each pair's two completions, chosen labelled desirable."""
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            for completion, label in ((p.chosen, True), (p.rejected, False)):
                row = {"prompt": p.prompt, "completion": completion, "label": label}
                f.write(json.dumps(row) + "\n")


def _settings(config: Any) -> dict[str, Any]:
    dumped = config.model_dump(mode="json")
    return {k: dumped[k] for k in SEED_FIELDS}


def build_seed(config: Any, seed: int, folder: Path, tokenizer: Any, prompts: list[Any]) -> dict:
    """SFT one seed's start and sample its on-policy data into ``folder``; returns the counts.

    Raises:
        ValueError: the SFT model's samples were all right or all wrong (no pair).
    """
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
    model = load_weights(config, folder / "sft")
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
    start = pair_logps(model, tokenizer, pairs, config.max_len)
    return {
        "sample_accuracy": scored.accept_rate,
        "pairs": float(len(pairs)),
        "accepted": float(len(accepted)),
        **{f"sft_{k}": v for k, v in start.items()},  # the start's log-probs on its pairs
    }


def seed_data(config: Any, seed: int) -> SeedData:
    """The seed's data, built on first use (a folder left by other settings is rebuilt)."""
    from splice.training.experiment import build_task, build_tokenizer
    from splice_dpo.data import read_preference_jsonl

    folder = Path(config.run_dir()) / "shared" / f"seed-{seed}"
    tokenizer = build_tokenizer(sft_config(config, seed, folder).tokenizer)
    task = build_task(config.task)
    prompts = task.sample("train", config.prompts, seed=seed + 1)
    record = folder / "data.json"
    settings = _settings(config)
    saved = json.loads(record.read_text()) if record.is_file() else {}
    if saved.get("settings") != settings:
        folder.mkdir(parents=True, exist_ok=True)
        counts = build_seed(config, seed, folder, tokenizer, prompts)
        record.write_text(json.dumps({"settings": settings, "counts": counts}, indent=1))
    else:
        counts = saved["counts"]
    held_out = task.sample("held_out", config.held_out_examples, seed=0)
    dev, test = dev_test_split(held_out, prompts, config.dev_fraction)
    pairs = read_preference_jsonl(folder / "pairs.jsonl")
    return SeedData(folder, tokenizer, dev, test, pairs, counts)
