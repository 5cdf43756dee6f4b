"""Small file helpers shared by the loaders: downloads, checksums, atomic writes, fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataIntegrityError, DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    The rename is atomic on one file system, so a reader never sees a half-written file and two
    writers racing for the same cache entry both leave a complete one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def download_file(
    url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 60.0
) -> Path:
    """Fetch ``url`` to ``dest`` with urllib, atomically, optionally checking its SHA-256.

    Args:
        url: any URL urllib opens (``https://``, ``file://``).
        dest: final path; written only once the whole body arrived and the checksum matched.
        expected_sha256: hex digest to check, or ``None`` to skip the check.
        timeout: socket timeout in seconds.

    Raises:
        DownloadError: the request failed.
        DataIntegrityError: the checksum did not match (nothing is left at ``dest``).
    """
    logger.info("downloading %s to %s", url, dest)
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:  # URLError and socket errors are OSErrors
            raise DownloadError(f"could not download {url}: {exc}") from exc
        got = digest.hexdigest()
        if expected_sha256 is not None and got.lower() != expected_sha256.lower():
            raise DataIntegrityError(
                f"checksum mismatch for {url}: expected_sha256={expected_sha256}, got {got}"
            )
    return dest


def replace_dir(src: Path, dest: Path) -> None:
    """Move a fully prepared folder ``src`` onto ``dest`` (which must not exist yet)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError:
        # Another process finished first, or src and dest are on different file systems.
        if dest.exists():
            shutil.rmtree(src, ignore_errors=True)
        else:
            shutil.move(str(src), str(dest))


def fingerprint(path: Path) -> dict[str, Any]:
    """Identity of a file for cache keys: resolved path, size and modification time (ns)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def hash_key(obj: Any) -> str:
    """Stable hex key of a JSON-serialisable object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
