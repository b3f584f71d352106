"""Recipe ``rag``: a small decoder answers questions about people it never saw, from passages a
retriever finds; retrieval-augmented fine-tuning (RAFT) is what makes it use them.

The knowledge base (``splice_recipes.rag_kb``) is 2,400 facts about 600 fictional people, one
passage each; training questions are about the first 480 people, held-out questions about the
other 120. Arms, per seed (each seed draws its own base, retriever training and model init):

* ``closed_book``: SFT on question -> answer alone; at evaluation it can only guess;
* ``inference_only``: that same closed-book model, evaluated with the top-k BM25 passages in
  its prompt (retrieval at inference only: it never learned to read them);
* ``raft_bm25`` / ``raft_dense`` / ``raft_hybrid``: SFT on prompts carrying the top-k passages
  of that retriever plus a random distractor (the gold passage forced in with probability 0.8),
  evaluated the same way with the same retriever.

The retrievers are trained (dense: contrastive, in-batch negatives, on the training
(question, passage) pairs) and indexed once per seed, saved under ``<study>/shared/seed-<s>``
and loaded by every run that uses them. Each run reports held-out exact match (the mean of its
last evaluations), exact match again at several k, and its retriever's recall@k and MRR on
the held-out questions; the study plots accuracy against k.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt
from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig

from splice_recipes.study import (
    Claim,
    StudyConfig,
    StudyResult,
    every_arm,
    run_and_report,
    run_arm,
    seeds_in_workers,
)

ARMS = ["closed_book", "inference_only", "raft_bm25", "raft_dense", "raft_hybrid"]
RETRIEVER_OF = {"inference_only": "bm25", "raft_bm25": "bm25", "raft_dense": "dense",
                "raft_hybrid": "hybrid"}  # fmt: skip


def _experiment() -> ExperimentConfig:
    return ExperimentConfig(
        name="rag",
        model={
            "type": "decoder",
            "vocab_size": 1100,  # the word-level tokenizer of the base (about 1,096 words)
            "d_model": 128,
            "n_layers": 2,
            "max_seq_len": 80,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
        },
        tokenizer={"type": "hf", "path": "set-by-the-study"},
        data={
            "task": {"type": "rag", "passages": "-", "train": "-", "held_out": "-"},
            "max_len": 80,
        },
        train={
            "steps": 800,
            "batch_size": 32,
            "log_every": 100,
            "checkpoint_every": 800,
            "keep_last": 1,
            "num_threads": 1,
            "optimizer": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.98]},
            "schedule": {"kind": "cosine", "warmup_steps": 60, "min_lr_ratio": 0.05},
        },
        # half the 480 held-out questions per evaluation: ~2 points of binomial noise per run
        eval={"every": 200, "loss_batches": 2, "exact_match_examples": 240, "max_new_tokens": 3},
    )


def _dense() -> dict[str, Any]:
    return {
        "type": "dense",
        "buckets": 2048,
        "max_words": 16,
        "epochs": 4,
        "batch_size": 128,
        "lr": 3e-3,
        "temperature": 0.05,
        "encoder": {
            "type": "decoder",
            "vocab_size": 2049,
            "d_model": 64,
            "n_layers": 1,
            "max_seq_len": 16,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
        },
    }


class RagStudy(StudyConfig):
    """The study.

    Attributes:
        people / train_people: size of the knowledge base (4 facts each) and how many people's
            questions are trained on (the rest are held out).
        k / distractors / gold_in_train: the ``rag`` task's retrieval settings.
        ks: the k values of the accuracy-against-k curve (evaluation only).
        dense: the dense retriever (also the hybrid's second member; the first is BM25).
        arms: the arms run (default all; claims about arms left out are dropped).
        workers: seeds run at once, one process each (every run uses one thread; the
            figures do not depend on it).
        experiment: one run's config (task, tokenizer, seed and folder set by the study).
    """

    name: str = "rag"
    seeds: int = 3
    last_evals: PositiveInt = 2  # steps 600 and 800: the curve still rises before that
    people: PositiveInt = 600
    train_people: PositiveInt = 480
    k: PositiveInt = 3
    distractors: int = 1
    gold_in_train: float = 0.8
    ks: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 3, 5])
    dense: dict[str, Any] = Field(default_factory=_dense)
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    workers: PositiveInt = 2
    experiment: ExperimentConfig = Field(default_factory=_experiment)


CLAIMS = [
    Claim("raft-beats-closed-book", "raft_bm25", "closed_book", "exact_match", scale=100,
          unit=" pt", text="RAFT with BM25 beats closed book on facts never trained on"),
    Claim("raft-beats-inference-only", "raft_bm25", "inference_only", "exact_match", scale=100,
          unit=" pt", text="fine-tuning on retrieved passages beats retrieval at inference only"),
    Claim("hybrid-recall-beats-bm25", "raft_hybrid", "raft_bm25", "recall@1", scale=100,
          unit=" pt", text="hybrid (BM25 + trained dense) retrieval has higher recall@1 than BM25"),
    Claim("hybrid-beats-bm25", "raft_hybrid", "raft_bm25", "exact_match", scale=100, unit=" pt",
          text="RAFT with hybrid retrieval beats RAFT with BM25 (exact match)"),
]  # fmt: skip


def shared(config: RagStudy, seed: int) -> dict[str, str]:
    """The seed's knowledge base, tokenizer and three saved retrievers (built once)."""
    from pydantic import TypeAdapter
    from splice.config import RetrieverField
    from splice.registry import get_registry
    from splice_rag.configs import HybridRetrieverConfig
    from splice_rag.hybrid import HybridRetriever
    from splice_rag.store import save_retriever
    from splice_rag.task import read_jsonl

    folder = Path(config.run_dir()) / "shared" / f"seed-{seed}"
    done = folder / "retrievers" / "hybrid" / "retriever.json"
    paths = {
        "passages": str(folder / "kb" / "passages.jsonl"),
        "train": str(folder / "kb" / "train.jsonl"),
        "held_out": str(folder / "kb" / "held_out.jsonl"),
        "tokenizer": str(folder / "kb" / "tokenizer"),
        **{r: str(folder / "retrievers" / r) for r in ("bm25", "dense", "hybrid")},
    }
    if done.is_file():
        return paths
    from splice_recipes.rag_kb import write_base

    write_base(folder / "kb", config.people, config.train_people, seed=seed)
    passages = [r["text"] for r in read_jsonl(paths["passages"], ["text"])]
    by_id = {r["id"]: r["text"] for r in read_jsonl(paths["passages"], ["id", "text"])}
    pairs = [
        (r["question"], by_id[r["passage_id"]]) for r in read_jsonl(paths["train"], ["question"])
    ]
    registry, field = get_registry(), TypeAdapter(RetrieverField)
    bm25 = registry.build("retriever", field.validate_python({"type": "bm25"}), None)
    dense = registry.build("retriever", field.validate_python({**config.dense, "seed": seed}), None)
    dense.fit(pairs)
    for r in (bm25, dense):
        r.index(passages)
    hybrid = HybridRetriever(
        HybridRetrieverConfig(retrievers=[bm25.config, dense.config]), [bm25, dense]
    )
    for name, r in (("bm25", bm25), ("dense", dense), ("hybrid", hybrid)):
        save_retriever(r, paths[name])
    return paths


def rag_task(
    config: RagStudy, paths: dict[str, str], retriever: str | None, k: int
) -> dict[str, Any]:
    """The ``rag`` task config of one arm (``retriever=None``: closed book)."""
    return {
        "type": "rag", "passages": paths["passages"], "train": paths["train"],
        "held_out": paths["held_out"], "retriever_dir": paths[retriever or "bm25"], "k": k,
        "distractors": config.distractors, "gold_in_train": config.gold_in_train,
        "closed_book": retriever is None,
    }  # fmt: skip


def arm_experiment(config: RagStudy, paths: dict[str, str], arm: str) -> ExperimentConfig:
    exp = config.experiment
    task = rag_task(config, paths, RETRIEVER_OF.get(arm), config.k)
    data = exp.data.model_copy(update={"task": exp.data.model_validate({"task": task}).task})
    tokenizer = exp.tokenizer.model_copy(update={"path": paths["tokenizer"]})
    return exp.model_copy(update={"data": data, "tokenizer": tokenizer})


def evaluate_at(
    config: RagStudy, paths: dict[str, str], run_dir: Path, retriever: str, k: int
) -> float:
    """Held-out exact match of a trained run with ``k`` passages from ``retriever``."""
    from splice.evaluation.from_run import evaluate_run

    task = rag_task(config, paths, retriever, k)
    got = evaluate_run(run_dir=run_dir, task=task, loss_batches=0)
    return float(got["exact_match"])


def run_one(config: RagStudy, arm: str, seed: int, folder: Path) -> dict[str, float]:
    from splice_rag.configs import RagTaskConfig
    from splice_rag.store import load_retriever  # noqa: F401  (splice-rag must be installed)
    from splice_rag.task import RagTask

    paths = shared(config, seed)
    retriever = RETRIEVER_OF.get(arm)
    if arm == "inference_only":  # the closed-book model of this seed, now given passages
        closed = config.arm_dir("closed_book", seed)
        out = {"exact_match": evaluate_at(config, paths, closed, "bm25", config.k)}
    else:
        out = run_arm(arm_experiment(config, paths, arm), config, seed=seed, folder=folder)
        if retriever is not None:
            for k in config.ks:
                out[f"em@{k}"] = evaluate_at(config, paths, folder, retriever, k)
    if retriever is not None:
        task = RagTask(RagTaskConfig.model_validate(rag_task(config, paths, retriever, config.k)))
        out.update(task.retrieval_metrics("held_out", config.ks))
    return out


def study_arms(config: RagStudy) -> list[str]:
    """The arms run, in the order the study runs them (closed_book before inference_only)."""
    return [a for a in ARMS if a in config.arms]


#: every arm of one seed, in order (closed_book before inference_only): one worker's share
run_seed = functools.partial(every_arm, run_one, study_arms)


def plot_accuracy_vs_k(result: Any, config: RagStudy, path: Path) -> Path:
    """Held-out exact match against k for each RAFT arm (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for arm in [a for a in ("raft_bm25", "raft_dense", "raft_hybrid") if a in result.figures]:
        runs = list(result.figures[arm].values())
        means = [100 * sum(r[f"em@{k}"] for r in runs) / len(runs) for k in config.ks]
        lows = [100 * min(r[f"em@{k}"] for r in runs) for k in config.ks]
        highs = [100 * max(r[f"em@{k}"] for r in runs) for k in config.ks]
        ax.plot(config.ks, means, "-o", label=arm)
        ax.fill_between(config.ks, lows, highs, alpha=0.15)
    if "closed_book" in result.figures:
        closed = [100 * r["exact_match"] for r in result.figures["closed_book"].values()]
        ax.axhline(sum(closed) / len(closed), color="k", ls="--", lw=0.8, label="closed book")
    ax.set_xlabel(f"passages retrieved at evaluation (k; trained at k={config.k})")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_xticks(config.ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(config: RagStudy) -> dict[str, Any]:
    """Run every arm over the seeds; print exact match, recall and each claim's verdict."""
    unknown = sorted(set(config.arms) - set(ARMS))
    if unknown or ("inference_only" in config.arms and "closed_book" not in config.arms):
        raise ValueError(
            f"arms: {unknown or 'inference_only'} -- arms are {ARMS}, and inference_only "
            "evaluates the closed_book model, so it needs closed_book before it"
        )
    arms = study_arms(config)
    claims = [c for c in CLAIMS if c.arm in arms and c.baseline in arms]
    plot_path = Path(config.run_dir()) / "accuracy_vs_k.png"

    def notes(result: StudyResult) -> list[str]:
        lines = []
        for arm in arms:
            iv = result.interval(arm, "exact_match")
            line = f"{arm}: held-out exact match {iv.mean:.1%} (+- {iv.half_width:.1%})"
            if arm in RETRIEVER_OF:
                r = result.interval(arm, "recall@1")
                line += f", {RETRIEVER_OF[arm]} recall@1 {r.mean:.1%} (+- {r.half_width:.1%})"
            lines.append(f"{line} over {iv.n} seeds")
        return [*lines, f"accuracy against k: {plot_path}"]

    return run_and_report(
        config,
        arms=arms,
        run_one=seeds_in_workers(
            run_seed, config, lambda arm, seed, folder: run_one(config, arm, seed, folder)
        ),
        claims=claims,
        # the plot is drawn from the finished study, before its files are written
        extras=lambda result: {
            "accuracy_vs_k_plot": plot_accuracy_vs_k(result, config, plot_path).name
        },
        notes=notes,
    )


def config() -> RagStudy:
    return RagStudy()


recipe = Recipe(
    name="rag",
    description="RAG on a fictional knowledge base: closed book vs retrieval at inference vs "
    "retrieval-augmented fine-tuning, BM25 / dense / hybrid, exact match and recall@k over seeds",
    config=config,
    run=run,
)
