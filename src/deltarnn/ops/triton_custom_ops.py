"""The CUDA kernels of the delta layer operators (``torch.ops.deltarnn.gru_layer`` /
``lstm_layer``, defined in :mod:`deltarnn.ops.custom_ops`): the Triton backend.

Registered when :mod:`deltarnn.ops.triton` is imported (``custom_ops.KERNEL_MODULES`` names it
for CUDA). float32/float16/bfloat16 run :func:`deltarnn.ops.triton.run_sequence` (re-sync rule
included) on weights packed once per layer (repacked when a weight or bias changes); other
dtypes (float64) run the functional spec. Outputs follow the operator's schema and are new
tensors, never an input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import custom_ops
from .triton import WEIGHT_DTYPES, pack, run_sequence

# Packed Triton weights per layer (weights and biases), invalidated when any of them changes.
_PACKED = custom_ops._PackedCache()


def _layer_kernel(kind: str):
    def kernel(*args) -> tuple[Tensor, ...]:
        call = custom_ops.split_args(kind, args)
        if call.x.dtype in WEIGHT_DTYPES and call.weight_ih.dtype == call.x.dtype:
            layer = (call.weight_ih, call.weight_hh, call.bias_ih, call.bias_hh)
            with torch.no_grad():
                out, state, counts = run_sequence(
                    call.x, call.state, _PACKED.get(layer, pack), call.theta_x.float(),
                    call.theta_h.float(), count=call.count, resync_every=call.resync_every,
                )  # fmt: skip
        else:
            out, state, counts = call.spec(kind)
        # results() copies what run_sequence hands back unchanged (the given state for T = 0).
        return custom_ops.results(call, out, state, counts)

    return kernel


KERNELS = {kind: _layer_kernel(kind) for kind in custom_ops.LAYERS}

for _kind, _layer in custom_ops.LAYERS.items():
    torch.library.register_kernel(f"{custom_ops.NAMESPACE}::{_layer.name}", "cuda", KERNELS[_kind])
