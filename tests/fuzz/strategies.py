"""Hypothesis strategies shared by the fuzz tier: module configurations and grid inputs.

Tensors are drawn from a seed (not element by element): hypothesis shrinks the sizes and the
seed, and a failing case is reproduced by the printed sizes and seed alone.

Grid inputs are multiples of 1/8 in [-1, 1] and input thresholds are odd multiples of 1/16 (the
midpoints), so every |x - x̂| is exact and at least 1/16 away from Θx: no rounding difference
between backends can flip an input send decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import assume
from hypothesis import strategies as st

import deltarnn
from deltarnn.ops import load_backend

GRID = 8  # grid inputs are k / GRID
MIDPOINTS = tuple((2 * k + 1) / (2 * GRID) for k in range(4))  # 1/16, 3/16, 5/16, 7/16
DTYPES = (torch.float32, torch.float64)


def assume_backend(name: str, dtype: torch.dtype) -> None:
    """Skip the test when backend ``name`` cannot run on this machine at all; reject the example
    (``assume``) when it cannot run ``dtype`` on the CPU. Skipping on an example's dtype would
    skip the whole test at the first such example, and with it every other example."""
    module = load_backend(name)
    if module is None:
        pytest.skip(f"backend {name!r} is not available here")
    assume(module.supports(torch.device("cpu"), dtype, needs_grad=False))


@dataclass(frozen=True)
class ModuleSpec:
    """A module configuration and an input size; ``build()`` makes it with seeded weights."""

    kind: str  # "gru" or "lstm"
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dtype: torch.dtype
    steps: int
    batch: int  # 0: unbatched input
    seed: int

    def build(self, theta_x=0.0, theta_h=0.0, backend: str = "auto"):
        torch.manual_seed(self.seed)
        cls = deltarnn.DeltaGRU if self.kind == "gru" else deltarnn.DeltaLSTM
        return cls(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            dtype=self.dtype,
            theta_x=theta_x,
            theta_h=theta_h,
            backend=backend,
        )

    def input_shape(self) -> tuple[int, ...]:
        if self.batch == 0:
            return (self.steps, self.input_size)
        if self.batch_first:
            return (self.batch, self.steps, self.input_size)
        return (self.steps, self.batch, self.input_size)

    def grid_input(self, seed_offset: int = 0) -> torch.Tensor:
        """An input on the binary grid k/8, k in [-8, 8], in the module's layout."""
        return grid(self.input_shape(), self.dtype, self.seed + 7919 * (seed_offset + 1))


def grid(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-GRID, GRID + 1, shape, generator=gen).to(dtype) / GRID


@st.composite
def module_specs(
    draw,
    kinds: tuple[str, ...] = ("gru", "lstm"),
    dtypes: tuple[torch.dtype, ...] = DTYPES,
    max_size: int = 13,
    max_layers: int = 3,
    min_steps: int = 1,
    max_steps: int = 12,
    max_batch: int = 4,
) -> ModuleSpec:
    """Awkward sizes included: T = 1, B = 1, unbatched input, sizes that are no block multiple."""
    return ModuleSpec(
        kind=draw(st.sampled_from(kinds)),
        input_size=draw(st.integers(1, max_size)),
        hidden_size=draw(st.integers(1, max_size)),
        num_layers=draw(st.integers(1, max_layers)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        steps=draw(st.integers(min_steps, max_steps)),
        batch=draw(st.integers(0, max_batch)),
        seed=draw(st.integers(0, 2**16)),
    )


def midpoint_thetas() -> st.SearchStrategy[float]:
    """Θx values no grid difference can equal: 0 or a midpoint of the grid."""
    return st.sampled_from((0.0, *MIDPOINTS))
