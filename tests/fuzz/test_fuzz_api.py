"""Random shapes, dtypes and thresholds through the public API.

Each property holds for every configuration the strategies draw (awkward sizes included): the
output has torch's shape and layout, Θ = 0 equals ``torch.nn.GRU``/``LSTM``, and after any run the
input error of layer 0 is bounded by Θx (|x_T - x̂_T| ≤ Θx, the delta rule's invariant).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import deltarnn
from tests.fuzz.strategies import ModuleSpec, midpoint_thetas, module_specs

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def theta_forms(value: float, spec: ModuleSpec):
    """The same Θx in each form the API takes: scalars of any real type, a 0-d tensor, a
    per-feature tensor per layer."""
    per_feature = [
        torch.full((spec.input_size if k == 0 else spec.hidden_size,), value, dtype=spec.dtype)
        for k in range(spec.num_layers)
    ]
    return st.sampled_from(
        (
            value,
            int(value),
            np.float32(value),
            np.float64(value),
            np.int64(value),
            torch.tensor(value, dtype=spec.dtype),
            torch.tensor(value, dtype=torch.float16),
            per_feature,
        )
    )


@given(spec=module_specs(), theta_x=midpoint_thetas(), theta_h=st.sampled_from((0.0, 0.05, 0.3)))
def test_output_has_torch_shape_and_bounded_input_error(spec: ModuleSpec, theta_x, theta_h):
    model = spec.build(theta_x=theta_x, theta_h=theta_h)
    x = spec.grid_input()
    dense = deltarnn.to_torch(model)
    with torch.no_grad():
        out, h_n = model(x)
        ref_out, ref_h = dense(x)
        _, state = model.stream(x)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    ref_h = ref_h if spec.kind == "gru" else ref_h[0]
    h_n = h_n if spec.kind == "gru" else h_n[0]
    assert h_n.shape == ref_h.shape
    assert torch.isfinite(out).all()
    last = x[-1] if spec.batch == 0 else (x[:, -1] if spec.batch_first else x[-1])
    last = last.reshape(-1, spec.input_size)
    assert ((last - state[0].x_hat).abs() <= theta_x).all()


@given(spec=module_specs(), data=st.data())
def test_theta_zero_equals_torch(spec: ModuleSpec, data):
    theta = data.draw(theta_forms(0.0, spec), label="theta_x")
    model = spec.build(theta_x=theta, theta_h=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    x = torch.randn(spec.input_shape(), generator=gen).to(spec.dtype)
    dense = deltarnn.to_torch(model)
    with torch.no_grad():
        out, _ = model(x)
        ref, _ = dense(x)
    torch.testing.assert_close(out, ref, atol=TOL[spec.dtype], rtol=0)
