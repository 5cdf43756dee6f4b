"""The CUDA kernels of the delta layer operators (``torch.ops.deltarnn.gru_layer`` /
``lstm_layer``, defined in :mod:`deltarnn.ops.custom_ops`): the Triton backend.

Registered when :mod:`deltarnn.ops.triton` is imported (``custom_ops.KERNEL_MODULES`` names it
for CUDA). float32/float16/bfloat16 with ``resync_every = 0`` run
:func:`deltarnn.ops.triton.run_sequence` on weights packed once per weight pair (repacked when a
weight changes); other dtypes (float64) and a re-sync period run the functional spec. Outputs follow the operator's schema and are new tensors, never an input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import custom_ops
from .triton import WEIGHT_DTYPES, pack, run_sequence

# Packed Triton weights per (weight_ih, weight_hh), invalidated when either changes.
_PACKED = custom_ops._PackedCache()


def _layer_kernel(kind: str):
    def kernel(*args) -> tuple[Tensor, ...]:
        call = custom_ops.split_args(kind, args)
        # run_sequence does not apply the periodic re-sync yet: with a period the spec runs.
        fast = call.x.dtype in WEIGHT_DTYPES and call.weight_ih.dtype == call.x.dtype
        if fast and call.resync_every == 0:
            with torch.no_grad():
                packed = _PACKED.get((call.weight_ih, call.weight_hh), pack)
                out, state, counts = run_sequence(
                    call.x, call.state, packed, call.theta_x.float(), call.theta_h.float(),
                    count=call.count,
                )  # fmt: skip
        else:
            out, state, counts = call.spec(kind)
        # results() copies what run_sequence hands back unchanged (the given state for T = 0).
        return custom_ops.results(call, out, state, counts)

    return kernel


KERNELS = {kind: _layer_kernel(kind) for kind in custom_ops.LAYERS}

for _kind, _layer in custom_ops.LAYERS.items():
    torch.library.register_kernel(f"{custom_ops.NAMESPACE}::{_layer.name}", "cuda", KERNELS[_kind])
