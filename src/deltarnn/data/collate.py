"""Batching variable-length sequences for ``torch.utils.data.DataLoader``.

Shape legend: B batch, T longest sequence in the batch, T_i one sequence's length, F features,
L_i one target's length.

Use with ``functools.partial`` to choose the layout, e.g.
``DataLoader(ds, collate_fn=functools.partial(collate_ctc, batch_first=True))``. Lengths are int64
CPU tensors, ready for ``torch.nn.utils.rnn.pack_padded_sequence(..., enforce_sorted=False)`` and
``torch.nn.CTCLoss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ShapeError


def pad_sequences(
    sequences: Sequence[Tensor], batch_first: bool = False, padding_value: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Pad (T_i, *) tensors to a common length.

    Returns:
        ``(padded, lengths)``: padded is (T, B, *) or, with ``batch_first``, (B, T, *); lengths is
        (B,) int64.

    Raises:
        ShapeError: empty batch, a 0-d tensor, or trailing dimensions that differ.
    """
    if len(sequences) == 0:
        raise ShapeError("sequences is empty: cannot collate a batch of size 0")
    trailing = tuple(sequences[0].shape[1:])
    for i, s in enumerate(sequences):
        if s.dim() < 1 or tuple(s.shape[1:]) != trailing:
            raise ShapeError(
                f"sequences[{i}] must be (T_i, *{trailing}), got shape {tuple(s.shape)}"
            )
    lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
    padded = torch.nn.utils.rnn.pad_sequence(
        list(sequences), batch_first=batch_first, padding_value=padding_value
    )
    return padded, lengths


def collate_sequences(
    batch: Sequence[tuple[Tensor, Any]], batch_first: bool = False, padding_value: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``(features (T_i, F), label int)`` items for sequence classification.

    Returns:
        ``(features, lengths, labels)``: features (T, B, F) or (B, T, F) with ``batch_first``,
        lengths (B,) int64, labels (B,) int64.
    """
    features, lengths = pad_sequences([x for x, _ in batch], batch_first, padding_value)
    labels = torch.tensor([int(y) for _, y in batch], dtype=torch.int64)
    return features, lengths, labels


def collate_ctc(
    batch: Sequence[tuple[Tensor, Tensor]], batch_first: bool = False, padding_value: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Collate ``(features (T_i, F), labels (L_i,))`` items for ``torch.nn.CTCLoss``.

    Returns:
        ``(features, input_lengths, targets, target_lengths)``: features (T, B, F) or (B, T, F);
        input_lengths (B,) int64; targets (sum L_i,) int64, all targets concatenated (the 1-D
        form CTCLoss accepts); target_lengths (B,) int64.

    Raises:
        ShapeError: a target is not 1-D.
    """
    features, input_lengths = pad_sequences([x for x, _ in batch], batch_first, padding_value)
    targets = [torch.as_tensor(y, dtype=torch.int64) for _, y in batch]
    for i, t in enumerate(targets):
        if t.dim() != 1:
            raise ShapeError(f"batch[{i}] target must be 1-D (L_i,), got shape {tuple(t.shape)}")
    target_lengths = torch.tensor([t.numel() for t in targets], dtype=torch.int64)
    return features, input_lengths, torch.cat(targets), target_lengths
