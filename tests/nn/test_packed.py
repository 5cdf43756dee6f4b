"""PackedSequence in DeltaGRU/DeltaLSTM: equal to torch's packed nn.GRU/LSTM at Θ = 0 (outputs,
h_n at each sequence's true last step, gradients); padded steps are never counted."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import deltarnn

LENGTHS = [3, 6, 1, 3, 5]  # unsorted, with ties


def make(kind, batch_first, seed=0):
    torch.manual_seed(seed)
    dense = getattr(nn, kind)(4, 6, num_layers=2, batch_first=batch_first).double()
    return dense, deltarnn.from_torch(dense)


def padded_input(batch_first, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(max(LENGTHS), len(LENGTHS), 4, generator=g, dtype=torch.float64)
    return (x.transpose(0, 1) if batch_first else x).contiguous()


def initial(kind, seed=2):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(2, len(LENGTHS), 6, generator=g, dtype=torch.float64)
    return h0 if kind == "GRU" else (h0, torch.randn(2, len(LENGTHS), 6, generator=g).double())


def flat(result):
    out, hidden = result
    hidden = (hidden,) if isinstance(hidden, torch.Tensor) else hidden
    return out.data, *hidden


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_equals_torch_at_theta_zero_with_gradients(kind, batch_first, enforce_sorted):
    dense, delta = make(kind, batch_first)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    results = []
    for module in (dense, delta):
        x = padded_input(batch_first).requires_grad_(True)
        hx = initial(kind)
        hx = hx.requires_grad_(True) if kind == "GRU" else tuple(t.requires_grad_(True) for t in hx)
        packed = pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted
        )
        out = flat(module(packed, hx))
        # every returned value takes part in the loss, with weights that tell them apart
        loss = sum((t * torch.linspace(-1, 1, t.numel()).double().view_as(t)).sum() for t in out)
        loss.backward()
        leaves = [x, *(hx if kind == "LSTM" else (hx,)), *module.parameters()]
        results.append((out, [t.grad for t in leaves]))
    (out_t, grad_t), (out_d, grad_d) = results
    assert type(delta(packed)[0]) is type(packed)
    for a, b in zip(out_d, out_t, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for a, b in zip(grad_d, grad_t, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_h_n_is_each_sequence_alone_and_padding_never_moves_it():
    _, delta = make("GRU", False)
    delta.set_thresholds(0.3, 0.2)  # with thresholds, too
    x = padded_input(False)
    x_noisy = x.clone()
    for b, n in enumerate(LENGTHS):
        x_noisy[n:, b] = 1e3  # padding that would wreck any state it reached
    with torch.no_grad():
        out, h_n = delta(pack_padded_sequence(x_noisy, torch.tensor(LENGTHS), enforce_sorted=False))
        padded, _ = pad_packed_sequence(out)
        for b, n in enumerate(LENGTHS):
            alone, h_alone = delta(x[:n, b : b + 1])
            torch.testing.assert_close(padded[:n, b : b + 1], alone, atol=1e-12, rtol=0)
            torch.testing.assert_close(h_n[:, b : b + 1], h_alone, atol=1e-12, rtol=0)
            assert padded[n:, b].abs().sum() == 0


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_packed_counts_are_each_sequence_alone_and_zero_on_padding(kind):
    _, delta = make(kind, False)
    delta.set_thresholds(0.3, 0.1)
    x = padded_input(False)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    with torch.no_grad():
        counts = delta(packed, count=True)[-1]
        for b, n in enumerate(LENGTHS):
            alone = delta(x[:n, b : b + 1], count=True)[-1]
            for k in range(2):
                assert torch.equal(counts[k].nx[:n, b], alone[k].nx[:, 0])
                assert torch.equal(counts[k].nh[:n, b], alone[k].nh[:, 0])
                assert counts[k].nx[n:, b].sum() == 0 and counts[k].nh[n:, b].sum() == 0
    assert 0 < int(counts[1].nx.sum()) < sum(LENGTHS) * 6  # the thresholds skipped work
