"""Class activation maps on the image branch: Grad-CAM and Grad-CAM++ (MONAI ``monai.visualize``) and HiResCAM, with a
direction-preserving normaliser.

MONAI's default ``postprocessing`` (``default_normalizer``) rescales each map with ``ScaleIntensity(minv=1.0,
maxv=0.0)``: the most important region becomes 0 and the least important 1 — the map is flipped. We pass
:func:`relative_normalizer` instead: the positive part as a share relative to uniform (mean 1), monotone increasing,
no per-image min–max (``tests/explain/test_gradcam.py`` checks both the direction and MONAI's flip).

The network MONAI sees is :class:`~clinmm.explain._forward.ImageToLogits`: image → fused logits with the study's note
fixed, so the map explains the fused decision, not an image-only head.

Grad-CAM averages the gradient over the feature map before weighting the channels, which is exact only for a head that
averages the map too (global average pooling). clinmm's image tokens are read by a label query's *attention*, which
weights positions unequally, so Grad-CAM smears a one-cell nodule over every cell with similar channels (pointing game
on a 4,000-study model: 47 % for Grad-CAM, its all-zero maps counted as misses, against 90 % for HiResCAM;
docs/explanations.md). HiResCAM (Draelos & Carin, 2020) keeps the gradient where it is —
``relu(sum_k dy/dA_k * A_k)`` per position — which equals Grad-CAM for an average-pooling head and is the first-order
contribution of each position for any head.
"""

from __future__ import annotations

import torch
from monai.visualize import GradCAM, GradCAMpp

from clinmm.explain._forward import ImageToLogits
from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["CAM_METHODS", "HiResCAM", "default_target_layer", "gradcam_maps", "relative_normalizer"]


class HiResCAM(GradCAM):
    """HiResCAM (Draelos & Carin, 2020): ``relu(sum_k grad_k * A_k)`` at each position of the target layer.

    MONAI's :class:`~monai.visualize.GradCAM` with the channel weights left unaveraged: its hooks, upsampling and
    ``postprocessing`` are reused unchanged.
    """

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):  # type: ignore[override]
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        acti, grad = acti[layer_idx], grad[layer_idx]  # (B, C, *spatial) each
        return torch.relu((grad * acti).sum(1, keepdim=True))  # (B, 1, *spatial)


CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMpp, "hirescam": HiResCAM}


def relative_normalizer(x: torch.Tensor) -> torch.Tensor:
    """Per map: positive part divided by its mean (1.0 = uniform); all-zero maps stay zero. Keeps the direction.

    Args:
        x: (B, 1, *spatial) activation maps.

    Returns:
        Tensor of the same shape, ≥ 0, larger where the input was larger.
    """
    pos = torch.relu(x)
    mean = pos.flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
    return torch.where(mean > 0, pos / mean.clamp_min(1e-12), torch.zeros_like(pos))


def default_target_layer(model: ClinmmModel) -> str:
    """The image encoder's last spatial feature map (the module whose output becomes the image tokens)."""
    if model.image_encoder is None:
        raise ValueError("Grad-CAM needs an image branch; the model is text_only")
    if getattr(model.image_encoder, "is_vit", False):
        raise ValueError("Grad-CAM needs a convolutional backbone; this model uses a ViT (use attention or IG)")
    return "model.image_encoder.body"


def gradcam_maps(model: ClinmmModel, inputs: ModelInputs, *, label_indices: list[int] | None = None,
                 method: str = "gradcam", target_layer: str | None = None) -> torch.Tensor:
    """Grad-CAM maps of one study for several labels.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one (image present).
        label_indices: labels to explain (default: all).
        method: ``gradcam``, ``gradcam++`` or ``hirescam``.
        target_layer: module name inside the wrapper (default: :func:`default_target_layer`).

    Returns:
        (C', H, W) maps over the whole model input (relative to uniform, ≥ 0), in ``label_indices`` order.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"gradcam method: expected one of {list(CAM_METHODS)}, got {method!r}")
    if inputs.image.shape[0] != 1:
        raise ValueError(f"gradcam_maps explains one study at a time; got a batch of {inputs.image.shape[0]}")
    if not bool(inputs.image_present[0]):
        raise ValueError("gradcam_maps: the study has no image")
    wrapper = ImageToLogits(model=model, inputs=inputs).eval()
    cam = CAM_METHODS[method](nn_module=wrapper, target_layers=target_layer or default_target_layer(model),
                              postprocessing=relative_normalizer)
    # requires_grad on the input so the backward hooks see input gradients (quiets torch's full-backward-hook warning)
    image = inputs.image.to(next(model.parameters()).device).float().clone().requires_grad_(True)  # (1, 1, H, W)
    num = len(model.labels)
    out = []
    with torch.enable_grad():
        for c in (label_indices if label_indices is not None else range(num)):
            out.append(cam(x=image, class_idx=c)[0, 0].detach().float().cpu())  # (H, W)
    return torch.stack(out)  # (C', H, W)
