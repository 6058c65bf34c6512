"""Integrated gradients (Captum) on image pixels and on the note's token embeddings.

Memory stays bounded when the number of steps grows: Captum evaluates the ``n_steps`` interpolated inputs in chunks
of ``internal_batch_size`` (the forward/backward never holds more than that many copies), and the attributions of the
chunks are summed. ``benchmarks/explain_memory.py`` measures peak memory at 50 vs 500 steps.

- Pixels: :class:`captum.attr.IntegratedGradients` from a baseline image (default: the image blurred, which removes
  small lesions but keeps the anatomy; ``"zeros"`` gives the black image) to the input, text fixed.
- Text: :class:`captum.attr.LayerIntegratedGradients` on the encoder's word-embedding layer, from [PAD] embeddings to
  the real ones, with positions, segment ids and the attention mask unchanged; a token's attribution is the sum over
  its embedding dimensions. Special tokens keep their ids in the baseline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerIntegratedGradients

from clinmm.explain._forward import ImageToLogits, TextToLogits
from clinmm.models.classifier import ClinmmModel, ModelInputs

__all__ = ["integrated_gradients_image", "integrated_gradients_text", "blur_baseline"]


def blur_baseline(image: torch.Tensor, *, sigma: float = 8.0) -> torch.Tensor:
    """A strongly blurred copy of ``image`` (B, 1, H, W): removes lesion-sized detail, keeps overall brightness."""
    radius = int(3 * sigma)
    xs = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))  # (B, 1, H + 2r, W)
    x = F.conv2d(x, k.view(1, 1, -1, 1))  # (B, 1, H, W)
    return x


def integrated_gradients_image(model: ClinmmModel, inputs: ModelInputs, *, label_index: int, n_steps: int = 50,
                               internal_batch_size: int = 16, baseline: str = "blur") -> np.ndarray:
    """Pixel attributions of one study for one label.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one, image present.
        label_index: which logit to explain.
        n_steps: integration steps (Riemann / Gauss–Legendre points, Captum's default method).
        internal_batch_size: interpolated images per forward/backward pass (bounds memory; None = all at once).
        baseline: ``blur`` or ``zeros``.

    Returns:
        (H, W) signed attribution over the whole model input (sums to ≈ logit(input) − logit(baseline)).
    """
    if inputs.image.shape[0] != 1 or not bool(inputs.image_present[0]):
        raise ValueError("integrated_gradients_image explains one study with an image at a time")
    if baseline not in ("blur", "zeros"):
        raise ValueError(f"integrated_gradients_image: baseline must be 'blur' or 'zeros', got {baseline!r}")
    wrapper = ImageToLogits(model=model, inputs=inputs).eval()
    image = inputs.image.to(next(model.parameters()).device).float()  # (1, 1, H, W)
    base = blur_baseline(image) if baseline == "blur" else torch.zeros_like(image)
    ig = IntegratedGradients(wrapper)
    with torch.enable_grad():
        attr = ig.attribute(image, baselines=base, target=label_index, n_steps=n_steps,
                            internal_batch_size=internal_batch_size)  # (1, 1, H, W)
    return attr[0].sum(0).detach().cpu().numpy()  # (H, W)


def _word_embeddings(model: ClinmmModel) -> torch.nn.Module:
    enc = model.text_encoder.model
    emb = getattr(enc, "embeddings", None)
    layer = getattr(emb, "word_embeddings", None) if emb is not None else None
    if layer is None:
        layer = enc.get_input_embeddings()
    return layer


def integrated_gradients_text(model: ClinmmModel, inputs: ModelInputs, *, label_index: int, n_steps: int = 50,
                              internal_batch_size: int = 16, pad_id: int = 0) -> np.ndarray:
    """Token attributions of one study's note for one label.

    Args:
        model: the classifier (eval mode).
        inputs: the study as a batch of one, note present.
        label_index: which logit to explain.
        n_steps: integration steps.
        internal_batch_size: interpolated notes per forward/backward pass (bounds memory).
        pad_id: the tokenizer's pad id (the baseline token).

    Returns:
        (T,) signed attribution per KEPT token in reading order (the order of ``Prediction.text_spans``).
    """
    if inputs.input_ids.shape[0] != 1 or not bool(inputs.text_present[0]):
        raise ValueError("integrated_gradients_text explains one study with a note at a time")
    wrapper = TextToLogits(model=model, inputs=inputs).eval()
    device = next(model.parameters()).device
    ids = inputs.input_ids.to(device)  # (1, K, L)
    am = inputs.attention_mask.to(device)  # (1, K, L)
    keep = inputs.keep.to(device)  # (1, K, L)
    tok = model.text_encoder.tokenizer
    special = set(int(i) for i in (getattr(tok, "all_special_ids", None) or []))
    is_special = torch.zeros_like(ids, dtype=torch.bool)
    for sid in special:
        is_special |= ids == sid
    base_ids = torch.where(is_special | (am == 0), ids, torch.full_like(ids, pad_id))  # (1, K, L)
    lig = LayerIntegratedGradients(wrapper, _word_embeddings(model))
    with torch.enable_grad():
        attr = lig.attribute(ids, baselines=base_ids, additional_forward_args=(am, keep), target=label_index,
                             n_steps=n_steps, internal_batch_size=internal_batch_size)
    # The text encoder runs only the active chunks, trimmed to their longest real length: (A, l, H) → per token.
    per_token = attr.sum(-1)  # (A, l) or (1, K, L)
    k, length = ids.shape[1], ids.shape[2]
    full = torch.zeros(k, length, device=per_token.device, dtype=per_token.dtype)
    active = am[0].sum(1) > 0  # (K,)
    if per_token.dim() == 2:
        full[active, : per_token.shape[1]] = per_token
    else:
        full = per_token.reshape(k, length)
    return full[keep[0]].detach().cpu().numpy()  # (T,)
