"""``PackedSequence`` input for :class:`~deltarnn.DeltaGRU` / :class:`~deltarnn.DeltaLSTM`.

A packed batch holds sequences sorted by length, longest first, so at every step the sequences
still running are a prefix of the batch (``batch_sizes[t]`` of them). The run is cut where that
number changes: each piece streams the running prefix on from its state, and a sequence that has
ended keeps the state of its true last step. Padded steps are never computed, never counted, and
never touch a state, so the result equals running each sequence alone.

Shape legend: N packed rows (the sum of the lengths), B sequences, I inputs, H hidden, L layers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..errors import ShapeError
from ..functional import DeltaCounts


def permute_batch(t: Tensor, index: Tensor | None, dim: int) -> Tensor:
    return t if index is None else t.index_select(dim, index.to(t.device))


def run_packed(
    module, input: PackedSequence, state: tuple, count: bool
) -> tuple[PackedSequence, tuple, list[DeltaCounts] | None]:
    """Run ``module`` over a packed batch.

    Args:
        module: a DeltaGRU or DeltaLSTM.
        input: packed data (N, I) as ``torch.nn.utils.rnn.pack_padded_sequence`` makes it.
        state: per-layer initial states, batch B, in the packed (sorted) order.
        count: also return the counts.

    Returns:
        ``(output, state, counts)``: the packed output (N, H) with the input's ordering; each
        layer's state at every sequence's own last step, in the packed (sorted) order; counts
        per layer in the padded layout (T, B) with zeros at padded steps and the batch in the
        caller's (unsorted) order, or ``None``.
    """
    data, batch_sizes = input.data, input.batch_sizes
    if data.dim() != 2:
        raise ShapeError(
            f"input.data of a PackedSequence must be 2-D (N, input_size), got {tuple(data.shape)}"
        )
    sizes = batch_sizes.tolist()
    steps, batch = len(sizes), sizes[0]
    outputs, pieces = [], []
    row = t = 0
    while t < steps:
        b, t_end = sizes[t], t
        while t_end < steps and sizes[t_end] == b:
            t_end += 1
        x = data[row : row + (t_end - t) * b].view(t_end - t, b, data.shape[1])
        running = tuple(_batch_slice(s, 0, b) for s in state)
        result = module.stream(x.transpose(0, 1) if module.batch_first else x, running, count=count)
        out = result[0].transpose(0, 1) if module.batch_first else result[0]
        outputs.append(out.reshape(-1, out.shape[-1]))
        state = tuple(_merge(new, old, b) for new, old in zip(result[1], state, strict=True))
        if count:
            pieces.append((t, t_end, b, result[2]))
        row += (t_end - t) * b
        t = t_end
    output = PackedSequence(
        torch.cat(outputs), batch_sizes, input.sorted_indices, input.unsorted_indices
    )
    counts = None
    if count:
        counts = [
            _padded_counts([(t0, t1, b, c[k]) for t0, t1, b, c in pieces], steps, batch, input)
            for k in range(module.num_layers)
        ]
    return output, state, counts


def _batch_slice(state: NamedTuple, start: int, stop: int) -> NamedTuple:
    """The state of sequences ``start:stop`` (every tensor field is batch first; a 0-d field,
    such as the default ``since_sync``, holds for every sequence and stays as it is)."""
    return type(state)(*(f if f is None or f.dim() == 0 else f[start:stop] for f in state))


def _merge(new: NamedTuple, old: NamedTuple, b: int) -> NamedTuple:
    """The first ``b`` sequences from ``new``, the ended ones (``b:``) as they were in ``old``."""
    batch = old[0].shape[0]
    fields = []
    for n, o in zip(new, old, strict=True):
        if n is None or (n.dim() == 0 and (o is None or o.dim() == 0)):
            fields.append(n)  # None, or one value that every sequence still shares
            continue
        # a field the old state left as None (e.g. a counter) reads as zeros
        if o is None:
            rest = n.new_zeros((batch - b, *n.shape[1:]))
        elif o.dim() == 0:  # one value for every sequence (the default since_sync)
            rest = o.expand(batch - b, *n.shape[1:])
        else:
            rest = o[b:]
        fields.append(torch.cat((n, rest)))
    return type(new)(*fields)


def _padded_counts(pieces, steps: int, batch: int, input: PackedSequence) -> DeltaCounts:
    """One layer's counts of every piece laid out (T, B), zero at padded steps, unsorted."""
    first = pieces[0][3]
    full = {}
    for name in DeltaCounts._fields:
        if getattr(first, name) is None:
            full[name] = None
            continue
        like = getattr(first, name)
        per_sample = like.dim() == 2
        full[name] = like.new_zeros((steps, batch) if per_sample else (steps,))
        for t0, t1, b, c in pieces:
            value = getattr(c, name)
            if per_sample:
                full[name][t0:t1, :b] = value
            else:
                full[name][t0:t1] = value
        if per_sample:
            full[name] = permute_batch(full[name], input.unsorted_indices, 1)
    return DeltaCounts(**full)


def forward_packed(module, input: PackedSequence, hx, count: bool = False):
    """``module(packed, hx)`` as ``torch.nn.GRU``/``LSTM`` returns it (plus the counts when
    ``count``): h_n (and c_n) at each sequence's last step, in the caller's batch order."""
    batch = int(input.batch_sizes[0])
    expected = (module.num_layers, batch, module.hidden_size)
    h0 = c0 = None
    if module.mode == "GRU" and hx is not None:
        h0 = hx
    elif hx is not None:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ShapeError("hx must be a tuple (h_0, c_0) for an LSTM")
        h0, c0 = hx
    for name, t in (("h_0", h0), ("c_0", c0)):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != expected):
            raise ShapeError(
                f"{name} of a packed batch must have shape {expected}, got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            )
    # h_0 is given in the caller's order; the packed batch runs sorted by length
    h0, c0 = (None if t is None else permute_batch(t, input.sorted_indices, 1) for t in (h0, c0))
    state = (
        module.initial_state(batch, h0, c0)
        if module.mode == "LSTM"
        else (module.initial_state(batch, h0))
    )
    output, state, counts = run_packed(module, input, state, count)
    h_n = permute_batch(torch.stack([s.h for s in state]), input.unsorted_indices, 1)
    if module.mode == "LSTM":
        c_n = permute_batch(torch.stack([s.c for s in state]), input.unsorted_indices, 1)
        result = (output, (h_n, c_n))
    else:
        result = (output, h_n)
    return (*result, counts) if count else result
