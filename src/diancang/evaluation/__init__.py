"""Evaluation: strict entity-level metrics, the continual result matrix, and run reports.

Submodules: :mod:`~diancang.evaluation.metrics`, :mod:`~diancang.evaluation.matrix`,
:mod:`~diancang.evaluation.report` (imported explicitly; nothing is loaded here).
"""
