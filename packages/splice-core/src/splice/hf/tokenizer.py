"""A Hugging Face ``tokenizer.json`` behind splice's Tokenizer protocol.

Reads ``tokenizer.json`` with the ``tokenizers`` library, the special tokens from
``tokenizer_config.json`` (falling back to ``special_tokens_map.json``), and a
chat template from ``tokenizer_config.json["splice_chat_template"]`` (see
``splice.hf.chat``). ``encode`` never applies the tokenizer's own post-processor:
BOS/EOS are added only when asked, so prompts and SFT targets are built the same
way for every model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splice.hf.chat import ChatTemplate, chat_template

_SPECIALS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_text(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "content" in value:
        return str(value["content"])
    raise ValueError(f"special token {value!r}: expected a string or an object with 'content'")


class HFTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` with splice's ``encode``/``decode``/``*_id`` API.

    Args:
        tokenizer: the loaded ``tokenizers.Tokenizer``.
        bos_token, eos_token, pad_token, unk_token: special token strings (must be in the vocab).
        chat_template: how ``apply_chat_template`` renders conversations, if the model has one.
        jinja_template: the Hugging Face Jinja ``chat_template`` string, kept only to be saved
            back and to explain why it cannot be rendered.

    Raises:
        ValueError: a special token that is not in the vocabulary (names the field).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: ChatTemplate | None = None,
        jinja_template: Any = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = {
            "bos_token": bos_token,
            "eos_token": eos_token,
            "pad_token": pad_token,
            "unk_token": unk_token,
        }
        self._ids: dict[str, int | None] = {}
        for field, text in self.special_tokens.items():
            if text is None:
                self._ids[field] = None
                continue
            tid = tokenizer.token_to_id(text)
            if tid is None:
                raise ValueError(f"{field}={text!r} is not in the tokenizer's vocabulary")
            self._ids[field] = tid
        self.chat_template = chat_template
        self.jinja_template = jinja_template

    # loading / saving ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> HFTokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json`` / ``special_tokens_map.json``)."""
        from tokenizers import Tokenizer

        directory = Path(path)
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: not found")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust error type is not importable
            raise ValueError(f"{file}: cannot be read by the tokenizers library ({exc})") from None
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # later wins
            extra = directory / name
            if extra.is_file():
                config.update(json.loads(extra.read_text()))
        template = config.get("splice_chat_template")
        return cls(
            tok,
            **{f: _token_text(config.get(f)) for f in _SPECIALS},
            chat_template=chat_template(template) if template is not None else None,
            jinja_template=config.get("chat_template"),
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (readable by transformers too)."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **{k: v for k, v in self.special_tokens.items() if v is not None},
        }
        if self.jinja_template is not None:
            config["chat_template"] = self.jinja_template
        if self.chat_template is not None:
            config["splice_chat_template"] = self.chat_template.model_dump()
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    # the Tokenizer protocol ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary including added tokens."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def bos_id(self) -> int | None:
        """None when the model has no BOS token (e.g. Qwen2); ``encode(bos=True)`` then adds nothing."""
        return self._ids["bos_token"]

    @property
    def eos_id(self) -> int | None:
        return self._ids["eos_token"]

    @property
    def pad_id(self) -> int:
        """The pad token, else the EOS token (the usual choice for decoder-only models)."""
        pad = (
            self._ids["pad_token"] if self._ids["pad_token"] is not None else self._ids["eos_token"]
        )
        if pad is None:
            raise ValueError("tokenizer has neither pad_token nor eos_token; set pad_token")
        return pad

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``; special tokens written in the text map to their ids.

        Raises:
            ValueError: ``eos=True`` but the tokenizer has no EOS token.
        """
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        if bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if eos:
            if self.eos_id is None:
                raise ValueError("encode(eos=True): the tokenizer has no eos_token")
            ids = [*ids, self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special))

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)  # type: ignore[no-any-return]

    # chat ---------------------------------------------------------------------------------
    def render_chat(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False
    ) -> str:
        """The conversation as text through ``chat_template`` (see ``splice.hf.chat``).

        Raises:
            ValueError: the tokenizer has no splice chat template.
        """
        if self.chat_template is None:
            hint = (
                (
                    " (tokenizer_config.json has a Jinja 'chat_template', which splice does not run;"
                    " add a 'splice_chat_template' preset name or object)"
                )
                if self.jinja_template
                else ""
            )
            raise ValueError("this tokenizer has no chat template" + hint)
        return self.chat_template.render(
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.special_tokens["bos_token"] or "",
            eos_token=self.special_tokens["eos_token"] or "",
        )

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False
    ) -> list[int]:
        """Token ids of ``render_chat(...)`` (no extra BOS: put ``{bos_token}`` in the template)."""
        return self.encode(self.render_chat(messages, add_generation_prompt=add_generation_prompt))
