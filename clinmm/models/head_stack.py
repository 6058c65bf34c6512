"""Late fusion of the model's own heads: the output logit is a per-label logistic-regression stack of the fusion
head and the auxiliary image-only and text-only heads, fitted on the validation split after training.

Why: the fusion head reads both modalities through one attention layer and one small head, and on the findings only
one modality carries it reads that modality a little worse than a model trained on it alone (the 4,000-study set:
docs/ablation.md, runs S11b and S12). The auxiliary heads, trained jointly on the same encoders, read each modality as
the single-modality models do. Stacking the three on held-out data lets each label take from each head what it
adds — the same rule for every fusion method, including the single-modality baselines (their head and auxiliary head).

One set of weights per presence pattern (both modalities, image missing, note missing): a missing modality's head
gets weight 0 and the other weights are fitted with that modality removed, so a study without a note is scored by
weights fitted on studies without a note. With neither modality the output is the fusion head's. An unfitted stack is
the identity (the fusion head alone), so a checkpoint saved without one loads and scores as before.
"""

from __future__ import annotations

import torch
from torch import nn

from clinmm.models.fusion import SHAPLEY_PERMUTATIONS, MeanMaxPool, prefix_mean_max, shapley_orderings

__all__ = ["HeadStack", "PATTERNS", "presence_pattern", "pooled_head_relevance"]

# Presence patterns, in the order of HeadStack.weight's first axis.
PATTERNS = ("both", "no_image", "no_text", "neither")
FEATURES = ("fusion", "image_head", "text_head")


def presence_pattern(image_present: torch.Tensor, text_present: torch.Tensor) -> torch.Tensor:
    """(B,) bool, (B,) bool → (B,) long index into :data:`PATTERNS`."""
    return (~image_present).long() + 2 * (~text_present).long()


class HeadStack(nn.Module):
    """Per-label linear stack of (fusion head, image head, text head) logits, one set of weights per presence pattern.

    Buffers (saved with the weights): ``weight`` (4, C, 3) and ``bias`` (4, C) over :data:`PATTERNS` ×
    labels × :data:`FEATURES`; ``fitted`` (0-dim bool). Set by :func:`clinmm.training.stacking.fit_head_stack`.

    Args:
        num_labels: C.
    """

    def __init__(self, *, num_labels: int) -> None:
        super().__init__()
        weight = torch.zeros(len(PATTERNS), num_labels, len(FEATURES))
        weight[..., 0] = 1.0  # identity: the fusion head alone
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.zeros(len(PATTERNS), num_labels))
        self.register_buffer("fitted", torch.tensor(False))

    def coefficients(self, image_present: torch.Tensor, text_present: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's weights (B, C, 3) and bias (B, C) for its presence pattern."""
        p = presence_pattern(image_present, text_present)  # (B,)
        return self.weight[p], self.bias[p]

    def forward(self, fused: torch.Tensor, image_logits: torch.Tensor | None, text_logits: torch.Tensor | None,
                image_present: torch.Tensor, text_present: torch.Tensor) -> torch.Tensor:
        """(B, C) fusion-head logits and auxiliary-head logits (None: the model has no such head) → (B, C)."""
        w, b = self.coefficients(image_present, text_present)  # (B, C, 3), (B, C)
        out = w[..., 0] * fused + b
        if image_logits is not None:
            out = out + w[..., 1] * image_logits
        if text_logits is not None:
            out = out + w[..., 2] * text_logits
        return out.to(fused.dtype)


def pooled_head_relevance(pool: MeanMaxPool, head: nn.Linear, tokens: torch.Tensor, mask: torch.Tensor, *,
                          permutations: int = SHAPLEY_PERMUTATIONS, max_prefixes: int = 4096,
                          seed: int = 0) -> torch.Tensor:
    """Each token's Shapley value for each label's logit of an auxiliary head ``head(pool(tokens of S))``.

    The players are the visible tokens; a coalition's value is the head on the mean and max over its tokens, and the
    empty coalition pools nothing (the head on the pool of no token, as for a missing modality). Orderings as in
    :meth:`clinmm.models.fusion.CrossAttentionFusion.token_relevance`: exact for few tokens, else sampled in reversed
    pairs from ``seed`` per study. The values add up exactly to ``head(pool(all)) − head(pool(none))``.

    Args:
        pool: the head's mean-max pool.
        head: the (D → C) linear head.
        tokens: (B, N, D) projected tokens.
        mask: (B, N) True where a token is visible.

    Returns:
        (B, C, N) float32, 0 where a token is not visible.
    """
    b, n_all, d = tokens.shape
    c = head.out_features
    out = torch.zeros(b, c, n_all, dtype=torch.float32, device=tokens.device)
    with torch.no_grad():
        empty = head(pool.proj(tokens.new_zeros(1, 2 * d)))[0].double()  # (C,)
        for i in range(b):
            idx = torch.nonzero(mask[i]).flatten()
            n = int(idx.numel())
            if n == 0:
                continue
            gen = torch.Generator().manual_seed(seed)
            orders = shapley_orderings(n, min(permutations, max(2, max_prefixes // n)), gen).to(tokens.device)
            tok = tokens[i, idx].double()[orders]  # (K, n, D)
            stats = prefix_mean_max(tok).to(tokens.dtype)  # (K, n, 2D)
            prefix = head(pool.proj(stats)).double()  # (K, n, C)
            before = torch.cat([empty.expand(prefix.shape[0], 1, c), prefix[:, :-1]], dim=1)  # (K, n, C)
            phi = torch.zeros(n, c, dtype=torch.float64, device=tokens.device)
            phi.index_add_(0, orders.flatten(), (prefix - before).reshape(-1, c))  # (n, C)
            out[i, :, idx] = (phi / orders.shape[0]).T.float()
    return out
