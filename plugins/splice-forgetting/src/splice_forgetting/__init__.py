"""splice-forgetting: L2-SP, EWC and KL-to-reference regularizers against catastrophic forgetting.

Configs live in ``splice_forgetting.configs`` (torch-free); the regularizers in
``l2sp``, ``ewc`` and ``kl``. Each implements ``splice.interfaces.Regularizer``.
"""
