"""Tensors in safetensors files, written so that a crash never leaves half a file.

A file is written to a temporary name in its own folder, flushed to disk and renamed into place
(a rename within one folder is atomic): a reader finds the previous file or the new one, never a
mix. No pickle anywhere. Used by the run folders (:mod:`deltarnn.train.checkpoint`) and the
stream state files (:mod:`deltarnn.nn.state_file`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as exc:  # an optional dependency: say which one
        raise ImportError(
            "reading and writing tensor files needs safetensors (pip install safetensors, or "
            "the 'train' extra of deltarnn)"
        ) from exc
    return safetensors


def write_tensors(
    tensors: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (on the CPU, contiguous) and ``metadata`` to ``path`` as safetensors,
    through a temporary file renamed into place. Tensors that share memory are refused (by
    safetensors): copy them first."""
    st = _safetensors()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        st.torch.save_file(tensors, str(tmp), metadata=None if metadata is None else dict(metadata))
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_tensors(path: str | Path, error: type[Exception]) -> tuple[dict[str, Tensor], dict]:
    """The tensors and metadata of a safetensors file; a missing, truncated or foreign file is
    ``error`` naming it."""
    st = _safetensors()
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (st.SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, metadata


def fsync(path: Path) -> None:
    """Flush a written file to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
