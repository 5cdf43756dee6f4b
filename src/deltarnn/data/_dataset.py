"""The in-memory sequence dataset every audio loader returns, and the split container."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

T = TypeVar("T")

Transform = Callable[[np.ndarray], np.ndarray]


class FeatureSequenceDataset(Dataset, Generic[T]):
    """Precomputed (T_i, F) feature arrays with one target each.

    Items are ``(features (T_i, F) float32 tensor, target)``; ``transform`` (e.g. a fitted
    :class:`~deltarnn.data.features.FeatureNormalizer`) is applied to the numpy array first and
    may be set after construction, so a normalizer fitted on the training split can be attached
    to every split.

    Attributes:
        features: the raw (untransformed) arrays, for fitting a normalizer.
        targets: one target per item.
    """

    def __init__(
        self,
        features: Sequence[np.ndarray],
        targets: Sequence[T],
        transform: Transform | None = None,
    ) -> None:
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature arrays but {len(targets)} targets")
        self.features = list(features)
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.features)

    def _features(self, index: int) -> torch.Tensor:
        x = self.features[index]
        if self.transform is not None:
            x = self.transform(x)
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return self._features(index), self.targets[index]

    @property
    def num_features(self) -> int:
        """F, the size of the last axis of every feature array."""
        return int(self.features[0].shape[-1]) if self.features else 0

    def lengths(self) -> list[int]:
        """T_i of every item (frames), e.g. for length-bucketed batching."""
        return [int(x.shape[0]) for x in self.features]


@dataclasses.dataclass(frozen=True)
class Split:
    """Disjoint ``train`` / ``val`` / ``test`` lists of items (``val`` may be empty)."""

    train: list
    val: list
    test: list

    def as_dict(self) -> dict[str, list]:
        """``{"train": ..., "test": ...}`` plus ``"val"`` when it is not empty."""
        d = {"train": self.train, "test": self.test}
        if self.val:
            d["val"] = self.val
        return d
