"""Inference with a loaded checkpoint: prepare studies, run the model in batches, calibrate, decide.

Scoring, the report, the explanations and the dashboard all go through :class:`Predictor`, so they agree.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clinmm.calibration import apply_calibration
from clinmm.checkpoint import LoadedModel, load_checkpoint
from clinmm.data.dataset import Batch, Sample, SampleBuilder, collate
from clinmm.explain.occlusion import carry_image_relevance
from clinmm.explain.rollout import roll_back_relevance
from clinmm.io.study import ImageVolume
from clinmm.models.classifier import ClinmmOutput

__all__ = ["Prediction", "Predictor", "predictions_from_output", "load_checkpoint", "resolve_device", "autocast_for"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU (fp32 there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Prediction:
    """One study's result.

    Args:
        key: the sample key.
        labels: label names.
        logits: (C,) raw logits.
        probs: (C,) calibrated probabilities.
        decisions: (C,) bool at the stored thresholds.
        thresholds: (C,) the thresholds used.
        image_present: the model saw an image.
        text_present: the model saw a note.
        modality_share: (C, 2) (image, text) share per label, or None (fusion without it).
        image_attention: (C, h, w) label-query attention on the image token grid (explain=True, cross_attention).
        text_attention: (C, T) attention on the note's kept tokens in reading order (explain=True).
        text_spans: (T, 2) character spans of those tokens in the original note.
        missing_attention: (C, 2) attention on the missing-modality stand-ins.
        image_relevance: (C, h, w) signed contribution of each image token to each label's logit: its Shapley value
            over the tokens the fusion attention can see (explain=True, cross_attention); what the attention
            explanation shows. With ``fusion.image_relevance_carry`` it is carried back to the image regions the
            tokens read it from (:mod:`clinmm.explain.occlusion`), on a grid k × finer than the tokens' with
            ``image_relevance_carry_subcells`` = k (each label's sum unchanged).
        text_relevance: (C, T) the same for the note's kept tokens.
        probs_without_image: (C,) calibrated probabilities with the image removed (explain=True): with ``probs``, the
            effect of the image on each finding, through the model's own missing-image path.
        probs_without_note: (C,) the same with the note removed.
    """

    key: str
    labels: list[str]
    logits: np.ndarray
    probs: np.ndarray
    decisions: np.ndarray
    thresholds: np.ndarray
    image_present: bool
    text_present: bool
    modality_share: np.ndarray | None = None
    image_attention: np.ndarray | None = None
    text_attention: np.ndarray | None = None
    text_spans: np.ndarray | None = None
    missing_attention: np.ndarray | None = None
    image_relevance: np.ndarray | None = None
    text_relevance: np.ndarray | None = None
    probs_without_image: np.ndarray | None = None
    probs_without_note: np.ndarray | None = None


def predictions_from_output(out: ClinmmOutput, batch: Batch, *, labels: list[str], probs: np.ndarray,
                            decisions: np.ndarray, thresholds: np.ndarray, explain: bool,
                            calibrate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                            text_rollout: float = 0.0) -> list[Prediction]:
    """A batch's model output → one :class:`Prediction` per study (attention and relevance split into image grid and
    kept note tokens when ``explain``). ``batch`` is the CPU-side batch (its masks and offsets); ``calibrate``
    ((B, C) logits → ((B, C) probabilities, decisions)) turns the with-a-modality-removed logits into probabilities;
    ``text_rollout`` > 0 carries the note tokens' relevance back to the input words through the encoder's
    self-attention (needs ``out.text_attentions``; :func:`clinmm.explain.rollout.roll_back_relevance`)."""
    without = {}
    if explain and calibrate is not None:
        for name, lg in (("probs_without_image", out.logits_no_image), ("probs_without_note", out.logits_no_text)):
            if lg is not None:
                without[name] = calibrate(lg.float().cpu().numpy())[0]  # (B, C)
    logits = out.logits.float().cpu().numpy()  # (B, C)
    share = out.modality_share.float().cpu().numpy() if out.modality_share is not None else None
    image_present = out.image_present.cpu().numpy()
    text_present = out.text_present.cpu().numpy()
    att_all = out.attention.float().cpu().numpy() if (explain and out.attention is not None) else None
    rel_all = out.relevance.float().cpu().numpy() if (explain and out.relevance is not None) else None
    ni = out.num_image_tokens
    carried = (out.image_relevance_map.float().cpu().numpy()
               if rel_all is not None and out.image_relevance_map is not None else None)
    if rel_all is not None and text_rollout > 0 and out.text_attentions is not None:
        for i in range(rel_all.shape[0]):
            rel_all[i, :, ni:] = roll_back_relevance(
                torch.from_numpy(rel_all[i, :, ni:]), [a[i] for a in out.text_attentions],
                attention_mask=batch.inputs.attention_mask[i], keep=batch.inputs.keep[i], offsets=batch.offsets[i],
                mix=text_rollout).numpy()  # (C, K*L)
    preds = []
    for i, key in enumerate(batch.keys):
        p = Prediction(key=key, labels=labels, logits=logits[i], probs=probs[i], decisions=decisions[i],
                       thresholds=thresholds, image_present=bool(image_present[i]), text_present=bool(text_present[i]),
                       modality_share=share[i] if share is not None else None)
        for name, values in without.items():
            setattr(p, name, values[i])  # (C,)
        if att_all is not None:
            keep = batch.inputs.keep[i].flatten().numpy()  # (K*L,)
            p.text_spans = batch.offsets[i].reshape(-1, 2).numpy()[keep]  # (T, 2)
            for full, image_name, text_name in ((att_all[i], "image_attention", "text_attention"),
                                                (None if rel_all is None else rel_all[i], "image_relevance",
                                                 "text_relevance")):
                if full is None:
                    continue
                if ni and out.image_grid:
                    setattr(p, image_name, full[:, :ni].reshape(full.shape[0], *out.image_grid))  # (C, h, w)
                    if image_name == "image_relevance" and carried is not None:
                        p.image_relevance = carried[i]  # (C, h', w') carried back to where it was read
                setattr(p, text_name, full[:, ni:][:, keep])  # (C, T) kept tokens in reading order
            if out.missing_attention is not None:
                p.missing_attention = out.missing_attention[i].float().cpu().numpy()
        preds.append(p)
    return preds


class Predictor:
    """Prepare and predict with a loaded checkpoint.

    Args:
        loaded: a :class:`~clinmm.checkpoint.LoadedModel` (see :func:`load_checkpoint`).
        keep_display: keep display images on prepared samples (for overlays).
        max_file_bytes: ingestion bound.
        max_pixels: ingestion bound.
    """

    def __init__(self, loaded: LoadedModel, *, keep_display: bool = False, max_file_bytes: int = 2 * 1024**3,
                 max_pixels: int = 512 * 1024 * 1024) -> None:
        self.loaded = loaded
        model = loaded.model
        tokenizer = model.text_encoder.note_tokenizer() if model.text_encoder is not None else None
        self.pad_id = int(getattr(model.text_encoder.tokenizer, "pad_token_id", 0) or 0) if tokenizer else 0
        if model.carries_image_relevance and int(model.healthy_reference_count) == 0:
            logger.warning("%s asks for fusion.image_relevance_carry='occlusion' but holds no healthy reference "
                           "(too few healthy training studies); image heatmaps show each token's relevance where the "
                           "token is", loaded.path)
        self.builder = SampleBuilder(data_config=loaded.config.data, tokenizer=tokenizer,
                                     max_file_bytes=max_file_bytes, max_pixels=max_pixels, keep_display=keep_display)

    @classmethod
    def from_path(cls, path: str | Path, *, device: str | None = "auto", **kwargs) -> Predictor:
        return cls(load_checkpoint(path, device=resolve_device(device)), **kwargs)

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    def prepare(self, image: str | Path | ImageVolume | None, note: str | None, *, key: str = "",
                labels: np.ndarray | None = None) -> Sample:
        """One study → :class:`Sample` (an undecodable image becomes a missing image with its status kept)."""
        return self.builder.build(image, note, key=key, labels=labels)

    def collate(self, samples: Sequence[Sample]) -> Batch:
        return collate(samples, image_size=self.loaded.config.data.image_size, pad_id=self.pad_id)

    def forward(self, batch: Batch, *, explain: bool = False, drop_image: bool = False,
                drop_text: bool = False) -> ClinmmOutput:
        """Run the model on a collated batch (bf16 autocast on CUDA) under ``torch.inference_mode``."""
        with torch.inference_mode():
            return self._forward(batch, explain=explain, drop_image=drop_image, drop_text=drop_text)

    def _forward(self, batch: Batch, *, explain: bool, drop_image: bool, drop_text: bool) -> ClinmmOutput:
        device = self.loaded.device
        inputs = batch.inputs.to(device, non_blocking=True)
        if device.type == "cuda" and inputs.image.dim() == 4:
            inputs.image = inputs.image.contiguous(memory_format=torch.channels_last)
        b = inputs.image_present.shape[0]
        di = torch.full((b,), drop_image, dtype=torch.bool, device=device)
        dt = torch.full((b,), drop_text, dtype=torch.bool, device=device)
        model = self.loaded.model
        attentions = explain and self.text_rollout > 0 and model.text_encoder is not None and model.supports_relevance
        with autocast_for(device):
            out = model(inputs, drop_image=di, drop_text=dt, explain=explain, output_text_attentions=attentions)
            if (explain and out.relevance is not None and self.carries_image_relevance and not drop_image
                    and not drop_text):
                fc = self.loaded.config.fusion
                out.image_relevance_map = carry_image_relevance(
                    model, inputs, out.relevance, grid=out.image_grid, boxes=batch.boxes,
                    reference=model.healthy_reference, subcells=fc.image_relevance_carry_subcells,
                    window=fc.image_relevance_carry_window_subcells,
                    permutations=fc.image_relevance_carry_permutations)
        return out

    @property
    def carries_image_relevance(self) -> bool:
        """True when explanations carry the image relevance back by occlusion: the checkpoint asks for it
        (``fusion.image_relevance_carry``) and holds a fitted healthy reference."""
        model = self.loaded.model
        return model.carries_image_relevance and int(model.healthy_reference_count) > 0

    @property
    def text_rollout(self) -> float:
        """The checkpoint's ``fusion.text_relevance_rollout`` (0: the highlighted words are the contextual tokens')."""
        return self.loaded.config.fusion.text_relevance_rollout

    def predictions(self, out: ClinmmOutput, batch: Batch, *, explain: bool) -> list[Prediction]:
        """A forward pass's output on ``batch`` (CPU-side masks and offsets) → calibrated :class:`Prediction` s."""
        probs, decisions = self.calibrate(out.logits.float().cpu().numpy())
        return predictions_from_output(out, batch, labels=self.labels, probs=probs, decisions=decisions,
                                       thresholds=np.array(self.loaded.thresholds), explain=explain,
                                       calibrate=self.calibrate, text_rollout=self.text_rollout)

    def calibrate(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, C) logits → calibrated probabilities (B, C) and decisions (B, C)."""
        probs = np.stack([apply_calibration(logits[:, c], cal) for c, cal in enumerate(self.loaded.calibration)],
                         axis=1) if logits.size else np.zeros_like(logits)
        thresholds = np.array(self.loaded.thresholds)
        return probs, probs >= thresholds

    def predict_batch(self, batch: Batch, *, explain: bool = False, drop_image: bool = False,
                      drop_text: bool = False) -> list[Prediction]:
        return self.predictions(self.forward(batch, explain=explain, drop_image=drop_image, drop_text=drop_text),
                                batch, explain=explain)

    def predict(self, samples: Sequence[Sample], *, explain: bool = False, batch_size: int = 32,
                drop_image: bool = False, drop_text: bool = False) -> list[Prediction]:
        """Predict for prepared samples, in batches."""
        out: list[Prediction] = []
        for start in range(0, len(samples), batch_size):
            batch = self.collate(samples[start : start + batch_size])
            out.extend(self.predict_batch(batch, explain=explain, drop_image=drop_image, drop_text=drop_text))
        return out
