"""Every registered encoder, positional encoding, task and objective runs its kind's
conformance suite: one suite class per registered tag, made at collection from the
registry, so a plugin's new registration is covered without editing this file. A tag runs
with its config's defaults unless ``CONFIGS`` gives a small one; ``EXEMPT`` lists config
fields a suite cannot see change, with the reason.

(Retrievers run theirs in splice-rag's ``test_retriever_conformance.py``; the layer kinds
in their plugins' ``test_conformance.py``.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from splice.registry import get_registry
from splice.testing.encoders import EncoderConformance
from splice.testing.objectives import ObjectiveConformance
from splice.testing.tasks import TaskConformance

SUITES: dict[str, type] = {
    "encoder": EncoderConformance,
    "task": TaskConformance,
    "objective": ObjectiveConformance,
}

# The file-backed tasks read these (written once, at collection, into a folder removed when
# the interpreter exits).
_FILES = tempfile.TemporaryDirectory(prefix="splice-task-conformance-")
DATA = Path(_FILES.name)


def _write(name: str, rows: list[dict[str, Any]]) -> str:
    (DATA / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(DATA / name)


_WORDS = ["red", "blue", "green", "gold", "grey", "pink", "teal", "plum", "rust", "sand"]
_PAIRS = [(f"colour {i}: ", f" {w}") for i, w in enumerate(_WORDS * 2)]
_ALL = _write("all.jsonl", [{"prompt": p, "completion": c} for p, c in _PAIRS])
_PREF_TRAIN = _write(
    "pref.jsonl", [{"prompt": p, "chosen": c, "rejected": " none"} for p, c in _PAIRS]
)
_UNPAIRED = _write(
    "unpaired.jsonl",
    [{"prompt": p, "completion": c, "label": i % 3 != 0} for i, (p, c) in enumerate(_PAIRS)],
)
_VARIED = {"reward": {"type": "callable", "path": "splice.testing.objectives:distinct_characters"}}
_PASSAGES = _write(
    "passages.jsonl",
    [{"id": f"p{i}", "text": f"the colour of item {i} is {w}."} for i, w in enumerate(_WORDS)],
)
_QUESTIONS = [
    {"question": f"what colour is item {i}?", "answer": w, "passage_id": f"p{i}"}
    for i, w in enumerate(_WORDS)
]
_RAG_TRAIN = _write("rag_train.jsonl", _QUESTIONS[:7])
_RAG_HELD = _write("rag_held.jsonl", _QUESTIONS[7:])

CONFIGS: dict[tuple[str, str], dict[str, Any]] = {
    # A ViT small enough for a test: 4 patches of 4x4 over 8x8 images, width 16, one block;
    # mean pooling, so that class_token=False is a valid config to try.
    ("encoder", "vit"): {"image_size": 8, "patch_size": 4, "d_model": 16, "n_layers": 1,
                         "n_heads": 2, "pool": "mean"},
    # held_out_fraction of one file (a held_out file would make the fraction unused).
    ("task", "jsonl"): {"train": _ALL, "held_out_fraction": 0.3},
    ("task", "preference_jsonl"): {"train": _PREF_TRAIN, "held_out_fraction": 0.3},
    ("task", "unpaired_jsonl"): {"train": _UNPAIRED, "held_out_fraction": 0.3},
    # k=0: nothing retrieved, so gold_in_train alone decides whether the gold passage shows
    # (BM25 finds every gold passage of this corpus, which would hide the field).
    ("task", "rag"): {"passages": _PASSAGES, "train": _RAG_TRAIN, "held_out": _RAG_HELD, "k": 0},
    ("task", "mixture"): {"tasks": [{"type": "arithmetic"}, {"type": "number_words"}]},
    ("task", "shapes"): {"image_size": 16},
    ("objective", "weighted_sum"): {"terms": [{"objective": {"type": "sft"}, "weight": 0.5}]},
    # A reward that varies within a group, so advantages are not all 0.
    ("objective", "grpo"): {"group_size": 4, "beta": 0.1, "rewards": [_VARIED]},
    ("objective", "ppo"): {"rewards": [_VARIED]},
}  # fmt: skip

# File paths and free-text formats are strings: the field sweep has no other value of a
# string to try (another file is another dataset; the formats have their own tests).
_PATHS = ("train", "held_out", "passages")

EXEMPT: dict[tuple[str, str], tuple[str, ...]] = {
    # pool chooses what pooled()/encode() read out, not the features forward returns;
    # test_encode_is_the_pooled_features runs encode() with the configured pool.
    ("encoder", "vit"): ("pool",),
    # format: "auto" reads these prompt/completion lines as "prompt_completion" does and
    # "chat" cannot read them (test_data_jsonl covers the formats).
    ("task", "jsonl"): (*_PATHS, "chat_template", "format"),
    # layout changes how the collator packs a batch, not the examples (test_packing.py
    # checks that every layout gives the padded one's loss and gradients).
    ("task", "preference_jsonl"): (*_PATHS, "layout"),
    ("task", "unpaired_jsonl"): _PATHS,
    ("task", "rag"): (*_PATHS, "retriever_dir"),
    # weights is a list: no other value to try (test_chain_of_thought_tasks.py's mixture tests cover the weighting).
    ("task", "mixture"): ("weights",),
    # The tiny dense test model has no auxiliary loss for aux_loss_weight to weigh, and
    # reference="auto" is the frozen copy that "copy" also gives a model without an adapter.
    ("objective", "sft"): ("aux_loss_weight",),
    # precompute_reference=True needs prepare() over a dataset (splice-dpo's test_offline).
    ("objective", "dpo"): ("aux_loss_weight", "reference", "precompute_reference"),
    ("objective", "kto"): ("aux_loss_weight", "reference"),
    # One first minibatch cannot show: inner_iterations (updates per rollout),
    # filter_equal_groups (no group of equal rewards here), max_new_tokens (the dr_grpo
    # normaliser only; the default aggregation ignores it).
    ("objective", "grpo"): (
        "reference",
        "inner_iterations",
        "filter_equal_groups",
        "max_new_tokens",
    ),
    # On the first minibatch the ratios are 1 (clip, value_clip inactive); kl_target,
    # kl_horizon, epochs, target_kl act across updates; value_lr_scale in the optimizer
    # (check_param_lr_scaled); seed orders the minibatches (one here).
    ("objective", "ppo"): (
        "reference",
        "clip",
        "value_clip",
        "kl_target",
        "kl_horizon",
        "epochs",
        "target_kl",
        "value_lr_scale",
        "seed",
    ),
    # separator / answer_digits: strings (test_arithmetic_formats covers them);
    # reasoning_share applies with chain_of_thought=True only, which in turn refuses the
    # other ops and reverse_answer (test_chain_of_thought_tasks covers it).
    ("task", "arithmetic"): ("separator", "answer_digits", "reasoning_share"),
    # alphabet: a string (test_markov_text's small alphabets cover it); dev_fraction sets the
    # dev split (not sampled here) and moves the train split's edge by a sliver that 12 draws
    # may miss (test_dev_fraction_sets_the_dev_split covers it).
    ("task", "markov_text"): ("alphabet", "dev_fraction"),
}


def _pairs() -> list[Any]:
    from splice_dpo.data import PreferenceExample

    return [
        PreferenceExample(f"{a}+{b}=", str(a + b), str(a + b + (7 if a % 2 else 100)))
        for a, b in [(12, 34), (5, 6), (78, 9), (3, 21)]
    ]


def _unpaired() -> list[Any]:
    from splice_dpo.data import UnpairedExample

    return [
        UnpairedExample(f"{a}+{b}=", str(a + b + (0 if ok else 3)), ok)
        for a, b, ok in [(12, 34, True), (5, 6, False), (78, 9, True), (3, 21, False)]
    ]


def _collate_with(collator: str) -> Any:
    def collate(self: Any, examples: list[Any]) -> Any:
        import splice_dpo.data

        return getattr(splice_dpo.data, collator)(self.tokenizer, max_len=32)(examples)

    return collate


# Objectives that read another batch than SFT's: (examples, collate) hooks.
HOOKS: dict[tuple[str, str], dict[str, Any]] = {
    # GRPO's first inner iteration uses the current policy as the old one: the surrogate's
    # value is constant in the weights (only its gradient means something).
    ("objective", "grpo"): {"step_lowers_loss": False},
    ("objective", "dpo"): {
        "make_examples": lambda self: _pairs(),
        "collate": _collate_with("PreferenceCollator"),
    },
    ("objective", "kto"): {
        "make_examples": lambda self: _unpaired(),
        "collate": _collate_with("UnpairedCollator"),
    },
}


def _suite(kind: str, tag: str) -> type:
    config_cls = get_registry().get(kind, tag).config_cls
    fields = CONFIGS.get((kind, tag), {})
    return type(
        f"Test_{kind}_{tag}",
        (SUITES[kind],),
        {
            "make_config": lambda self: config_cls.model_validate(fields),
            "config_fields_exempt": EXEMPT.get((kind, tag), ()),
            **HOOKS.get((kind, tag), {}),
        },
    )


for _kind in SUITES:
    for _tag in get_registry().tags(_kind):
        globals()[f"Test_{_kind}_{_tag}"] = _suite(_kind, _tag)
