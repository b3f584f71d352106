"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Nothing here ever unpickles: ``torch.load`` is not used anywhere in splice.
"""

from splice.checkpoint.atomic import atomic_dir, atomic_write_text
from splice.checkpoint.integrity import CorruptCheckpointError, verify_checkpoint
from splice.checkpoint.manager import (
    CheckpointManager,
    frozen_base,
    load_model_weights,
    load_trainable_weights,
    save_model_weights,
    save_trainable_weights,
)

__all__ = [
    "CheckpointManager",
    "CorruptCheckpointError",
    "atomic_dir",
    "atomic_write_text",
    "frozen_base",
    "load_model_weights",
    "load_trainable_weights",
    "save_model_weights",
    "save_trainable_weights",
    "verify_checkpoint",
]
