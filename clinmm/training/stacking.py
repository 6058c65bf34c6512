"""Fit a model's head stack (:mod:`clinmm.models.head_stack`) on the validation split.

Per presence pattern and label, a logistic regression of the label on the heads' logits — the fusion head, the
auxiliary image head and the auxiliary text head, each where the model has it and the pattern has its modality — with
an L2 penalty ``‖w‖² / 2C`` and **non-negative weights** (the bias is free). Non-negativity is Breiman's constraint for
stacked regressions (Machine Learning 24, 1996): without it a small validation split fits negative weights to heads
that carry nothing for a label (on the 150-study demo validation split: −1.06 on the image head for fever), which
the explanations would then show as evidence against.
The "both" pattern is fitted on the validation studies that have both modalities; "no_image" on those with a note,
scored with every image removed; "no_text" on those with an image, scored with every note removed. A label with fewer
than ``min_per_class`` known positives or negatives in a pattern keeps the identity (the fusion head alone) there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize

from clinmm.data.dataset import Sample
from clinmm.metrics import known_auroc
from clinmm.models.classifier import ClinmmModel
from clinmm.models.head_stack import FEATURES, PATTERNS
from clinmm.training.predict import predict_outputs

__all__ = ["HeadLogits", "StackFit", "head_logits", "fit_head_stack", "fit_nonnegative_logistic"]

logger = logging.getLogger(__name__)


@dataclass
class HeadLogits:
    """Each head's (N, C) logits on a list of studies (None where the model has no such head)."""

    fusion: np.ndarray
    image_head: np.ndarray | None
    text_head: np.ndarray | None


@dataclass
class StackFit:
    """What :func:`fit_head_stack` fitted (``as_dict`` goes into the model card).

    Args:
        coefficients: {pattern: {label: {"fusion", "image_head", "text_head", "bias", "n"}}}, or ``None`` for a
            label left at the identity.
        val_auroc: {pattern: {label: {"fusion_head": AUROC, "stack": AUROC}}} on the studies it was fitted on
            (in-sample for the stack).
    """

    coefficients: dict = field(default_factory=dict)
    val_auroc: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"coefficients": self.coefficients, "val_auroc_in_sample": self.val_auroc}


def head_logits(model: ClinmmModel, samples: list[Sample], *, image_size: int, pad_id: int, device: torch.device,
                batch_size: int = 64, drop_image: bool = False, drop_text: bool = False) -> HeadLogits:
    """Every head's logits in eval mode; ``drop_image`` / ``drop_text`` remove that modality from every study."""
    out = predict_outputs(model, samples, fields=("head_logits", "image_logits", "text_logits"),
                          image_size=image_size, pad_id=pad_id, device=device, batch_size=batch_size,
                          drop_image=drop_image, drop_text=drop_text)
    return HeadLogits(fusion=out["head_logits"], image_head=out["image_logits"], text_head=out["text_logits"])


def fit_nonnegative_logistic(x: np.ndarray, y: np.ndarray, *, regularisation: float = 1.0,
                             ) -> tuple[np.ndarray, float]:
    """Logistic regression with weights ≥ 0: minimise ``Σ log(1 + e^z) − y·z + ‖w‖² / 2C`` with ``z = x·w + b``
    (L-BFGS-B, bounds on ``w`` only), from ``w = (1, 0, …)``: the first column alone.

    Args:
        x: (n, k) features; y: (n,) labels in {0, 1}.
        regularisation: ``C``.

    Returns:
        (k,) weights and the bias.
    """
    n, k = x.shape

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k]
        z = x @ w + b  # (n,)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.dot(w, w) / regularisation)
        grad = np.append(x.T @ (p - y) + w / regularisation, np.sum(p - y))
        return loss, grad

    start = np.zeros(k + 1)
    start[0] = 1.0
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * k + [(None, None)])
    return result.x[:k], float(result.x[k])


def fit_head_stack(model: ClinmmModel, samples: list[Sample], *, image_size: int, pad_id: int,
                   device: torch.device, regularisation: float = 1.0, min_per_class: int = 5) -> StackFit:
    """Fit ``model.head_stack`` on ``samples`` (the validation split) in place and return what was fitted.

    Args:
        model: a trained model with a head stack (``fusion.head_stack``).
        samples: validation studies with labels (NaN = unknown).
        regularisation: ``C`` of :func:`fit_nonnegative_logistic` (inverse L2 strength).
        min_per_class: fewest known positives and negatives a label needs in a pattern to be fitted there.
    """
    if model.head_stack is None:
        raise ValueError("fit_head_stack: the model has no head stack (fusion.head_stack is off)")
    stack = model.head_stack
    weight = torch.zeros_like(stack.weight)
    weight[..., 0] = 1.0
    bias = torch.zeros_like(stack.bias)
    y = np.stack([s.labels for s in samples]) if samples else np.zeros((0, len(model.labels)))
    has_image = np.array([s.image is not None for s in samples], dtype=bool)
    has_note = np.array([s.note_text is not None for s in samples], dtype=bool)
    fit = StackFit()
    for p, pattern in enumerate(PATTERNS[:3]):  # "neither" stays the identity
        drop_image, drop_text = pattern == "no_image", pattern == "no_text"
        rows = {"both": has_image & has_note, "no_image": has_note, "no_text": has_image}[pattern]
        chosen = [s for s, r in zip(samples, rows) if r]
        logits = head_logits(model, chosen, image_size=image_size, pad_id=pad_id, device=device,
                             drop_image=drop_image, drop_text=drop_text)
        columns = [0] + ([1] if logits.image_head is not None and not drop_image else []) \
            + ([2] if logits.text_head is not None and not drop_text else [])
        feats = [logits.fusion, logits.image_head, logits.text_head]
        y_p = y[rows]
        fit.coefficients[pattern], fit.val_auroc[pattern] = {}, {}
        for c, label in enumerate(model.labels):
            known = ~np.isnan(y_p[:, c])
            pos = int(y_p[known, c].sum())
            if pos < min_per_class or int(known.sum()) - pos < min_per_class:
                fit.coefficients[pattern][label] = None
                logger.warning("head stack: %s, %s: %d positives and %d negatives known, fewer than %d: left at "
                               "the fusion head alone", pattern, label, pos, int(known.sum()) - pos, min_per_class)
                continue
            x = np.stack([feats[j][:, c] for j in columns], axis=1)[known]  # (n, k)
            coef_k, intercept = fit_nonnegative_logistic(x, y_p[known, c], regularisation=regularisation)
            for k, j in enumerate(columns):
                weight[p, c, j] = float(coef_k[k])
            bias[p, c] = intercept
            coef = {FEATURES[j]: round(float(weight[p, c, j]), 4) for j in range(len(FEATURES))}
            fit.coefficients[pattern][label] = {**coef, "bias": round(float(bias[p, c]), 4), "n": int(known.sum())}
            fit.val_auroc[pattern][label] = {
                "fusion_head": round(known_auroc(y_p[:, c], logits.fusion[:, c]), 4),
                "stack": round(known_auroc(y_p[known, c], x @ coef_k + intercept), 4)}
            logger.info("head stack: %s, %s: %s; validation AUROC %.3f (fusion head) -> %.3f (stack, in sample)",
                        pattern, label, ", ".join(f"{k} {v:+.2f}" for k, v in coef.items()),
                        fit.val_auroc[pattern][label]["fusion_head"], fit.val_auroc[pattern][label]["stack"])
    stack.weight.copy_(weight)
    stack.bias.copy_(bias)
    stack.fitted.fill_(True)
    return fit
