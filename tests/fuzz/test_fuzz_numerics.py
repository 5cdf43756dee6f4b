"""Non-finite and huge inputs at Θ = 0 against ``torch.nn.GRU``/``LSTM``, on every backend.

At Θ = 0 a delta network is the dense one, so it must agree with torch for every input torch
accepts: a NaN must propagate where torch's does, and after a huge or infinite frame the outputs
must come back to torch's (torch recomputes W x every step; a delta network must not keep the
rounding error of adding and later removing W·1e30 in its memories).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import deltarnn
from tests.fuzz.strategies import ModuleSpec, assume_backend, module_specs

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}

BACKENDS = ("reference", "cpu", "fused", "triton")


def run_all(spec: ModuleSpec, backend: str, x: torch.Tensor):
    assume_backend(backend, spec.dtype)
    model = spec.build(backend=backend)
    dense = deltarnn.to_torch(model)
    with torch.no_grad():
        return model(x)[0], dense(x)[0]


def assert_matches_torch(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), (
        "NaN where torch has none, or none where it has"
    )
    torch.testing.assert_close(out, ref, atol=TOL[dtype], rtol=0, equal_nan=True)


@st.composite
def with_bad_frames(draw, spec: ModuleSpec, values: tuple[float, ...]):
    """The spec's input with 1-3 frames each holding one bad value, never the last frame (so a
    wrong memory shows in the frames after it)."""
    x = spec.grid_input()
    frames = draw(st.lists(st.integers(0, spec.steps - 2), min_size=1, max_size=3, unique=True))
    for t in frames:
        row = draw(st.integers(0, max(spec.batch - 1, 0)), label="sample")
        col = draw(st.integers(0, spec.input_size - 1), label="feature")
        if spec.batch == 0:
            index = (t, col)
        else:
            index = (row, t, col) if spec.batch_first else (t, row, col)
        x[index] = draw(st.sampled_from(values), label="value")
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@given(spec=module_specs(min_steps=2), data=st.data())
def test_nan_input_propagates_like_torch(backend, spec: ModuleSpec, data):
    x = data.draw(with_bad_frames(spec, (math.nan,)))
    out, ref = run_all(spec, backend, x)
    assert_matches_torch(out, ref, spec.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@given(spec=module_specs(min_steps=2), data=st.data())
def test_huge_and_infinite_frames_recover_like_torch(backend, spec: ModuleSpec, data):
    # 1e6 is within float32's rounding reach of the grid values only in float32.
    huge = (1e10, 1e30, math.inf, -math.inf) + ((1e6,) if spec.dtype == torch.float32 else ())
    x = data.draw(with_bad_frames(spec, huge))
    out, ref = run_all(spec, backend, x)
    assert_matches_torch(out, ref, spec.dtype)
