"""``clinmm explain``: one study → a PNG overlay per label, an HTML page of the note, and a JSON of the numbers.

Scoring (``--explain``) calls :func:`write_explanation` per study with the prediction it already made, so both write
the same files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinmm.explain.attention import StudyExplanation, explain_prediction, explanation_from_maps
from clinmm.explain.render import render_note_html, render_overlay_png
from clinmm.scoring.study_check import StudyCheck, check_study

__all__ = ["ExplainResult", "explain_study", "write_explanation", "compute_explanation", "EXPLAIN_METHODS"]

logger = logging.getLogger(__name__)

EXPLAIN_METHODS = ("attention", "gradcam", "gradcam++", "hirescam", "integrated_gradients")


@dataclass
class ExplainResult:
    """Files written for one study.

    Args:
        out: the output folder.
        files: every file written, relative to ``out``.
        explanations: the explanations, by method.
        check: the study against the model's scope and training images (:func:`clinmm.scoring.study_check.check_study`).
    """

    out: Path
    files: list[str] = field(default_factory=list)
    explanations: dict[str, StudyExplanation] = field(default_factory=dict)
    check: StudyCheck | None = None


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in name)


def compute_explanation(predictor, sample, prediction, *, method: str = "attention",
                        labels: Sequence[str] | None = None, ig_steps: int = 50,
                        internal_batch_size: int = 16) -> StudyExplanation:
    """One study's explanation by any method (attention needs ``prediction`` made with ``explain=True``).

    Args:
        predictor: the :class:`~clinmm.inference.Predictor`.
        sample: the prepared sample.
        prediction: its prediction.
        method: one of :data:`EXPLAIN_METHODS`.
        labels: restrict to these labels.
        ig_steps: integrated-gradients steps.
        internal_batch_size: integrated-gradients chunk size (bounds memory).
    """
    if method == "attention":
        return explain_prediction(sample, prediction, labels)
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"explain method: expected one of {list(EXPLAIN_METHODS)}, got {method!r}")
    from clinmm.explain.attribution import integrated_gradients_image, integrated_gradients_text
    from clinmm.explain.faithfulness import _pool
    from clinmm.explain.gradcam import CAM_METHODS, gradcam_maps

    net = predictor.loaded.model
    names = predictor.labels
    idx = [names.index(x) for x in (labels or names)]
    inputs = predictor.collate([sample]).inputs
    img = txt = None
    if prediction.image_present and net.image_encoder is not None:
        if method in CAM_METHODS:
            img = np.zeros((len(names), *inputs.image.shape[-2:]), dtype=np.float32)
            img[idx] = gradcam_maps(net, inputs, label_indices=idx, method=method).numpy()
        else:
            import torch

            with torch.no_grad():
                grid = tuple(net.image_encoder.forward_features(inputs.image.to(predictor.loaded.device)).grid)
            img = np.zeros((len(names), *grid), dtype=np.float32)
            for c in idx:
                img[c] = _pool(integrated_gradients_image(net, inputs, label_index=c, n_steps=ig_steps,
                                                          internal_batch_size=internal_batch_size), grid)
    if method == "integrated_gradients" and prediction.text_present and net.text_encoder is not None:
        txt = np.zeros((len(names), len(prediction.text_spans)), dtype=np.float32)
        for c in idx:
            txt[c] = integrated_gradients_text(net, inputs, label_index=c, n_steps=ig_steps,
                                               internal_batch_size=internal_batch_size, pad_id=predictor.pad_id)
    return explanation_from_maps(sample, prediction, method=method, image_maps=img, token_scores=txt,
                                 token_spans=prediction.text_spans, labels=labels)


def write_explanation(out: str | Path, sample, explanation: StudyExplanation, *, cmap: str = "cividis",
                      extra: dict | None = None) -> list[str]:
    """Write one explanation: ``<method>/<label>.png`` per label with an image, ``<method>/note.html`` and
    ``<method>/explanation.json``.

    Args:
        out: the study's explanation folder.
        sample: the prepared sample (``display`` for overlays, ``note_text`` for the note page).
        explanation: what to write.
        cmap: ``cividis`` or ``viridis``.
        extra: more JSON fields (e.g. model sha256).

    Returns:
        Written files relative to ``out``.
    """
    out = Path(out)
    folder = out / _safe(explanation.method)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    display = sample.display
    if display is None and sample.image is not None and sample.letterbox is not None:
        display = _display_from_input(sample)
    for le in explanation.labels:
        if le.image is not None and display is not None:
            path = folder / f"{_safe(le.label)}.png"
            path.write_bytes(render_overlay_png(display, le, cmap=cmap,
                                                title=f"{le.label} ({explanation.method}): p={le.prob:.2f}"))
            files.append(str(path.relative_to(out)))
    if sample.note_text:
        pages = [render_note_html(sample.note_text, le.words, label=f"{le.label} — p={le.prob:.2f}", cmap=cmap,
                                  standalone=False) for le in explanation.labels if le.words]
        if pages:
            doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>clinmm note explanation'
                   '</title></head><body style="max-width:60em;margin:1em auto;font-family:sans-serif">'
                   '<p style="font-size:12px">Highlights show which words the model used for each finding '
                   f'({explanation.method}); colour scale fixed across studies.</p>'
                   + "<hr>".join(pages) + "</body></html>\n")
            (folder / "note.html").write_text(doc, encoding="utf-8")
            files.append(str((folder / "note.html").relative_to(out)))
    data = explanation.to_dict()
    if extra:
        data.update(extra)
    (folder / "explanation.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    files.append(str((folder / "explanation.json").relative_to(out)))
    return files


def _display_from_input(sample) -> np.ndarray:
    """The model input with its padding cropped, resized back to the original grid (when no display was kept)."""
    box = sample.letterbox
    h, w = box.resized
    crop = sample.image[0, box.pad_top : box.pad_top + h, box.pad_left : box.pad_left + w].numpy()
    import torch
    import torch.nn.functional as F

    t = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop))[None, None], size=box.orig_shape, mode="bilinear",
                      align_corners=False)
    return t[0, 0].numpy()


def explain_study(model: str | Path, study: str | Path | None, *, note: str | None = None,
                  out: str | Path, methods: Sequence[str] = ("attention",), labels: Sequence[str] | None = None,
                  device: str | None = "auto", cmap: str = "cividis", force_scope: bool = False) -> ExplainResult:
    """Explain one study with a checkpoint and write the files (the ``clinmm explain`` command).

    Args:
        model: checkpoint directory.
        study: a DICOM file or series folder (None: note only).
        note: the note text (None: image only).
        out: output folder.
        methods: any of :data:`EXPLAIN_METHODS`.
        labels: restrict to these labels.
        device: ``auto``, ``cpu``, ``cuda``.
        cmap: ``cividis`` or ``viridis``.
        force_scope: explain a study outside the model's scope anyway (its JSON says so).

    Raises:
        ScopeError: the image is outside the model's scope (a modality, view or body part it was not trained on, or
            no Modality attribute) and ``force_scope`` is False. Nothing is written.
    """
    from clinmm.errors import ScopeError
    from clinmm.inference import Predictor

    if study is None and not note:
        raise ValueError("explain: give a study (DICOM file or series folder), a note, or both")
    predictor = Predictor.from_path(model, device=device, keep_display=True)
    sample = predictor.prepare(study, note, key="study")
    check = check_study(sample, scope=predictor.loaded.scope, reference=predictor.loaded.reference)
    if not check.in_scope and not force_scope:
        raise ScopeError(f"{study}: {check.scope_message(predictor.loaded.scope)}; pass --force-scope to explain it "
                         "anyway")
    for line in ([check.scope_message(predictor.loaded.scope)] if not check.in_scope else []) + check.unlike_training:
        logger.warning("explain: %s: %s", study, line)
    if check.unlike_training:
        logger.warning("explain: %s is unlike the images the model was trained on; treat its prediction and "
                       "explanation as an extrapolation", study)
    pred = predictor.predict([sample], explain=True)[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ExplainResult(out=out, check=check)
    extra = {"model_sha256": predictor.loaded.sha256, "image_status": sample.image_status,
             "study_check": check.to_dict()}
    for method in methods:
        exp = compute_explanation(predictor, sample, pred, method=method, labels=labels)
        result.explanations[method] = exp
        result.files += write_explanation(out, sample, exp, cmap=cmap, extra=extra)
    logger.info("explain: wrote %d files to %s", len(result.files), out)
    return result
