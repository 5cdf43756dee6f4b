"""An exported model compiled for this machine and stepped from Python through ctypes.

This is how an export is checked before it goes to a device: the same C files, built with the
host's C compiler, fed the frames the Python streamer is fed. A small shim compiled beside the
model (never part of the export) gives Python the struct size, a loop over many frames, and a
per-frame timer.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BackendError, ShapeError
from .c_export import CExport

_ULONG = np.dtype(f"u{ctypes.sizeof(ctypes.c_ulong)}")  # the state's counters, unsigned long
# The flags the exported files must compile cleanly with (tests use these).
STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")

_SHIM = """\
#define _POSIX_C_SOURCE 200112L
#include <time.h>

#include "{p}.h"

unsigned long deltarnn_host_state_size(void)
{{
    return sizeof({p}_state);
}}

void deltarnn_host_reset({p}_state *s)
{{
    {p}_reset(s);
}}

/* Step `steps` frames; sent[t] gets sent_x of every layer, then sent_h of every layer. */
void deltarnn_host_run({p}_state *s, const float *frames, long steps, float *outs,
                       unsigned long *sent)
{{
    long t;
    int l;
    for (t = 0; t < steps; ++t) {{
        {p}_step(s, frames + t * {P}_INPUT_SIZE, outs + t * {P}_OUTPUT_SIZE);
        for (l = 0; l < {P}_NUM_LAYERS; ++l) {{
            sent[t * 2 * {P}_NUM_LAYERS + l] = s->sent_x[l];
            sent[t * 2 * {P}_NUM_LAYERS + {P}_NUM_LAYERS + l] = s->sent_h[l];
        }}
    }}
}}

/* since_sync[l] of every layer: steps since its memories were last recomputed densely. */
void deltarnn_host_since_sync(const {p}_state *s, unsigned long *since)
{{
    int l;
    for (l = 0; l < {P}_NUM_LAYERS; ++l)
        since[l] = s->since_sync[l];
}}

static double deltarnn_host_ns(const struct timespec *a, const struct timespec *b)
{{
    return 1e9 * (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec);
}}

/* Step `steps` frames, timing each step alone (ns[t]); ns_timer gets the cost of an empty
 * interval, i.e. what the clock itself adds to each reading. The clock is the calling thread's
 * CPU time, so time spent descheduled on a shared machine is not counted. */
void deltarnn_host_time({p}_state *s, const float *frames, long steps, float *out, double *ns,
                        double *ns_timer)
{{
    struct timespec a, b;
    long t;
    for (t = 0; t < steps; ++t) {{
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        {p}_step(s, frames + t * {P}_INPUT_SIZE, out);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        ns[t] = deltarnn_host_ns(&a, &b);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        ns_timer[t] = deltarnn_host_ns(&a, &b);
    }}
}}
"""


def find_compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH; ``None``
    when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_c(sources: list[Path], output: Path, args: list[str], cc: str | None = None) -> None:
    """Run the C compiler; a failure raises :class:`~deltarnn.errors.BackendError` with its
    message."""
    cc = cc or find_compiler()
    if cc is None:
        raise BackendError("no C compiler found (set $CC or install gcc, e.g. apt-get install gcc)")
    cmd = [cc, *args, *map(str, sources), "-o", str(output)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackendError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")


class HostBuild:
    """An export compiled as a shared library for this machine, stepped through ctypes.

    Args:
        export: what :func:`~deltarnn.export.export_c` returned, or the folder it wrote to.
        prefix: the export's prefix, when ``export`` is a folder.
        cc: the C compiler (default :func:`find_compiler`).
        flags: compiler flags (default :data:`STRICT_FLAGS`, warnings are errors).

    Example::

        build = HostBuild(export_c(model, "out"))   # or HostBuild("out") after `deltarnn export-c`
        out, sent_x, sent_h = build.run(frames)     # frames (T, I) float32
    """

    def __init__(
        self,
        export: CExport | str | os.PathLike,
        prefix: str = "model",
        *,
        cc: str | None = None,
        flags: tuple[str, ...] = STRICT_FLAGS,
    ):
        if isinstance(export, CExport):
            folder, prefix = export.out_dir, export.prefix
        else:
            folder = Path(export)
        header, source = folder / f"{prefix}.h", folder / f"{prefix}.c"
        if not header.is_file() or not source.is_file():
            raise FileNotFoundError(f"no {prefix}.h and {prefix}.c in {folder}")
        sizes = dict(re.findall(rf"#define {prefix.upper()}_(\w+) (\d+)", header.read_text()))
        self.input_size = int(sizes["INPUT_SIZE"])
        self.output_size = int(sizes["OUTPUT_SIZE"])
        self.num_layers = int(sizes["NUM_LAYERS"])
        self._dir = tempfile.TemporaryDirectory(prefix="deltarnn-host-")
        build = Path(self._dir.name)
        shim = build / "host_shim.c"
        shim.write_text(_SHIM.format(p=prefix, P=prefix.upper()))
        library = build / f"lib{prefix}.so"
        args = [*flags, "-fPIC", "-shared", f"-I{folder}"]
        libs = ["-lm"] if "#include <math.h>" in source.read_text() else []
        compile_c([source, shim], library, args + libs, cc)
        self._lib = ctypes.CDLL(str(library))
        self._lib.deltarnn_host_state_size.restype = ctypes.c_ulong
        pointer, long = ctypes.c_void_p, ctypes.c_long
        self._lib.deltarnn_host_reset.argtypes = [pointer]
        self._lib.deltarnn_host_run.argtypes = [pointer, pointer, long, pointer, pointer]
        self._lib.deltarnn_host_time.argtypes = [pointer, pointer, long, pointer, pointer, pointer]
        self._lib.deltarnn_host_since_sync.argtypes = [pointer, pointer]
        self.state_size = int(self._lib.deltarnn_host_state_size())
        self._state = ctypes.create_string_buffer(self.state_size)
        self._out = np.zeros(self.output_size, np.float32)
        self._sent = np.zeros((2, self.num_layers), _ULONG)
        self._step_args = (1, self._out.ctypes.data, self._sent.ctypes.data)
        self.reset()

    def reset(self) -> None:
        """A fresh stream (``<prefix>_reset``)."""
        self._lib.deltarnn_host_reset(self._state)

    def _frames(self, frames) -> np.ndarray:
        frames = np.ascontiguousarray(np.asarray(frames, dtype=np.float32))
        if frames.ndim != 2 or frames.shape[1] != self.input_size:
            raise ShapeError(
                f"frames must have shape (T, {self.input_size}), got {tuple(frames.shape)}"
            )
        return frames

    def step(self, frame: np.ndarray) -> np.ndarray:
        """One frame.

        Args:
            frame: (I,) float32 (another layout or dtype is checked and copied in).

        Returns:
            the output, (O,): a buffer that the next step overwrites (copy it to keep it).
        """
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.float32
            or frame.shape != (self.input_size,)
            or not frame.flags.c_contiguous
        ):
            frame = np.ascontiguousarray(frame, dtype=np.float32)
            if frame.shape != (self.input_size,):
                raise ShapeError(
                    f"frame must have shape ({self.input_size},), got {tuple(frame.shape)}"
                )
        steps, out, sent = self._step_args
        self._lib.deltarnn_host_run(self._state, frame.ctypes.data, steps, out, sent)
        return self._out

    @property
    def last_sent(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sent_x (L,), sent_h (L,))`` of the last :meth:`step`."""
        return self._sent[0].astype(np.int64), self._sent[1].astype(np.int64)

    @property
    def since_sync(self) -> np.ndarray:
        """(L,) int64: each layer's steps since its memories were last recomputed densely (the
        state's ``since_sync``; stays 0 without a periodic re-sync)."""
        since = np.zeros(self.num_layers, _ULONG)
        self._lib.deltarnn_host_since_sync(self._state, since.ctypes.data)
        return since.astype(np.int64)

    def run(self, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every frame, continuing the stream.

        Args:
            frames: (T, I) float32.

        Returns:
            ``(out (T, O), sent_x (T, L), sent_h (T, L))``: the step's outputs and each layer's
            send counts.
        """
        frames = self._frames(frames)
        steps = frames.shape[0]
        outs = np.zeros((steps, self.output_size), np.float32)
        sent = np.zeros((steps, 2, self.num_layers), _ULONG)
        self._lib.deltarnn_host_run(
            self._state, frames.ctypes.data, steps, outs.ctypes.data, sent.ctypes.data
        )
        return outs, sent[:, 0].astype(np.int64), sent[:, 1].astype(np.int64)

    def time_steps(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """Step every frame, timing each step inside C, continuing the stream.

        The clock is the calling thread's CPU time (``clock_gettime(CLOCK_THREAD_CPUTIME_ID)``),
        as :func:`deltarnn.bench.harness.clock` uses for one thread.

        Returns:
            ``(ns (T,), timer_ns (T,))``: nanoseconds per step, and the cost of an empty timed
            interval taken after each (what the clock adds to a reading).
        """
        frames = self._frames(frames)
        steps = frames.shape[0]
        out = np.zeros(self.output_size, np.float32)
        ns = np.zeros(steps, np.float64)
        timer = np.zeros(steps, np.float64)
        pointers = (a.ctypes.data for a in (out, ns, timer))
        self._lib.deltarnn_host_time(self._state, frames.ctypes.data, steps, *pointers)
        return ns, timer
