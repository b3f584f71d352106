"""Deprecated alias of ``splice_mha.hf.llama`` (moved to splice-mha with the layouts whose attention it builds): importing it warns (``DeprecationWarning``).

Removed in splice-core 0.3.0 (docs/api-policy.md).
"""

from splice.deprecation import alias_module

alias_module(
    __name__, "splice_mha.hf.llama", removed_in="splice-core 0.3.0", distribution="splice-mha"
)
