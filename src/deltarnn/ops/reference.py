"""The reference backend: the functional spec itself. Runs anywhere, differentiable."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F

NAME = "reference"
DIFFERENTIABLE = True


def is_available() -> bool:
    return True


def supports(device: torch.device, dtype: torch.dtype, needs_grad: bool) -> bool:
    return True


def pack(weight_ih: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
    return weight_ih, weight_hh


def gru(x, state, packed, theta_x, theta_h, *, count=False, h_transform=None):
    return F.delta_gru(x, state, *packed, theta_x, theta_h, count=count, h_transform=h_transform)


def lstm(x, state, packed, theta_x, theta_h, *, count=False, h_transform=None):
    return F.delta_lstm(x, state, *packed, theta_x, theta_h, count=count, h_transform=h_transform)
