"""Autoregressive generation with a pre-allocated KV cache."""
