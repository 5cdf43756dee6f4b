"""The CUDA kernels of the delta layer operators (``torch.ops.deltarnn.gru_layer`` /
``lstm_layer``, defined in :mod:`deltarnn.ops.custom_ops`): the Triton backend.

Registered when :mod:`deltarnn.ops.triton` is imported (``custom_ops.KERNEL_MODULES`` names it
for CUDA). float32/float16/bfloat16 run :func:`deltarnn.ops.triton.run_sequence` on weights
packed once per weight pair (repacked when a weight changes); other dtypes (float64) run the
functional spec. Outputs follow the operator's schema and are new tensors, never an input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import custom_ops
from .triton import WEIGHT_DTYPES, pack, run_sequence

# Packed Triton weights per (weight_ih, weight_hh), invalidated when either changes.
_PACKED = custom_ops._PackedCache()


def _layer_kernel(kind: str):
    layer = custom_ops.LAYERS[kind]
    fields = len(layer.state_type._fields)

    def kernel(*args) -> tuple[Tensor, ...]:
        x, state = args[0], layer.state_type(*args[1 : 1 + fields])
        w_ih, w_hh, theta_x, theta_h, count = args[1 + fields :]
        with torch.no_grad():
            if x.dtype in WEIGHT_DTYPES and w_ih.dtype == x.dtype:
                packed = _PACKED.get(w_ih, w_hh, pack)
                out, new_state, counts = run_sequence(
                    x, state, packed, theta_x.float(), theta_h.float(), count=count
                )
            else:
                out, new_state, counts = layer.spec(
                    x, state, w_ih, w_hh, theta_x, theta_h, count=count
                )
        # run_sequence copies its results out, but returns the given state for T = 0.
        new_state = [
            t.clone() if t is given else t for t, given in zip(new_state, state, strict=True)
        ]
        if counts is None:
            batch = x.shape[1]
            long = dict(dtype=torch.int64, device=x.device)
            empty = (
                torch.empty(0, batch, **long), torch.empty(0, batch, **long),
                torch.empty(0, **long), torch.empty(0, **long),
                x.new_empty(0, batch), x.new_empty(0, batch),
            )  # fmt: skip
            return (out, *new_state, *empty)
        nx, nh, ux, uh, abs_x, abs_h = counts
        return (out, *new_state, nx, nh, ux, uh, abs_x.to(x.dtype), abs_h.to(x.dtype))

    return kernel


KERNELS = {kind: _layer_kernel(kind) for kind in custom_ops.LAYERS}

for _kind, _layer in custom_ops.LAYERS.items():
    torch.library.register_kernel(f"{custom_ops.NAMESPACE}::{_layer.name}", "cuda", KERNELS[_kind])
