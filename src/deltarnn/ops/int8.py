"""8-bit weights with one scale per column: the scheme every backend's ``weights="int8"`` uses.

Column j of a layer's weight matrix (the G*H weights input j feeds) is stored as

    q_j = clamp(round(w_j / s_j), -127, 127)  (int8),   s_j = max|w_j| / 127  (1 where w_j = 0)

computed in float64 (``round`` half to even), the scale stored in the weights' dtype. Each
weight is within s_j / 2 of its float value. A step multiplies the delta of column j by s_j once
and reads the int8 weights: a quarter of the bytes. Results equal the float engine run with the
dequantized weights ``s_j * q_j`` (:func:`dequantize_columns`); inputs, state and accumulation
stay in the float dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quantize_columns(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Quantize a (G*H, F) weight per column.

    Returns:
        ``(q, scale)``: q (F, G*H) int8, C-contiguous (row j is column j of ``weight``), and
        scale (F,) in ``weight``'s dtype.
    """
    cols = weight.detach().t().to(torch.float64)
    scale = cols.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(cols / scale[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
    return q, scale.to(weight.dtype)


def dequantize_columns(q: Tensor, scale: Tensor) -> Tensor:
    """The float weight (G*H, F) that ``(q, scale)`` from :func:`quantize_columns` computes with."""
    return (q.to(scale.dtype) * scale[:, None]).t().contiguous()
