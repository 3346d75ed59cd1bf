"""Evaluation: metrics (numpy), diagnostics, robustness transforms and adversarial attacks.

Importing the package registers every metric in `METRICS` (primary and advanced); diagnostics,
robustness and adversarial modules (torch, librosa, matplotlib) are imported on demand.
"""

from pianolab.evaluate import advanced_metrics as _advanced  # noqa: F401  (registers metrics)
from pianolab.evaluate.metrics import METRICS, Metric, MetricResult, compute_metrics

__all__ = ["METRICS", "Metric", "MetricResult", "compute_metrics"]
