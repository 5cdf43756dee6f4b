"""Digit strings spliced from per-recording features: fresh training strings every epoch.

:class:`~deltarnn.data.digit_strings.DigitStringDataset` splices waveforms and analyses every
string anew (the reference, used for validation and test). Drawing thousands of new strings per
epoch that way costs more than the training step, so :class:`FeatureSplicer` assembles them from
features computed once per recording: a string is the interior frames of its recordings (the
frames whose analysis window lies inside the recording) separated by pause frames cut from the
features of a long stretch of the same pause noise. Away from the junctions the frames are those
of the waveform splice; at a junction the window that would straddle both sides is replaced by an
abrupt switch. Pause lengths are the recipe's, rounded to frames.

Shape legend: T frames of a string, F feature bands, L digits of a string.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ._dataset import FeatureSequenceDataset
from .augment import speed_perturbed_features
from .digit_strings import DigitString, DigitStringConfig, plan_digit_strings
from .features import FeatureCache, FeatureParams
from .fsdd import Recording

# Seconds of pause noise analysed once; pauses are cut from it at a seeded offset.
_PAUSE_SECONDS = 30.0


class SplicedStrings(FeatureSequenceDataset[torch.Tensor]):
    """Items ``(features (T, F) float32, labels (L,) int64)`` as in ``DigitStringDataset`` (or
    ``(features, frame labels (T,))`` with ``frame_targets``).

    Attributes:
        strings: the :class:`~deltarnn.data.digit_strings.DigitString` recipe of every item.
        frame_labels: (T,) int64 per item: the digit's class on its frames, 0 (blank) on pauses.
    """

    def __init__(
        self,
        features: list[np.ndarray],
        strings: list[DigitString],
        frame_labels: list[torch.Tensor],
        transform=None,
        frame_targets: bool = False,
    ) -> None:
        targets = (
            list(frame_labels)
            if frame_targets
            else [torch.tensor(s.labels, dtype=torch.int64) for s in strings]
        )
        super().__init__(features, targets, transform)
        self.strings = strings
        self.frame_labels = frame_labels


class FeatureSplicer:
    """Draws digit strings from one split's recordings, splicing precomputed features.

    Args:
        recordings: the split's recordings (features computed once, through ``cache``).
        params: feature parameters (those of the validation and test strings).
        config: how strings are drawn (lengths, pauses, noise level).
        cache: feature cache, or ``None`` to compute without one.
        speeds: speed-perturbation factors (:mod:`deltarnn.data.augment`); every digit of a
            string is drawn at one of them, uniformly.
    """

    def __init__(
        self,
        recordings: Sequence[Recording],
        params: FeatureParams | None = None,
        config: DigitStringConfig | None = None,
        cache: FeatureCache | None = None,
        speeds: Sequence[float] = (1.0,),
    ) -> None:
        if not recordings:
            raise ConfigError("recordings is empty: need at least one recording to splice")
        if not speeds:
            raise ConfigError("speeds is empty: give at least one factor (1.0: none)")
        self.recordings = list(recordings)
        self.params = params or FeatureParams()
        self.config = config or DigitStringConfig()
        self.hop = max(1, round(self.params.sample_rate * self.params.hop_ms / 1000))
        paths = [r.path for r in self.recordings]
        self.versions = []  # one {path: interior features} per speed
        for speed in speeds:
            computed = speed_perturbed_features(paths, self.params, float(speed), cache)
            self.versions.append(
                {p: self._interior(f) for p, f in zip(paths, computed, strict=True)}
            )
        self.features = self.versions[0]
        noise = np.random.default_rng(0).standard_normal(
            round(_PAUSE_SECONDS * self.params.sample_rate)
        )
        pause = self.params.compute((noise * self.config.noise_std).astype(np.float32))
        self.pause = self._interior(pause)

    @property
    def edge(self) -> int:
        """Frames within half a window of an end of a recording (they saw the zero padding)."""
        win = max(1, round(self.params.sample_rate * self.params.win_ms / 1000))
        return -(-win // (2 * self.hop))

    def _interior(self, f: np.ndarray) -> np.ndarray:
        e = self.edge
        return f[e : len(f) - e] if len(f) > 2 * e else f

    def splice(self, plan: DigitString) -> tuple[np.ndarray, np.ndarray]:
        """One string: ``(features (T, F) float32, frame labels (T,) int64)``."""
        rng = np.random.default_rng(plan.noise_seed)
        pieces, labels = [], []
        last = len(plan.recordings)
        for k, samples in enumerate(plan.pauses):
            # The recordings' edge frames were dropped: pause frames take their place, so the
            # string keeps the waveform splice's timing (a recording starts at frame p / hop).
            frames = round(samples / self.hop) + self.edge * ((k > 0) + (k < last))
            if frames:
                start = int(rng.integers(0, max(1, len(self.pause) - frames)))
                chunk = self.pause[start : start + frames]
                while len(chunk) < frames:  # a pause longer than the analysed noise
                    chunk = np.concatenate([chunk, self.pause[: frames - len(chunk)]])
                pieces.append(chunk)
                labels.append(np.zeros(frames, np.int64))
            if k < len(plan.recordings):
                rec = plan.recordings[k]
                version = int(rng.integers(len(self.versions))) if len(self.versions) > 1 else 0
                f = self.versions[version][rec.path]
                pieces.append(f)
                labels.append(np.full(len(f), rec.digit + 1, np.int64))
        return np.concatenate(pieces).astype(np.float32), np.concatenate(labels)

    def draw(
        self, num_examples: int, seed: int | Sequence[int], frame_targets: bool = False
    ) -> SplicedStrings:
        """``num_examples`` new strings; the same seed gives the same strings.

        With ``frame_targets`` the items' targets are the (T,) frame labels (for frame-level
        training) instead of the (L,) digit labels.
        """
        plans = plan_digit_strings(
            self.recordings, num_examples, seed, self.config, self.params.sample_rate
        )
        spliced = [self.splice(p) for p in plans]
        frames = [torch.from_numpy(y) for _, y in spliced]
        return SplicedStrings([f for f, _ in spliced], plans, frames, frame_targets=frame_targets)
