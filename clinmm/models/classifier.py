"""The clinmm model: image encoder + text encoder → projections → fusion → per-label logits (+ auxiliary heads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from clinmm.config import ClinmmConfig
from clinmm.models.fusion import SHAPLEY_PERMUTATIONS, CrossAttentionFusion, FusionOutput, MeanMaxPool, build_fusion
from clinmm.models.head_stack import HeadStack, pooled_head_relevance
from clinmm.models.image import ImageEncoder
from clinmm.models.text_cache import FrozenTextCache

__all__ = ["ModelInputs", "ClinmmOutput", "ModalityAblations", "ClinmmModel"]


@dataclass
class ModelInputs:
    """A collated batch as the model reads it (see ``clinmm.data.dataset.collate``).

    Args:
        image: (B, 1, H, W) or (B, 1, D, H, W) float model input (zeros where the image is missing).
        image_present: (B,) bool.
        input_ids: (B, K, L) token ids of K note chunks (K may be 1 with an all-zero mask when every note is missing).
        attention_mask: (B, K, L) 1 for real tokens.
        keep: (B, K, L) bool, the one copy of each token across overlapping chunks that fusion attends to.
        text_present: (B,) bool.
    """

    image: torch.Tensor
    image_present: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    keep: torch.Tensor
    text_present: torch.Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ModelInputs:
        return ModelInputs(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.__dict__.items()})


@dataclass
class ClinmmOutput:
    """Model output (a dataclass, never a tuple).

    Args:
        logits: (B, C) fused logits: the fusion head's, or with ``fusion.head_stack`` its stack with the auxiliary
            heads (:mod:`clinmm.models.head_stack`).
        head_logits: (B, C) the fusion head's own logits (before any stack).
        image_logits: (B, C) auxiliary image-only head (None when the model has no image branch).
        text_logits: (B, C) auxiliary text-only head (None when the model has no text branch).
        attention: (B, C, Ni + Lt) label-query attention over image tokens then text tokens (cross_attention).
        missing_attention: (B, C, 2) attention on the (image, text) stand-ins within their modality's softmax:
            1 where that modality is missing, 0 where present (cross_attention).
        modality_share: (B, C, 2) (image, text) contribution per label, or None. With a head stack: what each
            modality adds to the output logit, ``logits − logits_no_image`` and ``logits − logits_no_text`` (each
            modality's total token relevance), divided by the sum of their magnitudes — signed, in [−1, 1], negative
            where the modality argues against the finding (with ``explain=True``; None otherwise), since the
            fusion's own share no longer says what the stacked output rests on.
        image_present: (B,) bool, as the fusion saw it (after modality dropout in training).
        text_present: (B,) bool.
        image_grid: the image token grid, (h, w) or (d, h, w); image tokens are row-major over it.
        num_image_tokens: Ni.
        text_attentions: encoder self-attentions when requested (explanations).
        relevance: (B, C, Ni + Lt) signed contribution of each token to each label's logit: its Shapley value over
            the tokens the fusion attention can see (cross_attention with ``explain=True``).
        logits_no_image: (B, C) fused logits with the image removed (the model's missing-image path, stacked as
            ``logits`` is), with ``explain=True``.
        logits_no_text: (B, C) the same with the note removed.
        image_relevance_map: (B, C, h', w') the image part of ``relevance`` carried back to the image regions it
            was read from (:mod:`clinmm.explain.occlusion`), set by ``Predictor`` for explained calls of a checkpoint
            that asks for it (``fusion.image_relevance_carry``); None otherwise (the model itself never sets it).
        image_equivariance: (B,) each image's relative error of 180° rotation equivariance of its tokens (NaN where
            the input has no image), with ``equivariance=True``; see :meth:`ClinmmModel.rotation_equivariance`.
    """

    logits: torch.Tensor
    head_logits: torch.Tensor | None = None
    image_logits: torch.Tensor | None = None
    text_logits: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    missing_attention: torch.Tensor | None = None
    modality_share: torch.Tensor | None = None
    image_present: torch.Tensor | None = None
    text_present: torch.Tensor | None = None
    image_grid: tuple[int, ...] = ()
    num_image_tokens: int = 0
    text_attentions: tuple | None = field(default=None, repr=False)
    relevance: torch.Tensor | None = None
    logits_no_image: torch.Tensor | None = None
    logits_no_text: torch.Tensor | None = None
    image_equivariance: torch.Tensor | None = None
    image_relevance_map: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        """(B, C) uncalibrated sigmoid probabilities."""
        return torch.sigmoid(self.logits)


@dataclass
class ModalityAblations:
    """Fused logits of one batch three ways (see :meth:`ClinmmModel.forward_ablations`).

    Args:
        logits: (B, C) with every input the batch has.
        logits_no_text: (B, C) with every note treated as missing.
        logits_no_image: (B, C) with every image treated as missing.
    """

    logits: torch.Tensor
    logits_no_text: torch.Tensor
    logits_no_image: torch.Tensor


@dataclass
class _Explained:
    """The explain step's outputs (see :meth:`ClinmmModel._explain`)."""

    relevance: torch.Tensor | None
    logits_no_image: torch.Tensor
    logits_no_text: torch.Tensor
    modality_share: torch.Tensor | None


class ClinmmModel(nn.Module):
    """Image tokens and text tokens meet in a fusion module; one logit per label.

    Args:
        config: the whole configuration (image, text, fusion sections are used).
        labels: finding names in output order.
        text_encoder: a :class:`clinmm.models.text.TextEncoder` (None for ``image_only``).
        text_cache: the cache of frozen text features to use (None: a new one). Models that share one frozen
            ``text_encoder`` may share one cache.
    """

    def __init__(self, *, config: ClinmmConfig, labels: list[str], text_encoder: nn.Module | None,
                 text_cache: FrozenTextCache | None = None) -> None:
        super().__init__()
        self.config = config
        self.labels = list(labels)
        method = config.fusion.method
        dim = config.fusion.dim
        num_labels = len(self.labels)
        self.uses_image = method != "text_only"
        self.uses_text = method != "image_only"
        self.image_encoder = (
            ImageEncoder(config=config.image, image_size=config.data.image_size) if self.uses_image else None
        )
        self.text_encoder = text_encoder if self.uses_text else None
        if self.uses_text and text_encoder is None:
            raise ValueError(f"fusion.method={method!r} needs a text encoder, got None")
        if self.image_encoder is not None:
            self.image_proj = nn.Sequential(nn.Linear(self.image_encoder.out_channels, dim), nn.LayerNorm(dim))
            self.image_pool = MeanMaxPool(dim=dim)
            self.image_head = nn.Linear(dim, num_labels)
        if self.text_encoder is not None:
            self.text_proj = nn.Sequential(nn.Linear(self.text_encoder.hidden_size, dim), nn.LayerNorm(dim))
            self.text_pool = MeanMaxPool(dim=dim)
            self.text_head = nn.Linear(dim, num_labels)
        self.fusion = build_fusion(config.fusion, num_labels=num_labels)
        self.head_stack = HeadStack(num_labels=num_labels) if config.fusion.head_stack else None
        if self.carries_image_relevance:  # fitted after training (clinmm.explain.occlusion.fit_healthy_reference)
            size = config.data.image_size
            self.register_buffer("healthy_reference", torch.zeros(1, size, size))  # (1, S, S)
            self.register_buffer("healthy_reference_count", torch.zeros((), dtype=torch.long))
        # Used while every text-encoder weight is frozen (the CPU demo's training); loaded checkpoints switch it off.
        self.text_cache = text_cache if text_cache is not None else FrozenTextCache()

    @property
    def carries_image_relevance(self) -> bool:
        """True when the configuration asks for the image relevance to be carried back by occlusion (2D
        cross_attention models; ``fusion.image_relevance_carry``)."""
        return (self.config.fusion.image_relevance_carry == "occlusion" and self.image_encoder is not None
                and self.config.image.spatial_dims == 2 and self.supports_relevance)

    @property
    def supports_relevance(self) -> bool:
        """True when the fusion returns token relevance (cross_attention)."""
        return isinstance(self.fusion, CrossAttentionFusion)

    def text_frozen(self) -> bool:
        """True when no text-encoder parameter is trainable (its outputs can then be cached per note)."""
        return self.text_encoder is not None and not any(p.requires_grad for p in self.text_encoder.parameters())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if len(self.text_cache) and self._changes_text_encoder(state_dict):
            self.text_cache.clear()  # cached text features belong to the previous weights
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _changes_text_encoder(self, state_dict) -> bool:
        """True when loading ``state_dict`` would change any text-encoder tensor (or the encoder is absent)."""
        if self.text_encoder is None:
            return True
        current = self.text_encoder.state_dict()
        for name, value in current.items():
            new = state_dict.get(f"text_encoder.{name}")
            if new is not None and not torch.equal(new.to(value.device), value):
                return True
        return False

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pretrained text encoder (lower learning rate)."""
        return [p for p in self.text_encoder.parameters() if p.requires_grad] if self.text_encoder is not None else []

    def note_branch_parameters(self) -> list[nn.Parameter]:
        """Trainable new layers that only the note feeds: the text projection, the auxiliary text head and the
        fusion's note-only layers (``train.note_branch_epochs`` gives them their own, shorter schedule)."""
        if self.text_encoder is None:
            return []
        params = [*self.text_proj.parameters(), *self.text_pool.parameters(), *self.text_head.parameters(),
                  *self.fusion.note_parameters()]
        return [p for p in params if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is not in the pretrained text encoder."""
        enc = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in enc]

    def forward_image(self, image: torch.Tensor, image_present: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        """(B, 1, H, W) → projected tokens (B, Ni, D), mask (B, Ni), grid.

        Without an image branch (``text_only``): one masked zero token per sample and grid ``()``.
        """
        if self.image_encoder is None:
            b = image_present.shape[0]
            return (torch.zeros(b, 1, self.config.fusion.dim, device=image_present.device),
                    torch.zeros(b, 1, dtype=torch.bool, device=image_present.device), ())
        feats = self.image_encoder.forward_features(image)
        tokens = self.image_proj(feats.tokens.float())  # (B, Ni, D)
        mask = image_present[:, None].expand(-1, tokens.shape[1])  # (B, Ni)
        p = self.config.fusion.image_token_dropout
        if self.training and p > 0:
            mask = self._drop_tokens(mask, p)
        return tokens, mask, feats.grid

    def forward_text(self, inputs: ModelInputs, *, text_present: torch.Tensor | None = None,
                     output_attentions: bool = False):
        """Note chunks → projected tokens (B, K*L, D), mask (B, K*L), encoder attentions or None.

        Args:
            inputs: a collated batch.
            text_present: (B,) bool, which notes fusion may read (default ``inputs.text_present``).
            output_attentions: also return the encoder's self-attentions.

        Without a text branch (``image_only``): one masked zero token per sample and no attentions.
        """
        present = inputs.text_present if text_present is None else text_present
        if self.text_encoder is None:
            b = present.shape[0]
            return (torch.zeros(b, 1, self.config.fusion.dim, device=present.device),
                    torch.zeros(b, 1, dtype=torch.bool, device=present.device), None)
        # A frozen encoder's output never changes: encode each note once. Not while gradients must reach the
        # encoder's inputs (eval mode with grad enabled: integrated gradients, Grad-CAM on text).
        cacheable = self.training or not torch.is_grad_enabled()
        if self.text_cache.enabled and cacheable and self.text_frozen() and not output_attentions:
            raw, raw_mask = self.text_cache(self.text_encoder, inputs.input_ids, inputs.attention_mask, inputs.keep)
            attentions = None
        else:
            feats = self.text_encoder(inputs.input_ids, inputs.attention_mask, inputs.keep,
                                      output_attentions=output_attentions)
            raw, raw_mask, attentions = feats.tokens, feats.mask, getattr(feats, "attentions", None)
        tokens = self.text_proj(raw.float())  # (B, K*L, D)
        mask = raw_mask & present[:, None]  # (B, K*L)
        p = self.config.fusion.text_token_dropout
        if self.training and p > 0:
            mask = self._drop_tokens(mask, p)
        return tokens, mask, attentions

    def rotation_equivariance(self, image: torch.Tensor, tokens: torch.Tensor, grid: tuple[int, ...],
                              image_present: torch.Tensor) -> torch.Tensor:
        """How far the image tokens are from equivariant under a 180° turn of the image plane → (B,).

        The input turned by 180° (its last two axes reversed) is encoded and compared with the original tokens turned
        on the token grid: ``‖T(rot x) − rot T(x)‖² / (v(T(x)) + v(T(rot x)))`` per image, where ``v`` is the
        tokens' spread over the grid (squared distance from their mean, averaged over tokens). 0 is exactly
        equivariant; two unrelated maps of the same spread give about 1. Dividing by the spread keeps the
        trivial answer — every token alike — from scoring well. A turn rather than a flip: it reverses both axes at
        once, so one encoding tests offsets along both. The turned token grid lines up with the original only when
        the input's height and width are multiples of the encoder's stride (128 / 16 in the demo configuration,
        256 / 32 by default); otherwise it is off by the remainder and even an equivariant network scores above 0.

        Args:
            image: (B, 1, H, W) or (B, 1, D, H, W) model input.
            tokens: (B, Ni, D) the projected tokens of ``image`` (:meth:`forward_image`), row-major over ``grid``.
            grid: the token grid, (h, w) or (d, h, w).
            image_present: (B,) bool; NaN is returned where it is False.
        """
        if self.image_encoder is None:
            raise ValueError("rotation equivariance needs an image branch (fusion.method is text_only)")
        b, ni, dim = tokens.shape
        if ni < 2:
            raise ValueError(f"rotation equivariance needs a token grid of 2 or more tokens, got grid {grid}: enlarge "
                             "data.image_size or set train.rotation_equivariance to 0")
        turned = self.image_proj(self.image_encoder.forward_features(image.flip(-2, -1)).tokens.float())  # (B, Ni, D)
        back = tokens.reshape(b, *grid, dim).flip(-3, -2).reshape(b, ni, dim)  # (B, Ni, D): rot T(x)

        def spread(t: torch.Tensor) -> torch.Tensor:
            return (t - t.mean(1, keepdim=True)).pow(2).sum(-1).mean(1)  # (B,)

        error = (turned - back).pow(2).sum(-1).mean(1)  # (B,)
        rel = error / (spread(tokens) + spread(turned)).clamp_min(1e-6)  # (B,)
        return torch.where(image_present, rel, torch.full_like(rel, float("nan")))

    @staticmethod
    def _drop_tokens(mask: torch.Tensor, p: float) -> torch.Tensor:
        """Token dropout: hide each valid token with probability ``p``; a note or image left empty keeps its
        tokens."""
        kept = mask & (torch.rand(mask.shape, device=mask.device) >= p)  # (B, K*L)
        emptied = mask.any(1) & ~kept.any(1)  # (B,)
        return torch.where(emptied[:, None], mask, kept)

    def forward_ablations(self, inputs: ModelInputs) -> ModalityAblations:
        """Fused logits with all inputs, with every note removed and with every image removed.

        The same numbers as ``forward(inputs)``, ``forward(inputs, drop_text=all)`` and ``forward(inputs,
        drop_image=all)``, but each encoder runs once and only fusion runs three times (the validation report).
        """
        img, img_mask, _ = self.forward_image(inputs.image, inputs.image_present)
        txt, txt_mask, _ = self.forward_text(inputs)
        none_img, none_txt = torch.zeros_like(img_mask), torch.zeros_like(txt_mask)
        img_on, txt_on = inputs.image_present, inputs.text_present
        return ModalityAblations(
            logits=self.fused_logits(img, img_mask, txt, txt_mask, image_present=img_on, text_present=txt_on),
            logits_no_text=self.fused_logits(img, img_mask, txt, none_txt, image_present=img_on,
                                             text_present=torch.zeros_like(txt_on)),
            logits_no_image=self.fused_logits(img, none_img, txt, txt_mask, image_present=torch.zeros_like(img_on),
                                              text_present=txt_on))

    def _aux_logits(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The auxiliary image-only and text-only heads' (B, C) logits (None where the model has no such branch)."""
        image_logits = self.image_head(self.image_pool(img, img_mask)) if self.image_encoder is not None else None
        text_logits = self.text_head(self.text_pool(txt, txt_mask)) if self.text_encoder is not None else None
        return image_logits, text_logits

    def _presence(self, img_mask: torch.Tensor, txt_mask: torch.Tensor, image_present: torch.Tensor,
                  text_present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) bool each: which modalities reach the model, as the fusion sees them (its token masks); for a
        modality the model has no branch for, the input's flag."""
        img_on = img_mask.any(1) if self.image_encoder is not None else image_present
        txt_on = txt_mask.any(1) if self.text_encoder is not None else text_present
        return img_on, txt_on

    def _output(self, head_logits: torch.Tensor, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor,
                txt_mask: torch.Tensor, *, presence: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The fusion head's (B, C) logits → the model's output logits for these inputs (stacked with the
        auxiliary heads when the model has a head stack); ``presence``: (B,) image and note flags (``_presence``)."""
        if self.head_stack is None:
            return head_logits
        image_logits, text_logits = self._aux_logits(img, img_mask, txt, txt_mask)
        return self.head_stack(head_logits, image_logits, text_logits, *presence)

    def fused_logits(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor, *,
                     image_present: torch.Tensor, text_present: torch.Tensor) -> torch.Tensor:
        """Projected tokens of both modalities → the model's output logits (B, C): the fusion, then the head stack
        when the model has one. What explanations that re-run one branch many times call (``explain._forward``).

        Args:
            img: (B, Ni, D) and img_mask (B, Ni) from :meth:`forward_image`; txt (B, Lt, D) and txt_mask (B, Lt)
                from :meth:`forward_text`.
            image_present: (B,) bool, the input's image flag (read only where the model has no image branch).
            text_present: (B,) bool, the same for the note.
        """
        return self._fuse(img, img_mask, txt, txt_mask, image_present, text_present, relevance=False)[1]

    def forward(self, inputs: ModelInputs, *, drop_image: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None, output_text_attentions: bool = False,
                explain: bool = False, equivariance: bool = False) -> ClinmmOutput:
        """Run the model.

        Args:
            inputs: a collated batch.
            drop_image: optional (B,) bool, treat the image as missing for these samples (modality dropout).
            drop_text: optional (B,) bool, likewise for the note.
            output_text_attentions: also return the text encoder's self-attentions (eager attention).
            explain: also return the fusion's token relevance (cross_attention only; see
                :meth:`clinmm.models.fusion.CrossAttentionFusion.token_relevance`) and the fused logits with each
                modality removed (the encoders run once; only the fusion runs again).
            equivariance: also return each image's rotation equivariance error (:meth:`rotation_equivariance`;
                encodes every image a second time, turned; ``train.rotation_equivariance``).
        """
        image_present = inputs.image_present & ~drop_image if drop_image is not None else inputs.image_present
        text_present = inputs.text_present & ~drop_text if drop_text is not None else inputs.text_present
        img, img_mask, grid = self.forward_image(inputs.image, image_present)
        # every real image, also one that modality dropout hides from the fusion
        image_equivariance = (self.rotation_equivariance(inputs.image, img, grid, inputs.image_present)
                              if equivariance and self.image_encoder is not None else None)
        txt, txt_mask, text_attn = self.forward_text(inputs, text_present=text_present,
                                                     output_attentions=output_text_attentions)
        fused, logits, (image_logits, text_logits) = self._fuse(img, img_mask, txt, txt_mask, image_present,
                                                                text_present, relevance=explain)
        # the fusion's own share describes the stacked output only without a stack (with one: from the ablations)
        modality_share = fused.modality_share if self.head_stack is None else None
        relevance = logits_no_image = logits_no_text = None
        if explain:
            ex = self._explain(fused, logits, img, img_mask, txt, txt_mask, image_present, text_present,
                               aux=(image_logits, text_logits))
            relevance, logits_no_image, logits_no_text = ex.relevance, ex.logits_no_image, ex.logits_no_text
            if ex.modality_share is not None:
                modality_share = ex.modality_share
        return ClinmmOutput(
            logits=logits,
            head_logits=fused.logits,
            image_logits=image_logits,
            text_logits=text_logits,
            attention=fused.attention,
            missing_attention=fused.missing_attention,
            modality_share=modality_share,
            image_present=image_present,
            text_present=text_present,
            image_grid=grid,
            num_image_tokens=img.shape[1] if self.image_encoder is not None else 0,
            text_attentions=text_attn,
            relevance=relevance,
            logits_no_image=logits_no_image,
            logits_no_text=logits_no_text,
            image_equivariance=image_equivariance,
        )

    def _fuse(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
              image_present: torch.Tensor, text_present: torch.Tensor, *, relevance: bool, text_relevance: bool = True,
              permutations: int = SHAPLEY_PERMUTATIONS,
              ) -> tuple[FusionOutput, torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """The fusion (with token relevance when asked and supported, from ``permutations`` sampled orderings; the
        note's only with ``text_relevance``), the output logits (B, C) and the auxiliary heads' logits."""
        fc = self.config.fusion
        fused: FusionOutput = (self.fusion(img, img_mask, txt, txt_mask, relevance=True,
                                           image_game=fc.image_relevance_game, text_game=fc.text_relevance_game,
                                           text_relevance=text_relevance, permutations=permutations)
                               if relevance and self.supports_relevance else self.fusion(img, img_mask, txt, txt_mask))
        aux = self._aux_logits(img, img_mask, txt, txt_mask)
        img_on, txt_on = self._presence(img_mask, txt_mask, image_present, text_present)
        logits = fused.logits if self.head_stack is None else self.head_stack(fused.logits, *aux, img_on, txt_on)
        return fused, logits, aux

    def _explain(self, fused: FusionOutput, logits: torch.Tensor, img: torch.Tensor, img_mask: torch.Tensor,
                 txt: torch.Tensor, txt_mask: torch.Tensor, image_present: torch.Tensor, text_present: torch.Tensor,
                 *, aux: tuple[torch.Tensor | None, torch.Tensor | None], image_only: bool = False,
                 permutations: int = SHAPLEY_PERMUTATIONS) -> _Explained:
        """What the model says without each modality (its own missing-modality path), the output's token relevance
        and, with a head stack, the modality share (None without one: the fusion's own share stands).
        ``image_only``: the note tokens' relevance is left as the fusion returned it (the carry reads the image's)."""
        img_on, txt_on = self._presence(img_mask, txt_mask, image_present, text_present)
        none_img, none_txt = torch.zeros_like(img_mask), torch.zeros_like(txt_mask)
        head_no_image = self.fusion(img, none_img, txt, txt_mask).logits  # (B, C)
        head_no_text = self.fusion(img, img_mask, txt, none_txt).logits  # (B, C)
        logits_no_image = self._output(head_no_image, img, none_img, txt, txt_mask,
                                       presence=(torch.zeros_like(img_on), txt_on))  # (B, C)
        logits_no_text = self._output(head_no_text, img, img_mask, txt, none_txt,
                                      presence=(img_on, torch.zeros_like(txt_on)))  # (B, C)
        relevance = fused.relevance
        modality_share = None
        if self.head_stack is not None:
            added = torch.stack([logits - logits_no_image, logits - logits_no_text], -1)  # (B, C, 2)
            total = added.abs().sum(-1, keepdim=True)  # (B, C, 1)
            modality_share = torch.where(total > 0, added / total.clamp_min(1e-12), torch.zeros_like(added))
            if relevance is not None:
                relevance = self._stacked_relevance(
                    relevance, img, img_mask, txt, txt_mask, presence=(img_on, txt_on), aux=aux,
                    without=(logits_no_image, logits_no_text), head_without=(head_no_image, head_no_text),
                    image_only=image_only, permutations=permutations)
        return _Explained(relevance=relevance, logits_no_image=logits_no_image, logits_no_text=logits_no_text,
                          modality_share=modality_share)

    def token_relevance(self, img: torch.Tensor, img_mask: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor,
                        *, image_present: torch.Tensor, text_present: torch.Tensor, image_only: bool = False,
                        permutations: int = SHAPLEY_PERMUTATIONS) -> torch.Tensor:
        """Projected tokens of both modalities → (B, C, Ni + Lt) each token's relevance to the output logit, as
        ``forward(..., explain=True)`` returns it (cross_attention only). What explanations that re-run the image
        branch many times call (:mod:`clinmm.explain.occlusion`); ``image_only`` skips the note tokens' Shapley
        values (most of the cost) and returns only the image part, (B, C, Ni); ``permutations``: the orderings the
        Shapley values are sampled from (``SHAPLEY_PERMUTATIONS``, 32: as ``forward`` computes them; fewer is cheaper
        and noisier)."""
        if not self.supports_relevance:
            raise ValueError(f"token_relevance: fusion.method={self.config.fusion.method!r} returns no token "
                             "relevance (cross_attention only)")
        fused, logits, aux = self._fuse(img, img_mask, txt, txt_mask, image_present, text_present, relevance=True,
                                        text_relevance=not image_only, permutations=permutations)
        relevance = self._explain(fused, logits, img, img_mask, txt, txt_mask, image_present, text_present,
                                  aux=aux, image_only=image_only, permutations=permutations).relevance
        return relevance[..., :img.shape[1]] if image_only else relevance

    def _stacked_relevance(self, relevance: torch.Tensor, img: torch.Tensor, img_mask: torch.Tensor,
                           txt: torch.Tensor, txt_mask: torch.Tensor, *,
                           presence: tuple[torch.Tensor, torch.Tensor],
                           aux: tuple[torch.Tensor, torch.Tensor],
                           without: tuple[torch.Tensor, torch.Tensor],
                           head_without: tuple[torch.Tensor, torch.Tensor], image_only: bool = False,
                           permutations: int = SHAPLEY_PERMUTATIONS) -> torch.Tensor:
        """The fusion head's token relevance (B, C, Ni + Lt) → the stacked output's.

        Per modality the game is the stacked logit with only a coalition of that modality's tokens (the other
        modality held as it is); the empty coalition is the model without that modality, which the stack scores
        with the weights of that presence pattern. Shapley values are linear in the game, so a token's value is
        ``w_fusion·φ_fusion + w_head·φ_head − δ/n``: the fusion head's value (as the fusion computes it), the
        auxiliary head's (:func:`clinmm.models.head_stack.pooled_head_relevance`), and an equal share of ``δ``, the
        difference between the output without the modality and the present pattern's weights applied to the empty
        coalition (the Shapley value of a game that only the empty set scores). The values add up exactly to
        ``logits − logits_no_image`` (image tokens) and ``logits − logits_no_text`` (note tokens).

        Args:
            relevance: (B, C, Ni + Lt) the fusion head's token relevance.
            presence: (B,) image and note flags as the fusion saw them.
            aux: (B, C) the auxiliary image and text heads' logits on these tokens.
            without: (B, C) output logits with the image removed, with the note removed.
            head_without: (B, C) the fusion head's logits with the image removed, with the note removed.
            image_only: stack the image tokens' values only; the note's part is returned as given.
            permutations: orderings the auxiliary heads' Shapley values are sampled from.
        """
        ni = img.shape[1]
        w, b = self.head_stack.coefficients(*presence)  # (B, C, 3), (B, C)
        parts = []
        for m, (tokens, mask, pool, head) in enumerate(((img, img_mask, self.image_pool, self.image_head),
                                                        (txt, txt_mask, self.text_pool, self.text_head))):
            rel = relevance[..., :ni] if m == 0 else relevance[..., ni:]  # (B, C, N)
            if m == 1 and image_only:
                parts.append(rel)
                break
            empty = head(pool(tokens, torch.zeros_like(mask)))  # (B, C): this head on no token
            phi = pooled_head_relevance(pool, head, tokens, mask, permutations=permutations).to(rel.dtype)  # (B, C, N)
            own, other = w[..., 1 + m], w[..., 2 - m]  # (B, C): weights on this / the other auxiliary head
            at_empty = w[..., 0] * head_without[m] + own * empty + other * aux[1 - m] + b  # (B, C)
            delta = without[m] - at_empty  # (B, C)
            n = mask.sum(1).clamp_min(1).to(rel.dtype)  # (B,)
            spread = (delta / n[:, None])[..., None] * mask[:, None, :].to(rel.dtype)  # (B, C, N)
            parts.append(w[..., :1] * rel + own[..., None] * phi - spread)
        return torch.cat(parts, dim=-1)
