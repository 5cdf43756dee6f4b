"""Where data sets and derived features live on disk.

Raw data is looked up, in order, in the ``root=`` argument, the ``DELTARNN_DATA`` environment
variable, and the user cache (``$XDG_CACHE_HOME/deltarnn``, by default ``~/.cache/deltarnn``).
Derived files (feature caches, decoded frames) go to :func:`cache_dir`, kept apart from the raw
data so that a read-only data folder works.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DELTARNN_DATA"
CACHE_ENV = "DELTARNN_CACHE"

PathLike = str | os.PathLike


def user_cache_home() -> Path:
    """``$XDG_CACHE_HOME/deltarnn`` if the variable is set and absolute, else ``~/.cache/deltarnn``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "deltarnn"


def data_root(root: PathLike | None = None) -> Path:
    """The folder that holds the raw data sets (``fsdd/``, ``asterisk/``, ``udacity-sim/``).

    Args:
        root: explicit folder; wins over everything else.

    Returns:
        ``root`` if given, else ``$DELTARNN_DATA`` if set and non-empty, else
        :func:`user_cache_home`. The folder is not created and may not exist.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return user_cache_home()


def cache_dir(subdir: str | None = None, cache_root: PathLike | None = None) -> Path:
    """The folder for derived files (features, decoded frames), created if missing.

    Args:
        subdir: optional sub-folder name (e.g. ``"features"``).
        cache_root: explicit folder; else ``$DELTARNN_CACHE``, else ``<user cache>/derived``.

    Returns:
        The folder, which exists on return.
    """
    if cache_root is not None:
        base = Path(cache_root).expanduser()
    elif os.environ.get(CACHE_ENV, ""):
        base = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = user_cache_home() / "derived"
    path = base / subdir if subdir else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing_data_message(what: str, expected: Path, can_download: bool) -> str:
    """A uniform 'not found' message telling the user how to point the loader at the data."""
    how = f"set {DATA_ENV} to the folder that holds it, or pass root="
    if can_download:
        how += ", or pass download=True to fetch it"
    return f"{what} not found at {expected}: {how}."
