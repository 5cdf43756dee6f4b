"""Offline compile check of every Triton kernel variant the GPU paths launch (no GPU needed).

1. **Record** (a subprocess with ``TRITON_INTERPRET=1``): run the GPU code paths of
   :mod:`deltarnn.ops.triton` and :mod:`deltarnn.ops.triton_train` under Triton's interpreter
   on small shapes covering every dtype, mode and block configuration they choose, and write one
   description per kernel launch (argument dtypes and 16-byte alignment, integer values,
   constexprs, launch options) to a JSON file.
2. **Compile** (this process, the installed Triton compiling): rebuild each launch's
   specialisation with Triton's own binder, deduplicate, and compile every distinct variant for
   an sm_90 target with ``triton.compile(..., target=GPUTarget("cuda", 90, 32))``. Prints a table
   (kernel, variant, registers, spills, shared memory) and exits non-zero on any failure.

The compile step needs only ``triton`` (not torch), so a launch record can be compiled by another
Triton version in its own environment (``make gpu-compile`` does so for ``triton==3.6.0``, the
version of the GPU machine)::

    python benchmarks/gpu_compile_check.py                          # record + compile
    python benchmarks/gpu_compile_check.py --record-only build/gpu_launches.json
    other-python benchmarks/gpu_compile_check.py --launches build/gpu_launches.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "src" / "deltarnn" / "ops" / "_triton_kernels.py"
ARCH = 90


# ---------------------------------------------------------------------------------------------
# Recording (interpreter; needs torch and the package)
# ---------------------------------------------------------------------------------------------


def _describe(value):
    """A JSON description of one launch argument, enough to rebuild its specialisation."""
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        return {"tensor": str(value.dtype), "align16": value.data_ptr() % 16 == 0}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value}
    if value is None or isinstance(value, str):
        return {"const": value}
    return {"const": getattr(value, "value", repr(value))}


def record(path: Path) -> int:
    """Run the workloads under the interpreter and write the launches to ``path``."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--record-only runs under TRITON_INTERPRET=1 (set before Python starts)")
    sys.path.insert(0, str(ROOT / "src"))
    from triton.runtime.interpreter import InterpretedFunction

    launches = []
    original = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        launches.append(
            {
                "kernel": self.fn.__name__,
                "args": [_describe(a) for a in args],
                "kwargs": {k: _describe(v) for k, v in kwargs.items()},
            }
        )
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    try:
        for name, workload in WORKLOADS:
            before = len(launches)
            started = time.perf_counter()
            workload()
            print(
                f"recorded {name}: {len(launches) - before} launches "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
    finally:
        InterpretedFunction.run = original
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(launches))
    return len(launches)


def _layer(kind, batch, inputs, hidden, dtype, seed=0):
    import torch

    from deltarnn import functional as F

    gen = torch.Generator().manual_seed(seed)
    gates = 3 if kind == "gru" else 4
    w_ih = (torch.randn(gates * hidden, inputs, generator=gen) / inputs**0.5).to(dtype)
    w_hh = (torch.randn(gates * hidden, hidden, generator=gen) / hidden**0.5).to(dtype)
    bias = torch.randn(gates * hidden, generator=gen) * 0.1
    init = F.gru_initial_state if kind == "gru" else F.lstm_initial_state
    state = init(w_ih.float(), bias, bias, batch)
    x = (torch.randint(-8, 9, (3, batch, inputs), generator=gen) / 8).to(dtype)
    return w_ih, w_hh, state, x


# Shapes whose integer arguments take every specialisation a GPU run sees: B = 1 (a constexpr),
# sizes divisible by 16 and not.
SHAPES = ((1, 16, 32), (2, 5, 20), (3, 16, 48))


def _configs():
    """The distinct step configurations :func:`step_config` picks on the GPU sizes used."""
    from deltarnn.ops import triton as tb

    configs = {}
    for batch in (1, 2, 3, 4, 8, 16, 20, 64, 128):
        for hidden in (256, 1024, 2048, 4096):
            config = tb.step_config(batch, hidden)
            configs.setdefault(config, batch)
    return configs


def _inference():
    import torch

    from deltarnn.ops import triton as tb

    _, inputs, hidden = SHAPES[0]
    theta_x, theta_h = torch.full((inputs,), 3 / 16), torch.full((hidden,), 0.05)
    for config, batch in _configs().items():
        # The weight dtype changes only pointer types: every dtype with the configs of batch 1
        # and of the tl.dot path, float32 with the others.
        dtypes = tb.WEIGHT_DTYPES if batch in (1, 20) else (torch.float32,)
        for kind in ("gru", "lstm"):
            for dtype in dtypes:
                w_ih, w_hh, state, x = _layer(kind, batch, inputs, hidden, dtype)
                packed = tb.pack(w_ih, w_hh)
                for x_mode in tb.X_MODES:
                    for count in (False, True):
                        tb.run_sequence(
                            x, state, packed, theta_x, theta_h, count=count, x_mode=x_mode,
                            config=config, use_graph=False,
                        )  # fmt: skip
                streamer = tb.TritonStreamer(packed, state, theta_x, theta_h, config=config)
                streamer.step(x[0])
                streamer.step(x[1])


def _inference_shapes():
    import torch

    from deltarnn.ops import triton as tb

    for batch, inputs, hidden in SHAPES:
        for kind in ("gru", "lstm"):
            w_ih, w_hh, state, x = _layer(kind, batch, inputs, hidden, torch.float32)
            packed = tb.pack(w_ih, w_hh)
            theta_x, theta_h = torch.full((inputs,), 3 / 16), torch.full((hidden,), 0.05)
            for x_mode in ("dense", "sparse"):
                tb.run_sequence(x, state, packed, theta_x, theta_h, count=True, x_mode=x_mode)
                tb.run_sequence(x[:1], state, packed, theta_x, theta_h, x_mode=x_mode)


def _training():
    import torch

    from deltarnn import functional as F
    from deltarnn.ops import triton_train as tt

    for dtype in (torch.float32, torch.float64):
        for batch, inputs, hidden in SHAPES + ((17, 5, 20),):
            for kind in ("gru", "lstm"):
                gates = 3 if kind == "gru" else 4
                gen = torch.Generator().manual_seed(0)
                w_ih = torch.randn(gates * hidden, inputs, generator=gen, dtype=dtype)
                w_hh = torch.randn(gates * hidden, hidden, generator=gen, dtype=dtype)
                w_ih, w_hh = (w_ih / inputs**0.5).requires_grad_(), (w_hh / hidden**0.5)
                w_hh.requires_grad_()
                bias = torch.zeros(gates * hidden, dtype=dtype)
                init = F.gru_initial_state if kind == "gru" else F.lstm_initial_state
                state = init(w_ih, bias, bias, batch)
                x = (torch.randint(-8, 9, (3, batch, inputs), generator=gen) / 8).to(dtype)
                fn = tt.delta_gru_train if kind == "gru" else tt.delta_lstm_train
                out, new_state, _ = fn(x, state, w_ih, w_hh, 3 / 16, 0.05, impl="triton")
                (out.sum() + sum(t.sum() for t in new_state)).backward()


def _stack():
    import torch

    from deltarnn.ops import triton_stream as ts

    class Layer:
        def __init__(self, w_ih, w_hh, hidden):
            self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = w_ih, w_hh, None, None
            self.theta_x = torch.full((w_ih.shape[1],), 3 / 16)
            self.theta_h = torch.full((hidden,), 0.05)

    for kind in ("gru", "lstm"):
        for batch in (1, 3):
            f32 = torch.float32
            built = [_layer(kind, batch, 16, 32, f32), _layer(kind, batch, 32, 20, f32)]
            layers = [Layer(w_ih, w_hh, w_hh.shape[1]) for w_ih, w_hh, _, _ in built]
            streamer = ts.StackStreamer(
                kind.upper(), layers, tuple(b[2] for b in built), count=True
            )
            streamer.step(built[0][3][0])


WORKLOADS = (
    ("inference configs", _inference),
    ("stack streamer", _stack),
    ("inference shapes", _inference_shapes),
    ("training", _training),
)


# ---------------------------------------------------------------------------------------------
# Compiling (any Triton >= 3.6; needs no torch)
# ---------------------------------------------------------------------------------------------


class _Dtype:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


# One object per dtype for the whole process: Triton's binder caches what it derived from a
# dtype object by identity, so a short-lived one could be mistaken for another later.
_DTYPES: dict[str, _Dtype] = {}


class _FakeTensor:
    """What Triton's binder reads of a tensor argument: its dtype and its address."""

    def __init__(self, dtype: str, align16: bool) -> None:
        self.dtype = _DTYPES.setdefault(dtype, _Dtype(dtype))
        self._ptr = 1024 if align16 else 1028

    def data_ptr(self) -> int:
        return self._ptr


def _value(desc):
    if "tensor" in desc:
        return _FakeTensor(desc["tensor"], desc["align16"])
    return next(iter(desc.values()))


def _load_kernels(path: Path = KERNELS):
    spec = importlib.util.spec_from_file_location("deltarnn_triton_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _target():
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", ARCH, 32)


def specialise(module, launch):
    """(key, variant text, compile arguments) of one recorded launch, by Triton's own binder."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = getattr(module, launch["kernel"])
    backend = make_backend(_target())
    args = [_value(a) for a in launch["args"]]
    kwargs = {k: _value(v) for k, v in launch["kwargs"].items()}
    kwargs.setdefault("debug", False)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, kwargs, bound, specialization, options
    )
    names = fn.arg_names
    consts = " ".join(f"{names[k[0]]}={v}" for k, v in sorted(constexprs.items()))
    aligned = [names[k[0]] for k, v in sorted(attrs.items()) if v]
    dtypes = sorted({t for t in signature.values() if t.startswith("*")})
    variant = f"{consts}; {','.join(dtypes)}; warps={options.num_warps}; div16: {len(aligned)}"
    key = (launch["kernel"], json.dumps(specialization, default=str), str(options))
    return key, variant, (launch["kernel"], signature, constexprs, attrs, options.__dict__)


def _resources(cubin: bytes) -> dict:
    """Registers, stack and spills of the compiled function, from ``cuobjdump -res-usage``."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [str(tool), "-res-usage", f.name], capture_output=True, text=True, check=False
        ).stdout
    found = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", text))
    return {k.lower(): int(v) for k, v in found.items()}


def _compile_one(job):
    path, name, signature, constexprs, attrs, options = job
    import triton
    from triton.compiler import ASTSource

    module = _load_kernels(path)
    started = time.perf_counter()
    try:
        src = ASTSource(getattr(module, name), signature, constexprs, attrs)
        kernel = triton.compile(src, target=_target(), options=options)
    except Exception as exc:  # every failure is reported, with its message
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    result = {"ok": True, "seconds": time.perf_counter() - started}
    result["shared"] = int(kernel.metadata.shared)
    result.update(_resources(kernel.asm["cubin"]))
    return result


def compile_launches(launches: list, jobs: int) -> tuple[list[dict], int]:
    """Compile every distinct variant; return the table rows and the number of failures."""
    # Every variant is compiled from one snapshot of the kernel source, taken now.
    snapshot = Path(tempfile.mkdtemp()) / KERNELS.name
    snapshot.write_bytes(KERNELS.read_bytes())
    module = _load_kernels(snapshot)
    variants: dict = {}
    for launch in launches:
        key, text, job = specialise(module, launch)
        if key not in variants:
            variants[key] = (text, job)
    todo = sorted(variants.values(), key=lambda v: (v[1][0], v[0]))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_compile_one, [(snapshot, *job) for _, job in todo]))
    rows = []
    for (text, job), result in zip(todo, results, strict=True):
        rows.append({"kernel": job[0], "variant": text, **result})
    return rows, sum(not r["ok"] for r in rows)


def table(rows: list[dict]) -> str:
    lines = [
        "| kernel | variant | regs | spill (local B) | shared B | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["ok"]:
            lines.append(
                f"| {r['kernel']} | {r['variant']} | {r.get('reg', '?')} | {r.get('local', '?')} "
                f"| {r['shared']} | {r['seconds']:.1f} |"
            )
        else:
            lines.append(f"| {r['kernel']} | {r['variant']} | FAILED | | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record-only", type=Path, help="record the launches to this file, exit")
    parser.add_argument("--launches", type=Path, help="compile this record (skip recording)")
    parser.add_argument("--out", type=Path, help="also write the rows (JSON) and table (.md)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.record_only is not None:
        record(args.record_only)
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("the compile step must run without TRITON_INTERPRET=1")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's behaviour up to 3.9
    import triton

    started = time.perf_counter()
    path = args.launches
    if path is None:
        path = Path(tempfile.mkdtemp()) / "launches.json"
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, __file__, "--record-only", str(path)]
        subprocess.run(cmd, env=env, check=True)
    launches = json.loads(path.read_text())
    rows, failures = compile_launches(launches, args.jobs)
    print(table(rows))
    for r in rows:
        if not r["ok"]:
            print(f"\nFAILED {r['kernel']} [{r['variant']}]:\n{r['error']}", file=sys.stderr)
    print(
        f"\ntriton {triton.__version__}, sm_{ARCH}: {len(launches)} launches, {len(rows)} "
        f"variants, {failures} failed, {time.perf_counter() - started:.0f} s"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"triton": triton.__version__, "arch": ARCH, "rows": rows}
        # Suffixes appended, not replaced: the name may hold a version ("..._triton3.6.0").
        Path(f"{args.out}.json").write_text(json.dumps(doc, indent=1))
        Path(f"{args.out}.md").write_text(table(rows) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
