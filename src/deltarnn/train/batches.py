"""Batches for the training engine and the evaluation: a typed batch and epoch plans over a dataset.

Shape legend: T longest sequence of the batch, B batch, F features, L total target length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data import collate_ctc, collate_sequences, pad_sequences
from ..errors import ConfigError


@dataclasses.dataclass
class Batch:
    """One step's data, as the engine's ``loss_fn`` and the evaluation metrics receive it.

    Attributes:
        x: model input, (T, B, F) features (or anything the model's ``run`` takes first).
        lengths: (B,) int64 valid frames of each sequence.
        target: class labels (B,), CTC targets (L,), frame labels (T, B), regression targets
            (T, B), ...: what the loss and the metric expect.
        target_lengths: (B,) int64 CTC target lengths (``None`` for other tasks).
        size: items in the *global* batch (all data-parallel processes together).
        frames: valid frames in the global batch. Losses are sums divided by ``size`` or
            ``frames``, so that gradients summed over processes equal the one-process gradient.
    """

    x: Tensor
    lengths: Tensor
    target: Tensor
    target_lengths: Tensor | None = None
    size: int = 0
    frames: int = 0

    def __post_init__(self) -> None:
        if not self.size:
            self.size = int(self.lengths.numel())
        if not self.frames:
            self.frames = int(self.lengths.sum())

    def to(self, device: torch.device | str) -> Batch:
        """The batch with ``x`` and ``target`` on ``device`` (lengths stay on the CPU)."""
        return dataclasses.replace(self, x=self.x.to(device), target=self.target.to(device))


Collate = Callable[[Sequence[Any]], Batch]


def classification_batch(items: Sequence[tuple[Tensor, int]]) -> Batch:
    """``(features (T_i, F), class)`` items -> a :class:`Batch` with (B,) class targets."""
    x, lengths, labels = collate_sequences(items)
    return Batch(x, lengths, labels)


def ctc_batch(items: Sequence[tuple[Tensor, Tensor]]) -> Batch:
    """``(features (T_i, F), labels (L_i,))`` items -> a :class:`Batch` for CTC."""
    x, lengths, targets, target_lengths = collate_ctc(items)
    return Batch(x, lengths, targets, target_lengths)


def frame_label_batch(items: Sequence[tuple[Tensor, Tensor]]) -> Batch:
    """``(features (T_i, F), frame labels (T_i,))`` items -> (T, B) targets, -100 where padded."""
    x, lengths = pad_sequences([x for x, _ in items])
    target, _ = pad_sequences([torch.as_tensor(y) for _, y in items], padding_value=-100)
    return Batch(x, lengths, target)


def batch_plan(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches of one epoch: shuffled, then bucketed by length within groups of batches.

    Sorting by length inside a group of 8 batches keeps padding (and the step loop) short while
    the batch order stays random. Depends only on (lengths, batch_size, seed, epoch), so a
    resumed run sees the same batches.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    group = 8 * batch_size
    batches = []
    for start in range(0, len(perm), group):
        chunk = sorted(perm[start : start + group], key=lengths.__getitem__)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of data-parallel processes ((0, 1) without any)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _EpochBatches(Sequence):
    """One epoch of an :class:`IndexBatches`: collated lazily, this process's share only."""

    def __init__(self, source: IndexBatches, plan: list[list[int]]) -> None:
        self.source, self.plan = source, plan
        self.rank, self.world = rank_and_world()

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch | None:
        indices = self.plan[i]
        local = indices[self.rank :: self.world]
        if not local:
            return None  # this process has no item of this global batch; it still all-reduces
        batch = self.source.collate([self.source.dataset[j] for j in local])
        lengths = self.source.lengths
        batch.size, batch.frames = len(indices), sum(lengths[j] for j in indices)
        return batch


class IndexBatches:
    """The batches of a dataset, epoch by epoch, for :func:`~deltarnn.train.fit`.

    ``batches(epoch)`` is that epoch's :func:`batch_plan`, each global batch sliced for this
    data-parallel process (``indices[rank::world]``) and collated when it is read.

    Args:
        dataset: items ``dataset[i]`` and, unless ``lengths`` is given, a ``lengths()`` method.
        batch_size: the global batch.
        seed: fixes the order of every epoch.
        collate: items -> :class:`Batch` (:func:`classification_batch`, :func:`ctc_batch`, ...).
        lengths: T_i of every item (default ``dataset.lengths()``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        seed: int,
        collate: Collate,
        lengths: Sequence[int] | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.seed, self.collate = dataset, batch_size, seed, collate
        self.lengths = list(dataset.lengths() if lengths is None else lengths)
        if len(self.lengths) != len(dataset):
            raise ConfigError(f"{len(self.lengths)} lengths for {len(dataset)} items")

    def __call__(self, epoch: int) -> Sequence[Batch | None]:
        return _EpochBatches(self, batch_plan(self.lengths, self.batch_size, self.seed, epoch))


def ordered_batches(dataset: Any, collate: Collate, batch_size: int = 200) -> list[Batch]:
    """Every item once, sorted by length (little padding), for evaluation."""
    lengths = dataset.lengths()
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [
        collate([dataset[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]
