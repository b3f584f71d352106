"""Import bitsandbytes with an error that says how to get it."""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = (
    "bitsandbytes is not installed; the nf4/fp4/int8 quantizers and QLoRA need it. "
    "Install the plugin with its dependencies: `uv add splice-qlora` "
    "(or `pip install splice-qlora`, which pulls bitsandbytes)"
)


def bnb() -> ModuleType:
    """The ``bitsandbytes`` module.

    Raises:
        ImportError: bitsandbytes is missing (the message says how to install it).
    """
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return bitsandbytes
