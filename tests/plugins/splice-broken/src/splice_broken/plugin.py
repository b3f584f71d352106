"""Raises on import, the way a plugin with a missing dependency or a bug would."""

raise RuntimeError("splice-broken fails on import on purpose\n(this second line must not be shown)")
