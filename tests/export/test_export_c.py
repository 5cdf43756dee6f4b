"""The exported C, compiled with a real compiler, against the Python streamer and dense torch.

Every comparison feeds the same real FSDD frames (on a binary grid, input thresholds at its
midpoints) to the compiled step (through ctypes or the written driver) and to the spec's stack
streamer (the reference backend), and checks outputs to float rounding and send counts exactly.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from tests.export.helpers import assert_close, make_model, spec_stream  # noqa: E402

import deltarnn  # noqa: E402
from deltarnn.errors import ShapeError  # noqa: E402
from deltarnn.export import HostBuild, export_c, python_stream  # noqa: E402
from deltarnn.export.host import STRICT_FLAGS, compile_c  # noqa: E402
from deltarnn.ops.int8 import quantize_columns  # noqa: E402


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_compiled_step_equals_streamer_on_fsdd(cc, fsdd_frames, tmp_path, kind, layers, weights):
    model = make_model(kind, layers, head=layers == 2, seed=layers)
    build = HostBuild(export_c(model, tmp_path, weights=weights), cc=cc)
    out, sent_x, sent_h = build.run(fsdd_frames.numpy())
    ref, ref_x, ref_h, _ = spec_stream(model, fsdd_frames, weights=weights)
    assert_close(out, ref)
    np.testing.assert_array_equal(sent_x, ref_x)
    np.testing.assert_array_equal(sent_h, ref_h)
    # the thresholds do their job: some columns are skipped, some are sent, on every layer
    assert 0 < sent_x.sum() < sent_x.shape[0] * 40 * layers
    assert (sent_h.sum(0) > 0).all()


def _c_array(source: str, name: str) -> np.ndarray:
    body = re.search(rf"{name}\[\d+\] = {{(.*?)}};", source, re.S).group(1)
    return np.array([float(v.rstrip("f")) for v in body.replace(",", " ").split()])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_int8_arrays_are_the_int8_scheme(tmp_path, kind):
    """The int8 weights and scales written into the C file are those of
    deltarnn.ops.int8.quantize_columns, the scheme of every backend's int8 streamer."""
    model = make_model(kind, 2)
    source = export_c(model, tmp_path, weights="int8").source.read_text()
    for k in range(2):
        w_ih, w_hh = model.layer_weights(k)[:2]
        for w, side in ((w_ih, "x"), (w_hh, "h")):
            q, scale = quantize_columns(w)
            np.testing.assert_array_equal(_c_array(source, f"model_l{k}_w{side}"), q.flatten())
            written = _c_array(source, f"model_l{k}_s{side}").astype(np.float32)
            np.testing.assert_array_equal(written, scale.numpy())


def test_compiled_step_equals_the_compiled_streamer(cc, fsdd_frames, tmp_path):
    """The export against what a user runs in Python: ``module.streamer()`` on the CPU engine."""
    model = make_model("gru", 2, head=True, seed=2)
    build = HostBuild(export_c(model, tmp_path), cc=cc)
    out, sent_x, sent_h = build.run(fsdd_frames.numpy())
    ref = python_stream(model, fsdd_frames)
    assert_close(out, ref.out)
    np.testing.assert_array_equal(sent_x, ref.sent_x)
    np.testing.assert_array_equal(sent_h, ref.sent_h)


def test_stream_continues_across_calls_and_reset_restarts(cc, fsdd_frames, tmp_path):
    model = make_model("gru", 2)
    build = HostBuild(export_c(model, tmp_path), cc=cc)
    frames = fsdd_frames.numpy()
    whole = build.run(frames)
    build.reset()
    first = build.run(frames[:17])
    second = build.run(frames[17:])
    for a, b1, b2 in zip(whole, first, second, strict=True):
        np.testing.assert_array_equal(a, np.concatenate([b1, b2]))
    # steps timed inside C advance the same stream
    build.reset()
    ns, timer_ns = build.time_steps(frames[:17])
    assert ns.shape == timer_ns.shape == (17,) and ns.sum() > 0
    assert (ns >= 0).all() and (timer_ns >= 0).all()
    for a, b in zip(whole, build.run(frames[17:]), strict=True):
        np.testing.assert_array_equal(a[17:], b)
    # frame by frame through HostBuild.step: the same stream
    build.reset()
    for t in range(frames.shape[0]):
        np.testing.assert_array_equal(build.step(frames[t]), whole[0][t])
        sent_x, sent_h = build.last_sent
        np.testing.assert_array_equal(sent_x, whole[1][t])
        np.testing.assert_array_equal(sent_h, whole[2][t])
    with pytest.raises(ShapeError, match=r"frame must have shape \(40,\)"):
        build.step(frames[:2, :20])
    with pytest.raises(ShapeError, match=r"frames must have shape \(T, 40\)"):
        build.run(frames[:, :39])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_theta_zero_equals_dense_torch(cc, fsdd_frames, tmp_path, kind):
    model = make_model(kind, 2, head=True, thetas=False)
    build = HostBuild(export_c(model, tmp_path), cc=cc)
    out, sent_x, _ = build.run(fsdd_frames.numpy())
    dense = deltarnn.to_torch(model.rnn)
    with torch.no_grad():
        ref = model.head(dense(fsdd_frames[:, None])[0][:, 0])
    assert_close(out, ref)
    # Θ = 0 sends every change: only exactly repeated values are skipped
    changed = (fsdd_frames[1:] != fsdd_frames[:-1]).sum(1).numpy()
    np.testing.assert_array_equal(sent_x[1:, 0], changed)


def test_libm_gates_equal_dense_torch(cc, fsdd_frames, tmp_path):
    model = make_model("lstm", 2, head=True, thetas=False)
    export = export_c(model, tmp_path, gates="libm")
    assert "#include <math.h>" in export.source.read_text()
    out, _, _ = HostBuild(export, cc=cc).run(fsdd_frames.numpy())
    with torch.no_grad():
        ref = model.head(deltarnn.to_torch(model.rnn)(fsdd_frames[:, None])[0][:, 0])
    assert_close(out, ref)


def test_cells_export_as_one_layer(cc, fsdd_frames, tmp_path):
    torch.manual_seed(3)
    cell = deltarnn.DeltaLSTMCell(40, 20, theta_x=3 / 32, theta_h=0.05)
    out, sent_x, sent_h = HostBuild(export_c(cell, tmp_path), cc=cc).run(fsdd_frames.numpy())
    ref, ref_x, ref_h, _ = spec_stream(cell, fsdd_frames)
    assert_close(out, ref)
    np.testing.assert_array_equal(sent_x, ref_x)
    np.testing.assert_array_equal(sent_h, ref_h)


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_files_compile_cleanly_with_strict_flags(cc, tmp_path, kind, weights):
    export = export_c(make_model(kind, 2, head=True), tmp_path / "out", weights=weights)
    flags = [*STRICT_FLAGS, "-pedantic", "-Wdouble-promotion", "-Wshadow", "-c"]
    compile_c([export.source], tmp_path / "model.o", flags, cc)
    # the header alone is valid C and C++-safe
    (tmp_path / "use.c").write_text('#include "model.h"\nmodel_state s;\n')
    compile_c([tmp_path / "use.c"], tmp_path / "use.o", [*flags, f"-I{export.out_dir}"], cc)


@pytest.mark.parametrize("gates", ["rational", "libm"])
def test_no_dependency_beyond_math_h(cc, binutils, tmp_path, gates):
    export = export_c(make_model("gru", 2, head=True), tmp_path / "out", gates=gates)
    includes = re.findall(r"#include\s*(\S+)", export.source.read_text())
    includes += re.findall(r"#include\s*(\S+)", export.header.read_text())
    assert includes == (['"model.h"', "<math.h>"] if gates == "libm" else ['"model.h"'])
    obj = tmp_path / "model.o"
    compile_c([export.source], obj, [*STRICT_FLAGS, "-ffreestanding", "-c"], cc)
    nm = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    # a compiler may lower a loop to memset/memcpy, which every C toolchain provides
    allowed = {"memset", "memcpy", "memmove"} | ({"tanhf", "expf"} if gates == "libm" else set())
    assert undefined <= allowed, undefined - allowed


def test_driver_reads_frames_and_writes_outputs_and_counts(cc, fsdd_frames, tmp_path):
    model = make_model("gru", 2, head=True)
    export = export_c(model, tmp_path / "out", weights="int8", with_main=True)
    exe = tmp_path / "model_main"
    compile_c([export.source, export.driver], exe, [*STRICT_FLAGS, "-pedantic"], cc)
    frames = fsdd_frames.numpy()
    frames.astype(np.float32).tofile(tmp_path / "frames.f32")
    paths = [tmp_path / name for name in ("frames.f32", "out.f32", "counts.txt")]
    done = subprocess.run([str(exe), *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{frames.shape[0]} frames"
    out = np.fromfile(paths[1], np.float32).reshape(frames.shape[0], 10)
    counts = np.loadtxt(paths[2], dtype=np.int64).reshape(frames.shape[0], 2, 2)
    ref, ref_x, ref_h = HostBuild(export, cc=cc).run(frames)
    np.testing.assert_array_equal(out, ref)  # the same C code: bit for bit
    np.testing.assert_array_equal(counts[:, :, 0], ref_x)
    np.testing.assert_array_equal(counts[:, :, 1], ref_h)
    # a file that is not whole frames is refused
    frames[:3].tofile(paths[0])
    with open(paths[0], "ab") as f:
        f.write(b"\0\0\0\0")
    done = subprocess.run([str(exe), *map(str, paths[:2])], capture_output=True, text=True)
    assert done.returncode == 1 and "whole number of frames of 40 floats" in done.stderr


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_memory_report_matches_the_compiled_object(cc, binutils, tmp_path, weights):
    import ctypes

    export = export_c(make_model("lstm", 2, head=True), tmp_path / "out", weights=weights)
    report = export.memory
    assert HostBuild(export, cc=cc).state_size == report.state_bytes(ctypes.sizeof(ctypes.c_ulong))
    obj = tmp_path / "model.o"
    compile_c([export.source], obj, [*STRICT_FLAGS, "-c"], cc)
    sections = subprocess.run(["size", "-A", str(obj)], capture_output=True, text=True, check=True)
    rodata = sum(int(line.split()[1]) for line in sections.stdout.splitlines() if ".rodata" in line)
    # every constant is in .rodata; beyond them only the gates' coefficients and the layer table
    assert report.read_only <= rodata <= report.read_only + 256
    text = export.header.read_text()
    for line in report.lines():
        assert line in text


def test_rational_gates_are_the_engines(cc, tmp_path):
    """The C tanh/sigmoid are the numba kernels' float32 approximations (to a few ulps: the engine
    fuses multiply-adds, plain C99 does not) and within their stated error of the exact ones."""
    from deltarnn.ops import _cpu_kernels as kernels

    export = export_c(make_model("gru", 1, hidden=4), tmp_path / "out")
    shim = tmp_path / "gates.c"
    shim.write_text(
        '#include "model.c"\n'
        "void gates(const float *a, float *t, float *s, int n)\n"
        "{ int k; for (k = 0; k < n; ++k) { t[k] = model_tanh(a[k]); s[k] = model_sigmoid(a[k]); } }\n"
    )
    lib = tmp_path / "libgates.so"
    compile_c([shim], lib, [*STRICT_FLAGS, "-fPIC", "-shared", f"-I{export.out_dir}"], cc)
    import ctypes

    gates = ctypes.CDLL(str(lib)).gates
    a = np.concatenate([np.linspace(-12, 12, 200001), [-1e30, 1e30, 0.0]]).astype(np.float32)
    t, s = np.zeros_like(a), np.zeros_like(a)
    ptr = [ctypes.c_void_p(v.ctypes.data) for v in (a, t, s)]
    gates(*ptr, ctypes.c_int(a.size))
    engine_t = np.array([kernels._tanh_f32(v) for v in a[::50]], np.float32)
    engine_s = np.array([kernels._sigmoid_f32(v) for v in a[::50]], np.float32)
    np.testing.assert_allclose(t[::50], engine_t, rtol=0, atol=4e-7)
    np.testing.assert_allclose(s[::50], engine_s, rtol=0, atol=4e-7)
    np.testing.assert_allclose(t, np.tanh(a.astype(np.float64)), rtol=0, atol=4e-7)
    np.testing.assert_allclose(s, 0.5 + 0.5 * np.tanh(a.astype(np.float64) / 2), rtol=0, atol=3e-7)
    # non-finite: NaN propagates (as libm's), +-inf saturates
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    special_t, special_s = np.zeros_like(special), np.zeros_like(special)
    pointers = [ctypes.c_void_p(v.ctypes.data) for v in (special, special_t, special_s)]
    gates(*pointers, ctypes.c_int(3))
    np.testing.assert_array_equal(special_t, [np.nan, 1.0, -1.0])
    np.testing.assert_array_equal(special_s, [np.nan, 1.0, 0.0])
