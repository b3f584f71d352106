"""Deprecated alias of ``splice.rl.reference`` (moved in 0.1.0): importing it warns (``DeprecationWarning``).

Removed in splice-core 0.3.0 (docs/api-policy.md).
"""

from splice.deprecation import alias_module

alias_module(__name__, "splice.rl.reference", removed_in="splice-core 0.3.0")
