"""splice-dpo: DPO-family preference objectives for splice (DPO, IPO, hinge, conservative and
robust DPO, SimPO, ORPO, KTO), preference data, and offline pairs from a verifier."""

__version__ = "0.1.0"
