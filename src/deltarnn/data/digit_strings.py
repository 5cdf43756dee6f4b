"""Connected digit strings spliced from FSDD recordings, in the manner of TIDIGITS.

Each example joins 1-7 recordings of one split (by default all of one speaker, as TIDIGITS strings
are), with a pause of random length before, between and after the digits. Pauses are low-level
Gaussian noise (``noise_std``, 0 for digital silence). Features are computed on the spliced
waveform, so pauses are real frames a model has to sit through.

Everything is deterministic given the seed: example ``i`` is drawn from its own generator seeded
with ``(*seed, i)``, so the first k examples do not change when more are asked for. Input order of
the recordings does not matter (they are sorted first).

Labels for CTC: blank = 0 and digit d -> d + 1, so "0".."9" are classes 1..10
(:data:`NUM_CLASSES` = 11). Targets are int64 tensors (L,) with values in 1..10.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ._dataset import FeatureSequenceDataset, Transform
from ._files import fingerprint
from .features import FeatureParams, load_audio, make_cache
from .fsdd import Recording, split_recordings
from .root import PathLike

logger = logging.getLogger(__name__)

BLANK = 0
NUM_CLASSES = 11
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def digits_to_labels(digits: Sequence[int]) -> list[int]:
    """Digits 0-9 -> CTC classes 1-10 (blank is 0)."""
    for d in digits:
        if not 0 <= int(d) <= 9:
            raise ConfigError(f"digits must be in 0..9, got {d!r}")
    return [int(d) + 1 for d in digits]


def labels_to_digits(labels: Sequence[int] | torch.Tensor) -> list[int]:
    """CTC classes 1-10 -> digits 0-9; blanks (0) are dropped (no repeat merging here)."""
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    out = []
    for v in values:
        if not 0 <= int(v) < NUM_CLASSES:
            raise ConfigError(f"labels must be in 0..{NUM_CLASSES - 1}, got {v!r}")
        if v != BLANK:
            out.append(int(v) - 1)
    return out


@dataclasses.dataclass(frozen=True)
class DigitStringConfig:
    """How strings are drawn.

    Attributes:
        min_digits, max_digits: string length, uniform in [min_digits, max_digits].
        min_pause_ms, max_pause_ms: each pause length, uniform in this range.
        noise_std: standard deviation of the Gaussian noise filling pauses (full scale = 1).
        edge_pauses: also put a pause before the first and after the last digit.
        one_speaker: draw all digits of a string from one speaker (TIDIGITS-like).
    """

    min_digits: int = 1
    max_digits: int = 7
    min_pause_ms: float = 50.0
    max_pause_ms: float = 300.0
    noise_std: float = 1e-3
    edge_pauses: bool = True
    one_speaker: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(
                f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}"
            )
        if not 0 <= self.min_pause_ms <= self.max_pause_ms:
            raise ConfigError(
                "need 0 <= min_pause_ms <= max_pause_ms, got "
                f"{self.min_pause_ms}, {self.max_pause_ms}"
            )
        if not (self.noise_std >= 0 and np.isfinite(self.noise_std)):
            raise ConfigError(f"noise_std must be finite and >= 0, got {self.noise_std}")


@dataclasses.dataclass(frozen=True)
class DigitString:
    """The recipe of one example.

    Attributes:
        recordings: the spoken digits, in order.
        pauses: pause lengths in samples, ``len(recordings) + 1`` of them (before, between,
            after; the two edge pauses are 0 without ``edge_pauses``).
        noise_seed: seed of the pause noise.
    """

    recordings: tuple[Recording, ...]
    pauses: tuple[int, ...]
    noise_seed: int

    @property
    def digits(self) -> list[int]:
        return [r.digit for r in self.recordings]

    @property
    def labels(self) -> list[int]:
        return digits_to_labels(self.digits)


def _seed_tuple(seed: int | Sequence[int]) -> tuple[int, ...]:
    return (int(seed),) if isinstance(seed, int | np.integer) else tuple(int(s) for s in seed)


def plan_digit_strings(
    recordings: Sequence[Recording],
    num_examples: int,
    seed: int | Sequence[int] = 0,
    config: DigitStringConfig | None = None,
    sample_rate: int = 8000,
) -> list[DigitString]:
    """Draw ``num_examples`` string recipes from ``recordings`` (use one split's recordings).

    Raises:
        ConfigError: ``num_examples`` < 0 or ``recordings`` is empty.
    """
    config = config or DigitStringConfig()
    if num_examples < 0:
        raise ConfigError(f"num_examples must be >= 0, got {num_examples}")
    if not recordings:
        raise ConfigError("recordings is empty: need at least one recording to splice")
    pool = sorted(recordings, key=lambda r: (r.speaker, r.digit, r.take, str(r.path)))
    by_speaker: dict[str, list[Recording]] = {}
    for r in pool:
        by_speaker.setdefault(r.speaker, []).append(r)
    speakers = sorted(by_speaker)
    lo = round(config.min_pause_ms * sample_rate / 1000)
    hi = round(config.max_pause_ms * sample_rate / 1000)
    seeds = _seed_tuple(seed)
    plans = []
    for i in range(num_examples):
        rng = np.random.default_rng([*seeds, i])
        length = int(rng.integers(config.min_digits, config.max_digits + 1))
        source = (
            by_speaker[speakers[int(rng.integers(len(speakers)))]] if config.one_speaker else pool
        )
        picks = rng.integers(len(source), size=length)
        pauses = rng.integers(lo, hi + 1, size=length + 1)
        if not config.edge_pauses:
            pauses[0] = pauses[-1] = 0
        plans.append(
            DigitString(
                recordings=tuple(source[int(k)] for k in picks),
                pauses=tuple(int(p) for p in pauses),
                noise_seed=int(rng.integers(2**63)),
            )
        )
    return plans


def synthesize(
    plan: DigitString,
    sample_rate: int = 8000,
    noise_std: float = 1e-3,
    audio: Mapping[Path, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Splice one string.

    Args:
        plan: the recipe.
        sample_rate: rate the recordings are resampled to (pause lengths are in these samples).
        noise_std: pause noise level.
        audio: optional already-loaded waveforms by path (at ``sample_rate``).

    Returns:
        ``(waveform (N,) float32, segments)`` where ``segments[k] = (start, stop)`` are the sample
        bounds of the k-th digit in the waveform.
    """
    noise = np.random.default_rng(plan.noise_seed).standard_normal(sum(plan.pauses))
    noise = (noise * noise_std).astype(np.float32)
    pieces, segments, pos, used = [], [], 0, 0
    for k, pause in enumerate(plan.pauses):
        pieces.append(noise[used : used + pause])
        used += pause
        pos += pause
        if k < len(plan.recordings):
            path = plan.recordings[k].path
            wav = audio[path] if audio is not None and path in audio else None
            if wav is None:
                wav = load_audio(path, sample_rate)[0]
            pieces.append(wav)
            segments.append((pos, pos + len(wav)))
            pos += len(wav)
    return np.concatenate(pieces).astype(np.float32, copy=False), segments


class DigitStringDataset(FeatureSequenceDataset[torch.Tensor]):
    """Connected digit strings for CTC: items ``(features (T, F) float32, labels (L,) int64)``.

    All examples are synthesised and featurised at construction; the result is cached as one
    safetensors file keyed by the source files' fingerprints, the seed, the count, ``config`` and
    ``params``, so a second construction only reads it.

    Args:
        recordings: the split's recordings to splice from.
        num_examples: number of strings.
        seed: int or tuple of ints; equal seeds give identical datasets.
        config: string drawing options.
        params: feature parameters (recordings are resampled to ``params.sample_rate``).
        transform: applied to each (T, F) array (e.g. a normalizer).
        use_cache, cache_dir: see :class:`~deltarnn.data.fsdd.FSDDDataset`.

    Attributes:
        strings: the :class:`DigitString` recipe of every item.
    """

    num_classes = NUM_CLASSES
    blank = BLANK

    def __init__(
        self,
        recordings: Sequence[Recording],
        num_examples: int,
        seed: int | Sequence[int] = 0,
        config: DigitStringConfig | None = None,
        params: FeatureParams | None = None,
        transform: Transform | None = None,
        use_cache: bool = True,
        cache_dir: PathLike | None = None,
    ) -> None:
        self.config = config or DigitStringConfig()
        self.params = params or FeatureParams()
        self.seed = _seed_tuple(seed)
        self.strings = plan_digit_strings(
            recordings, num_examples, self.seed, self.config, self.params.sample_rate
        )
        cache = make_cache(use_cache, cache_dir)
        if cache is None:
            arrays = self._build()
        else:
            sources = sorted({r.path for r in recordings}, key=str)
            description = {
                "kind": "digit_strings",
                "sources": [fingerprint(p) for p in sources],
                "seed": list(self.seed),
                "num_examples": num_examples,
                "config": dataclasses.asdict(self.config),
                "params": self.params.to_dict(),
            }
            arrays = cache.get_or_compute(description, self._build)
        bounds = np.concatenate([[0], np.cumsum(arrays["frame_lengths"])])
        features = [arrays["features"][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        targets = [torch.tensor(s.labels, dtype=torch.int64) for s in self.strings]
        super().__init__(features, targets, transform)

    def _audio(self) -> dict[Path, np.ndarray]:
        """Every recording the strings splice, loaded once at the feature sample rate."""
        audio: dict[Path, np.ndarray] = {}
        for s in self.strings:
            for r in s.recordings:
                if r.path not in audio:
                    audio[r.path] = load_audio(r.path, self.params.sample_rate)[0]
        return audio

    def _build(self) -> dict[str, np.ndarray]:
        rate = self.params.sample_rate
        audio = self._audio()
        feats = [
            self.params.compute(synthesize(s, rate, self.config.noise_std, audio)[0])
            for s in self.strings
        ]
        empty = np.zeros((0, self.params.n_mels), np.float32)
        return {
            "features": np.concatenate(feats) if feats else empty,
            "frame_lengths": np.array([len(f) for f in feats], dtype=np.int64),
        }

    def waveform(self, index: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The spliced waveform of item ``index`` and its digit segments (see :func:`synthesize`)."""
        return synthesize(self.strings[index], self.params.sample_rate, self.config.noise_std)

    def frame_labels(self) -> list[torch.Tensor]:
        """Per-frame classes from the splice, for frame-level training: a frame whose centre lies
        inside a digit's samples gets that digit's class, every other frame the blank.

        Returns:
            One (T_i,) int64 tensor per item (T_i as in :meth:`lengths`).
        """
        rate = self.params.sample_rate
        hop = max(1, round(rate * self.params.hop_ms / 1000))
        audio = self._audio()
        out = []
        for plan, steps in zip(self.strings, self.lengths(), strict=True):
            _, segments = synthesize(plan, rate, self.config.noise_std, audio)
            centres = np.arange(steps) * hop  # frames are centred (see deltarnn.data.features)
            labels = np.zeros(steps, np.int64)
            for (a, b), c in zip(segments, plan.labels, strict=True):
                labels[(centres >= a) & (centres < b)] = c
            out.append(torch.from_numpy(labels))
        return out


def load_digit_strings(
    root: PathLike | None = None,
    *,
    split: str = "take",
    num_examples: Mapping[str, int] | None = None,
    seed: int = 0,
    config: DigitStringConfig | None = None,
    params: FeatureParams | None = None,
    download: bool = False,
    use_cache: bool = True,
    cache_dir: PathLike | None = None,
    **split_kwargs,
) -> dict[str, DigitStringDataset]:
    """Digit-string datasets per FSDD split, each spliced only from its own split's recordings.

    Args:
        split: ``"take"`` or ``"speaker"`` (see :mod:`deltarnn.data.fsdd`); ``split_kwargs`` go
            to the split function.
        num_examples: strings per split; default ``{"train": 3000, "val": 600, "test": 600}``
            ("val" is used only when the split has one).
        seed: base seed; split ``s`` uses ``(seed, stream(s))`` so splits draw independently.
        root, download: see :func:`~deltarnn.data.fsdd.list_recordings`.
        config, params, use_cache, cache_dir: see :class:`DigitStringDataset`.
    """
    counts = {"train": 3000, "val": 600, "test": 600, **(num_examples or {})}
    parts = split_recordings(root, split, download=download, **split_kwargs)
    return {
        name: DigitStringDataset(
            recs,
            counts[name],
            seed=(seed, _SPLIT_STREAMS[name]),
            config=config,
            params=params,
            use_cache=use_cache,
            cache_dir=cache_dir,
        )
        for name, recs in parts.as_dict().items()
    }
