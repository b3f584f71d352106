"""splice-moe: a mixture-of-experts channel mixer for splice.

``MoEConfig`` (tag ``moe``) configures a router, routed experts stored as batched
weights, optional shared experts and the balancing terms; ``MoELayer`` is the built
module. See ``docs/concepts/moe.md``.
"""

from splice_moe.configs import MoEConfig

__all__ = ["MoEConfig"]
