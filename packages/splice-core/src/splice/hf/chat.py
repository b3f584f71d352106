"""Chat templates for Hugging Face tokenizers: the same ``ChatTemplate`` as ``splice.data.chat``.

Kept as an import path (``splice.hf.chat``); see ``splice.data.chat`` for the syntax.
"""

from splice.data.chat import PRESETS, ChatTemplate, chat_template

__all__ = ["PRESETS", "ChatTemplate", "chat_template"]
