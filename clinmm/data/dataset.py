"""Samples (one study's prepared image + encoded note + labels), datasets and the collate function with masks.

A missing image or note is not an error: the sample carries a modality-present flag and the model masks it out.
An image that fails to decode is treated as missing and its ingestion status is kept on the sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from clinmm.config import DataConfig
from clinmm.data.transforms import Letterbox, prepare_image
from clinmm.errors import IngestError
from clinmm.io.study import ImageVolume, Provenance
from clinmm.models.classifier import ModelInputs
from clinmm.text.tokenize import EncodedNote, NoteTokenizer, collate_notes

__all__ = ["Sample", "SampleBuilder", "SampleDataset", "collate", "Batch"]

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One study, ready for the model.

    Args:
        key: the study's identifier in outputs (manifest study_id or a salted study key).
        image: (1, H, W) model input, or None when the study has no usable image.
        letterbox: geometry to map model-grid maps back to the original pixel grid (None without image).
        note: encoded note (K = 0 when there is no note).
        note_text: the original note text (for offsets), or None.
        labels: (C,) float with NaN for unknown, or None when unlabelled.
        image_status: ``ok``, ``missing`` or an ingestion status value.
        image_detail: detail of a non-ok ingestion status (e.g. a transfer syntax UID).
        image_stats: raw-intensity statistics for drift checks.
        meta: de-identified image meta (modality, view...).
        provenance: ingestion provenance.
        display: (H0, W0) display image in [0, 1] (kept only when asked, e.g. for explanations).
    """

    key: str
    image: torch.Tensor | None
    letterbox: Letterbox | None
    note: EncodedNote
    note_text: str | None
    labels: np.ndarray | None = None
    image_status: str = "ok"
    image_detail: str = ""
    image_stats: dict | None = None
    meta: dict = field(default_factory=dict)
    provenance: Provenance | None = None
    display: np.ndarray | None = None


class SampleBuilder:
    """Turns an image (path or decoded volume) and a note into a :class:`Sample`.

    Args:
        data_config: intensity mapping and input size (from the checkpoint).
        tokenizer: the note tokenizer (None for image-only models).
        max_file_bytes: ingestion bound on file size.
        max_pixels: ingestion bound on Rows × Columns × Frames.
        keep_display: keep the display image on the sample (explanations, dashboard).
    """

    def __init__(self, *, data_config: DataConfig, tokenizer: NoteTokenizer | None,
                 max_file_bytes: int = 2 * 1024**3, max_pixels: int = 512 * 1024 * 1024,
                 keep_display: bool = False) -> None:
        self.data_config = data_config
        self.tokenizer = tokenizer
        self.max_file_bytes = max_file_bytes
        self.max_pixels = max_pixels
        self.keep_display = keep_display

    def encode_note(self, text: str | None) -> EncodedNote:
        if self.tokenizer is None:
            from clinmm.text.tokenize import _empty

            return _empty()
        return self.tokenizer.encode(text if text and text.strip() else None)

    def load(self, image: str | Path | ImageVolume | None) -> ImageVolume | None:
        """Decode an image path (file or series folder); raises :class:`IngestError`."""
        if image is None or isinstance(image, ImageVolume):
            return image
        from clinmm.io.load import load_image

        return load_image(Path(image), max_file_bytes=self.max_file_bytes, max_pixels=self.max_pixels)

    def build(self, image: str | Path | ImageVolume | None, note: str | None, *, key: str = "",
              labels: np.ndarray | None = None) -> Sample:
        """Prepare one study; a decode failure makes the image missing and records the status."""
        status, detail = ("missing", "") if image is None else ("ok", "")
        volume = None
        try:
            volume = self.load(image)
        except IngestError as err:
            status, detail = err.status, err.detail
            logger.warning("%s: image not usable (%s%s); scored as image-missing", err.path or key, err.status,
                           f": {err.detail}" if err.detail else "")
        tensor = box = stats = display = None
        meta: dict = {}
        provenance = None
        if volume is not None:
            prepared = prepare_image(volume, config=self.data_config)
            tensor, box, stats = prepared.tensor, prepared.letterbox, prepared.stats
            meta = dict(volume.meta, Modality=volume.modality)
            provenance = volume.provenance
            if self.keep_display:
                display = volume.display[prepared.slice_index]
        return Sample(key=key, image=tensor, letterbox=box, note=self.encode_note(note), note_text=note,
                      labels=labels, image_status=status, image_detail=detail, image_stats=stats, meta=meta,
                      provenance=provenance, display=display)


class SampleDataset(Dataset):
    """In-memory samples with an optional image augmentation applied on access (training)."""

    def __init__(self, samples: Sequence[Sample], *, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 ) -> None:
        self.samples = list(samples)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        s = self.samples[index]
        if self.augment is None or s.image is None:
            return s
        return Sample(**{**s.__dict__, "image": self.augment(s.image)})


@dataclass
class Batch:
    """A collated batch: model inputs, labels (B, C) with NaN, the samples' keys and offsets for explanations."""

    inputs: ModelInputs
    labels: torch.Tensor | None
    keys: list[str]
    offsets: torch.Tensor  # (B, K, L, 2) char spans of note tokens
    boxes: torch.Tensor | None = None  # (B, 4) int64 (top, left, rows, cols) of the 2D image content on the model grid

    def pin_memory(self) -> Batch:
        self.inputs = ModelInputs(**{k: v.pin_memory() for k, v in self.inputs.__dict__.items()})
        if self.labels is not None:
            self.labels = self.labels.pin_memory()
        return self


def collate(samples: Sequence[Sample], *, image_size: int, pad_id: int = 0) -> Batch:
    """Stack images (zeros where missing) and pad notes to the batch's own maximum K and L (dynamic padding)."""
    b = len(samples)
    shape = next((s.image.shape for s in samples if s.image is not None), (1, image_size, image_size))
    image = torch.zeros(b, *shape, dtype=torch.float32)  # (B, 1, H, W)
    present = torch.zeros(b, dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.image is not None:
            image[i] = s.image
            present[i] = True
    notes = collate_notes([s.note for s in samples], pad_id=pad_id)
    text_present = notes["keep"].flatten(1).any(1)  # (B,)
    inputs = ModelInputs(image=image, image_present=present, input_ids=notes["input_ids"],
                         attention_mask=notes["attention_mask"], keep=notes["keep"], text_present=text_present)
    labels = None
    if all(s.labels is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.labels for s in samples]).astype(np.float32))  # (B, C)
    boxes = torch.tensor([[s.letterbox.pad_top, s.letterbox.pad_left, *s.letterbox.resized]
                          if s.image is not None and s.letterbox is not None else [0, 0, *shape[-2:]]
                          for s in samples], dtype=torch.long).reshape(b, 4)  # (B, 4)
    return Batch(inputs=inputs, labels=labels, keys=[s.key for s in samples], offsets=notes["offsets"], boxes=boxes)
