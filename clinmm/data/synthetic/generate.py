"""The synthetic paired DICOM + note data set (``clinmm sample-data OUT --studies N --seed S``).

Layout and columns follow ``docs/dev/contracts.md``::

    OUT/manifest.csv  OUT/notes.csv  OUT/dicom/<patient>/<study>/...  OUT/ground_truth/masks/<study>__<label>.png
    OUT/ground_truth/evidence.json  OUT/README.md

Labels: ``nodule`` and ``consolidation`` are drawn only in the image, ``fever`` and ``dyspnea`` are stated only in
the note, and ``pneumonia`` = consolidation AND fever (truth), so it needs both modalities. All five are drawn
independently per study, so no modality carries information about another modality's findings.

Determinism: every random draw comes from ``numpy.random.SeedSequence([seed, ...])`` streams keyed by patient and
study index; UIDs from :func:`clinmm.data.synthetic.dicom_writer.make_uid`; files are written in a fixed order with
no timestamps. Same seed and arguments → byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from clinmm.data.synthetic.dicom_writer import (
    DicomStudyInfo,
    RadiographEncoding,
    SiteProfile,
    write_ct_series,
    write_radiograph,
)
from clinmm.data.synthetic.images import LesionParams, render_ct, render_radiograph
from clinmm.data.synthetic.notes import NOTE_LABELS, ValWording, render_note

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "MANIFEST_COLUMNS",
    "SITES",
    "SyntheticOptions",
    "SyntheticSummary",
    "generate_sample_data",
]

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("nodule", "consolidation", "fever", "dyspnea", "pneumonia")
MANIFEST_COLUMNS: tuple[str, ...] = (
    "study_id", "patient_id", "split", "image_path", "note_text",
    *(f"label_{name}" for name in LABELS),
    "sex", "age_band", "site", "modality", "view",
)
SITES: tuple[SiteProfile, ...] = (
    SiteProfile("site_a", "Acme Radiography", "AR-500", "Synthetic General Hospital"),
    SiteProfile("site_b", "Borealis Medical", "BX-2", "Synthetic Northern Clinic"),
    # The site with a different intensity response: gamma + offset + lower gain.
    SiteProfile("site_c", "Cygnus Imaging", "CY-Vision", "Synthetic Valley Centre", gamma=0.7, gain=3000.0,
                offset=700.0),
)
_AGE_BANDS: tuple[tuple[str, int, int], ...] = (("18-39", 18, 39), ("40-64", 40, 64), ("65+", 65, 92))
# Bumped whenever the same seed and options would write different files; callers that cache a generated set (the
# demo) can key on it.
GENERATOR_VERSION = "5"


@dataclass(frozen=True)
class SyntheticOptions:
    """Knobs of the generator (defaults are the documented data set).

    Args:
        image_size: side of a square radiograph; non-square ones are (1.25·size) × size; CT slices are size × size.
        prevalence: label → probability of the finding (pneumonia is derived, not drawn).
        missing_image: fraction of studies without an image.
        missing_note: fraction of studies without a note.
        unknown_label: fraction of label cells left blank (unknown).
        long_note: fraction of notes padded to several hundred words.
        ct_fraction: fraction of imaged studies that are small CT series.
        monochrome1: fraction of radiographs stored MONOCHROME1.
        rescaled: fraction of studies whose CR image has RescaleSlope/Intercept ≠ 1/0 (DX For Presentation requires
            1/0, so DX images drawn here keep 1/0).
        non_square: fraction of radiographs that are not square.
        rle: fraction of images stored RLE Lossless.
        jpegls: fraction of radiographs stored JPEG-LS Lossless.
        split_fractions: (train, val, test) fractions of studies, assigned by patient.
        val_wording: ``"unseen"`` (default): validation notes use a phrase pool of their own, disjoint from the
            training and test pools, so validation measures generalisation to new wording as the test split does;
            ``"training"``: validation notes use the training pool (generator version 4 and earlier).
        lesions: lesion size/contrast ranges.
    """

    image_size: int = 256
    prevalence: dict[str, float] = field(
        default_factory=lambda: {"nodule": 0.3, "consolidation": 0.35, "fever": 0.4, "dyspnea": 0.35}
    )
    missing_image: float = 0.04
    missing_note: float = 0.08
    unknown_label: float = 0.02
    long_note: float = 0.04
    ct_fraction: float = 0.1
    monochrome1: float = 0.25
    rescaled: float = 0.5
    non_square: float = 0.15
    rle: float = 0.06
    jpegls: float = 0.04
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    val_wording: ValWording = "unseen"
    lesions: LesionParams = LesionParams()


@dataclass
class SyntheticSummary:
    """What was generated.

    Args:
        out: the output folder.
        seed: the seed.
        studies: number of studies.
        patients: number of patients.
        counts: name → count (splits, modalities, missing modalities, label positives …).
    """

    out: Path
    seed: int
    studies: int
    patients: int
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"out": str(self.out), "seed": self.seed, "studies": self.studies, "patients": self.patients,
                "counts": dict(self.counts)}


def _deck(rng: np.random.Generator, n: int, fractions: dict[str, float]) -> list[str]:
    """``n`` values with (rounded) exact proportions, shuffled; each value with fraction > 0 occurs at least once
    when ``n >= 10`` (so that even a tiny set has every variant). Unlisted remainder is ``""``."""
    values: list[str] = []
    for name, frac in fractions.items():
        k = int(round(frac * n))
        if frac > 0 and n >= 10:
            k = max(k, 1)
        values += [name] * k
    values = values[:n] + [""] * max(0, n - len(values))
    return [values[int(i)] for i in rng.permutation(n)]


def _png_bytes(mask: np.ndarray) -> bytes:
    """uint8 0/255 PNG of a boolean (H, W) mask (deterministic encoder settings)."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG", optimize=False,
                                                                            compress_level=6)
    return buf.getvalue()


def _plan_patients(rng: np.random.Generator, studies: int) -> list[int]:
    """Number of studies per patient (1–3), summing to ``studies``."""
    sizes: list[int] = []
    left = studies
    while left > 0:
        k = min(left, int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15])))
        sizes.append(k)
        left -= k
    return sizes


def _assign_splits(rng: np.random.Generator, sizes: list[int], fractions: tuple[float, float, float]) -> list[str]:
    """Patient-level split: shuffled patients fill train, then val, then test, by cumulative study count."""
    total = sum(sizes)
    order = rng.permutation(len(sizes))
    splits = [""] * len(sizes)
    cum = 0
    cut_train, cut_val = fractions[0] * total, (fractions[0] + fractions[1]) * total
    for rank, p in enumerate(order):
        left_patients = len(sizes) - rank
        if cum < cut_train and left_patients > 2:
            splits[p] = "train"
        elif cum < cut_val and left_patients > 1:
            splits[p] = "val"
        else:
            splits[p] = "test"
        cum += sizes[p]
    return splits


def generate_sample_data(
    out: str | Path,
    *,
    studies: int = 1000,
    seed: int = 0,
    options: SyntheticOptions | None = None,
    overwrite: bool = False,
    workers: int = 0,
) -> SyntheticSummary:
    """Generate the synthetic data set into ``out``.

    Args:
        out: output folder (created). Must be empty or absent unless ``overwrite``.
        studies: number of studies (≥ 1).
        seed: random seed; the same seed and options give byte-identical files on one machine (across CPUs a few pixel
            values may differ by one grey level: see sample_data/README.md).
        options: generator knobs (defaults: :class:`SyntheticOptions`).
        overwrite: delete what a previous run wrote in ``out`` (manifest, notes, dicom/, ground_truth/, README) first.
        workers: processes that render and write patients in parallel (0 or 1: this process). The files are the same
            whatever the number of workers.

    Returns:
        :class:`SyntheticSummary` with counts.

    Raises:
        ValueError: ``studies`` < 1, an image size below 32 or an unknown ``val_wording``.
        FileExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    opts = options or SyntheticOptions()
    if studies < 1:
        raise ValueError(f"sample-data: --studies must be >= 1, got {studies}")
    if opts.image_size < 32:
        raise ValueError(f"sample-data: image_size must be >= 32, got {opts.image_size}")
    wordings = typing.get_args(ValWording)
    if opts.val_wording not in wordings:
        raise ValueError(f"sample-data: --val-wording must be one of {list(wordings)}, got {opts.val_wording!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: output folder is not empty (pass overwrite to replace a generated set)")
        for name in ("manifest.csv", "notes.csv", "README.md"):
            (out / name).unlink(missing_ok=True)
        for name in ("dicom", "ground_truth"):
            shutil.rmtree(out / name, ignore_errors=True)
    (out / "ground_truth" / "masks").mkdir(parents=True, exist_ok=True)
    (out / "dicom").mkdir(parents=True, exist_ok=True)

    plan = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    sizes = _plan_patients(plan, studies)
    splits = _assign_splits(plan, sizes, opts.split_fractions)
    n = studies
    missing = _deck(plan, n, {"image": opts.missing_image, "note": opts.missing_note})
    modality = _deck(plan, n, {"CT": opts.ct_fraction, "DX": (1 - opts.ct_fraction) / 2})
    photometric = _deck(plan, n, {"MONOCHROME1": opts.monochrome1})
    rescaled = _deck(plan, n, {"yes": opts.rescaled})
    shape = _deck(plan, n, {"tall": opts.non_square})
    compression = _deck(plan, n, {"rle": opts.rle, "jpegls": opts.jpegls})
    long_note = _deck(plan, n, {"long": opts.long_note})

    decks = {"missing": missing, "modality": modality, "photometric": photometric, "rescaled": rescaled,
             "shape": shape, "compression": compression, "long_note": long_note}
    jobs, j = [], 0
    for p, n_studies in enumerate(sizes):
        jobs.append(_PatientJob(out=out, seed=seed, opts=opts, patient=p, n_studies=n_studies, first=j,
                                split=splits[p], decks={k: v[j:j + n_studies] for k, v in decks.items()}))
        j += n_studies
    rows_out: list[dict[str, str]] = []
    note_rows: list[tuple[str, str, str]] = []
    evidence: dict[str, list[dict[str, str | int]]] = {}
    counts: dict[str, int] = {}
    for part in _run_jobs(jobs, workers):  # in patient order whatever the number of workers
        rows_out += part.rows
        note_rows += part.note_rows
        evidence.update(part.evidence)
        for k, v in part.counts.items():
            counts[k] = counts.get(k, 0) + v

    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows_out)
    with open(out / "notes.csv", "w", newline="", encoding="utf-8") as fh:
        writer_ = csv.writer(fh, lineterminator="\n")
        writer_.writerow(["study_instance_uid", "accession_number", "note_text"])
        writer_.writerows(note_rows)
    (out / "ground_truth" / "evidence.json").write_text(json.dumps(evidence, indent=1) + "\n", encoding="utf-8")
    summary = SyntheticSummary(out=out, seed=seed, studies=studies, patients=len(sizes), counts=dict(sorted(
        counts.items())))
    (out / "README.md").write_text(_readme(summary, opts), encoding="utf-8")
    logger.info("synthetic data: %d studies, %d patients written to %s", studies, len(sizes), out)
    return summary



@dataclass
class _PatientJob:
    """Everything needed to write one patient's studies, independently of every other patient."""

    out: Path
    seed: int
    opts: SyntheticOptions
    patient: int
    n_studies: int
    first: int  # global index of the patient's first study (study ids and accession numbers)
    split: str
    decks: dict[str, list[str]]


@dataclass
class _PatientPart:
    rows: list[dict[str, str]] = field(default_factory=list)
    note_rows: list[tuple[str, str, str]] = field(default_factory=list)
    evidence: dict[str, list[dict[str, str | int]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _run_jobs(jobs: list[_PatientJob], workers: int):
    """Yield each job's :class:`_PatientPart` in job order, in this process or in ``workers`` processes."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(_write_patient, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_write_patient, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


def _write_patient(job: _PatientJob) -> _PatientPart:
    """Render and write one patient's studies (DICOM, masks) and return their rows, notes and evidence."""
    out, seed, opts, p, n_studies = job.out, job.seed, job.opts, job.patient, job.n_studies
    size = opts.image_size
    part = _PatientPart()
    rows_out, note_rows, evidence, counts = part.rows, part.note_rows, part.evidence, part.counts
    prng = np.random.default_rng(np.random.SeedSequence([seed, 1, p]))
    patient_id = f"P{p + 1:05d}"
    sex = "F" if prng.random() < 0.5 else "M"
    band, lo, hi = _AGE_BANDS[int(prng.choice(3, p=[0.25, 0.4, 0.35]))]
    site = SITES[int(prng.choice(3, p=[0.45, 0.35, 0.2]))]
    birth_year = 2024 - int(prng.integers(lo, hi + 1))
    birth = f"{birth_year}{int(prng.integers(1, 13)):02d}{int(prng.integers(1, 29)):02d}"
    day0 = int(prng.integers(0, 500))
    for k in range(n_studies):
        j = job.first + k  # global study index
        srng = np.random.default_rng(np.random.SeedSequence([seed, 2, p, k]))
        study_id = f"S{j + 1:05d}"
        split = job.split
        truth = {name: int(srng.random() < opts.prevalence[name]) for name in ("nodule", "consolidation",
                                                                             "fever", "dyspnea")}
        truth["pneumonia"] = int(truth["consolidation"] and truth["fever"])
        day = day0 + k * int(srng.integers(20, 120))
        date = np.datetime64("2023-01-01") + np.timedelta64(day, "D")
        study_date = str(date).replace("-", "")
        age = int(study_date[:4]) - birth_year
        info = DicomStudyInfo(
            seed=seed, study_id=study_id, patient_id=patient_id, patient_name=f"SYNTHETIC^{patient_id}",
            sex=sex, birth_date=birth, age_years=age, study_date=study_date,
            study_time=f"{int(srng.integers(7, 20)):02d}{int(srng.integers(0, 60)):02d}00",
            accession=f"ACC{seed % 1000:03d}{j + 1:06d}", site=site,
        )
        has_image, has_note = job.decks["missing"][k] != "image", job.decks["missing"][k] != "note"
        image_path, mod, view = "", "", ""
        if has_image:
            study_dir = out / "dicom" / patient_id / study_id
            mod = job.decks["modality"][k] or "CR"
            if mod == "CT":
                view = "AXIAL"
                rendered = render_ct(srng, rows=size, cols=size, slices=int(srng.integers(3, 6)),
                                     nodule=bool(truth["nodule"]), consolidation=bool(truth["consolidation"]),
                                     params=opts.lesions)
                write_ct_series(study_dir / "CT", rendered.pixels, info=info, pixel_spacing=round(360 / size, 4),
                                slice_thickness=5.0,
                                transfer_syntax=RLELossless if job.decks["compression"][k]
                                else ExplicitVRLittleEndian)
                image_path = f"dicom/{patient_id}/{study_id}/CT"
            else:
                view = "PA" if srng.random() < 0.7 else "AP"
                rows = int(round(size * 1.25)) if job.decks["shape"][k] == "tall" else size
                rendered = render_radiograph(srng, rows=rows, cols=size, nodule=bool(truth["nodule"]),
                                             consolidation=bool(truth["consolidation"]), params=opts.lesions)
                slope, intercept = (1.0, 0.0)
                if job.decks["rescaled"][k] and mod == "CR":  # DX For Presentation requires slope 1 / intercept 0
                    slope, intercept = (2.0, -1000.0) if srng.random() < 0.5 else (1.5, -512.0)
                ts = {"rle": RLELossless, "jpegls": JPEGLSLossless}.get(job.decks["compression"][k],
                                                                        ExplicitVRLittleEndian)
                encoding = RadiographEncoding(
                    modality=mod, view=view, photometric=job.decks["photometric"][k] or "MONOCHROME2", slope=slope,
                    intercept=intercept, transfer_syntax=ts, pixel_spacing=round(400 / size, 4),
                )
                write_radiograph(study_dir / "IM0001.dcm", rendered.pixels[0], info=info, encoding=encoding)
                image_path = f"dicom/{patient_id}/{study_id}/IM0001.dcm"
            masks = dict(rendered.masks)
            if truth["pneumonia"]:
                masks["pneumonia"] = rendered.masks["consolidation"]
            for label in sorted(masks):
                (out / "ground_truth" / "masks" / f"{study_id}__{label}.png").write_bytes(_png_bytes(masks[label]))
            counts[f"modality_{mod}"] = counts.get(f"modality_{mod}", 0) + 1
        note_text = ""
        if has_note:
            note = render_note(srng, truth={name: truth[name] for name in NOTE_LABELS}, split=split,
                               long=bool(job.decks["long_note"][k]), val_wording=opts.val_wording)
            note_text = note.text
            evidence[study_id] = [m.as_dict() for m in note.mentions]
            note_rows.append((info.study_uid, info.accession, note_text))
        labels = {}
        for name in LABELS:
            blank = srng.random() < opts.unknown_label
            labels[f"label_{name}"] = "" if blank else str(truth[name])
            if not blank and truth[name]:
                counts[f"positive_{name}"] = counts.get(f"positive_{name}", 0) + 1
        rows_out.append({
            "study_id": study_id, "patient_id": patient_id, "split": split, "image_path": image_path,
            "note_text": note_text, **labels, "sex": sex, "age_band": band, "site": site.name, "modality": mod,
            "view": view,
        })
        counts[f"split_{split}"] = counts.get(f"split_{split}", 0) + 1
        counts["no_image"] = counts.get("no_image", 0) + (not has_image)
        counts["no_note"] = counts.get("no_note", 0) + (not has_note)
    return part


def _readme(summary: SyntheticSummary, opts: SyntheticOptions) -> str:
    """The generated set's README (no timestamps, so it is deterministic too)."""
    lines = [
        "# clinmm synthetic data set",
        "",
        f"Generated by `clinmm sample-data` (generator version {GENERATOR_VERSION}) with seed {summary.seed}, "
        f"{summary.studies} studies, {summary.patients} patients, image size {opts.image_size}, validation notes in "
        f"{'wording of their own' if opts.val_wording == 'unseen' else 'the training wording'}.",
        "Every patient, UID and note is synthetic. See the repository's `sample_data/README.md` for how it is built.",
        "",
        "| count | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in summary.counts.items()),
        "",
        "Files: `manifest.csv`, `notes.csv`, `dicom/<patient>/<study>/` (CR/DX: `IM0001.dcm`; CT: `CT/` series),",
        "`ground_truth/masks/<study>__<label>.png` (0/255 on the DICOM pixel grid; for CT the in-plane footprint,",
        "valid on every slice), `ground_truth/evidence.json` (character spans with polarity).",
        "",
    ]
    return "\n".join(lines)
