"""Agreement between two signals (a measured mouth opening and its truth, say): correlation and slope."""

from __future__ import annotations

import numpy as np


def slope(measured: np.ndarray, reference: np.ndarray) -> float:
    """Least-squares slope of ``measured`` on ``reference`` (with an intercept): how much one moves per unit
    of the other."""
    a, b = np.asarray(measured, np.float64).ravel(), np.asarray(reference, np.float64).ravel()
    b = b - b.mean()
    denominator = (b * b).sum()
    return float(((a - a.mean()) * b).sum() / denominator) if denominator > 0 else 0.0


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0
