"""Carry the note tokens' relevance back through the text encoder's self-attention to the words it came from.

The fusion reads the encoder's *contextual* token states. A Shapley value on one of them (the relevance of
:meth:`clinmm.models.fusion.CrossAttentionFusion.token_relevance`) says how much that state moved the label's logit,
not which words of the note put the information there: after the encoder's layers of self-attention (six in MiniLM)
the state at "of" in "shortness of breath", or at the "." after "Febrile", can carry the finding. The highlighted
words are read by a clinician as *input* words, so the relevance is rolled back through the encoder (attention
rollout, Abnar & Zuidema, 2020): per layer the token mixing is ``Â = mix · mean_heads(A) + (1 − mix) · I`` (each row
sums to one; ``I`` is the residual path), and the relevance of the input tokens is ``r_in = r_out · Â_n ⋯ Â_1``.
Rolling back keeps each label's sum (the logit minus the logit without the note): what the encoder's attention sends
to any ``[CLS]`` / ``[SEP]`` lands on the first window's ``[CLS]``, the one special token fusion reads (it stands for
the note as a whole, :class:`~clinmm.text.tokenize.NoteTokenizer`), and no word shows it.

``mix`` is the weight of the attention against the residual stream. The usual 0.5 spreads the relevance too far: on
the demo set's validation split a top-3 word fell inside the evidence span less often with it (78 %, and 22 % at 0.8)
than without rollout (84 %); 0.1–0.35 pointed best (86–90 %), and the default is 0.25 (docs/explanations.md,
thirteenth session).

Overlapping chunks: every chunk is rolled back on its own, and relevance that lands on a copy of a token that fusion
does not read (``keep`` false) moves to the kept copy with the same character span, so a word's value does not depend
on which window it was read in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def roll_back_relevance(relevance: torch.Tensor, attentions: Sequence[torch.Tensor], *, attention_mask: torch.Tensor,
                        keep: torch.Tensor, offsets: torch.Tensor, mix: float) -> torch.Tensor:
    """One study's note-token relevance → relevance of the input tokens (the kept copy of each).

    Args:
        relevance: (C, K*L) relevance of every token copy (chunk-major; zero where fusion does not read a copy).
        attentions: one (K, H, L, L) self-attention per encoder layer, first layer first (rows: queries).
        attention_mask: (K, L) 1 for real tokens.
        keep: (K, L) bool, the copy of each token fusion reads.
        offsets: (K, L, 2) character span of each token (``(0, 0)`` for special tokens).
        mix: weight of the attention against the residual, ``0 ≤ mix < 1`` (0 returns ``relevance`` unchanged).

    Returns:
        (C, K*L) float32 on ``relevance``'s device: the rolled-back relevance on kept copies (zero elsewhere). A
        token copy with no kept copy of its span (a special token when no ``[CLS]`` is kept) loses what reached it.

    Raises:
        ValueError: ``mix`` outside ``[0, 1)`` or shapes that do not agree.
    """
    if not 0.0 <= mix < 1.0:
        raise ValueError(f"roll_back_relevance: mix must be in [0, 1), got {mix}")
    k, length = attention_mask.shape
    c = relevance.shape[0]
    if relevance.shape != (c, k * length) or keep.shape != (k, length) or offsets.shape != (k, length, 2):
        raise ValueError(f"roll_back_relevance: relevance {tuple(relevance.shape)}, keep {tuple(keep.shape)} and "
                         f"offsets {tuple(offsets.shape)} do not match attention_mask {tuple(attention_mask.shape)}")
    if mix == 0.0 or not attentions:
        return relevance.float()
    device = attentions[0].device
    r = relevance.to(device=device, dtype=torch.float32).view(c, k, length)  # (C, K, L)
    eye = torch.eye(length, device=device)
    m = eye.expand(k, length, length)  # (K, L, L); chunks do not attend to each other
    for layer in attentions:  # M = Â_n ⋯ Â_1: output of the last layer ← input tokens
        a = layer.float().mean(1)  # (K, L, L), rows sum to one over real keys (zeros in all-padding chunks)
        m = (mix * a + (1.0 - mix) * eye) @ m
    rolled = torch.einsum("ckl,klm->ckm", r, m)  # (C, K, L)
    flat = rolled.reshape(c, k * length).cpu()  # (C, K*L)
    keep_f = keep.reshape(-1).bool().cpu()
    real_f = attention_mask.reshape(-1).bool().cpu()
    spans = [tuple(s) for s in offsets.reshape(-1, 2).tolist()]
    kept_at = {spans[i]: i for i in torch.nonzero(keep_f).flatten().tolist()}
    for i in torch.nonzero(real_f & ~keep_f).flatten().tolist():  # a copy fusion does not read → its kept copy
        j = kept_at.get(spans[i])
        if j is not None:
            flat[:, j] += flat[:, i]
    flat[:, ~keep_f] = 0.0
    return flat.to(relevance.device)
