"""Evaluation plots: ROC curve, confusion matrix and calibration (reliability) diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

__all__ = ["save_calibration", "save_confusion_matrix", "save_roc"]


def save_roc(labels: np.ndarray, probabilities: np.ndarray, threshold: float, path: Path, title: str) -> None:
    """ROC curve with the operating point at ``threshold`` marked."""
    fpr, tpr, _ = roc_curve(labels, probabilities)
    auc = roc_auc_score(labels, probabilities)
    predicted = probabilities >= threshold
    point_tpr = predicted[labels == 1].mean()
    point_fpr = predicted[labels == 0].mean()
    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    axis.plot(fpr, tpr, color="#1f77b4", label=f"AUC = {auc:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axis.scatter([point_fpr], [point_tpr], color="#d62728", zorder=3, label=f"threshold {threshold:.3f}")
    axis.set(xlabel="1 - specificity", ylabel="Sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_confusion_matrix(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, path: Path, title: str
) -> None:
    predicted = (probabilities >= threshold).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    for truth, guess in zip(labels, predicted, strict=True):
        matrix[truth, guess] += 1
    figure, axis = plt.subplots(figsize=(4, 3.6), dpi=120)
    sns.heatmap(
        matrix,
        annot=True,
        fmt="d",
        cmap="Blues",
        cbar=False,
        ax=axis,
        xticklabels=["no haemorrhage", "haemorrhage"],
        yticklabels=["no haemorrhage", "haemorrhage"],
    )
    axis.set(xlabel="Predicted", ylabel="Reference", title=title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_calibration(
    labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str, bins: int = 10
) -> None:
    """Observed haemorrhage rate against predicted probability, by quantile bins."""
    bins = max(2, min(bins, int(labels.size // 5) or 2))
    observed, predicted = calibration_curve(labels, probabilities, n_bins=bins, strategy="quantile")
    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    axis.plot(predicted, observed, marker="o", color="#2ca02c", label="model")
    axis.set(
        xlabel="Predicted probability", ylabel="Observed frequency", title=title, xlim=(0, 1), ylim=(0, 1)
    )
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
