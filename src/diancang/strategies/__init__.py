"""Continual-learning strategies: small plugins on the learner's hooks, picked by name."""

from diancang.strategies.base import StepContext, Strategy, strategies

__all__ = ["StepContext", "Strategy", "strategies"]
