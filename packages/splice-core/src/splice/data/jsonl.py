"""Read SFT data from JSON Lines files.

Two line formats:

* prompt/completion: ``{"prompt": "...", "completion": "...", "answer": "..."}``
  (``answer`` optional; defaults to the stripped completion, the reference that
  exact-match evaluation compares against);
* chat: ``{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", ...}]}``,
  turned into a prompt/completion pair by ``splice.data.chat`` (only the last
  assistant message is trained on).

Blank lines are skipped. A malformed line raises ``ValueError`` starting with
``"<file>:<line>:"`` and saying what was wrong (not UTF-8, bad JSON, missing key, wrong
type); a file with no example at all is an error naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from splice.data.chat import SIMPLE_TEMPLATE, ChatTemplate
from splice.data.examples import Example

Format = Literal["auto", "prompt_completion", "chat"]
T = TypeVar("T")


def _objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, JSON object)`` for each non-blank line; errors name file and line."""
    with open(path, "rb") as f:  # decoded per line, so a bad byte is reported by line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                    f"column {exc.start + 1}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise ValueError(f"missing key {key!r} (keys present: {sorted(obj)})")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def prompt_completion_example(obj: dict[str, Any]) -> Example:
    """One ``{"prompt", "completion", "answer"?}`` object -> ``Example``."""
    prompt, completion = _string(obj, "prompt"), _string(obj, "completion")
    assert prompt is not None and completion is not None
    answer = _string(obj, "answer", required=False)
    return Example(prompt, completion, completion.strip() if answer is None else answer)


def chat_example(obj: dict[str, Any], template: ChatTemplate = SIMPLE_TEMPLATE) -> Example:
    """One ``{"messages": [...]}`` object -> ``Example`` (see ``splice.data.chat``)."""
    if "messages" not in obj:
        raise ValueError(f"missing key 'messages' (keys present: {sorted(obj)})")
    prompt, completion = template.prompt_completion(obj["messages"])
    return Example(prompt, completion, completion.strip())


def parse_jsonl_lines(
    path: str | Path, parse: Callable[[dict[str, Any]], T]
) -> list[tuple[int, T]]:
    """``(line number, parse(object))`` for every non-blank line of a JSONL file.

    Raises:
        ValueError: starting ``"<file>:<line>:"`` for a line that is not UTF-8, not a JSON
            object, or that ``parse`` refuses; ``"<file>: no examples"`` for an empty file.
    """
    out = []
    for lineno, obj in _objects(path):
        try:
            out.append((lineno, parse(obj)))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not out:
        raise ValueError(f"{path}: no examples (the file is empty or has only blank lines)")
    return out


def read_prompt_completion(path: str | Path) -> list[Example]:
    """All examples of a prompt/completion JSONL file."""
    return [ex for _, ex in parse_jsonl_lines(path, prompt_completion_example)]


def read_chat(path: str | Path, *, template: ChatTemplate = SIMPLE_TEMPLATE) -> list[Example]:
    """All examples of a chat JSONL file, rendered with ``template``."""
    return [ex for _, ex in parse_jsonl_lines(path, lambda obj: chat_example(obj, template))]


def read_jsonl_lines(
    path: str | Path, *, format: Format = "auto", template: ChatTemplate = SIMPLE_TEMPLATE
) -> list[tuple[int, Example]]:
    """``(line number, example)`` for every example of a file (so checks can name the line)."""
    if format == "prompt_completion":
        return parse_jsonl_lines(path, prompt_completion_example)
    if format == "chat":
        return parse_jsonl_lines(path, lambda obj: chat_example(obj, template))
    if format != "auto":
        raise ValueError(f"format must be 'auto', 'prompt_completion' or 'chat', got {format!r}")

    def parse(obj: dict[str, Any]) -> Example:
        return chat_example(obj, template) if "messages" in obj else prompt_completion_example(obj)

    return parse_jsonl_lines(path, parse)


def read_jsonl(
    path: str | Path, *, format: Format = "auto", template: ChatTemplate = SIMPLE_TEMPLATE
) -> list[Example]:
    """Read either format; ``"auto"`` decides per line (``messages`` key -> chat)."""
    return [ex for _, ex in read_jsonl_lines(path, format=format, template=template)]


__all__ = [
    "chat_example",
    "parse_jsonl_lines",
    "prompt_completion_example",
    "read_chat",
    "read_jsonl",
    "read_jsonl_lines",
    "read_prompt_completion",
]
