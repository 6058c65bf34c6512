"""Which transfer syntaxes this installation can decode (``clinmm info``, inspect rows, ``no_decoder`` status)."""

from __future__ import annotations

from functools import lru_cache

import pydicom.uid
from pydicom.pixels import get_decoder
from pydicom.uid import UID

__all__ = ["decoder_table", "decoder_for"]


@lru_cache(maxsize=None)
def decoder_for(transfer_syntax_uid: str) -> tuple[bool, tuple[str, ...]]:
    """(available, plugin names) for a transfer syntax; native (uncompressed) syntaxes report ``("native",)``.

    Args:
        transfer_syntax_uid: the Transfer Syntax UID.

    Returns:
        Whether an installed pydicom decoder plugin can decode it, and which plugins pydicom will try (in order).
    """
    uid = UID(transfer_syntax_uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return False, ()
    if not decoder.is_available:
        return False, ()
    plugins = tuple(decoder.available_plugins)
    return True, plugins if plugins else ("native",)


def decoder_table() -> list[dict]:
    """One row per transfer syntax pydicom knows: ``uid``, ``name``, ``available``, ``plugins`` (comma-separated).

    Returns:
        Rows sorted by UID as pydicom lists them (``pydicom.uid.AllTransferSyntaxes``).
    """
    rows = []
    for uid in pydicom.uid.AllTransferSyntaxes:
        available, plugins = decoder_for(str(uid))
        rows.append({"uid": str(uid), "name": UID(uid).name, "available": available, "plugins": ", ".join(plugins)})
    return rows
