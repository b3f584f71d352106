"""splice-grpo: GRPO objective, advantage estimators and policy losses."""

__version__ = "0.1.0"
