"""Regional compilation: ``torch.compile`` each transformer block of a model in place.

Blocks of one model run the same code, so the compiler traces one block and reuses the
result for every layer: compile time stays at seconds rather than minutes, and the
state dict keeps its keys (``Module.compile`` swaps the call, not the module). What
compiling buys is fusion of the elementwise work between the matmuls (norms, RoPE,
SwiGLU gating, residual adds, dtype casts); the matmuls and attention are the same
kernels either way.

Only training steps run compiled. Generation and evaluation change shapes at every
decode step, which would recompile each time, so they run eagerly (``eager``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from splice.interfaces import Block


def compile_blocks(model: nn.Module) -> int:
    """Compile every ``splice.interfaces.Block`` inside ``model``; return how many.

    Raises:
        ValueError: the model has no splice ``Block`` (nothing this option can compile).
    """
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if not blocks:
        raise ValueError(
            f"train.compile=True: {type(model).__name__} has no splice Block to compile"
        )
    for block in blocks:
        block.compile()
    return len(blocks)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly inside this block (no tracing, no recompiles)."""
    with torch.compiler.set_stance("force_eager"):
        yield


__all__ = ["compile_blocks", "eager"]
