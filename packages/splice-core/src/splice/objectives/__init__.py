"""Training objectives built into the core (SFT); configs live in torch-free ``configs``."""
