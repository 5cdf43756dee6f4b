"""Log-mel features, an on-disk feature cache, and per-band normalisation.

Shape legend: N samples, T frames, F mel bands (``n_mels``).

``log_mel`` frames a waveform with a Hann window of ``win_ms`` every ``hop_ms`` (centred frames,
zero padded, so T = 1 + N // hop), takes the power spectrum, applies a mel filter bank (librosa's
Slaney mel scale and area normalisation) and returns ``log(mel_power + floor)``. The floor keeps
digital silence finite and bounded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ._files import atomic_path, fingerprint, hash_key
from .errors import DataNotFoundError
from .root import DATA_ENV, PathLike, cache_dir

logger = logging.getLogger(__name__)

# Bumped whenever the feature computation changes, so stale cache entries are never read.
FEATURE_VERSION = 1


def load_audio(path: PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 in [-1, 1], resampled if asked.

    Args:
        path: audio file soundfile can read (WAV, FLAC, ...).
        sample_rate: target rate in Hz; ``None`` keeps the file's rate.

    Returns:
        ``(waveform (N,) float32, sample_rate)``.

    Raises:
        DataNotFoundError: there is no file at ``path``.
    """
    import soundfile as sf

    if not Path(path).is_file():  # soundfile's own error for this is an opaque LibsndfileError
        raise DataNotFoundError(
            f"audio file {path} does not exist (data sets are read from ${DATA_ENV})"
        )
    waveform, rate = sf.read(str(path), dtype="float32", always_2d=True)
    waveform = waveform.mean(axis=1)  # mono mix: a no-op for the mono data sets used here
    if sample_rate is not None and rate != sample_rate:
        import librosa

        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(waveform, dtype=np.float32), int(rate)


def log_mel(
    waveform: np.ndarray,
    sample_rate: int,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    fmin: float = 20.0,
    fmax: float | None = None,
    floor: float = 1e-6,
) -> np.ndarray:
    """Log mel-band power of a mono waveform.

    Args:
        waveform: (N,) samples, float, finite, N >= 1.
        sample_rate: Hz, > 0.
        n_mels: number of mel bands F, >= 1.
        win_ms: analysis window length in milliseconds; the FFT size is the next power of two.
        hop_ms: frame step in milliseconds (<= ``win_ms``).
        fmin: lowest band edge in Hz, >= 0.
        fmax: highest band edge in Hz, <= sample_rate / 2; ``None`` means sample_rate / 2.
        floor: added to the mel power before the log, > 0.

    Returns:
        (T, F) float32 with T = 1 + N // hop, hop = round(sample_rate * hop_ms / 1000).

    Raises:
        ShapeError: ``waveform`` is not 1-D or is empty.
        ConfigError: a parameter is out of range or the waveform is not finite.
    """
    import librosa

    x = np.asarray(waveform)
    if x.ndim != 1 or x.size == 0:
        raise ShapeError(f"waveform must be a non-empty 1-D array (N,), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("waveform must be finite (found NaN or inf)")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if n_mels < 1:
        raise ConfigError(f"n_mels must be >= 1, got {n_mels}")
    if not (0 < hop_ms <= win_ms):
        raise ConfigError(f"need 0 < hop_ms <= win_ms, got hop_ms={hop_ms}, win_ms={win_ms}")
    nyquist = sample_rate / 2
    fmax = nyquist if fmax is None else float(fmax)
    if not (0 <= fmin < fmax <= nyquist):
        raise ConfigError(
            f"need 0 <= fmin < fmax <= sample_rate/2={nyquist}, got fmin={fmin}, fmax={fmax}"
        )
    if not floor > 0:
        raise ConfigError(f"floor must be > 0, got {floor}")
    win = max(1, round(sample_rate * win_ms / 1000))
    hop = max(1, round(sample_rate * hop_ms / 1000))
    n_fft = 1 << math.ceil(math.log2(win))
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float32, copy=False),
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
    )
    return np.log(mel + floor).T.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FeatureParams:
    """Everything that determines a feature array; part of every cache key.

    Audio is resampled to ``sample_rate`` before :func:`log_mel` runs, so data sets recorded at
    different rates give comparable features.
    """

    sample_rate: int = 8000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    fmax: float | None = None
    floor: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def compute(self, waveform: np.ndarray) -> np.ndarray:
        """:func:`log_mel` of a waveform already at ``self.sample_rate``; (T, n_mels) float32."""
        return log_mel(
            waveform,
            self.sample_rate,
            n_mels=self.n_mels,
            win_ms=self.win_ms,
            hop_ms=self.hop_ms,
            fmin=self.fmin,
            fmax=self.fmax,
            floor=self.floor,
        )

    def compute_file(self, path: PathLike) -> np.ndarray:
        """Load ``path`` at ``self.sample_rate`` and return its (T, n_mels) features."""
        waveform, _ = load_audio(path, self.sample_rate)
        return self.compute(waveform)


class FeatureCache:
    """Arrays stored on disk as safetensors files named by a hash of what produced them.

    Keys are built from JSON-able descriptions (file fingerprints: resolved path, size, mtime;
    feature parameters; a version number), so editing a source file or changing a parameter
    misses the cache instead of returning stale features. Files are written atomically; a file
    that cannot be read is recomputed. Nothing is ever unpickled.

    Args:
        directory: where the files go; ``None`` means ``cache_dir("features")``.
    """

    def __init__(self, directory: PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir("features")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or ``None`` if absent or unreadable."""
        from safetensors.numpy import load_file

        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            return load_file(str(path))
        except Exception as exc:  # a truncated or foreign file: recompute rather than fail
            logger.warning("ignoring unreadable cache file %s: %s", path, exc)
            return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save_file

        with atomic_path(self.path_for(key)) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))

    def get_or_compute(
        self, description: Any, compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Arrays for ``description`` (any JSON-able object) from disk, else computed and stored."""
        key = hash_key({"version": FEATURE_VERSION, "description": description})
        arrays = self.load(key)
        if arrays is not None:
            self.hits += 1
            return arrays
        self.misses += 1
        arrays = compute()
        self.save(key, arrays)
        return arrays

    def features(self, path: PathLike, params: FeatureParams) -> np.ndarray:
        """(T, n_mels) features of one audio file, cached by the file's fingerprint and params."""
        path = Path(path)
        description = {"source": fingerprint(path), "params": params.to_dict()}
        arrays = self.get_or_compute(description, lambda: {"features": params.compute_file(path)})
        return arrays["features"]


def file_features(
    paths: Iterable[PathLike], params: FeatureParams, cache: FeatureCache | None
) -> list[np.ndarray]:
    """(T_i, n_mels) features of each file, through ``cache`` when one is given."""
    if cache is None:
        return [params.compute_file(p) for p in paths]
    return [cache.features(p, params) for p in paths]


def make_cache(use_cache: bool, cache_root: PathLike | None) -> FeatureCache | None:
    """The cache a dataset uses: none, the one under ``cache_root``, or the default one."""
    if not use_cache:
        return None
    return FeatureCache(cache_dir("features", cache_root))


class FeatureNormalizer:
    """Per-band standardisation ``(x - mean) / std``, fitted on training features only.

    Args:
        mean: (F,) per-band mean.
        std: (F,) per-band standard deviation (already floored at ``eps``).

    Use :meth:`fit` on the training split, then apply the same object to every split (it works on
    numpy arrays and torch tensors of shape (..., F)); save it beside the model with :meth:`save`.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ShapeError(f"mean and std must both be (F,), got {mean.shape} and {std.shape}")
        if not np.all(std > 0) or not np.all(np.isfinite(std)) or not np.all(np.isfinite(mean)):
            raise ConfigError("std must be finite and > 0 and mean finite in every band")
        self.mean = mean
        self.std = std

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(
        cls, features: Iterable[np.ndarray | torch.Tensor], eps: float = 1e-5
    ) -> FeatureNormalizer:
        """Mean and std per band over all frames of all arrays (each (T_i, F)).

        Statistics are merged array by array in float64 (Chan et al.'s pairwise update), so the
        result does not depend on how the frames are grouped.
        """
        count, mean, m2 = 0, None, None
        for x in features:
            a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            if a.ndim != 2 or (mean is not None and a.shape[1] != mean.shape[0]):
                want = "(T, F)" if mean is None else f"(T, {mean.shape[0]})"
                raise ShapeError(f"features must be {want} arrays, got shape {a.shape}")
            if a.shape[0] == 0:
                continue
            a = a.astype(np.float64)
            n_b, mean_b = a.shape[0], a.mean(axis=0)
            m2_b = ((a - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
        if mean is None or m2 is None:
            raise ConfigError("features is empty: need at least one frame to fit a normalizer")
        std = np.maximum(np.sqrt(m2 / count), eps)
        return cls(mean, std)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalised copy of ``x`` (..., F); keeps numpy/torch type and dtype."""
        if x.shape[-1] != self.num_features:
            raise ShapeError(f"x must be (..., {self.num_features}), got shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
            std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
            return (x - mean) / std
        x = np.asarray(x)
        return ((x - self.mean) / self.std).astype(x.dtype, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureNormalizer:
        try:
            return cls(np.asarray(d["mean"]), np.asarray(d["std"]))
        except KeyError as exc:
            raise ConfigError(f"normalizer dict needs 'mean' and 'std', missing {exc}") from exc

    def save(self, path: PathLike) -> None:
        """Write as JSON (``{"mean": [...], "std": [...]}``)."""
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: PathLike) -> FeatureNormalizer:
        return cls.from_dict(json.loads(Path(path).read_text()))


class UtteranceNormalizer:
    """Cepstral mean normalisation, then a global per-band scaling.

    ``x (T, F) -> (x - mean of x over its own frames) / std``, with ``std`` (and a residual mean)
    fitted on the training utterances after each one's own mean was removed: the channel and
    speaker offset of every utterance is gone, and a threshold is in units of a band's spread.
    """

    def __init__(self, normalizer: FeatureNormalizer) -> None:
        self.normalizer = normalizer

    @classmethod
    def fit(cls, features: Iterable[np.ndarray | torch.Tensor]) -> UtteranceNormalizer:
        return cls(FeatureNormalizer.fit(f - f.mean(0) for f in features))

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        return self.normalizer(x - x.mean(0))
