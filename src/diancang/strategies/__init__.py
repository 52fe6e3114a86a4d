"""Continual-learning strategies: small plugins on the learner's hooks, picked by name."""

from diancang.strategies.base import Strategy, StepContext, strategies

__all__ = ["StepContext", "Strategy", "strategies"]
