"""Data: tokenizers, built-in synthetic tasks, JSONL readers, collators."""
