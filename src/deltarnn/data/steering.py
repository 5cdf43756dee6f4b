"""Steering-angle regression from Udacity self-driving-car simulator frames.

Layout under the data root::

    udacity-sim/labels.csv                  session,frame,time_s,steering,throttle,brake,speed
    udacity-sim/<session>/<frame>           one JPEG per row (centre camera)

There is no download: the recordings carry no licence that allows redistribution, so point
``DELTARNN_DATA`` (or ``root=``) at a folder that holds them.

Frames are grouped into sessions sorted by time. :func:`temporal_split` cuts every session at a
time: the earlier part trains, the later part tests, so no test frame has a near-duplicate
neighbour in training. :class:`SteeringDataset` yields windows of consecutive frames.

Shape legend: N frames, L window length (``seq_len``), C channels (3, or 1 in grayscale),
H, W image height and width.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, ShapeError
from . import root as _root
from ._dataset import Split
from ._files import fingerprint, hash_key
from .errors import DataIntegrityError, DataNotFoundError
from .features import FeatureCache
from .root import PathLike, data_root, missing_data_message

logger = logging.getLogger(__name__)

STEERING_DIR = "udacity-sim"
LABELS_FILE = "labels.csv"
COLUMNS = ("session", "frame", "time_s", "steering", "throttle", "brake", "speed")
_FLOAT_COLUMNS = COLUMNS[2:]


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringSession:
    """The frames of one recording session (or a time slice of one), sorted by time.

    Attributes:
        name: session name (its folder).
        frame_paths: (N,) JPEG paths.
        time_s: (N,) float64 seconds from the session start, increasing.
        steering: (N,) float32 in [-1, 1]; throttle, brake, speed likewise (N,) float32.
    """

    name: str
    frame_paths: tuple[Path, ...]
    time_s: np.ndarray
    steering: np.ndarray
    throttle: np.ndarray
    brake: np.ndarray
    speed: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_paths)

    def slice(self, start: int, stop: int) -> SteeringSession:
        """Frames ``start:stop`` as a new session of the same name."""
        return SteeringSession(
            self.name,
            self.frame_paths[start:stop],
            self.time_s[start:stop],
            self.steering[start:stop],
            self.throttle[start:stop],
            self.brake[start:stop],
            self.speed[start:stop],
        )


def moving_average(values: np.ndarray, time_s: np.ndarray, window_s: float) -> np.ndarray:
    """Centred moving average over time stamps: the mean of every value with
    ``|time_s[j] - time_s[i]| <= window_s / 2``.

    A time-based window, so frames recorded at an uneven rate are averaged over the same duration.
    Keyboard steering is a train of short taps; its moving average is the turn the driver meant.

    Args:
        values: (N,) numbers.
        time_s: (N,) increasing seconds.
        window_s: window length in seconds, >= 0 (0 returns a copy).

    Returns:
        (N,) float32.
    """
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(time_s, dtype=np.float64)
    if v.ndim != 1 or v.shape != t.shape:
        raise ShapeError(f"values and time_s must both be (N,), got {v.shape} and {t.shape}")
    if not (np.isfinite(window_s) and window_s >= 0):
        raise ConfigError(f"window_s must be finite and >= 0, got {window_s}")
    if v.size and np.any(np.diff(t) < 0):
        raise ConfigError("time_s must be non-decreasing")
    csum = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.searchsorted(t, t - window_s / 2, side="left")
    hi = np.searchsorted(t, t + window_s / 2, side="right")
    return ((csum[hi] - csum[lo]) / (hi - lo)).astype(np.float32)


def smooth_steering(session: SteeringSession, window_s: float) -> SteeringSession:
    """The session with its steering replaced by :func:`moving_average` over ``window_s``.

    Smooth each whole session *before* :func:`temporal_split`, or the window is cut at the split;
    the averaged labels near a cut then include a few frames of the neighbouring piece (at most
    ``window_s / 2`` seconds), which is a statement about labels, not images.
    """
    return dataclasses.replace(
        session, steering=moving_average(session.steering, session.time_s, window_s)
    )


def steering_dir(root: PathLike | None = None) -> Path:
    """``<data root>/udacity-sim``."""
    return data_root(root) / STEERING_DIR


def load_sessions(root: PathLike | None = None) -> list[SteeringSession]:
    """Read ``labels.csv`` into sessions sorted by name, frames sorted by time.

    Raises:
        DataNotFoundError: ``labels.csv`` is missing.
        DataIntegrityError: a column is missing, a value is not a finite number, or a frame
            file is missing.
    """
    base = steering_dir(root)
    labels = base / LABELS_FILE
    if not labels.is_file():
        raise DataNotFoundError(
            missing_data_message("Udacity simulator frames", labels, can_download=False)
        )
    rows: dict[str, list[tuple]] = {}
    with open(labels, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataIntegrityError(f"{labels}: missing columns {missing} (need {list(COLUMNS)})")
        for lineno, row in enumerate(reader, 2):
            try:
                values = tuple(float(row[c]) for c in _FLOAT_COLUMNS)
            except (TypeError, ValueError) as exc:
                raise DataIntegrityError(f"{labels}:{lineno}: not a number: {exc}") from None
            if not all(np.isfinite(values)):
                raise DataIntegrityError(f"{labels}:{lineno}: non-finite value in {values}")
            rows.setdefault(row["session"], []).append((row["frame"], *values))
    if not rows:
        raise DataIntegrityError(f"{labels} has no rows")
    sessions = []
    for name in sorted(rows):
        items = sorted(rows[name], key=lambda r: r[1])  # stable: ties keep file order
        paths = tuple(base / name / r[0] for r in items)
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise DataIntegrityError(
                f"{len(absent)} frames of session {name!r} listed in {labels} are missing, "
                f"e.g. {absent[0]}"
            )
        cols = np.array([r[1:] for r in items], dtype=np.float64)
        sessions.append(
            SteeringSession(
                name,
                paths,
                cols[:, 0],
                *(cols[:, k].astype(np.float32) for k in range(1, 5)),
            )
        )
    return sessions


def temporal_split(
    sessions: Sequence[SteeringSession], train_fraction: float = 0.8, val_fraction: float = 0.0
) -> Split:
    """Cut each session by time: the first ``train_fraction`` of its duration trains, the next
    ``val_fraction`` validates, the rest tests. Every train frame precedes every val frame,
    which precedes every test frame, within each session. Empty pieces are dropped.

    Raises:
        ConfigError: fractions outside (0, 1] / [0, 1) or summing to more than 1.
    """
    if not (0 < train_fraction <= 1 and 0 <= val_fraction < 1):
        raise ConfigError(
            f"need 0 < train_fraction <= 1 and 0 <= val_fraction < 1, got {train_fraction}, "
            f"{val_fraction}"
        )
    if train_fraction + val_fraction > 1:
        raise ConfigError(
            f"train_fraction + val_fraction must be <= 1, got {train_fraction + val_fraction}"
        )
    parts: dict[str, list[SteeringSession]] = {"train": [], "val": [], "test": []}
    for s in sessions:
        if len(s) == 0:
            continue
        t0, t1 = s.time_s[0], s.time_s[-1]
        cut_val = t0 + train_fraction * (t1 - t0)
        cut_test = t0 + (train_fraction + val_fraction) * (t1 - t0)
        i_val = int(np.searchsorted(s.time_s, cut_val, side="right"))
        i_test = int(np.searchsorted(s.time_s, cut_test, side="right"))
        if train_fraction + val_fraction >= 1:
            i_test = len(s)
        for key, (a, b) in zip(
            ("train", "val", "test"), ((0, i_val), (i_val, i_test), (i_test, len(s))), strict=True
        ):
            if b > a:
                parts[key].append(s.slice(a, b))
    return Split(**parts)


def _decode(
    path: Path, size: tuple[int, int] | None, grayscale: bool, crop: tuple[int, int]
) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if grayscale else "RGB")
        top, bottom = crop
        if top or bottom:
            if top + bottom >= img.height:
                raise ConfigError(
                    f"crop={crop} removes all {img.height} rows of {path.name}: need "
                    "top + bottom < height"
                )
            img = img.crop((0, top, img.width, img.height - bottom))
        if size is not None:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_frames(
    session: SteeringSession,
    size: tuple[int, int] | None = None,
    grayscale: bool = False,
    use_cache: bool = True,
    cache_dir: PathLike | None = None,
    crop: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Decode a session's JPEGs into one uint8 tensor (N, C, H, W).

    Args:
        session: the frames.
        size: ``(height, width)`` to resize to (bilinear, after ``crop``), or ``None`` for the
            stored (cropped) size.
        crop: ``(top, bottom)`` rows of the stored image to drop before resizing (sky, hood).
        grayscale: one luminance channel instead of RGB.
        use_cache: keep the decoded tensor as one safetensors file (keyed by every frame's
            fingerprint, ``size`` and ``grayscale``), so later epochs and runs skip decoding.
        cache_dir: root of the derived-file cache (default
            :func:`~deltarnn.data.root.cache_dir`).

    Raises:
        ConfigError: ``size`` is not two positive ints.
        DataIntegrityError: frames of one session differ in size.
    """
    if size is not None:
        if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
            raise ConfigError(f"size must be (height, width) positive ints or None, got {size}")
        size = (int(size[0]), int(size[1]))
    if len(crop) != 2 or any(int(v) != v or v < 0 for v in crop):
        raise ConfigError(f"crop must be (top, bottom) ints >= 0, got {crop}")
    crop = (int(crop[0]), int(crop[1]))

    def build() -> dict[str, np.ndarray]:
        frames = [_decode(p, size, grayscale, crop) for p in session.frame_paths]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise DataIntegrityError(
                f"frames of session {session.name!r} differ in size: {sorted(shapes)}"
            )
        c = 1 if grayscale else 3
        h, w = size if size is not None else (0, 0)
        return {"frames": np.stack(frames) if frames else np.zeros((0, c, h, w), np.uint8)}

    if not use_cache:
        return torch.from_numpy(build()["frames"])
    cache = FeatureCache(_root.cache_dir("frames", cache_dir))
    description = {
        "kind": "steering_frames",
        "session": session.name,
        "frames": hash_key([fingerprint(p) for p in session.frame_paths]),
        "size": size,
        "grayscale": grayscale,
    }
    if crop != (0, 0):  # only when set, so caches of uncropped frames stay valid
        description["crop"] = list(crop)
    return torch.from_numpy(cache.get_or_compute(description, build)["frames"])


class SteeringDataset(Dataset):
    """Windows of consecutive frames with their steering angles.

    Items are ``(frames (L, C, H, W) float32 in [0, 1], steering (L,) float32)``. Windows start
    every ``stride`` frames and never cross a session (or split) boundary; a session piece
    shorter than ``seq_len`` gives no window. Frames are held in memory as uint8.

    Args:
        sessions: session pieces, e.g. one list of :func:`temporal_split`.
        seq_len: L, frames per window, >= 1.
        stride: step between window starts, >= 1 (default ``seq_len``: no overlap).
        size, grayscale, use_cache, cache_dir, crop: see :func:`load_frames`.
    """

    def __init__(
        self,
        sessions: Sequence[SteeringSession],
        seq_len: int = 16,
        stride: int | None = None,
        size: tuple[int, int] | None = None,
        grayscale: bool = False,
        use_cache: bool = True,
        cache_dir: PathLike | None = None,
        crop: tuple[int, int] = (0, 0),
    ) -> None:
        stride = seq_len if stride is None else stride
        if seq_len < 1 or stride < 1:
            raise ConfigError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
        self.sessions = list(sessions)
        self.seq_len = seq_len
        self.stride = stride
        self.frames = [
            load_frames(s, size, grayscale, use_cache, cache_dir, crop) for s in self.sessions
        ]
        self.steering = [torch.from_numpy(s.steering.copy()) for s in self.sessions]
        self.windows: list[tuple[int, int]] = [
            (k, start)
            for k, s in enumerate(self.sessions)
            for start in range(0, len(s) - seq_len + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, start = self.windows[index]
        stop = start + self.seq_len
        return self.frames[k][start:stop].float().div_(255.0), self.steering[k][start:stop]

    def window_times(self, index: int) -> np.ndarray:
        """(L,) times in seconds of the frames of window ``index``."""
        k, start = self.windows[index]
        return self.sessions[k].time_s[start : start + self.seq_len]


def load_steering(
    root: PathLike | None = None,
    *,
    train_fraction: float = 0.8,
    val_fraction: float = 0.0,
    smooth_s: float = 0.0,
    **windows: Any,
) -> dict[str, SteeringDataset]:
    """Steering datasets per temporal split: ``{"train", "test"}`` plus ``"val"`` when
    ``val_fraction`` > 0. Labels are smoothed over ``smooth_s`` seconds first
    (:func:`smooth_steering` on each whole session; 0: raw labels). ``train_fraction`` and
    ``val_fraction`` as in :func:`temporal_split`; ``windows`` are the keyword arguments of
    :class:`SteeringDataset` (``seq_len``, ``stride``, ``size``, ``grayscale``, ``use_cache``,
    ``cache_dir``, ``crop``), the same for every split."""
    sessions = load_sessions(root)
    if smooth_s:
        sessions = [smooth_steering(s, smooth_s) for s in sessions]
    parts = temporal_split(sessions, train_fraction, val_fraction)
    return {name: SteeringDataset(pieces, **windows) for name, pieces in parts.as_dict().items()}
