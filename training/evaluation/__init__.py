"""Frozen-encoder evaluation: linear probe, kNN and region quality on the scenes set."""

from .evaluate import TASKS, evaluate, markdown_table, write_results
from .probes import knn_accuracy, knn_predict, linear_probe
from .region_quality import centred_box, evaluate_regions, precision_and_iou

__all__ = [
    "TASKS",
    "centred_box",
    "evaluate",
    "evaluate_regions",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "markdown_table",
    "precision_and_iou",
    "write_results",
]
