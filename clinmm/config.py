"""Typed configuration: one dataclass per stage, loaded from YAML with ``yaml.safe_load``.

An unknown key or a value of the wrong type is a :class:`~clinmm.errors.ConfigError` that names the key and the file.
Library code takes these objects as arguments; only the CLI and the dashboard read files, argv or the environment.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clinmm.errors import ConfigError

__all__ = [
    "DataConfig",
    "ImageEncoderConfig",
    "TextEncoderConfig",
    "FusionConfig",
    "TrainConfig",
    "ScoreConfig",
    "ClinmmConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "demo_config",
    "RelevanceGame",
]

# The Shapley games a cross-attention fusion's token relevance can be of (clinmm.models.fusion.token_relevance).
RelevanceGame = Literal["visible", "replace"]


@dataclass
class DataConfig:
    """What the model reads and how the inputs are prepared.

    Args:
        labels: finding names, in output order; empty means every ``label_<finding>`` column of the manifest.
        modalities: DICOM modalities the model is trained on; other studies are ``out_of_scope`` when scored.
        image_size: side of the square model input (2D: H = W = image_size) after letterboxing.
        intensity: ``"percentile"`` (per image: 0.5–99.5 percentile of modality values → 0..1, the documented
            default for CR/DX, whose raw values have no physical unit) or ``"window"`` (fixed ``window`` in
            modality units, e.g. HU for CT). Never the header's VOI window, which varies by site.
        window: (low, high) in modality units for ``intensity="window"``.
        num_workers: DataLoader worker processes for decoding.
    """

    labels: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=lambda: ["CR", "DX"])
    image_size: int = 256
    intensity: Literal["percentile", "window"] = "percentile"
    window: list[float] = field(default_factory=lambda: [-1000.0, 1000.0])
    num_workers: int = 0


@dataclass
class ImageEncoderConfig:
    """MONAI image backbone.

    Args:
        backbone: ``densenet121`` (GPU default), ``densenet_small``, ``densenet_tiny`` (CPU demo),
            ``densenet_tiny_s8`` (its stride-8 variant), ``resnet18``, ``resnet50``, ``vit``.
        spatial_dims: 2 for radiographs/slices, 3 for CT/MR volumes.
        pretrained_path: local safetensors file with backbone weights (checked by sha256 if ``pretrained_sha256``).
        pretrained_sha256: expected sha256 of ``pretrained_path``.
    """

    backbone: str = "densenet121"
    spatial_dims: int = 2
    pretrained_path: str | None = None
    pretrained_sha256: str | None = None


@dataclass
class TextEncoderConfig:
    """BERT-family text encoder from a local directory.

    Args:
        path: local checkpoint directory; ``None`` means the packaged offline all-MiniLM-L6-v2.
        max_length: tokens per chunk (≤ the encoder's position limit).
        stride: tokens shared by consecutive chunks of a long note.
        max_chunks: chunks kept per note (the rest is dropped with a warning).
        pooling: how chunks are combined: ``tokens`` (all chunk tokens go to fusion, overlaps de-duplicated),
            ``mean`` or ``max`` (one vector per chunk position pooled across chunks).
        freeze_layers: number of lower transformer layers (plus embeddings) kept frozen.
        lora: fine-tune the text encoder with LoRA adapters instead of full weights.
        lora_r: LoRA rank.
        warmup_epochs: before the fused training, fine-tune the top ``warmup_layers`` layers of the (fully frozen)
            encoder on the notes alone for this many epochs, then freeze it again (0 = off; see
            :mod:`clinmm.training.text_warmup`).
        warmup_layers: top layers the warm-up trains.
        warmup_lr: the warm-up's learning rate for those layers (its head uses ``train.lr_head``).
    """

    path: str | None = None
    max_length: int = 128
    stride: int = 32
    max_chunks: int = 8
    pooling: Literal["tokens", "mean", "max"] = "tokens"
    freeze_layers: int = 0
    lora: bool = False
    lora_r: int = 8
    warmup_epochs: int = 0
    warmup_layers: int = 2
    warmup_lr: float = 1e-4


@dataclass
class FusionConfig:
    """How image and text tokens meet.

    Args:
        method: ``cross_attention`` (default), ``concat``, ``gated``, ``image_only``, ``text_only``.
        dim: common token width D after projection.
        heads: attention heads in the label-query cross-attention.
        dropout: dropout in fusion layers.
        modality_dropout: probability, per training sample, of dropping one present modality.
        aux_image_weight: α, weight of the auxiliary image-only head's loss.
        aux_text_weight: β, weight of the auxiliary text-only head's loss.
        text_token_dropout: probability, per note token and training step, that fusion does not see the token
            (word dropout at the fusion's input; a note keeps at least one token). 0 disables.
        image_token_dropout: the same for the image's tokens (the fusion and the auxiliary image head do not see a
            dropped token; an image keeps at least one). 0 disables.
        image_relevance_game: which Shapley game the image tokens' relevance (the heatmap) is of, ``"visible"`` or
            ``"replace"`` (cross_attention only; see :meth:`clinmm.models.fusion.CrossAttentionFusion.token_relevance`).
            Only the explanation depends on it, never a prediction; a checkpoint stores it.
        text_relevance_game: the same for the note's tokens (the highlighted words).
        image_relevance_carry: ``"occlusion"`` carries the image tokens' relevance back to the cells of the image it
            comes from, by replacing each cell with a healthy reference fitted on the training split
            (:mod:`clinmm.explain.occlusion`; one more encoder pass per cell of an explained 2D study); ``"none"``
            shows the tokens' relevance where the tokens are. Only the explanation depends on it.
        image_relevance_carry_subcells: k: the replaced windows (one token cell in size) move by 1/k of a cell, and
            the carried map has k × the token grid's resolution ((k·h − m + 1)·(k·w − m + 1) passes per study, m the
            window's side in sub-cells).
        image_relevance_carry_window: side of each replaced window in token cells (its product with the sub-cells
            must be a whole number: 1.5 with 2 sub-cells is a window of 3 sub-cells). A window wider than a cell
            covers a lesion that straddles two cells; 1.5 pointed at 79 / 79 / 83 of 96 validation lesions against 78
            / 76 / 82 with 1 (docs/explanations.md, "Measured (twenty-second session)").
        image_relevance_carry_permutations: orderings the token relevance of each occluded image is sampled from
            (even, ≥ 2; the shown relevance always uses 32). Most of the carry's cost is proportional to it; the
            same orderings serve every window and the unoccluded image, so their sampling error largely cancels in
            the drops the shares come from: 4 pointed as well as 32 on three seeds at a fifth of the cost
            (docs/explanations.md, "Measured (twenty-second session)").
        text_relevance_rollout: weight of the text encoder's self-attention against its residual stream when the
            note tokens' relevance is carried back to the words it came from (:mod:`clinmm.explain.rollout`);
            ``0`` shows the relevance of the contextual tokens as they are. Only the explanation depends on it.
        separate_note_attention: the note is read by label queries and attention of its own, not those that read
            the image (cross_attention only), so that ``train.note_branch_epochs`` holds all of the note's reading.
        note_pool: cross_attention also reads the note as ``text_only`` does (mean and max of its tokens, projected)
            and adds that to every label's note summary; its tokens' relevance covers both readings.
        image_pool: the same for the image (mean and max of its tokens added to every label's image summary), so
            that what the whole image says needs no token to carry it; its tokens' relevance covers both readings.
        head_stack: the output logit is a per-label stack of the fusion head and the auxiliary image and text
            heads, fitted on the validation split after training, one set of weights per presence pattern
            (:mod:`clinmm.models.head_stack`). Off: the fusion head alone.
    """

    method: Literal["cross_attention", "concat", "gated", "image_only", "text_only"] = "cross_attention"
    dim: int = 256
    heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.15
    aux_image_weight: float = 0.3
    aux_text_weight: float = 0.3
    text_token_dropout: float = 0.0
    image_token_dropout: float = 0.0
    image_relevance_game: RelevanceGame = "visible"
    text_relevance_game: RelevanceGame = "visible"
    image_relevance_carry: Literal["none", "occlusion"] = "none"
    image_relevance_carry_subcells: int = 1
    image_relevance_carry_window: float = 1.0
    image_relevance_carry_permutations: int = 4
    text_relevance_rollout: float = 0.25
    separate_note_attention: bool = False
    note_pool: bool = False
    image_pool: bool = False
    head_stack: bool = False

    @property
    def image_relevance_carry_window_subcells(self) -> int:
        """The replaced window's side in sub-cells (``image_relevance_carry_window`` × ``…_subcells``, rounded)."""
        return round(self.image_relevance_carry_window * self.image_relevance_carry_subcells)


@dataclass
class TrainConfig:
    """Optimisation.

    Args:
        epochs: maximum epochs.
        batch_size: samples per optimiser step (before accumulation).
        accumulate: gradient accumulation steps.
        lr_encoder: learning rate of pretrained encoders.
        lr_head: learning rate of new layers.
        weight_decay: AdamW weight decay.
        warmup_frac: fraction of steps with linear warm-up before cosine decay.
        grad_clip: max gradient norm (0 disables).
        patience: early-stopping patience in epochs on validation macro AUROC (0 disables).
        loss: ``bce`` or ``focal``.
        pos_weight: weight positives by the negative/positive ratio of the training split.
        calibration: ``temperature``, ``isotonic`` or ``none``; fitted on the validation split.
        threshold_rule: ``youden`` or ``sensitivity`` (then ``target_sensitivity``).
        target_sensitivity: for ``threshold_rule="sensitivity"``.
        seed: random seed (Python, NumPy, torch).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        max_train_seconds: stop after this many seconds of training (0 = no limit), for demo budgets.
        note_branch_epochs: train the note-only new layers (``ClinmmModel.note_branch_parameters``) on their own
            warm-up + cosine schedule over this many epochs, then hold them (learning rate 0) while the rest trains
            on; 0 = the whole run. A note reader fits its training wording within a few epochs, an image branch
            learnt from scratch needs many.
        flip_axes: spatial axes of the model input that the training augmentation flips, each with probability
            0.5 — in 2D (0 = rows, 1 = columns), in 3D (0 = slices, 1 = rows, 2 = columns). Empty (default): none,
            a radiograph's left and right are anatomy.
        rotation_equivariance: weight of a loss that asks the image tokens of the input turned by 180° (in the
            image plane) to equal the original tokens turned by 180° on the token grid
            (:meth:`clinmm.models.classifier.ClinmmModel.rotation_equivariance`); 0 (default) = off. The rotated
            image is only encoded for this term; the classifier never reads it. A token map that is equivariant
            under the turn cannot carry a finding one token to the side of where it is in one direction only. Off in
            the demo configuration: on its three seeds it narrowed the spread of image pointing but cost the demo's
            own seed (docs/explanations.md, "Measured (twentieth session)").
    """

    epochs: int = 10
    batch_size: int = 32
    accumulate: int = 1
    lr_encoder: float = 3e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int = 3
    loss: Literal["bce", "focal"] = "bce"
    pos_weight: bool = False
    calibration: Literal["temperature", "isotonic", "none"] = "temperature"
    threshold_rule: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.9
    seed: int = 0
    device: str = "auto"
    max_train_seconds: float = 0.0
    note_branch_epochs: int = 0
    flip_axes: list[int] = field(default_factory=list)
    rotation_equivariance: float = 0.0


@dataclass
class ScoreConfig:
    """Batch scoring.

    Args:
        batch_size: studies per model batch.
        workers: decode worker processes.
        device: ``auto``, ``cpu``, ``cuda``...
        shard_size: studies per output shard (resume granularity).
        file_timeout_s: deadline for decoding one file.
        max_file_bytes: files larger than this are ``too_large``.
        max_pixels: Rows×Columns×Frames above this is ``too_large``.
    """

    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    shard_size: int = 256
    file_timeout_s: float = 30.0
    max_file_bytes: int = 2 * 1024**3
    max_pixels: int = 512 * 1024 * 1024


@dataclass
class ClinmmConfig:
    """The whole configuration; each section is one stage."""

    data: DataConfig = field(default_factory=DataConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


def demo_config() -> ClinmmConfig:
    """The CPU demo configuration: a light MONAI DenseNet on 128×128 inputs and a frozen MiniLM (its note features
    are computed once and cached during training), so that it trains in minutes on 2 CPU cores."""
    return ClinmmConfig(
        data=DataConfig(image_size=128),
        image=ImageEncoderConfig(backbone="densenet_tiny"),
        # Frozen MiniLM (features cached), after a 3-epoch warm-up of its top 4 layers on the notes: a frozen
        # general-purpose encoder read by a small head learns the training wording and misses unseen phrasings.
        # Four layers rather than two read unseen dyspnea wording far better (validation, three training seeds:
        # docs/explanations.md, "Measured (sixteenth session)"). The fusion checks on the 4,000-study set favour two
        # layers (5 of 9 against 7 of 9 on two seeds: docs/ablation.md, run S11b): a trade-off, not settled.
        text=TextEncoderConfig(max_length=128, stride=32, freeze_layers=6, warmup_epochs=3, warmup_layers=4),
        # The image branch learns from scratch and more slowly than the (pretrained, frozen) note branch: a full-weight
        # auxiliary image loss and more modality dropout keep the fused model from leaning on the note alone.
        # The note is read by an attention of its own that trains for 6 epochs and then holds (read on unseen
        # wording, the note findings peak within the first epochs and then decline), while the image branch trains
        # for 40 (it is still improving at epoch 30). Chosen on the validation split, whose notes are in wording of
        # their own, together with the image's Shapley game "replace" (the note's stays "visible"):
        # docs/explanations.md, "Measured (twelfth session)".
        # The output stacks the fusion head with the auxiliary heads (fitted on validation, non-negative): on the
        # 4,000-study set the fusion head read the single-modality findings below the single-modality models while
        # the auxiliary heads did not (docs/ablation.md, run S12); on the demo test split the explanation targets
        # still hold and the note's deletion improves (docs/explanations.md, "Measured (eighteenth session)").
        # The image heatmap is carried back to the image regions the tokens read it from, by occlusion with a
        # healthy reference, with windows moving by half a token cell: it moves image pointing on validation from
        # 76 / 16 / 76 of 96 (three seeds) to what docs/explanations.md, "Measured (twenty-first session)" reports.
        # Only the explanation depends on it (197 extra encoder passes per explained study at 128 px: windows of a
        # cell and a half, each occluded image's token relevance sampled from 4 orderings: "Measured (twenty-second
        # session)").
        fusion=FusionConfig(dim=128, heads=4, aux_image_weight=1.0, modality_dropout=0.3,
                            image_relevance_game="replace", image_relevance_carry="occlusion",
                            image_relevance_carry_subcells=2, image_relevance_carry_window=1.5,
                            separate_note_attention=True, head_stack=True),
        train=TrainConfig(epochs=40, batch_size=16, lr_encoder=5e-5, lr_head=3e-3, patience=0, note_branch_epochs=6),
    )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints are accepted where floats are expected)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")  # pragma: no cover - programming error


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, *, source: str = "<dict>") -> ClinmmConfig:
    """Build a :class:`ClinmmConfig` from a plain mapping, strictly.

    Args:
        data: nested mapping, e.g. ``{"fusion": {"method": "concat"}}``; missing keys take defaults.
        source: name used in error messages (usually the YAML file's path).

    Raises:
        ConfigError: on an unknown key or a wrong type, naming the dotted key and ``source``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(ClinmmConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {sorted(hints)}")
    sections = {}
    for name, tp in hints.items():
        try:
            sections[name] = _build(tp, data.get(name) or {}, name)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    config = ClinmmConfig(**sections)
    bad = [a for a in config.train.flip_axes if not 0 <= a < config.image.spatial_dims]
    if bad:
        raise ConfigError(f"{source}: train.flip_axes: {bad} are not spatial axes of a "
                          f"{config.image.spatial_dims}D input (0 … {config.image.spatial_dims - 1})")
    fc = config.fusion
    if not 1 <= fc.image_relevance_carry_subcells <= 4:
        raise ConfigError(f"{source}: fusion.image_relevance_carry_subcells must be 1 … 4 (the windows' step is 1/k "
                          f"of a token cell), got {fc.image_relevance_carry_subcells}")
    side = fc.image_relevance_carry_window * fc.image_relevance_carry_subcells
    if not (abs(side - fc.image_relevance_carry_window_subcells) < 1e-9
            and 1 <= fc.image_relevance_carry_window_subcells <= 4 * fc.image_relevance_carry_subcells):
        raise ConfigError(f"{source}: fusion.image_relevance_carry_window × image_relevance_carry_subcells must be a "
                          f"whole number of sub-cells, 1 … {4 * fc.image_relevance_carry_subcells} (windows up to 4 "
                          f"cells), got {fc.image_relevance_carry_window} × {fc.image_relevance_carry_subcells}")
    perms = fc.image_relevance_carry_permutations
    if perms < 2 or perms % 2:
        raise ConfigError(f"{source}: fusion.image_relevance_carry_permutations must be an even number ≥ 2 (orderings "
                          f"are sampled in reversed pairs), got {perms}")
    return config


def load_config(path: str | Path, *, base: ClinmmConfig | None = None) -> ClinmmConfig:
    """Load a YAML config file with ``yaml.safe_load``; values override ``base`` (default: built-in defaults).

    Raises:
        ConfigError: the file is missing, is not YAML, or has an unknown key / wrong type (named with the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror}") from err
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if base is not None:
        merged = config_to_dict(base)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
        for section, values in data.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section].update(values)
            else:
                merged[section] = values
        data = merged
    return config_from_dict(data, source=str(path))


def config_to_dict(config: Any) -> dict:
    """Plain nested dict of a config dataclass (JSON/YAML-serialisable)."""
    return dataclasses.asdict(config)
