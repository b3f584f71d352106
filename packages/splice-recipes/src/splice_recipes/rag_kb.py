"""The ``rag`` recipe's data: a knowledge base of fictional people the model never saw.

Each person (a made-up first name and surname, each drawn from a shared pool) has four attributes, each written
as one short passage (``"vaskel dorimo lives in brennak ."``) and asked about by one question
(``"where does vaskel dorimo live ?"``). Questions about the first ``train_people`` people are
the training split; questions about the rest are held out, so no held-out fact is ever in a
training target: a closed-book model can only guess. Everything is lower-case words split by
spaces, tokenized by a word-level tokenizer fitted to the base (one id per word).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SYLLABLES = [
    "va", "dor", "ke", "lim", "sa", "tor", "bren", "ni", "qua", "zel", "mo", "ra", "fen",
    "ul", "ix", "pa", "ter", "go", "ska", "vin", "lo", "dra", "me", "ost",
]  # fmt: skip
# attribute -> (passage template, question template, answer values)
ATTRIBUTES = {
    "city": ("{p} lives in {v} .", "where does {p} live ?", 40),
    "year": ("{p} was born in {v} .", "when was {p} born ?", 40),
    "job": ("{p} works as a {v} .", "what does {p} work as ?", 24),
    "pet": ("{p} keeps a {v} as a pet .", "what pet does {p} keep ?", 16),
}


@dataclass(frozen=True)
class Fact:
    passage_id: str
    passage: str
    question: str
    answer: str
    person: int


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts))


def make_facts(people: int, seed: int = 0) -> list[Fact]:
    """``4 * people`` facts about ``people`` distinct fictional people."""
    rng = random.Random(f"rag-kb-{seed}")
    values = {
        "city": sorted({_word(rng, 3) for _ in range(200)})[: ATTRIBUTES["city"][2]],
        "year": [str(1700 + 7 * i) for i in range(ATTRIBUTES["year"][2])],
        "job": sorted({_word(rng, 2) + "er" for _ in range(200)})[: ATTRIBUTES["job"][2]],
        "pet": sorted({_word(rng, 2) + "ling" for _ in range(200)})[: ATTRIBUTES["pet"][2]],
    }
    # first names and surnames from shared pools: every name word occurs in training (a word
    # seen only in held-out questions would keep its random embedding), and a person is told
    # apart by the pair, as people are
    pool = max(8, int((2 * people) ** 0.5) + 1)
    firsts = sorted({_word(rng, 2) for _ in range(20 * pool)})[:pool]
    lasts = sorted({_word(rng, 3) for _ in range(20 * pool)} - set(firsts))[:pool]
    pairs = [f"{a} {b}" for a in firsts for b in lasts]
    if len(pairs) < people:
        raise ValueError(f"only {len(pairs)} distinct names for {people} people")
    names = rng.sample(pairs, people)
    facts = []
    for i, name in enumerate(names):
        for attr, (passage, question, _) in ATTRIBUTES.items():
            value = rng.choice(values[attr])
            facts.append(
                Fact(
                    f"{i}-{attr}",
                    passage.format(p=name, v=value),
                    question.format(p=name),
                    value,
                    i,
                )
            )
    return facts


def write_base(folder: Path, people: int, train_people: int, seed: int = 0) -> dict[str, str]:
    """``passages.jsonl``, ``train.jsonl``, ``held_out.jsonl`` and a word-level ``tokenizer/``
    under ``folder``; returns their paths by name."""
    facts = make_facts(people, seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {n: str(folder / f"{n}.jsonl") for n in ("passages", "train", "held_out")}
    Path(paths["passages"]).write_text(
        "".join(json.dumps({"id": f.passage_id, "text": f.passage}) + "\n" for f in facts)
    )
    for split, keep in (("train", lambda f: f.person < train_people),
                        ("held_out", lambda f: f.person >= train_people)):  # fmt: skip
        rows = [
            {"question": f.question, "answer": f.answer, "passage_id": f.passage_id}
            for f in facts
            if keep(f)
        ]
        Path(paths[split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["tokenizer"] = str(write_tokenizer(folder / "tokenizer", facts))
    return paths


def write_tokenizer(folder: Path, facts: list[Fact]) -> Path:
    """A word-level Hugging Face tokenizer over every word of the base and the prompt format."""
    from splice.hf import HFTokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = sorted({w for f in facts for w in f"{f.passage} {f.question}".split()})
    fixed = ["question:", "answer:", *[f"({i})" for i in range(1, 10)]]  # splice_rag's prompt
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*specials, *fixed, *words]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    HFTokenizer(tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(folder)
    return folder


__all__ = ["ATTRIBUTES", "Fact", "make_facts", "write_base", "write_tokenizer"]
