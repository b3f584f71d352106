"""Chat messages -> text, and -> (prompt, completion) for SFT: one template type for all of splice.

A template is a ``ChatTemplate`` (or the same as JSON, e.g. in ``tokenizer_config.json``
under ``"splice_chat_template"``, or the name of a preset)::

    {"prefix": "{bos_token}",
     "messages": {"system": "<|im_start|>system\n{content}<|im_end|>\n",
                  "default": "<|im_start|>{role}\n{content}<|im_end|>\n"},
     "generation_prompt": "<|im_start|>assistant\n",
     "default_system": null, "strip_content": false, "completion": "turn"}

Rendering: ``prefix``, then each message through the format of its role (or
``"default"``), then ``generation_prompt`` when asked. A ``default_system`` message
is put first when the conversation does not start with a system message.

Placeholders, replaced in one pass: ``{content}``, ``{role}``, ``{bos_token}``,
``{eos_token}``. Any other text, braces included, is literal, and placeholders
inside message content are never expanded. There are no conditionals or loops:
a Jinja ``chat_template`` from Hugging Face is not executed; write its equivalent
here (presets: ``chatml``, ``llama3``, ``plain``, ``simple``).

For SFT, ``prompt_completion(messages)`` splits a conversation that ends with an assistant
message: the prompt is every earlier message plus the generation prompt (context, no
loss), the completion is what follows (trained on). ``completion="turn"`` keeps the
template's end-of-turn text in the completion (``"4<|im_end|>\n"``: the model learns to
close its turn, as a chat model must); ``"content"`` keeps only the message content (the
collator's EOS ends it). ``SIMPLE_TEMPLATE``, the default of JSONL chat data, is::

    [{"role": "system", "content": "be brief"},
     {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}]

    prompt     = "system: be brief\nuser: 2+2?\nassistant: "
    completion = "4"

``ChatTemplate(turn=..., generation_prefix=...)`` (one format for every role) is accepted
as a shorthand for ``messages={"default": turn}, generation_prompt=..., completion="content"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from splice.config import SpliceConfig

ROLES = ("system", "user", "assistant", "tool")

_PLACEHOLDER = re.compile(r"\{(content|role|bos_token|eos_token)\}")


class ChatTemplate(SpliceConfig):
    """Per-role format strings; see the module docstring for the syntax."""

    prefix: str = ""
    messages: dict[str, str] = Field(min_length=1)
    generation_prompt: str = ""
    default_system: str | None = None
    strip_content: bool = False
    completion: Literal["turn", "content"] = "turn"

    @model_validator(mode="before")
    @classmethod
    def _turn_shorthand(cls, data: Any) -> Any:
        """``turn`` / ``generation_prefix``: one format for every role, content completions."""
        if isinstance(data, dict) and ("turn" in data or "generation_prefix" in data):
            data = dict(data)
            data.setdefault("messages", {"default": data.pop("turn", "{role}: {content}\n")})
            data.pop("turn", None)
            data.setdefault("generation_prompt", data.pop("generation_prefix", ""))
            data.pop("generation_prefix", None)
            data.setdefault("completion", "content")
        return data

    def render(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        add_generation_prompt: bool = False,
        bos_token: str = "",
        eos_token: str = "",
    ) -> str:
        """The conversation as one string, ready to tokenize (special tokens inline).

        Args:
            messages: ``[{"role": "user", "content": "..."}, ...]``.
            add_generation_prompt: end with the header that starts the assistant's turn.

        Raises:
            ValueError: a message without role/content, or a role the template has no
                format for (and no ``"default"``).
        """
        msgs = list(messages)
        if self.default_system is not None and (not msgs or msgs[0].get("role") != "system"):
            msgs.insert(0, {"role": "system", "content": self.default_system})
        values = {"bos_token": bos_token, "eos_token": eos_token}
        out = [self._fill(self.prefix, values)]
        for i, msg in enumerate(msgs):
            if "role" not in msg or "content" not in msg:
                raise ValueError(
                    f"messages[{i}] needs 'role' and 'content', got keys {sorted(msg)}"
                )
            role = msg["role"]
            fmt = self.messages.get(role, self.messages.get("default"))
            if fmt is None:
                raise ValueError(
                    f"messages[{i}].role={role!r}: the chat template has formats for "
                    f"{sorted(self.messages)} and no 'default'"
                )
            content = msg["content"].strip() if self.strip_content else msg["content"]
            out.append(self._fill(fmt, {**values, "role": role, "content": content}))
        if add_generation_prompt:
            out.append(self._fill(self.generation_prompt, values))
        return "".join(out)

    def prompt_completion(
        self, messages: Sequence[Mapping[str, str]], *, bos_token: str = "", eos_token: str = ""
    ) -> tuple[str, str]:
        """Split a conversation ending in an assistant message for SFT: the prompt is every
        earlier message plus the generation prompt; the completion is the rest of the full
        rendering (the reply and its closing tokens, e.g. ``"4<|im_end|>\\n"``).

        Raises:
            ValueError: a malformed message list (``check_messages``), or the template renders
                the assistant turn differently from its generation prompt (no clean split).
        """
        check_messages(messages)
        if self.completion == "content":
            prompt = self.render(
                messages[:-1], add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
            )
            content = str(messages[-1]["content"])
            return prompt, content.strip() if self.strip_content else content
        full = self.render(messages, bos_token=bos_token, eos_token=eos_token)
        prompt = self.render(
            messages[:-1], add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
        if not full.startswith(prompt):
            raise ValueError(
                "generation_prompt does not match how the template renders an assistant message"
            )
        return prompt, full[len(prompt) :]

    @staticmethod
    def _fill(fmt: str, values: Mapping[str, str]) -> str:
        # One regex pass, so text substituted for {content} is never scanned again.
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), fmt)


def _chatml() -> ChatTemplate:
    return ChatTemplate(
        messages={"default": "<|im_start|>{role}\n{content}<|im_end|>\n"},
        generation_prompt="<|im_start|>assistant\n",
    )


def _llama3() -> ChatTemplate:
    turn = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
    return ChatTemplate(
        prefix="{bos_token}",
        messages={"default": turn},
        strip_content=True,
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
    )


def _plain() -> ChatTemplate:
    return ChatTemplate(messages={"default": "{role}: {content}\n"}, generation_prompt="assistant:")


def _simple() -> ChatTemplate:
    return ChatTemplate(
        messages={"default": "{role}: {content}\n"},
        generation_prompt="assistant: ",
        completion="content",
    )


PRESETS = {"chatml": _chatml, "llama3": _llama3, "plain": _plain, "simple": _simple}
SIMPLE_TEMPLATE = _simple()


def chat_template(spec: str | Mapping[str, object] | ChatTemplate) -> ChatTemplate:
    """A template from a preset name, a JSON-style dict, or a ``ChatTemplate``.

    Raises:
        ValueError: an unknown preset name (lists the presets) or an invalid dict (pydantic
            names the field).
    """
    if isinstance(spec, ChatTemplate):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown chat template preset {spec!r}; presets: {sorted(PRESETS)}")
        return PRESETS[spec]()
    return ChatTemplate.model_validate(spec)


def check_messages(messages: Any) -> None:
    """Raise ``ValueError`` naming the first problem of a ``messages`` list for SFT."""
    if not isinstance(messages, list | tuple) or not messages:
        raise ValueError(f"'messages' must be a non-empty list, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object, got {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise ValueError(
                f"messages[{i}].role must be one of {list(ROLES)}, got {m.get('role')!r}"
            )
        if not isinstance(m.get("content"), str):
            got = type(m.get("content")).__name__ if "content" in m else "nothing"
            raise ValueError(f"messages[{i}].content must be a string, got {got}")
    if messages[-1]["role"] != "assistant":
        raise ValueError(
            f"the last message must be from the assistant (it is the completion to train on), "
            f"got role {messages[-1]['role']!r}"
        )


__all__ = ["PRESETS", "ROLES", "SIMPLE_TEMPLATE", "ChatTemplate", "chat_template", "check_messages"]
