"""Fusion of image and text tokens into per-label logits.

``cross_attention`` (default): one learned query per label attends, with one multi-head attention layer and a
separate softmax per modality, over the image tokens and over the note tokens (each with a modality embedding), plus a
learned stand-in token per modality that is visible only when that modality is missing. Its attention, read as each
token's Shapley share of a label's logit (:meth:`CrossAttentionFusion.token_relevance`), is the explanation. Baselines:
``concat``, ``gated``, ``image_only``, ``text_only``. Every module takes key-padding masks; padding never reaches a
logit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from clinmm.config import FusionConfig, RelevanceGame
from clinmm.errors import ConfigError

__all__ = ["FusionOutput", "build_fusion", "CrossAttentionFusion", "ConcatFusion", "GatedFusion",
           "UnimodalFusion", "masked_mean", "masked_max", "MeanMaxPool", "FUSION_METHODS",
           "prefix_mean_max", "shapley_orderings", "SHAPLEY_PERMUTATIONS"]

FUSION_METHODS = ("cross_attention", "concat", "gated", "image_only", "text_only")
SHAPLEY_PERMUTATIONS = 32
"""Orderings the token Shapley values are sampled from (per study, in reversed pairs) where a caller names none: the
relevance every explanation shows."""


@dataclass
class FusionOutput:
    """What a fusion module returns.

    Args:
        logits: (B, C) per-label logits.
        attention: (B, C, Ni + Lt) attention of each label query over image then text tokens (cross_attention only).
        missing_attention: (B, C, 2) attention mass on the missing-image / missing-text stand-in tokens.
        modality_share: (B, C, 2) share of (image, text) in the decision: attention mass per modality for
            cross_attention, the gate values for gated; None for concat and unimodal fusions.
        relevance: (B, C, Ni + Lt) signed contribution of each token to each label's logit: its Shapley value when
            the players are the modality's tokens the attention can see (cross_attention with
            ``relevance=True`` only; see :meth:`CrossAttentionFusion.token_relevance`). A modality's values add up to
            the logit minus the logit with that modality missing.
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
        separate_note_attention: read the note with label queries, key normalisation and attention weights of its
            own instead of those that read the image (and without a modality embedding, which only tells the two
            apart where they share them). Then everything that reads the note is in :meth:`note_parameters`, so
            ``train.note_branch_epochs`` can hold the note's reading while the image's trains on; with the shared
            attention a held note branch still drifts with it.
        note_pool: also read the note as ``text_only`` does — the masked mean and max of its tokens, projected
            (:class:`MeanMaxPool`) — and add that vector to every label's note summary. A missing note gives the
            pool of nothing (the projection's bias), beside the stand-in.
        image_pool: the same for the image: the masked mean and max of its tokens, added to every label's image
            summary, so that what the whole image says reaches the head without the label query having to attend
            to some token that carries it.
    """

    def __init__(self, *, num_labels: int, dim: int, heads: int, dropout: float,
                 separate_note_attention: bool = False, note_pool: bool = False, image_pool: bool = False) -> None:
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
        self.separate_note_attention = separate_note_attention
        if separate_note_attention:
            self.note_queries = nn.Parameter(torch.randn(num_labels, dim) * 0.02)  # (C, D)
            self.note_key_norm = nn.LayerNorm(dim)
            self.note_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.note_pool = MeanMaxPool(dim=dim) if note_pool else None
        self.image_pool = MeanMaxPool(dim=dim) if image_pool else None

    def reader(self, modality: int) -> tuple[torch.Tensor, nn.LayerNorm, nn.MultiheadAttention]:
        """The (C, D) label queries, key normalisation and attention that read modality 0 (image) or 1 (note)."""
        if modality == 1 and self.separate_note_attention:
            return self.note_queries, self.note_key_norm, self.note_attn
        return self.queries, self.key_norm, self.attn

    def keys(self, modality: int, tokens: torch.Tensor, stand_in: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens of one modality and its (B, 1, D) stand-in → (B, N+1, D) normalised keys, stand-in last."""
        _, norm, _ = self.reader(modality)
        own = modality == 1 and self.separate_note_attention  # an attention of its own needs no modality embedding
        return norm(torch.cat([tokens if own else tokens + self.modality[modality], stand_in], dim=1))

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
                *, relevance: bool = False, image_game: RelevanceGame = "visible",
                text_game: RelevanceGame = "visible", text_relevance: bool = True,
                permutations: int = SHAPLEY_PERMUTATIONS) -> FusionOutput:
        """Fuse.

        Args:
            img: (B, Ni, D) image tokens; img_mask: (B, Ni) True where valid (all False: image missing).
            txt: (B, Lt, D) text tokens; txt_mask: (B, Lt) True where valid (all False: note missing).
            relevance: also return each token's signed contribution to each label's logit (its Shapley value, see
                :meth:`token_relevance`).
            image_game: which game the image tokens' Shapley values are of (see :meth:`token_relevance`).
            text_game: the same for the note's tokens.
            text_relevance: with ``relevance``, also compute the note tokens' values (False: left at 0, for callers
                that read the image's only; the note's game is most of the cost).
            permutations: orderings sampled per study for the Shapley values (:meth:`token_relevance`).
        """
        b, ni, _ = img.shape
        lt = txt.shape[1]
        img_present = img_mask.any(1)  # (B,)
        txt_present = txt_mask.any(1)  # (B,)
        stand_in = self.missing.unsqueeze(0).expand(b, -1, -1)  # (B, 2, D)
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)  # (B, C, D)
        # One softmax per modality (its tokens, or its stand-in when missing): a long note cannot take the attention
        # a one-token nodule needs, and each label reads a summary of both modalities side by side.
        img_keys = self.keys(0, img, stand_in[:, :1])  # (B, Ni+1, D)
        txt_keys = self.keys(1, txt, stand_in[:, 1:])  # (B, Lt+1, D)
        img_valid = torch.cat([img_mask, (~img_present)[:, None]], dim=1)  # (B, Ni+1)
        txt_valid = torch.cat([txt_mask, (~txt_present)[:, None]], dim=1)  # (B, Lt+1)
        note_queries, _, note_attn = self.reader(1)
        out_i, wh_i = self.attn(queries, img_keys, img_keys, key_padding_mask=~img_valid, need_weights=True,
                                average_attn_weights=False)  # (B, C, D), (B, H, C, Ni+1)
        out_t, wh_t = note_attn(note_queries.unsqueeze(0).expand(b, -1, -1), txt_keys, txt_keys,
                                key_padding_mask=~txt_valid, need_weights=True,
                                average_attn_weights=False)  # (B, C, D), (B, H, C, Lt+1)
        w_i, w_t = wh_i.mean(1), wh_t.mean(1)  # (B, C, Ni+1), (B, C, Lt+1)
        if self.note_pool is not None:
            out_t = out_t + self.note_pool(txt, txt_mask)[:, None, :]  # (B, C, D): the pooled reading, every label
        if self.image_pool is not None:
            out_i = out_i + self.image_pool(img, img_mask)[:, None, :]  # (B, C, D)
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
            with torch.no_grad():
                rel_i = self.token_relevance(queries, img_keys, img_valid, out_t, image=True, game=image_game,
                                             pool_tokens=img, permutations=permutations)  # (B, C, Ni)
                rel_t = (self.token_relevance(queries, txt_keys, txt_valid, out_i, image=False, game=text_game,
                                              pool_tokens=txt, permutations=permutations) if text_relevance
                         else torch.zeros(b, rel_i.shape[1], lt, dtype=rel_i.dtype, device=rel_i.device))  # (B, C, Lt)
            rel = torch.cat([rel_i, rel_t], dim=-1).to(logits.dtype)  # (B, C, Ni+Lt)
        return FusionOutput(logits=logits, attention=attention, missing_attention=stand_ins, modality_share=share,
                            relevance=rel)

    def note_parameters(self) -> list[nn.Parameter]:
        """Parameters only the note path uses: the projection of its summary and, with ``separate_note_attention``,
        the attention that reads it; the rest is shared."""
        params = list(self.mix_text.parameters())
        if self.separate_note_attention:
            params += [self.note_queries, *self.note_key_norm.parameters(), *self.note_attn.parameters()]
        if self.note_pool is not None:
            params += list(self.note_pool.parameters())
        return params

    def _head(self, queries: torch.Tensor, out_i: torch.Tensor, out_t: torch.Tensor) -> torch.Tensor:
        """(B, C, D) queries and per-modality attention outputs → (B, C) logits. Each label's row is computed
        on its own (no mixing across labels)."""
        h = self.norm1(queries + self.drop(self.mix_image(out_i) + self.mix_text(out_t)))
        h = self.norm2(h + self.ffn(h))  # (B, C, D)
        return (h * self.head_weight).sum(-1) + self.head_bias  # (B, C)

    def token_relevance(self, queries: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor,
                        other_out: torch.Tensor, *, image: bool, permutations: int = SHAPLEY_PERMUTATIONS,
                        max_prefixes: int = 4096, seed: int = 0, game: RelevanceGame = "visible",
                        pool_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Each key token's Shapley value for each label's logit: the players are this modality's tokens, the other
        modality is held as it is, and a coalition's value is the fused logit when only its tokens pass their content.

        Per head the attention output is a weighted mean of the value vectors, and the two games differ in what an
        absent token does:

        - ``"visible"`` (default): an absent token is hidden from the attention, whose weights renormalise over the
          rest, ``o_h(S) = Σ_{k∈S} e_hk V_h(k) / Σ_{k∈S} e_hk`` (``e = exp(score)``). Tokens that carry the same
          information share the credit.
        - ``"replace"``: the attention weights stay those of the whole input and an absent token passes the
          stand-in's value instead of its own, ``o_h(S) = V_h(stand-in) + Σ_{k∈S} w_hk (V_h(k) − V_h(stand-in))``. A
          token is credited with what it carried at the weight the query gave it.
          Measured against ``"visible"`` on three models (docs/explanations.md, ninth session): better on one
          demo-set model, worse on both 4,000-study models; kept for comparison.

        In both the output for every prefix of an ordering of the tokens is a cumulative sum, and the fusion head turns
        each prefix into a logit; the empty set is the modality missing (its stand-in's output). A token's value is
        its mean marginal change of the logit over
        orderings: all of them when there are at most ``permutations`` (exact), otherwise ``permutations`` random
        ones in reversed pairs, drawn per study from ``seed`` (a study gets the same values in any batch), and fewer
        for a long note so that orderings × tokens stays within ``max_prefixes`` (each prefix is one pass of the head;
        at least one pair). The values add up exactly to the logit minus the logit with the modality missing.

        With ``note_pool`` (``image_pool``) the coalition also sets the pooled reading: the mean and max over the
        coalition's tokens (cumulative over a prefix as well), whatever the game — an absent token is left out of the
        pool, and the empty set pools nothing, as a missing modality does.

        Unlike the gradient at the output (attention × gradient, Chefer et al., 2021) this needs no linearisation of
        the head, which normalises (LayerNorm) and saturates; unlike hiding one token at a time it gives two mentions
        that say the same thing a share each instead of nearly nothing. A negated mention the query reads gets a
        negative value.

        Args:
            queries: (B, C, D) the label queries (the head's residual; the attention projects the reader's own,
                :meth:`reader`).
            keys: (B, N+1, D) the (normalised) keys of one modality, its stand-in last.
            valid: (B, N+1) the keys the attention could see (only the stand-in when the modality is missing).
            other_out: (B, C, D) the other modality's attention output (held fixed).
            image: whether ``keys`` are the image's (the head takes the image output first).
            permutations: orderings sampled per study (even; all orderings when there are fewer).
            max_prefixes: bound on orderings × tokens per study and modality (the cost).
            seed: seed of the sampled orderings.
            game: ``"replace"`` or ``"visible"``, as above.
            pool_tokens: (B, N, D) this modality's tokens before key normalisation, for the pooled reading (used
                only where this modality is pooled: ``note_pool`` / ``image_pool``).

        Returns:
            (B, C, N) Shapley value per label and token (0 for padding and for a missing modality).
        """
        if game not in get_args(RelevanceGame):
            raise ValueError(f"token_relevance: game must be one of {get_args(RelevanceGame)}, got {game!r}")
        b, n1, d = keys.shape
        c = queries.shape[1]
        read_queries, _, attn = self.reader(0 if image else 1)
        heads, dh = attn.num_heads, d // attn.num_heads
        w_q, w_k, w_v = attn.in_proj_weight.split(d)
        b_q, b_k, b_v = attn.in_proj_bias.split(d) if attn.in_proj_bias is not None else (None, None, None)
        q_all = F.linear(read_queries, w_q, b_q).view(c, heads, dh).double()  # (C, H, dh): projected once

        def head(q: torch.Tensor, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            """This modality's attention output ``own`` beside ``other`` → logits (the head takes the image first)."""
            return self._head(q, own, other) if image else self._head(q, other, own)

        out = torch.zeros(b, c, n1 - 1, dtype=torch.float32, device=keys.device)
        for i in range(b):  # one study at a time: its (N, C, D) prefix outputs stay small
            idx = torch.nonzero(valid[i, :-1]).flatten()  # the modality's visible tokens (none when it is missing)
            n = int(idx.numel())
            if n == 0:
                continue
            k_i = keys[i, idx]  # (n, D)
            kh = F.linear(k_i, w_k, b_k).view(n, heads, dh).double()  # (n, H, dh)
            values = F.linear(k_i, w_v, b_v).view(n, heads, dh).double()  # (n, H, dh)
            scores = torch.einsum("che,nhe->hcn", q_all, kh) / dh**0.5  # (H, C, n)
            e = torch.exp(scores - scores.amax(-1, keepdim=True))  # (H, C, n); double: no underflow in practice
            v_stand = F.linear(keys[i, -1:], w_v, b_v)  # (1, D): the stand-in's value
            missing = attn.out_proj(v_stand).expand(1, c, d)  # stand-in output
            pool = self.image_pool if image else self.note_pool
            pooled = pool is not None and pool_tokens is not None
            if pooled:  # the pool of nothing, as for a missing modality
                missing = missing + pool.proj(keys.new_zeros(1, 1, 2 * d))
            empty = head(queries[i : i + 1], missing, other_out[i : i + 1])[0]  # (C,)
            gen = torch.Generator().manual_seed(seed)  # per study: its orderings do not depend on the batch
            orders = shapley_orderings(n, min(permutations, max(2, max_prefixes // n)), gen).to(keys.device)
            k = orders.shape[0]  # (K, n): every ordering at once
            if game == "visible":
                e_o = e[..., orders].permute(2, 0, 1, 3)  # (K, H, C, n)
                num = torch.einsum("khcn,knhe->knche", e_o, values[orders]).cumsum(1)  # (K, n, C, H, dh)
                den = e_o.cumsum(-1).permute(0, 3, 2, 1)[..., None]  # (K, n, C, H, 1)
                prefix_mix = num / den  # (K, n, C, H, dh)
            else:  # "replace": the whole input's weights; a token outside the prefix passes the stand-in's value
                w_o = (e / e.sum(-1, keepdim=True))[..., orders].permute(2, 0, 1, 3)  # (K, H, C, n)
                vs = v_stand.view(heads, dh).double()  # (H, dh)
                moved = torch.einsum("khcn,knhe->knche", w_o, (values - vs)[orders])  # (K, n, C, H, dh)
                prefix_mix = vs + moved.cumsum(1)  # (K, n, C, H, dh)
            prefix_out = attn.out_proj(prefix_mix.reshape(k * n, c, d).to(keys.dtype))  # (K·n, C, D)
            if pooled:  # the mean and max over each prefix's tokens
                tok = pool_tokens[i, idx].double()[orders]  # (K, n, D)
                stats = prefix_mean_max(tok).to(keys.dtype)  # (K, n, 2D)
                prefix_out = prefix_out + pool.proj(stats).reshape(k * n, 1, d)
            prefix = head(queries[i].expand(k * n, c, d), prefix_out, other_out[i].expand(k * n, c, d))
            prefix = prefix.double().view(k, n, c)  # (K, n, C): the logit after each prefix
            before = torch.cat([empty.double().expand(k, 1, c), prefix[:, :-1]], dim=1)  # (K, n, C)
            phi = torch.zeros(n, c, dtype=torch.float64, device=keys.device)
            phi.index_add_(0, orders.flatten(), (prefix - before).reshape(k * n, c))  # (n, C)
            out[i, :, idx] = (phi / k).T.float()
        return out


def prefix_mean_max(tokens: torch.Tensor) -> torch.Tensor:
    """(K, n, D) tokens in K orderings → (K, n, 2D): the mean and the max over each ordering's first 1…n tokens (what
    :class:`MeanMaxPool` pools from each prefix, before its projection)."""
    n = tokens.shape[1]
    mean = tokens.cumsum(1) / torch.arange(1, n + 1, device=tokens.device, dtype=tokens.dtype)[None, :, None]
    return torch.cat([mean, tokens.cummax(1).values], dim=-1)


def shapley_orderings(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """(K, n): all orderings of ``n`` items when there are at most ``count``, else ``count`` random ones in reversed
    pairs."""
    if math.factorial(n) <= count:
        return torch.tensor(list(itertools.permutations(range(n))))
    half = torch.stack([torch.randperm(n, generator=gen) for _ in range(max(1, count // 2))])  # (K/2, n)
    return torch.cat([half, half.flip(1)])


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
        return CrossAttentionFusion(num_labels=num_labels, dim=config.dim, heads=config.heads, dropout=config.dropout,
                                    separate_note_attention=config.separate_note_attention,
                                    note_pool=config.note_pool, image_pool=config.image_pool)
    if config.method == "concat":
        return ConcatFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout)
    if config.method == "gated":
        return GatedFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout)
    if config.method in ("image_only", "text_only"):
        return UnimodalFusion(num_labels=num_labels, dim=config.dim, dropout=config.dropout,
                              modality=config.method.split("_")[0])
    raise ConfigError(f"fusion.method: expected one of {list(FUSION_METHODS)}, got {config.method!r}")
