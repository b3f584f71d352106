"""Chat messages -> (prompt, completion) with a tiny, explicit template.

Each message renders as ``"{role}: {content}\\n"``; the prompt is every message before
the final assistant message, followed by the generation prefix ``"assistant: "``;
the completion is the final assistant message's content. For example::

    [{"role": "system", "content": "be brief"},
     {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}]

    prompt     = "system: be brief\\nuser: 2+2?\\nassistant: "
    completion = "4"

So earlier assistant turns are context (no loss), only the last one is trained.
Models with their own chat format can pass a different ``ChatTemplate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatTemplate:
    """How messages become text.

    Attributes:
        turn: format of one message, with ``{role}`` and ``{content}`` fields.
        generation_prefix: text that opens the assistant's reply at the end of the prompt.
    """

    turn: str = "{role}: {content}\n"
    generation_prefix: str = "assistant: "

    def render(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        """``messages`` ending with an assistant message -> ``(prompt, completion)``.

        Raises:
            ValueError: no messages, a message without a known ``role`` or string
                ``content``, or a last message that is not from the assistant.
        """
        check_messages(messages)
        *context, last = messages
        prompt = "".join(self.turn.format(role=m["role"], content=m["content"]) for m in context)
        return prompt + self.generation_prefix, str(last["content"])


SIMPLE_TEMPLATE = ChatTemplate()


def check_messages(messages: Any) -> None:
    """Raise ``ValueError`` naming the first problem of a ``messages`` list."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"'messages' must be a non-empty list, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
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


__all__ = ["ROLES", "SIMPLE_TEMPLATE", "ChatTemplate", "check_messages"]
