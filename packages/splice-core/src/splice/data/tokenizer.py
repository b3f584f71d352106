"""A character-level tokenizer: one id per character, plus pad/bos/eos.

Good for the built-in synthetic tasks (arithmetic, translation) where every
character matters and the vocabulary must stay tiny.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_ALPHABET = "0123456789+-*/=()?:., abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """``encode("12+3=") -> [ids]``; ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``.

    Args:
        alphabet: the characters the tokenizer knows, in id order after the specials.

    Raises:
        ValueError: encoding a character outside the alphabet (names the character).
    """

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, alphabet: str = DEFAULT_ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet has repeated characters")
        self.alphabet = alphabet
        self._to_id = {ch: i + len(self.SPECIALS) for i, ch in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIALS) + len(self.alphabet)

    @property
    def pad_id(self) -> int:
        return self.PAD

    @property
    def bos_id(self) -> int:
        return self.BOS

    @property
    def eos_id(self) -> int:
        return self.EOS

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        try:
            ids = [self._to_id[ch] for ch in text]
        except KeyError as exc:
            raise ValueError(
                f"character {exc.args[0]!r} is not in the tokenizer's alphabet"
            ) from None
        return ([self.BOS] if bos else []) + ids + ([self.EOS] if eos else [])

    def decode(self, ids: list[int], *, skip_special: bool = True) -> str:
        n = len(self.SPECIALS)
        out = []
        for i in ids:
            if i < n or i >= n + len(self.alphabet):
                # Specials, and ids past the alphabet: a model whose vocabulary is padded
                # beyond the tokenizer's can sample them (an untrained policy in RL does).
                if not skip_special:
                    out.append(self.SPECIALS[i] if i < n else f"<unk:{i}>")
                continue
            out.append(self.alphabet[i - n])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "alphabet": self.alphabet}))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("type") != "char":
            raise ValueError(f"{path}: not a char tokenizer file (type={data.get('type')!r})")
        return cls(data["alphabet"])
