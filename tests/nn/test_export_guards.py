"""Graph capture of the delta modules: it works, or it refuses; never a frozen constant.

torch.compile and torch.export record each layer as one ``deltarnn::*_layer`` operator, so the
graph equals eager for any length and batch; torch.jit.trace records the operators too;
torch.jit.script and ONNX export raise :class:`ExportError`.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import pytest
import torch

import deltarnn
from deltarnn.errors import BackendError, ExportError
from deltarnn.nn.capture import StreamStep

MODULES = {
    "GRU": lambda **kw: deltarnn.DeltaGRU(5, 7, num_layers=2, **kw),
    "LSTM": lambda **kw: deltarnn.DeltaLSTM(5, 7, num_layers=2, **kw),
}
THETA = {"theta_x": 3 / 16, "theta_h": 0.05}


def grid(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 9, shape, generator=gen) / 8


def make(kind, **kw):
    torch.manual_seed(0)
    return MODULES[kind](**THETA, **kw).eval()


def assert_trees_close(a, b):
    flat_a, flat_b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


# -- torch.compile -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_compile_equals_eager_without_graph_breaks(kind):
    # fullgraph=True fails on any graph break; the "eager" backend checks the captured graph
    # (the inductor test below checks generated code once).
    model = make(kind)
    compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        for steps, batch in ((4, 1), (9, 3), (1, 2)):
            x = grid(steps, batch, 5, seed=steps)
            assert_trees_close(compiled(x), model(x))
        state = model.initial_state(2)
        x = grid(6, 2, 5, seed=1)
        step = torch.compile(model.stream, fullgraph=True, backend="eager")
        assert_trees_close(step(x, state, count=True), model.stream(x, state, count=True))


def test_compile_counts_graph_ops():
    model = make("GRU")
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend=backend)(grid(4, 1, 5))
    (gm,) = graphs
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    layers = [t for t in targets if t is torch.ops.deltarnn.gru_layer]
    assert len(layers) == 2  # one node per layer, nothing of the kernels traced through


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_compiled_cells_equal_eager(kind):
    torch.manual_seed(0)
    cell_type = deltarnn.DeltaGRUCell if kind == "GRU" else deltarnn.DeltaLSTMCell
    cell = cell_type(5, 7, **THETA)
    compiled = torch.compile(cell, fullgraph=True, backend="eager")
    with torch.no_grad():
        state_eager = state_comp = None
        for t in range(4):
            x = grid(3, 5, seed=t)
            h, state_eager = cell(x, state_eager)
            hc, state_comp = compiled(x, state_comp)
            torch.testing.assert_close(hc, h, atol=1e-6, rtol=1e-6)
            assert_trees_close(state_comp, state_eager)


def test_compile_with_gradients_runs_the_spec_and_matches_eager_gradients():
    model = make("GRU")
    x = grid(5, 2, 5)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    out_c = compiled(x)[0]
    grads_c = torch.autograd.grad(out_c.sum(), list(model.parameters()))
    out_e = model(x)[0]
    grads_e = torch.autograd.grad(out_e.sum(), list(model.parameters()))
    torch.testing.assert_close(out_c, out_e, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads_c, grads_e, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compile_in_a_fresh_process_equals_eager():
    # A fresh process once crashed inside numba's dispatcher. aot_eager: dynamo, the fake
    # kernels and AOT autograd's functionalisation, without inductor's C++ build (next test).
    code = """
import torch, deltarnn
torch.manual_seed(0)
model = deltarnn.DeltaGRU(5, 7, num_layers=2, theta_x=3 / 16, theta_h=0.05).eval()
compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
with torch.no_grad():
    for steps in (4, 11):
        x = torch.randint(-8, 9, (steps, 2, 5)) / 8
        a, b = compiled(x), model(x)
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-6)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_inductor_compile_equals_eager():
    torch.manual_seed(0)
    cell = deltarnn.DeltaLSTMCell(5, 7, **THETA)
    compiled = torch.compile(cell, fullgraph=True)
    with torch.no_grad():
        state = cell.initial_state(2)[0]
        x = grid(2, 5)
        assert_trees_close(compiled(x, state), cell(x, state))


# -- torch.export --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_exported_step_equals_eager_and_survives_save_and_load(kind, tmp_path):
    model = make(kind)
    step = StreamStep(model)
    state = step.flatten(model.initial_state(1))
    with torch.no_grad():
        program = torch.export.export(step, (grid(1, 5), *state))
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert getattr(torch.ops.deltarnn, f"{kind.lower()}_layer").default in calls
    # nothing but the layers and views: no dtype casts of tensors already of the dtype (an
    # exported step runs every node at every frame)
    casts = [c for c in calls if "to" in str(c).split(".") or "_assert_tensor_metadata" in str(c)]
    assert not casts, casts
    path = tmp_path / "step.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    exported = program.module()
    s_eager = s_exp = s_load = state
    for t in range(5):
        frame = grid(1, 5, seed=t)
        out, *s_eager = step(frame, *s_eager)
        out_e, *s_exp = exported(frame, *s_exp)
        out_l, *s_load = loaded(frame, *s_load)
        torch.testing.assert_close(out_e, out, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out_l, out, atol=1e-6, rtol=1e-6)
    assert_trees_close(s_exp, s_eager)
    # the step resumes an eager stream
    resumed = model.stream(grid(3, 1, 5, seed=9), step.unflatten(s_exp))
    direct = model.stream(grid(3, 1, 5, seed=9), step.unflatten(s_eager))
    assert_trees_close(resumed, direct)


def test_export_with_a_dynamic_batch():
    model = make("GRU")
    step = StreamStep(model)
    state = step.flatten(model.initial_state(2))
    batch = torch.export.Dim("batch")
    shapes = ({0: batch}, tuple({0: batch} for _ in state))  # (frame, *state)
    with torch.no_grad():
        program = torch.export.export(step, (grid(2, 5), *state), dynamic_shapes=shapes)
    state5 = step.flatten(model.initial_state(5))
    frame = grid(5, 5, seed=3)
    assert_trees_close(program.module()(frame, *state5), step(frame, *state5))


def test_stream_step_checks_its_arguments():
    step = StreamStep(make("GRU"))
    with pytest.raises(deltarnn.ShapeError, match="frame"):
        step(grid(1, 1, 5), *step.flatten(step.module.initial_state(1)))
    # Two GRU layers of five tensors each (h, x_hat, h_hat, m, since_sync).
    with pytest.raises(deltarnn.ShapeError, match="10 tensors"):
        step.unflatten([torch.zeros(1)] * 3)


# -- torch.jit.trace ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_traced_module_is_correct_on_other_lengths_and_batches(kind):
    model = make(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (grid(4, 2, 5),))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        for steps, batch in ((9, 2), (1, 2), (6, 3)):
            x = grid(steps, batch, 5, seed=steps)
            want = model(x)
            assert_trees_close(traced(x), want)
            assert_trees_close(loaded(x), want)


def test_traced_module_refuses_a_backward():
    model = make("GRU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (grid(4, 1, 5),))
    with pytest.raises(BackendError, match="no gradient"):
        traced(grid(3, 1, 5))[0].sum().backward()


def test_trace_refuses_what_it_would_unroll():
    model = make("GRU", backend="reference")
    with pytest.raises(ExportError, match="unroll"):
        torch.jit.trace(model, (grid(4, 1, 5),))
    model = make("GRU")
    model.set_transforms(x_transform=lambda x, k: torch.round(x))  # the spec would run
    with pytest.raises(ExportError, match="training transforms"):
        torch.jit.trace(model, (grid(4, 1, 5),))


# -- torch.jit.script, ONNX ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_script_refuses(kind):
    with pytest.raises(ExportError, match="torch.jit.script"):
        torch.jit.script(make(kind))
    parent = torch.nn.Sequential(torch.nn.Identity(), make(kind))
    with pytest.raises(ExportError, match="torch.jit.script"):
        torch.jit.script(parent)
    with pytest.raises(ExportError, match="torch.jit.script"):
        torch.jit.script(deltarnn.DeltaGRUCell(3, 4))


def _root_causes(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_legacy_onnx_export_refuses():
    pytest.importorskip("onnx")
    with pytest.raises(ExportError, match="ONNX"):
        torch.onnx.export(make("GRU"), (grid(4, 1, 5),), io.BytesIO(), dynamo=False)


@pytest.mark.parametrize("grad", [False, True])
def test_dynamo_onnx_export_refuses(grad):
    pytest.importorskip("onnxscript")
    model = make("LSTM")
    with torch.set_grad_enabled(grad), pytest.raises(Exception) as info:
        torch.onnx.export(model, (grid(4, 1, 5),), dynamo=True)
    causes = list(_root_causes(info.value))
    assert any(isinstance(c, ExportError) for c in causes), causes
    assert "ONNX has no delta-RNN operator" in str(info.value)
