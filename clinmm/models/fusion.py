"""Fusion of image and text tokens into per-label logits.

``cross_attention`` (default): one learned query per label attends, in a single multi-head attention layer, over all
image and text tokens (each with a modality embedding) plus two learned stand-in tokens that are visible only when
their modality is missing. Its attention weights are the explanation. Baselines: ``concat``, ``gated``,
``image_only``, ``text_only``. Every module takes key-padding masks; padding never reaches a logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clinmm.config import FusionConfig
from clinmm.errors import ConfigError

__all__ = ["FusionOutput", "build_fusion", "CrossAttentionFusion", "ConcatFusion", "GatedFusion",
           "UnimodalFusion", "masked_mean", "masked_max", "MeanMaxPool", "FUSION_METHODS"]

FUSION_METHODS = ("cross_attention", "concat", "gated", "image_only", "text_only")


@dataclass
class FusionOutput:
    """What a fusion module returns.

    Args:
        logits: (B, C) per-label logits.
        attention: (B, C, Ni + Lt) attention of each label query over image then text tokens (cross_attention only).
        missing_attention: (B, C, 2) attention mass on the missing-image / missing-text stand-in tokens.
        modality_share: (B, C, 2) share of (image, text) in the decision: attention mass per modality for
            cross_attention, the gate values for gated; None for concat and unimodal fusions.
        relevance: (B, C, Ni + Lt) signed first-order contribution of each token to each label's logit: attention
            × gradient (cross_attention with ``relevance=True`` only; see :meth:`CrossAttentionFusion.forward`).
    """

    logits: torch.Tensor
    attention: torch.Tensor | None = None
    missing_attention: torch.Tensor | None = None
    modality_share: torch.Tensor | None = None
    relevance: torch.Tensor | None = None


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of tokens (B, N, D) over positions where mask (B, N) is True → (B, D); zeros where none is."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, N, 1)
    total = (tokens * weights).sum(1)  # (B, D)
    count = weights.sum(1).clamp_min(1.0)  # (B, 1)
    return total / count


def masked_max(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of tokens (B, N, D) over positions where mask (B, N) is True → (B, D); zeros where none is."""
    filled = tokens.masked_fill(~mask.unsqueeze(-1), torch.finfo(tokens.dtype).min)  # (B, N, D)
    out = filled.max(dim=1).values  # (B, D)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


class MeanMaxPool(nn.Module):
    """Masked mean and masked max of tokens, concatenated and projected back to D.

    The max keeps a small, local finding (a nodule covering 1 of 64 image tokens) that a mean alone would dilute.

    Args:
        dim: token width D.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), mask (B, N) → (B, D)."""
        return self.proj(torch.cat([masked_mean(tokens, mask), masked_max(tokens, mask)], dim=-1))


class _MissingAwarePool(nn.Module):
    """Mean+max pooling per modality, with a learned stand-in vector where the modality is missing."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(2, dim))
        nn.init.normal_(self.missing, std=0.02)
        self.image_pool = MeanMaxPool(dim=dim)
        self.text_pool = MeanMaxPool(dim=dim)

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        img_present = img_mask.any(1, keepdim=True)  # (B, 1)
        txt_present = txt_mask.any(1, keepdim=True)  # (B, 1)
        img_vec = torch.where(img_present, self.image_pool(img, img_mask), self.missing[0])  # (B, D)
        txt_vec = torch.where(txt_present, self.text_pool(txt, txt_mask), self.missing[1])  # (B, D)
        return img_vec, txt_vec


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))


class CrossAttentionFusion(nn.Module):
    """Label-query cross-attention over the image tokens and, separately, the note tokens (each with a stand-in).

    Args:
        num_labels: C, one learned query per label.
        dim: token width D (image and text tokens are projected to D before fusion).
        heads: attention heads; ``dim`` must be divisible by it.
        dropout: dropout on the attention output and in the feed-forward block.
    """

    def __init__(self, *, num_labels: int, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ConfigError(f"fusion.dim ({dim}) is not a multiple of fusion.heads ({heads})")
        self.queries = nn.Parameter(torch.randn(num_labels, dim) * 0.02)  # (C, D)
        self.modality = nn.Parameter(torch.randn(2, dim) * 0.02)  # (2, D): image, text
        self.missing = nn.Parameter(torch.randn(2, dim) * 0.02)  # (2, D): stand-ins for a missing modality
        self.key_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.mix_image = nn.Linear(dim, dim)  # the two per-modality summaries → one vector
        self.mix_text = nn.Linear(dim, dim, bias=False)
        self.head_weight = nn.Parameter(torch.randn(num_labels, dim) * 0.02)  # (C, D): one linear head per label
        self.head_bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
                *, relevance: bool = False) -> FusionOutput:
        """Fuse.

        Args:
            img: (B, Ni, D) image tokens; img_mask: (B, Ni) True where valid (all False: image missing).
            txt: (B, Lt, D) text tokens; txt_mask: (B, Lt) True where valid (all False: note missing).
            relevance: also return each token's signed contribution to each label's logit (attention × gradient,
                see :meth:`token_relevance`); needs autograd, so call it outside ``torch.inference_mode``.
        """
        b, ni, _ = img.shape
        lt = txt.shape[1]
        img_present = img_mask.any(1)  # (B,)
        txt_present = txt_mask.any(1)  # (B,)
        stand_in = self.missing.unsqueeze(0).expand(b, -1, -1)  # (B, 2, D)
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)  # (B, C, D)
        # One softmax per modality (its tokens, or its stand-in when missing): a long note cannot take the attention
        # a one-token nodule needs, and each label reads a summary of both modalities side by side.
        img_keys = self.key_norm(torch.cat([img + self.modality[0], stand_in[:, :1]], dim=1))  # (B, Ni+1, D)
        txt_keys = self.key_norm(torch.cat([txt + self.modality[1], stand_in[:, 1:]], dim=1))  # (B, Lt+1, D)
        img_valid = torch.cat([img_mask, (~img_present)[:, None]], dim=1)  # (B, Ni+1)
        txt_valid = torch.cat([txt_mask, (~txt_present)[:, None]], dim=1)  # (B, Lt+1)
        out_i, wh_i = self.attn(queries, img_keys, img_keys, key_padding_mask=~img_valid, need_weights=True,
                                average_attn_weights=False)  # (B, C, D), (B, H, C, Ni+1)
        out_t, wh_t = self.attn(queries, txt_keys, txt_keys, key_padding_mask=~txt_valid, need_weights=True,
                                average_attn_weights=False)  # (B, C, D), (B, H, C, Lt+1)
        w_i, w_t = wh_i.mean(1), wh_t.mean(1)  # (B, C, Ni+1), (B, C, Lt+1)
        logits = self._head(queries, out_i, out_t)  # (B, C)
        part_i = self.mix_image(out_i)  # (B, C, D): the image summary's contribution
        part_t = self.mix_text(out_t)  # (B, C, D): the note summary's contribution
        # modality share: each summary's contribution norm, 0 for a missing modality (its stand-in is not evidence)
        c_i = part_i.norm(dim=-1) * img_present[:, None]  # (B, C)
        c_t = part_t.norm(dim=-1) * txt_present[:, None]  # (B, C)
        total = (c_i + c_t).clamp_min(1e-12)
        share = torch.stack([c_i / total, c_t / total], dim=-1)  # (B, C, 2)
        # per-token attention within each modality, scaled by that modality's share (sums to ≤ 1 per label)
        attention = torch.cat([w_i[:, :, :ni] * share[..., :1], w_t[:, :, :lt] * share[..., 1:]], dim=-1)
        stand_ins = torch.cat([w_i[:, :, ni:], w_t[:, :, lt:]], dim=-1)  # (B, C, 2): 1 where that modality is missing
        rel = None
        if relevance:
            g_i, g_t = self._output_gradients(queries, out_i, out_t)  # (B, C, D) each
            rel_i = self.token_relevance(img_keys, wh_i, g_i)[:, :, :ni] * img_present[:, None, None]  # (B, C, Ni)
            rel_t = self.token_relevance(txt_keys, wh_t, g_t)[:, :, :lt] * txt_present[:, None, None]  # (B, C, Lt)
            rel = torch.cat([rel_i, rel_t], dim=-1)  # (B, C, Ni+Lt)
        return FusionOutput(logits=logits, attention=attention, missing_attention=stand_ins, modality_share=share,
                            relevance=rel)

    def note_parameters(self) -> list[nn.Parameter]:
        """Parameters only the note path uses (the projection of its summary); the rest is shared."""
        return list(self.mix_text.parameters())

    def _head(self, queries: torch.Tensor, out_i: torch.Tensor, out_t: torch.Tensor) -> torch.Tensor:
        """(B, C, D) queries and per-modality attention outputs → (B, C) logits. Each label's row is computed
        on its own (no mixing across labels), which :meth:`_output_gradients` relies on."""
        h = self.norm1(queries + self.drop(self.mix_image(out_i) + self.mix_text(out_t)))
        h = self.norm2(h + self.ffn(h))  # (B, C, D)
        return (h * self.head_weight).sum(-1) + self.head_bias  # (B, C)

    def _output_gradients(self, queries: torch.Tensor, out_i: torch.Tensor, out_t: torch.Tensor,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """d logit_c / d out_{·,c} for every label c at once: (B, C, D) for the image and the note summary.

        Labels do not mix after the attention (:meth:`_head` works row by row), so one backward pass of the summed
        logits gives every label's own gradient."""
        with torch.enable_grad():
            oi = out_i.detach().float().requires_grad_(True)
            ot = out_t.detach().float().requires_grad_(True)
            logits = self._head(queries.detach().float(), oi, ot)  # (B, C)
            g_i, g_t = torch.autograd.grad(logits.sum(), (oi, ot))
        return g_i.to(out_i.dtype), g_t.to(out_t.dtype)

    def token_relevance(self, keys: torch.Tensor, head_weights: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Attention × gradient: each key token's signed first-order contribution to each label's logit.

        The attention output is ``out_c = W_o · concat_h(Σ_j a_hcj · V_h(k_j)) + b_o``, so token j adds
        ``Σ_h a_hcj · W_o^h V_h(k_j)`` to it; its relevance is that vector dotted with the gradient of the logit
        with respect to ``out_c`` (gradient × input at the attention output; the per-head sum of attention ×
        attention-gradient of Chefer et al., 2021, without clipping the heads). The relevances of a modality add up
        to ``grad · (out_c − b_o)``.

        Args:
            keys: (B, N, D) the (normalised) keys the attention read.
            head_weights: (B, H, C, N) attention per head.
            grad: (B, C, D) d logit_c / d out_c.

        Returns:
            (B, C, N) relevance per label and token (positive: pushes the label up).
        """
        b, n, d = keys.shape
        heads = self.attn.num_heads
        w_v = self.attn.in_proj_weight[2 * d :]  # (D, D)
        b_v = self.attn.in_proj_bias[2 * d :] if self.attn.in_proj_bias is not None else None
        values = F.linear(keys, w_v, b_v).view(b, n, heads, d // heads)  # (B, N, H, dh)
        w_o = self.attn.out_proj.weight.view(d, heads, d // heads)  # (D, H, dh)
        grad_h = torch.einsum("bcd,dhe->bche", grad, w_o)  # (B, C, H, dh): gradient pulled back per head
        per_head = torch.einsum("bche,bnhe->bhcn", grad_h, values)  # (B, H, C, N)
        return (head_weights * per_head).sum(1)  # (B, C, N)


class ConcatFusion(nn.Module):
    """Concatenate the pooled image and text vectors and classify with an MLP."""

    def __init__(self, *, num_labels: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.pool = _MissingAwarePool(dim=dim)
        self.mlp = _mlp(2 * dim, dim, num_labels, dropout)

    def note_parameters(self) -> list[nn.Parameter]:
        """Parameters only the note path uses."""
        return list(self.pool.text_pool.parameters())

    def forward(self, img, img_mask, txt, txt_mask) -> FusionOutput:  # noqa: D102 - shapes as in CrossAttentionFusion
        img_vec, txt_vec = self.pool(img, img_mask, txt, txt_mask)  # (B, D) each
        return FusionOutput(logits=self.mlp(torch.cat([img_vec, txt_vec], dim=-1)))


class GatedFusion(nn.Module):
    """Learned per-sample modality gates weight the pooled image and text vectors before an MLP."""

    def __init__(self, *, num_labels: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.pool = _MissingAwarePool(dim=dim)
        self.gate = nn.Linear(2 * dim, 2)
        self.mlp = _mlp(dim, dim, num_labels, dropout)

    def note_parameters(self) -> list[nn.Parameter]:
        """Parameters only the note path uses."""
        return list(self.pool.text_pool.parameters())

    def forward(self, img, img_mask, txt, txt_mask) -> FusionOutput:  # noqa: D102
        img_vec, txt_vec = self.pool(img, img_mask, txt, txt_mask)  # (B, D) each
        gates = torch.sigmoid(self.gate(torch.cat([img_vec, txt_vec], dim=-1)))  # (B, 2)
        fused = gates[:, :1] * img_vec + gates[:, 1:] * txt_vec  # (B, D)
        logits = self.mlp(fused)  # (B, C)
        share = (gates / gates.sum(-1, keepdim=True)).unsqueeze(1).expand(-1, logits.shape[1], -1)  # (B, C, 2)
        return FusionOutput(logits=logits, modality_share=share)


class UnimodalFusion(nn.Module):
    """Baseline that reads one modality only (``image_only`` or ``text_only``)."""

    def __init__(self, *, num_labels: int, dim: int, dropout: float, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.pool = _MissingAwarePool(dim=dim)
        self.mlp = _mlp(dim, dim, num_labels, dropout)

    def note_parameters(self) -> list[nn.Parameter]:
        """Every parameter for ``text_only`` (it reads nothing else), none for ``image_only``."""
        return list(self.parameters()) if self.modality == "text" else []

    def forward(self, img, img_mask, txt, txt_mask) -> FusionOutput:  # noqa: D102
        img_vec, txt_vec = self.pool(img, img_mask, txt, txt_mask)
        vec = img_vec if self.modality == "image" else txt_vec
        logits = self.mlp(vec)
        share = torch.zeros(*logits.shape, 2, dtype=logits.dtype, device=logits.device)
        share[..., 0 if self.modality == "image" else 1] = 1.0
        return FusionOutput(logits=logits, modality_share=share)


def build_fusion(config: FusionConfig, *, num_labels: int) -> nn.Module:
    """The fusion module named by ``config.method``."""
    if config.method == "cross_attention":
        return CrossAttentionFusion(num_labels=num_labels, dim=config.dim, heads=config.heads, dropout=config.dropout)
    if config.method == "concat":
        return ConcatFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout)
    if config.method == "gated":
        return GatedFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout)
    if config.method in ("image_only", "text_only"):
        return UnimodalFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout,
                              modality=config.method.split("_")[0])
    raise ConfigError(f"fusion.method: expected one of {list(FUSION_METHODS)}, got {config.method!r}")
