"""Backends against the reference, and a stream cut into chunks against one pass.

Inputs are on the grid and Θx at a midpoint (see ``strategies``), so layer 0's input send
decisions are exact on every backend. Hidden values are not on any grid: a float32 backend may
compute h one rounding step apart and send a unit that another backend holds, so in float32 Θh
and the Θx of deeper layers (whose inputs are hidden values) are 0, where sending or holding a
change of one rounding step makes no difference beyond it. float64 takes any thresholds.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import ModuleSpec, assume_backend, midpoint_thetas, module_specs

# float32: summation order and rational tanh/sigmoid approximations (3e-7) in the cpu engine;
# float64: summation order only.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
FAST_BACKENDS = ("cpu", "fused", "triton")


@st.composite
def safe_thresholds(draw, spec: ModuleSpec):
    """(theta_x, theta_h) for which backends must agree to TOL (see the module docstring)."""
    first = draw(midpoint_thetas(), label="theta_x of layer 0")
    if spec.dtype == torch.float32:
        return [first] + [0.0] * (spec.num_layers - 1), 0.0
    deeper = draw(
        st.lists(st.sampled_from((0.0, 0.05, 0.2)), min_size=spec.num_layers - 1,
                 max_size=spec.num_layers - 1),
        label="theta_x of deeper layers",
    )  # fmt: skip
    theta_h = draw(st.sampled_from((0.0, 0.05, 0.2)), label="theta_h")
    return [first, *deeper], theta_h


def assert_same_stream(got, expected, dtype) -> None:
    """Outputs, every field of every layer's state, and the input sends of layer 0 per step.

    ``got`` and ``expected`` are ``(output, state, nx)`` with nx layer 0's (T, B) counts."""
    for name, a, b in (("output", got[0], expected[0]), ("nx", got[2], expected[2])):
        torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    for k, (layer, ref_layer) in enumerate(zip(got[1], expected[1], strict=True)):
        for field, a, b in zip(layer._fields, layer, ref_layer, strict=True):
            torch.testing.assert_close(
                a, b, atol=TOL[dtype], rtol=0, msg=lambda m, f=f"state[{k}].{field}": f"{f}: {m}"
            )


def stream(model, x, state=None):
    """``model.stream`` with counts, as (output, state, layer 0's nx)."""
    out, state, counts = model.stream(x, state, count=True)
    return out, state, counts[0].nx


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(spec=module_specs(), data=st.data())
def test_backends_agree_with_reference_on_grid_inputs(backend, spec: ModuleSpec, data):
    assume_backend(backend, spec.dtype)
    theta_x, theta_h = data.draw(safe_thresholds(spec))
    model = spec.build(theta_x=theta_x, theta_h=theta_h, backend="reference")
    x = spec.grid_input()
    with torch.no_grad():
        expected = stream(model, x)
        model.backend = backend
        got = stream(model, x)
    assert model.last_backend == backend
    assert_same_stream(got, expected, spec.dtype)


@pytest.mark.parametrize("backend", ("reference", *FAST_BACKENDS))
@given(spec=module_specs(max_steps=16), data=st.data())
def test_chunked_stream_equals_one_pass(backend, spec: ModuleSpec, data):
    assume_backend(backend, spec.dtype)
    theta_x, theta_h = data.draw(safe_thresholds(spec))
    cuts = data.draw(
        st.lists(st.integers(1, max(spec.steps - 1, 1)), max_size=4, unique=True), label="cuts"
    )
    model = spec.build(theta_x=theta_x, theta_h=theta_h, backend=backend)
    x = spec.grid_input()
    time_dim = 1 if spec.batch_first and spec.batch else 0
    bounds = [0, *sorted(c for c in cuts if c < spec.steps), spec.steps]
    with torch.no_grad():
        expected = stream(model, x)
        state, outs, counts = None, [], []
        for start, stop in zip(bounds, bounds[1:], strict=False):
            out, state, nx = stream(model, x.narrow(time_dim, start, stop - start), state)
            outs.append(out)
            counts.append(nx)
    assert_same_stream(
        (torch.cat(outs, dim=time_dim), state, torch.cat(counts)), expected, spec.dtype
    )


@given(spec=module_specs(max_layers=1), theta_x=midpoint_thetas())
def test_cell_steps_equal_the_layer(spec: ModuleSpec, theta_x):
    """A cell stepped T times equals the one-layer module over the T frames."""
    import deltarnn

    theta_h = 0.0 if spec.dtype == torch.float32 else 0.05
    layer = spec.build(theta_x=theta_x, theta_h=theta_h, backend="reference")
    cell_type = deltarnn.DeltaGRUCell if spec.kind == "gru" else deltarnn.DeltaLSTMCell
    cell = cell_type(spec.input_size, spec.hidden_size, spec.bias, dtype=spec.dtype,
                     theta_x=theta_x, theta_h=theta_h, backend="reference")  # fmt: skip
    weights = layer.state_dict()
    cell.load_state_dict({k if k.startswith("theta") else k[:-3]: v for k, v in weights.items()})
    x = spec.grid_input()
    if spec.batch and spec.batch_first:
        x = x.transpose(0, 1)
    layer.batch_first = False
    with torch.no_grad():
        expected, _ = layer(x)
        state, steps = None, []
        for frame in x:
            h, state = cell(frame, state)
            steps.append(h)
    torch.testing.assert_close(torch.stack(steps), expected, atol=TOL[spec.dtype], rtol=0)
