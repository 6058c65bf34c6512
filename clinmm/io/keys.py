"""Salted study / series keys: stable pseudonyms for UIDs, one secret salt per installation.

``study_key(uid, salt=...)`` is HMAC-SHA256(salt, uid) truncated to 24 hex characters (96 bits). The salt is a
secret random 32-byte value kept in a file with 0600 permissions, created on first use at the path the caller
passes (the CLI's ``--salt-file`` / ``CLINMM_SALT_FILE``, else :func:`default_salt_path`), so keys stay the same
across runs, resumes and engines of one installation, and cannot be reversed or recomputed without the salt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from clinmm.errors import ConfigError

__all__ = ["KEY_HEX_CHARS", "SALT_BYTES", "study_key", "load_or_create_salt", "default_salt_path"]

logger = logging.getLogger(__name__)

KEY_HEX_CHARS = 24
SALT_BYTES = 32


def default_salt_path() -> Path:
    """``~/.config/clinmm/salt`` (the per-user installation default; callers may pass any other path)."""
    return Path.home() / ".config" / "clinmm" / "salt"


def study_key(uid: str, *, salt: bytes) -> str:
    """Salted, irreversible key of a DICOM UID (StudyInstanceUID, SeriesInstanceUID, …).

    Args:
        uid: the UID (surrounding whitespace / trailing NUL padding is ignored).
        salt: the installation's secret salt (see :func:`load_or_create_salt`).

    Returns:
        24 lowercase hex characters.

    Raises:
        ValueError: when the salt is shorter than 16 bytes.
    """
    if len(salt) < 16:
        raise ValueError("salt must be at least 16 bytes")
    text = str(uid).strip().rstrip("\x00").strip()
    return hmac.new(salt, text.encode("ascii", "replace"), hashlib.sha256).hexdigest()[:KEY_HEX_CHARS]


def load_or_create_salt(path: str | os.PathLike[str]) -> bytes:
    """Read the salt file at ``path``, creating it (0600, parent folders 0700) with a fresh secret if absent.

    Args:
        path: where the salt lives (hex text, one line).

    Returns:
        The salt bytes.

    Raises:
        ConfigError: when the file exists but does not hold a valid salt.
    """
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt = secrets.token_bytes(SALT_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return load_or_create_salt(p)
        with os.fdopen(fd, "w") as fh:
            fh.write(salt.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        logger.info("created a new study-key salt at %s", p)
        return salt
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        logger.warning("salt file %s is readable by others (mode %o); chmod 600 it", p, mode)
    text = p.read_text(encoding="ascii", errors="replace").strip()
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{p}: salt file does not hold hex text") from None
    if len(salt) < 16:
        raise ConfigError(f"{p}: salt is {len(salt)} bytes, need at least 16")
    return salt
