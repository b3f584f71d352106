"""Deprecated alias of ``splice_forgetting.configs`` (renamed in 0.1.0): importing it warns (``DeprecationWarning``).

Removed in splice-forgetting 0.3.0 (docs/api-policy.md).
"""

from splice.deprecation import alias_module

alias_module(__name__, "splice_forgetting.configs", removed_in="splice-forgetting 0.3.0")
