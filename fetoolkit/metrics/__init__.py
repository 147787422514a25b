"""Evaluation metrics; see :mod:`fetoolkit.metrics.verification`."""
