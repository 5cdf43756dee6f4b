"""Collate functions: padding, lengths, layout, CTC targets, bad batches."""

from __future__ import annotations

import pytest
import torch

from deltarnn.data.collate import collate_ctc, collate_sequences, pad_sequences
from deltarnn.errors import ShapeError


def _batch():
    return [torch.full((t, 3), float(t)) for t in (4, 1, 6)]


@pytest.mark.parametrize("batch_first", [False, True])
def test_pad_sequences_layout_and_lengths(batch_first):
    padded, lengths = pad_sequences(_batch(), batch_first=batch_first, padding_value=-1.0)
    assert lengths.tolist() == [4, 1, 6] and lengths.dtype == torch.int64
    x = padded if batch_first else padded.transpose(0, 1)
    assert x.shape == (3, 6, 3)
    for b, t in enumerate((4, 1, 6)):
        assert torch.all(x[b, :t] == t) and torch.all(x[b, t:] == -1.0)
    # Works with packing, unsorted lengths included.
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        padded, lengths, batch_first=batch_first, enforce_sorted=False
    )
    assert packed.data.shape == (11, 3)


def test_collate_sequences():
    x, lengths, labels = collate_sequences([(s, i) for i, s in enumerate(_batch())], True)
    assert x.shape == (3, 6, 3) and labels.tolist() == [0, 1, 2] and labels.dtype == torch.int64
    assert lengths.tolist() == [4, 1, 6]


def test_collate_ctc():
    targets = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([4, 5, 6])]
    x, in_lens, flat, tgt_lens = collate_ctc(list(zip(_batch(), targets, strict=True)))
    assert x.shape == (6, 3, 3) and in_lens.tolist() == [4, 1, 6]
    assert flat.tolist() == [1, 2, 3, 4, 5, 6] and tgt_lens.tolist() == [2, 1, 3]


def test_bad_batches():
    with pytest.raises(ShapeError, match="size 0"):
        pad_sequences([])
    with pytest.raises(ShapeError, match=r"sequences\[1\]"):
        pad_sequences([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ShapeError, match=r"batch\[0\] target"):
        collate_ctc([(torch.zeros(2, 3), torch.zeros(1, 2, dtype=torch.int64))])
