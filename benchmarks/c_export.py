"""The exported C step per frame of a live stream, against dense torch and onnxruntime.

The network is the streaming benchmark's (:mod:`deltarnn.bench.fsdd_model`): a 2-layer GRU on
FSDD, retrained as a delta network at several Θ, Θ chosen on the validation takes (the largest
within 1 pp of dense's validation accuracy; the test takes are only evaluated); trained into
``--fsdd-run`` the first time. The test recordings are streamed one at a time (a fresh state at
each), batch 1, one thread. Each frame is timed on its own with the calling thread's CPU time
(descheduled time on a shared machine is not counted); the methods are interleaved recording by
recording (their order rotated each time) and the whole set is repeated; the table gives the
median and the 99th percentile over all timed frames.

* the exported C step (``deltarnn.export_c``, compiled ``cc -std=c99 -O2`` for this machine) timed
  inside C: one ctypes call per recording runs a C loop that reads the clock around each
  ``model_step`` call (:meth:`deltarnn.export.HostBuild.time_steps`), so no Python or ctypes cost
  is in these rows. float32 and int8 weights, the whole model with its linear head, and the same
  C code at Θ = 0 (every change sent: the measured counterpart of the cost-model bound);
* the same float32 C step called from Python through ctypes, one frame per call (what a Python
  caller would see);
* the library's streamer per frame, called from Python: ``module.streamer()`` (float32 and
  int8; in a version without it, hand-chained ``deltarnn.ops.cpu.CPUStreamer`` layers);
* dense: ``torch.nn.GRU`` per frame (h carried) and onnxruntime running the exported ``nn.GRU``
  per frame (the ``bench`` extra: ``pip install -e '.[bench]'``).

Before timing, every C build is compared with the functional spec
(:func:`deltarnn.export.python_stream`: ``module.streamer()`` on the reference backend, with the
export's weights and re-sync period) over every recording: outputs and per-layer send counts; a C
build that differs by more than the streaming harness's tolerance while it took the same send
decisions stops the run. The Python-called methods are checked on the first recording
(:func:`deltarnn.bench.streaming.check_agreement`). Also reported: the cost model's bound at the
measured occupancies, the export's memory report (flash and RAM bytes) and the object files'
code and constant sizes (``size``, at -O2 and -Os).

    python benchmarks/c_export.py --out benchmarks/results/c_export

writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

C_FLAGS = ("-std=c99", "-O2")
SIZE_FLAGS = ("-O2", "-Os")
# Python-called methods of the streaming harness timed here: the dense baselines and the public
# streamer (float32 and int8), or, in a version without module.streamer(), CPUStreamer layers
# chained by hand.
DENSE = ("torch_rnn", "onnxruntime")
STREAMERS = ("streamer", "streamer_int8")
LABELS = {
    "c float32": "C step, float32 (timed in C)",
    "c int8": "C step, int8 (timed in C)",
    "c head": "C step + head, float32 (timed in C)",
    "c theta0": "C step, float32, Θ = 0 (timed in C)",
    "c_ctypes": "C step, float32, ctypes call per frame",
    "streamer": "module.streamer(), float32 (numba)",
    "streamer_int8": "module.streamer(), int8 (numba)",
    "cpu_streamer": "CPUStreamer per layer, float32 (numba)",
    "torch_rnn": "nn.GRU per frame (dense)",
    "onnxruntime": "onnxruntime nn.GRU per frame (dense)",
}


def c_runner(build):
    """The compiled step as a streaming-harness runner: one ctypes call per frame."""
    from deltarnn.bench.streaming import Runner

    class CStep(Runner):
        def start(self):
            build.reset()

        def step(self, frame):
            return torch.from_numpy(build.step(frame[0].numpy()))[None]

    return CStep()


# -- timing: each method steps one recording (T, 1, I) from a fresh state, seconds per frame -----


def timed_from_python(runner, now: Callable[[], float]) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        runner.start()
        step = runner.step
        seconds = np.empty(x.shape[0])
        for t in range(x.shape[0]):
            frame = x[t]
            start = now()
            step(frame)
            seconds[t] = now() - start
        return seconds

    return run


def timed_in_c(build) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        build.reset()
        return build.time_steps(x[:, 0].numpy())[0] * 1e-9

    return run


def time_recordings(methods: dict, streams, repeats: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds per frame of every method over every recording, ``repeats`` times; the methods
    interleaved recording by recording, their order rotated each time."""
    names = list(methods)
    times: dict[str, list[np.ndarray]] = {name: [] for name in names}
    turn = 0
    for r in range(warmup + repeats):
        for x in streams:
            shift = turn % len(names)
            turn += 1
            for name in names[shift:] + names[:shift]:
                seconds = methods[name](x)
                if r >= warmup:
                    times[name].append(seconds)
    return {name: np.concatenate(t) for name, t in times.items()}


# -- checks ------------------------------------------------------------------------------------


def spec_runs(model, rnn, every_change) -> dict[str, Callable]:
    """For each C build, the functional spec it must equal, one recording (T, 1, I) per call,
    returning ``(out (T, O), sent_x (T, L), sent_h (T, L))``: :func:`deltarnn.export.python_stream`
    on the reference backend (``module.streamer()`` running the spec layer after layer, with the
    export's weights and re-sync period; int8 on the weights of
    :func:`deltarnn.ops.int8.quantize_columns`, as the export writes them); the model with head
    applies the head per frame."""
    from deltarnn.export import python_stream

    def runner(module, weights="float32"):
        def run(x: torch.Tensor):
            return python_stream(module, x[:, 0], weights=weights, backend="reference")[:3]

        return run

    return {
        "c float32": runner(rnn),
        "c int8": runner(rnn, "int8"),
        "c head": runner(model),
        "c theta0": runner(every_change),
    }


def spec_agreement(builds: dict, specs: dict, streams) -> dict[str, dict]:
    """Each C build against its spec over every recording (a fresh stream at each): the largest
    |output difference| (also relative to the largest |output|), the same over the frames before
    the first send count that differs in their recording (where C and spec took the same send
    decisions), and how many send counts (frame, layer) differ.

    Raises:
        BenchError: a build's output differs by more than the harness allows at a frame before
            its first differing send count. After one (a |Δ| within float rounding of Θ on a
            layer's input or h, which C and the spec round differently), outputs differ by what
            that other send decision changes; they are reported, not a failure.
    """
    from deltarnn.bench.streaming import AGREEMENT, BenchError

    result = {}
    for name, build in builds.items():
        worst = same_sends = scale = 0.0
        differ = total = 0
        for x in streams:
            build.reset()
            out, sent_x, sent_h = build.run(x[:, 0].numpy())
            want, want_x, want_h = specs[name](x)
            deviation = np.abs(out - want).max(axis=1)
            other = ((sent_x != want_x) | (sent_h != want_h)).any(axis=1)
            first = int(np.argmax(other)) if other.any() else len(deviation)
            worst = max(worst, float(deviation.max()))
            same_sends = max(same_sends, float(deviation[:first].max(initial=0.0)))
            scale = max(scale, float(np.abs(want).max()))
            differ += int((sent_x != want_x).sum() + (sent_h != want_h).sum())
            total += sent_x.size + sent_h.size
        result[name] = {
            "max_abs_dev": worst,
            "max_rel_dev": worst / scale,
            "max_abs_dev_same_sends": same_sends,
            "counts_differing": differ,
            "counts": total,
        }
        if same_sends > AGREEMENT:
            raise BenchError(
                f"{name} differs from the spec by {same_sends:.2e} (> {AGREEMENT}) with the same "
                "send decisions"
            )
    return result


# -- sizes -------------------------------------------------------------------------------------


def object_size(export, cc: str, opt: str, folder: Path) -> dict[str, int]:
    """``size`` of the compiled object: code (text less the constants), constants (.rodata:
    weights, scales, biases, thresholds), data + bss."""
    from deltarnn.export.host import compile_c

    obj = folder / f"{export.out_dir.name}{opt}.o"
    compile_c([export.source], obj, ["-std=c99", opt, "-c"], cc)
    out = subprocess.run(["size", str(obj)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in out.stdout.splitlines()[1].split()[:3])
    sections = subprocess.run(["size", "-A", str(obj)], capture_output=True, text=True, check=True)
    rodata = sum(int(ln.split()[1]) for ln in sections.stdout.splitlines() if ".rodata" in ln)
    return {"code": text - rodata, "constants": rodata, "data_bss": data + bss}


# -- the run -----------------------------------------------------------------------------------


def python_timer_ns(now: Callable[[], float], n: int = 1000) -> float:
    """Median cost of an empty interval read with ``now`` from Python, in ns."""
    empty = np.empty(n)
    for i in range(n):
        start = now()
        empty[i] = now() - start
    return float(np.median(empty)) * 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/c_export", help="path, no suffix")
    parser.add_argument("--fsdd-run", default="runs/streaming-fsdd", help="the model's folder")
    parser.add_argument("--recordings", type=int, default=0, help="test recordings (0: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    from deltarnn.bench import fsdd_model
    from deltarnn.bench.harness import clock, environment, threads
    from deltarnn.bench.streaming import (
        StreamCase,
        check_agreement,
        make_runners,
        measure_occupancy,
    )
    from deltarnn.export import HostBuild, export_c, find_compiler
    from deltarnn.train import load_model

    cc = find_compiler()
    if cc is None:
        raise SystemExit("no C compiler: install gcc")
    fsdd_model.prepare(args.fsdd_run)
    dense, theta, streams, info = fsdd_model.load(args.fsdd_run)
    streams = streams[: args.recordings or None]
    model = load_model(info["run"])[0].eval()
    rnn = model.rnn
    case = StreamCase(f"fsdd-gru Θ={theta:g}", dense, theta, theta, tuple(streams))

    work = Path(tempfile.mkdtemp(prefix="c_export_bench-"))
    every_change = copy.deepcopy(rnn)  # the same C code with nothing skipped but repeats
    every_change.set_thresholds(0.0, 0.0)
    exports = {
        "c float32": export_c(rnn, work / "float32"),
        "c int8": export_c(rnn, work / "int8", weights="int8"),
        "c head": export_c(model, work / "head"),
        "c theta0": export_c(every_change, work / "theta0"),
    }
    builds = {name: HostBuild(e, cc=cc, flags=C_FLAGS) for name, e in exports.items()}
    ctypes_build = HostBuild(exports["c float32"], cc=cc, flags=C_FLAGS)  # a stream of its own
    streamers = STREAMERS if hasattr(rnn, "streamer") else ("cpu_streamer",)
    runners = make_runners(case, ("stream", *DENSE, *streamers), 1, 1)
    runners["c_ctypes"] = c_runner(ctypes_build)
    agreement = spec_agreement(builds, spec_runs(model, rnn, every_change), streams)
    now = clock(1)
    with threads(1), torch.inference_mode():
        deviations = check_agreement(runners, streams[0])
        methods = {name: timed_in_c(build) for name, build in builds.items()}
        methods.update({n: timed_from_python(r, now) for n, r in runners.items() if n != "stream"})
        seconds = time_recordings(methods, streams, args.repeats, args.warmup)
        python_timer = python_timer_ns(now)
    with torch.no_grad():
        per_layer, _, _, bound = measure_occupancy(case)

    us = {name: s * 1e6 for name, s in seconds.items()}
    medians = {name: float(np.median(v)) for name, v in us.items()}
    fastest_dense = min((n for n in DENSE if n in medians), key=medians.get)
    rows = [
        {
            "method": name,
            "label": LABELS[name],
            "median_us": medians[name],
            "p99_us": float(np.percentile(v, 99)),
            "frames": int(v.size),
            "vs_fastest_dense": medians[fastest_dense] / medians[name],
            "vs_c_theta0": medians["c theta0"] / medians[name],
            "max_abs_dev": deviations.get(name, agreement.get(name, {}).get("max_abs_dev")),
        }
        for name, v in us.items()
    ]
    rows.sort(key=lambda r: list(LABELS).index(r["method"]))
    timer = builds["c float32"].time_steps(streams[0][:, 0].numpy())[1]
    sizes = {
        name: {opt: object_size(exports[name], cc, opt, work) for opt in SIZE_FLAGS}
        for name in ("c float32", "c int8", "c head")
    }
    doc = {
        "network": f"nn.GRU({dense.input_size}, {dense.hidden_size}, num_layers={dense.num_layers})",
        "model": info,
        "theta": theta,
        "recordings": len(streams),
        "frames_per_pass": int(sum(x.shape[0] for x in streams)),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "clock": "thread CPU time (CLOCK_THREAD_CPUTIME_ID in C, time.thread_time in Python)",
        "timer_overhead_ns_median": {"c": float(np.median(timer)), "python": python_timer},
        "c_flags": list(C_FLAGS),
        "compiler": subprocess.run(
            [cc, "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "occupancy_per_layer": per_layer,
        "cost_model_bound": bound,
        "fastest_dense": fastest_dense,
        "rows": rows,
        "spec_agreement": agreement,
        "object_size": sizes,
        "memory": {name: exports[name].memory.to_dict() for name in sizes},
        "memory_report": {name: exports[name].memory.lines() for name in sizes},
        "command": " ".join(["python benchmarks/c_export.py", *(argv or sys.argv[1:])]),
        "environment": {**environment(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    }
    table = render(doc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    sys.stdout.write(table + "\n")
    return 0


def render(doc: dict) -> str:
    """The run as markdown: latency with the bound, agreement with the spec, bytes."""
    occ = "; ".join(
        f"layer {k}: x {100 * ox:.1f} %, h {100 * oh:.1f} %"
        for k, (ox, oh) in enumerate(doc["occupancy_per_layer"])
    )
    accuracy = doc["model"].get("accuracy", {})
    chosen, dense = accuracy.get(f"{doc['theta']:g}"), accuracy.get("0")
    selection = (
        f" ({doc['model']['rule']}: validation accuracy {100 * chosen['val']:.1f} % vs dense "
        f"{100 * dense['val']:.1f} %; test {100 * chosen['test']:.1f} % vs {100 * dense['test']:.1f} %)"
        if chosen and dense
        else ""
    )
    fastest = LABELS[doc["fastest_dense"]].split(" per frame")[0]
    timers = doc["timer_overhead_ns_median"]
    lines = [
        f"FSDD {doc['network']} ({doc['model']['run']}), Θ = {doc['theta']:g} chosen on validation"
        f"{selection}. {doc['recordings']} test recordings ({doc['frames_per_pass']} frames, a "
        f"fresh stream at each) x {doc['repeats']} repeats, methods interleaved recording by "
        "recording, batch 1, one thread, each frame timed alone with the thread's CPU time "
        f"(an empty reading costs {timers['c']:.0f} ns in C, {timers['python']:.0f} ns from "
        "Python; not subtracted). Shared machine.",
        f"Measured occupancy: {occ}.",
        "",
        f"| per frame | median µs | p99 µs | x {fastest} | x C step Θ = 0 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['label']} | {r['median_us']:.2f} | {r['p99_us']:.2f} | "
            f"{r['vs_fastest_dense']:.1f}x | {r['vs_c_theta0']:.1f}x |"
        )
    lines += [
        f"| cost-model bound at these occupancies (dense / delta operations) | | | | "
        f"{doc['cost_model_bound']:.1f}x |",
        "",
        "Agreement with the functional spec (module.streamer() on the reference backend; int8: on "
        "the int8 weights)"
        f" over all {doc['recordings']} recordings:",
        "",
        "| export | max abs. dev. | relative to max abs. output | max abs. dev. before a count "
        "differs | send counts differing |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, a in doc["spec_agreement"].items():
        lines.append(
            f"| {name.removeprefix('c ')} | {a['max_abs_dev']:.2e} | {a['max_rel_dev']:.2e} | "
            f"{a['max_abs_dev_same_sends']:.2e} | {a['counts_differing']} of {a['counts']:,} |"
        )
    lines += [
        "",
        "Bytes (MemoryReport of the export): flash = weights + scales + head + biases and "
        "thresholds; RAM = the state struct (`unsigned long` of 4 bytes, 8 in brackets).",
        "",
        "| export | weights | scales | head | biases + thresholds | flash | RAM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in doc["memory"].items():
        lines.append(
            f"| {name.removeprefix('c ')} | {m['weights']:,} | {m['scales']:,} | {m['head']:,} | "
            f"{m['constants']:,} | {m['read_only']:,} | {m['state_bytes_32bit']:,} "
            f"({m['state_bytes_64bit']:,}) |"
        )
    lines += [
        "",
        f"Object files (`size`, {doc['compiler']}): code (text less .rodata), constants "
        "(.rodata), data + bss, bytes.",
        "",
        "| export | code -O2 | code -Os | constants | data + bss |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in doc["object_size"].items():
        o2, os_ = s["-O2"], s["-Os"]
        lines.append(
            f"| {name.removeprefix('c ')} | {o2['code']:,} | {os_['code']:,} | "
            f"{o2['constants']:,} | {o2['data_bss']:,} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
