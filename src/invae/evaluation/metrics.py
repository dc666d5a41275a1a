"""How close an estimate is to the truth: precision matrices, graphs and signals.

Letters: Λ (p, p) the true precision, Λ̂ its estimate; z (n, p) true signals, ẑ estimates.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ..model.mixture import GaussianMixture, match_components

__all__ = ["relative_frobenius_error", "stein_loss", "edge_scores", "signal_mse", "coverage", "mixture_errors"]


def relative_frobenius_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``‖Λ̂ − Λ‖_F / ‖Λ‖_F``."""
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def stein_loss(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Stein's (entropy) loss of a precision estimate: ``tr(Λ̂Σ) − log det(Λ̂Σ) − p``, Σ = Λ⁻¹.

    It is 2 KL(N(0, Λ⁻¹) ‖ N(0, Λ̂⁻¹)) ≥ 0, zero iff Λ̂ = Λ.
    """
    product = np.linalg.solve(truth, estimate)  # Σ Λ̂: same trace and determinant as Λ̂Σ
    sign, logdet = np.linalg.slogdet(product)
    if sign <= 0:
        return float("inf")
    return float(np.trace(product) - logdet - len(truth))


def edge_scores(estimate: np.ndarray, truth: np.ndarray, *, threshold: float = 1e-8) -> dict[str, float]:
    """Graph recovery over the off-diagonal pairs i < j.

    An edge is predicted where ``|Λ̂_ij| > threshold`` and true where ``Λ_ij ≠ 0``.
    Returns precision, recall and F1 of the predicted edge set, and the AUROC of the score
    ``|Λ̂_ij|`` (NaN when the true graph is empty or complete).
    """
    upper = np.triu_indices_from(truth, k=1)
    true_edge = truth[upper] != 0
    score = np.abs(estimate[upper])
    predicted = score > threshold
    tp = float(np.sum(predicted & true_edge))
    precision = tp / predicted.sum() if predicted.any() else 0.0
    recall = tp / true_edge.sum() if true_edge.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    auroc = roc_auc_score(true_edge, score) if 0 < true_edge.sum() < true_edge.size else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "auroc": float(auroc)}


def signal_mse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``(1/np) Σ_ij (ẑ_ij − z_ij)²``."""
    return float(np.mean((estimate - truth) ** 2))


def coverage(mean: np.ndarray, std: np.ndarray, truth: np.ndarray, *, level: float = 0.9) -> float:
    """Share of ``z_ij`` inside the central marginal credible interval ``μ_ij ± Φ⁻¹((1+level)/2) s_ij``."""
    half_width = norm.ppf(0.5 + level / 2) * std
    return float(np.mean(np.abs(truth - mean) <= half_width))


def mixture_errors(estimate: GaussianMixture, truth: GaussianMixture) -> dict[str, float]:
    """How far a fitted mixture is from the true one, components matched by their means
    (:func:`invae.model.mixture.match_components`; labels are arbitrary):

    ``precision_error`` ``‖Λ̂ − Λ‖_F / ‖Λ‖_F`` over the stacked (K, p, p) precisions;
    ``means_error`` the same over the (K, p) means; ``weights_error`` ``max_k |π̂_k − π_k|``.
    """
    order = match_components(estimate, truth)
    as_numpy = {name: value.detach().cpu().double().numpy() for name, value in estimate.state().items()}
    true = {name: value.detach().cpu().double().numpy() for name, value in truth.state().items()}
    return {"precision_error": relative_frobenius_error(as_numpy["precisions"][order], true["precisions"]),
            "means_error": relative_frobenius_error(as_numpy["means"][order], true["means"]),
            "weights_error": float(np.abs(as_numpy["weights"][order] - true["weights"]).max())}
