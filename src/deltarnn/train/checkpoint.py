"""Run folders: one complete checkpoint, or a refusal; never a mix of two runs or two epochs.

Layout of a run folder::

    config.json            the run's config, written once, when the folder is created
    ckpt-000003/           the latest complete checkpoint (here: after epoch 3)
        model.safetensors      model state
        optimizer.safetensors  optimizer tensors   } no pickle anywhere
        optimizer.json         the rest of the optimizer state
        state.json             epoch, step, per-epoch history, best validation epoch
        MANIFEST.json          written last: size and SHA-256 of each file, and of the config
    model.safetensors      final weights         }
    metrics.json           final metrics         } written at the end, then
    MANIFEST.json          the run's manifest    } (a finished run)

A checkpoint is written into a temporary folder, its manifest last, and renamed into place (a
rename within one folder is atomic), then older checkpoints are removed. A crash at any moment
leaves the previous complete checkpoint; a folder whose files do not match its manifest is
refused with :class:`~deltarnn.errors.RunFolderError`, naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import RunFolderError
from ..tensor_files import fsync, read_tensors, write_tensors

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
CONFIG = "config.json"
FINAL_FILES = ("model.safetensors", "metrics.json")
_CKPT_PREFIX = "ckpt-"


# -- files -------------------------------------------------------------------------------------


def save_weights(state: Mapping[str, Tensor], path: str | Path) -> None:
    """Write tensors to ``path`` as safetensors (through a temporary file, then renamed)."""
    write_tensors(state, path)


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file; a missing, truncated or foreign file is a RunFolderError."""
    return read_tensors(path, RunFolderError)[0]


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file is a RunFolderError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from exc


def write_json(path: str | Path, value: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    fsync(tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a config's canonical JSON: what a checkpoint is tied to."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def write_manifest(folder: Path, files: list[str], config: Mapping[str, Any]) -> None:
    """Record size and hash of ``files`` (names inside ``folder``); written last, so its
    presence says the folder is complete."""
    entries = {}
    for name in files:
        entries[name] = {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
    write_json(folder / MANIFEST, {"config_sha256": config_digest(config), "files": entries})


def verify_manifest(folder: Path, config: Mapping[str, Any]) -> None:
    """Raise RunFolderError unless every file of ``folder``'s manifest is there, unchanged, and
    the manifest belongs to ``config``."""
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise RunFolderError(f"{folder / MANIFEST}: not a manifest (no 'files' mapping)")
    if manifest.get("config_sha256") != config_digest(config):
        raise RunFolderError(f"{folder}: written for another config than {folder.parent / CONFIG}")
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise RunFolderError(f"{path}: listed in {MANIFEST} but missing")
        if not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes"):
            raise RunFolderError(f"{path}: size differs from {MANIFEST} (truncated or replaced)")
        if _sha256(path) != entry.get("sha256"):
            raise RunFolderError(f"{path}: content differs from {MANIFEST} (corrupt or replaced)")


# -- optimizer state without pickle -------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """``optimizer.state_dict()`` as ``optimizer.safetensors`` (tensors) + ``optimizer.json``."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        state[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, Tensor):
                key = f"{index}.{name}"
                tensors[key] = value
                state[str(index)][name] = {"tensor": key}
            else:
                state[str(index)][name] = value
    save_weights(tensors, folder / "optimizer.safetensors")
    write_json(folder / "optimizer.json", {"state": state, "param_groups": sd["param_groups"]})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Restore what :func:`save_optimizer` wrote; a mismatch with the optimizer's parameters is
    a RunFolderError."""
    meta = read_json(folder / "optimizer.json")
    tensors = load_weights(folder / "optimizer.safetensors")
    where = folder / "optimizer.json"
    if not isinstance(meta, dict) or not {"state", "param_groups"} <= set(meta):
        raise RunFolderError(f"{where}: needs 'state' and 'param_groups'")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    try:
        for index, entries in meta["state"].items():
            i = int(index)
            state[i] = {}
            for name, value in entries.items():
                if isinstance(value, dict) and "tensor" in value:
                    value = tensors[value["tensor"]]
                    if value.dim() and value.shape != params[i].shape:
                        raise RunFolderError(
                            f"{where}: state {index}.{name} has shape {tuple(value.shape)}, the "
                            f"parameter {tuple(params[i].shape)}"
                        )
                state[i][name] = value
        groups = [
            dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]
        ]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise RunFolderError(f"{where}: does not fit this optimizer ({exc!r})") from exc


# -- the run folder -----------------------------------------------------------------------------


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["a.b: old -> new", ...]`` for every field that differs between two nested configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RunFolder:
    """A folder holding one run of one config: its checkpoints and, when finished, its results.

    Args:
        path: the folder.
        config: the run's config as a JSON-able mapping; it identifies the run.
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.config = json.loads(json.dumps(dict(config)))  # a plain, JSON-equal copy

    # -- opening -----------------------------------------------------------------------------

    def open(self, *, resume: bool = True, force: bool = False) -> RunFolder:
        """Create the folder, or check that it belongs to this config.

        * A new folder (no ``config.json``): anything left of an interrupted start is cleared
          and the config is written.
        * The same config: kept as it is (``resume``), or its checkpoints and results cleared to
          start over (``resume=False``); its ``config.json`` is not rewritten.
        * Another config: refused, naming the changed fields, unless ``force``, which clears
          everything and starts the new config from scratch.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        config_file = self.path / CONFIG
        if config_file.exists():
            old = read_json(config_file)
            if old != self.config:
                if not force:
                    changes = config_changes(old if isinstance(old, dict) else {}, self.config)
                    raise RunFolderError(
                        f"{self.path} holds a run of another config ({'; '.join(changes[:6])}"
                        f"{'; ...' if len(changes) > 6 else ''}): pass --force (force=True) to "
                        "discard it and start over, or choose another folder"
                    )
                log.warning("%s: config changed, discarding the old run (force)", self.path)
                self.clear()
            elif not resume:
                self.clear(keep_config=True)
                return self
            else:
                return self
        else:
            self.clear()
        write_json(config_file, self.config)
        return self

    def clear(self, keep_config: bool = False) -> None:
        """Remove checkpoints and results (and the config unless ``keep_config``)."""
        for p in self.path.glob(f"{_CKPT_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.path.glob(f".{_CKPT_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)
        names = [*FINAL_FILES, MANIFEST, "metrics.csv", "normalizer.json"]
        if not keep_config:
            names.append(CONFIG)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        shutil.rmtree(self.path / "tensorboard", ignore_errors=True)

    # -- checkpoints ---------------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint folder with a manifest (temporary folders never have the name)."""
        found = [p for p in self.path.glob(f"{_CKPT_PREFIX}*") if (p / MANIFEST).is_file()]
        return max(found, key=lambda p: p.name) if found else None

    def save_checkpoint(
        self,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: Mapping[str, Any],
        extra: Mapping[str, Mapping[str, Tensor]] | None = None,
    ) -> Path:
        """Write the checkpoint after ``epoch`` as one unit and remove the older ones.

        ``extra``: more tensor files of the unit, ``{file name: tensors}`` (e.g. the best
        validation epoch's weights).
        """
        final = self.path / f"{_CKPT_PREFIX}{epoch:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{_CKPT_PREFIX}", dir=self.path))
        try:
            save_weights(model.state_dict(), tmp / "model.safetensors")
            save_optimizer(optimizer, tmp)
            write_json(tmp / "state.json", dict(state))
            files = ["model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"]
            for name, tensors in (extra or {}).items():
                save_weights(tensors, tmp / name)
                files.append(name)
            write_manifest(tmp, files, self.config)
            if final.exists():  # the same epoch again (a re-run): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(self.path)
        # Older checkpoints, and temporary folders a crash may have left, are not needed now.
        for old in [*self.path.glob(f"{_CKPT_PREFIX}*"), *self.path.glob(f".{_CKPT_PREFIX}*")]:
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(
        self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Verify a checkpoint against its manifest and this config, restore model and optimizer,
        and return its ``state.json``."""
        verify_manifest(folder, self.config)
        state = read_json(folder / "state.json")
        load_into(model, load_weights(folder / "model.safetensors"), folder / "model.safetensors")
        load_optimizer(optimizer, folder)
        return state

    # -- the finished run ----------------------------------------------------------------------

    def finish(self, model_state: Mapping[str, Tensor], metrics: Mapping[str, Any]) -> None:
        """Write the final weights and metrics, then the run's manifest (it is complete)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / MANIFEST).unlink()
        save_weights(model_state, self.path / "model.safetensors")
        write_json(self.path / "metrics.json", dict(metrics))
        present = [n for n in (CONFIG, "normalizer.json") if (self.path / n).exists()]
        write_manifest(self.path, [*FINAL_FILES, *present], self.config)

    def is_finished(self) -> bool:
        """Whether the folder holds a finished run of this config (its manifest checks out)."""
        if not (self.path / MANIFEST).is_file():
            return False
        verify_manifest(self.path, self.config)
        return True


def verify_finished(path: str | Path) -> dict[str, Any]:
    """The config of a finished run folder, after checking every file against its manifest."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise RunFolderError(
            f"{path}: no {MANIFEST}, so not a finished run (interrupted, still running, or not "
            "a run folder); resume it with `deltarnn train --out` and the same config"
        )
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise RunFolderError(f"{path / CONFIG}: not a config mapping")
    verify_manifest(path, config)
    return config


def load_into(
    model: torch.nn.Module,
    state: Mapping[str, Tensor],
    source: Path,
    keys: Callable[[str], bool] | None = None,
) -> None:
    """``model.load_state_dict(state)`` with a RunFolderError naming ``source`` and every key
    that is missing, unexpected or of another shape (a changed architecture).

    ``keys``: load (and check) only the entries whose name it accepts (e.g. the weights but not
    the thresholds of a model to start from).
    """
    own = {k: v for k, v in model.state_dict().items() if keys is None or keys(k)}
    state = {k: v for k, v in state.items() if keys is None or keys(k)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {', '.join(items[:6])}{', ...' if len(items) > 6 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape", shapes),
            )
            if items
        ]
        raise RunFolderError(
            f"{source} does not fit this model (another architecture?): {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=keys is None)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
