"""Per-frame latency on a live stream: dense baselines and delta engines, one frame per call.

A live signal (a microphone, an IMU) arrives one frame at a time, so what counts is the time of
one call, batch 1, with the state carried from the previous frame. For each case (a network,
thresholds and input streams) every method below advances its own stream through the same
frames; each frame is timed on its own, and the figures are the median and the 99th percentile
over all timed frames.

Methods are interleaved: a stream is cut into blocks of ``block`` frames, and for each block
every method in turn (in an order rotated from block to block) runs those frames, so a drift of
the machine's speed hits all of them alike, while each block still runs warm in the cache.

Dense baselines (``dense=True`` rows):

* ``torch_rnn``: ``torch.nn.GRU``/``LSTM`` called per frame, h (and c) carried.
* ``torch_cells``: one ``torch.nn.GRUCell``/``LSTMCell`` per layer, chained.
* ``onnxruntime``: the dense ``nn.GRU``/``LSTM`` exported to ONNX (one step, h in and out) and run
  by onnxruntime per frame (the ``bench`` extra); see :mod:`deltarnn.bench.dense_onnx`.

Delta methods:

* ``stream``: ``module.stream(frame[None], state)`` (T = 1).
* ``cells``: one ``DeltaGRUCell``/``DeltaLSTMCell`` per layer, chained: ``h, s = cell(x, s)``.
* ``cpu_streamer``: one :class:`deltarnn.ops.cpu.CPUStreamer` per layer, chained by hand.
* ``streamer``, ``streamer_int8``: ``module.streamer(batch_size)`` (float weights, and 8-bit
  weights with ``weights="int8"``), where the installed version has it; the module stays alive
  (the other methods use it), so every step checks its parameters for changes.
* ``streamer_alone``: the float streamer of a module built for it and then dropped, as a
  deployment runs it (load the model, build its streamer, let the model go): a step checks
  nothing once the module and its tensors are freed.

Every method is checked before it is timed: over the first stream, each float delta method's
outputs must equal ``stream``'s and each dense method's ``torch_rnn``'s (to 1e-4); the 8-bit
streamer's largest deviation is reported in ``extra``. Occupancies are counted by ``stream`` on
the timed frames, and the cost-model bound (:func:`deltarnn.cost.model.layer_step_cost`, dense
over delta operations summed over the layers) is reported beside every delta row; ``of bound`` is
the speed-up over ``torch_rnn`` per frame divided by the bound.

Everything runs under ``torch.inference_mode()`` with ``threads`` torch/numba/onnxruntime
threads; with one thread the clock is the calling thread's CPU time (see
:func:`deltarnn.bench.harness.clock`).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..cost.model import layer_step_cost
from ..errors import ConfigError, DeltaRNNError
from ..nn import from_torch
from ..ops import load_backend
from .harness import check_config, clock, environment, threads
from .inputs import THETA_X, calibrate, controlled_sequence

log = logging.getLogger(__name__)

DENSE_METHODS = ("torch_rnn", "torch_cells", "onnxruntime")
DELTA_METHODS = ("stream", "cells", "cpu_streamer", "streamer", "streamer_alone", "streamer_int8")
METHODS = DENSE_METHODS + DELTA_METHODS
# Float delta methods must agree with ``stream`` (and dense ones with ``torch_rnn``) to this.
AGREEMENT = 1e-4


class BenchError(DeltaRNNError, RuntimeError):
    """A method disagrees with its reference: timing it would time something else."""


@dataclass(frozen=True)
class StreamCase:
    """One network, its thresholds, and the streams it is timed on.

    Attributes:
        name: the row label.
        dense: ``nn.GRU`` or ``nn.LSTM`` (any number of layers) with the weights every method uses.
        theta_x, theta_h: thresholds of the delta methods (a float for every layer).
        streams: each (T_i, B, I) float32; every method starts a fresh stream at each one.
        prefix: frames at the start of every stream that run untimed (a warm stream; 0 for real
            recordings, whose first frames are part of what a deployment sees).
        target: the occupancy the case was built for (controlled inputs), else ``None``.
    """

    name: str
    dense: nn.Module
    theta_x: float
    theta_h: float
    streams: tuple[Tensor, ...]
    prefix: int = 0
    target: float | None = None

    @property
    def kind(self) -> str:
        return "GRU" if isinstance(self.dense, nn.GRU) else "LSTM"


@dataclass
class StreamRow:
    """One method on one case; times in µs per frame over all timed frames."""

    case: str
    method: str
    dense: bool
    us_median: float
    us_p99: float
    frames: int
    vs_fastest_dense: float  # fastest dense method's median over this one's
    vs_torch_rnn: float  # torch_rnn's median over this one's
    bound: float  # cost-model speed-up at the measured occupancies
    fraction_of_bound: float | None  # vs_torch_rnn / bound, delta methods only
    kind: str
    layers: int
    input_size: int
    hidden_size: int
    batch: int
    theta_x: float
    theta_h: float
    target_occupancy: float | None
    occupancy_x: float
    occupancy_h: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# -- runners: one object per method, advancing its own stream ------------------------------------


class Runner:
    """A method on a stream: :meth:`start` a fresh stream, then :meth:`step` one frame (B, I)."""

    def start(self) -> None:
        raise NotImplementedError

    def step(self, frame: Tensor):
        raise NotImplementedError

    @staticmethod
    def as_tensor(out) -> Tensor:
        return torch.as_tensor(out).reshape(out.shape[-2:])


class _TorchRNN(Runner):
    def __init__(self, rnn: nn.Module, batch: int):
        self.rnn, self.batch = rnn, batch

    def start(self):
        shape = (self.rnn.num_layers, self.batch, self.rnn.hidden_size)
        h = torch.zeros(shape)
        self.hx = (h, torch.zeros(shape)) if isinstance(self.rnn, nn.LSTM) else h

    def step(self, frame):
        out, self.hx = self.rnn(frame.unsqueeze(0), self.hx)
        return out[0]


class _TorchCells(Runner):
    def __init__(self, rnn: nn.Module, batch: int):
        self.cells = [layer_cell(rnn, k) for k in range(rnn.num_layers)]
        self.lstm, self.batch, self.hidden = isinstance(rnn, nn.LSTM), batch, rnn.hidden_size

    def start(self):
        zeros = torch.zeros(self.batch, self.hidden)
        self.states = [(zeros, zeros) if self.lstm else zeros for _ in self.cells]

    def step(self, frame):
        x = frame
        for k, cell in enumerate(self.cells):
            self.states[k] = cell(x, self.states[k])
            x = self.states[k][0] if self.lstm else self.states[k]
        return x


class _DeltaStream(Runner):
    def __init__(self, delta: nn.Module):
        self.delta = delta

    def start(self):
        self.state = None

    def step(self, frame):
        out, self.state = self.delta.stream(frame.unsqueeze(0), self.state)
        return out[0]


class _DeltaCells(Runner):
    def __init__(self, rnn: nn.Module, theta_x: float, theta_h: float):
        self.cells = [
            from_torch(layer_cell(rnn, k), theta_x=theta_x, theta_h=theta_h)
            for k in range(rnn.num_layers)
        ]

    def start(self):
        self.states = [None] * len(self.cells)

    def step(self, frame):
        x = frame
        for k, cell in enumerate(self.cells):
            x, self.states[k] = cell(x, self.states[k])
        return x


class _CPUStreamers(Runner):
    def __init__(self, delta: nn.Module, batch: int):
        self.cpu = load_backend("cpu")
        self.delta, self.batch = delta, batch
        self.packed = [self.cpu.pack(*delta.layer_weights(k)[:2]) for k in range(delta.num_layers)]
        self.streamers = None

    def start(self):
        states = self.delta.initial_state(self.batch)
        if self.streamers is None:
            self.streamers = [
                self.cpu.CPUStreamer(p, s, *self.delta.thresholds(k))
                for k, (p, s) in enumerate(zip(self.packed, states, strict=True))
            ]
        else:
            for streamer, s in zip(self.streamers, states, strict=True):
                streamer.load_state(s)

    def step(self, frame):
        x = frame
        for streamer in self.streamers:
            x = streamer.step(x)
        return x


class _Streamer(Runner):
    """The module's own whole-stack streamer (``module.streamer``)."""

    def __init__(self, delta: nn.Module, batch: int, **options):
        self.streamer = delta.streamer(batch_size=batch, **options)

    def start(self):
        self.streamer.reset()

    def step(self, frame):
        return self.streamer.step(frame)


class _OnnxRuntime(Runner):
    def __init__(self, rnn: nn.Module, batch: int, n_threads: int):
        from .dense_onnx import OnnxStep

        self.model = OnnxStep(rnn, batch, n_threads)

    def start(self):
        self.model.start()

    def step(self, frame):
        return self.model.step(frame.numpy())


def layer_cell(rnn: nn.Module, k: int) -> nn.Module:
    """Layer ``k`` of an ``nn.GRU``/``nn.LSTM`` as an ``nn.GRUCell``/``nn.LSTMCell``."""
    lstm = isinstance(rnn, nn.LSTM)
    inputs = rnn.input_size if k == 0 else rnn.hidden_size
    cell = (nn.LSTMCell if lstm else nn.GRUCell)(inputs, rnn.hidden_size, bias=rnn.bias)
    names = (
        ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    )
    cell.load_state_dict({name: getattr(rnn, f"{name}_l{k}").detach() for name in names})
    return cell.eval()


def make_runners(
    case: StreamCase,
    methods: Sequence[str],
    batch: int,
    n_threads: int,
    onnx_cache: dict | None = None,
) -> dict[str, Runner]:
    """The runners of ``methods`` that can run here; the others are logged and left out.

    ``onnx_cache`` keeps the onnxruntime runner of each dense network between cases (an export
    takes seconds); it is keyed by the network object, which the cases keep alive.
    """
    delta = from_torch(case.dense, theta_x=case.theta_x, theta_h=case.theta_h).eval()
    cache = {} if onnx_cache is None else onnx_cache

    def onnx_runner() -> Runner:
        key = (id(case.dense), batch, n_threads)
        if key not in cache:
            cache[key] = (case.dense, _OnnxRuntime(case.dense, batch, n_threads))
        return cache[key][1]

    factories: dict[str, Callable[[], Runner]] = {
        "torch_rnn": lambda: _TorchRNN(case.dense, batch),
        "torch_cells": lambda: _TorchCells(case.dense, batch),
        "onnxruntime": onnx_runner,
        "stream": lambda: _DeltaStream(delta),
        "cells": lambda: _DeltaCells(case.dense, case.theta_x, case.theta_h),
        "cpu_streamer": lambda: _CPUStreamers(delta, batch),
        "streamer": lambda: _Streamer(delta, batch),
        # a module of its own, dropped once its streamer is built
        "streamer_alone": lambda: _Streamer(
            from_torch(case.dense, theta_x=case.theta_x, theta_h=case.theta_h).eval(), batch
        ),
        "streamer_int8": lambda: _Streamer(delta, batch, weights="int8"),
    }
    runners = {}
    for name in methods:
        if name.startswith("streamer") and not hasattr(delta, "streamer"):
            log.warning("%s: this version has no module.streamer; row left out", name)
            continue
        if name == "cpu_streamer" and not hasattr(load_backend("cpu"), "CPUStreamer"):
            log.warning("cpu_streamer: no deltarnn.ops.cpu.CPUStreamer here; row left out")
            continue
        try:
            runners[name] = factories[name]()
        except ImportError as exc:  # optional dependency (onnxruntime, onnx)
            log.warning("%s: %s; row left out", name, exc)
    return runners


# -- checking and timing -------------------------------------------------------------------------


def check_agreement(runners: dict[str, Runner], stream: Tensor) -> dict[str, float]:
    """Run every method over ``stream``; the largest |output difference| to its reference.

    Raises:
        BenchError: a float method differs from its reference by more than :data:`AGREEMENT`.
    """
    outputs = {}
    for name, runner in runners.items():
        runner.start()
        outputs[name] = torch.stack([Runner.as_tensor(runner.step(f)).clone() for f in stream])
    deviations = {}
    for name, out in outputs.items():
        reference = "torch_rnn" if name in DENSE_METHODS else "stream"
        if reference not in outputs or name == reference:
            continue
        deviation = float((out - outputs[reference]).abs().max())
        deviations[name] = deviation
        if deviation > AGREEMENT and name != "streamer_int8":
            raise BenchError(
                f"{name} differs from {reference} by {deviation:.2e} (> {AGREEMENT}) on the "
                "check stream: it would not be timing the same computation"
            )
    return deviations


def time_frames(
    runners: dict[str, Runner],
    streams: Sequence[Tensor],
    prefix: int,
    block: int,
    repeats: int,
    now: Callable[[], float],
) -> dict[str, list[float]]:
    """Seconds per timed frame of every runner, interleaved by blocks (module docstring)."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(repeats):
        for x in streams:
            for runner in runners.values():
                runner.start()
                for t in range(prefix):
                    runner.step(x[t])
            for first in range(prefix, x.shape[0], block):
                frames = x[first : first + block]
                shift = turn % len(names)
                turn += 1
                for name in names[shift:] + names[:shift]:
                    step, record = runners[name].step, times[name].append
                    for frame in frames:
                        start = now()
                        step(frame)
                        record(now() - start)
    return times


def measure_occupancy(case: StreamCase) -> tuple[list[tuple[float, float]], float, float, float]:
    """Per-layer (o_x, o_h) over the timed frames of every stream, their means, and the bound."""
    delta = from_torch(case.dense, theta_x=case.theta_x, theta_h=case.theta_h).eval()
    sent = np.zeros((case.dense.num_layers, 2))
    frames = 0
    for x in case.streams:
        _, state = delta.stream(x[: case.prefix]) if case.prefix else (None, None)
        _, _, counts = delta.stream(x[case.prefix :], state, count=True)
        for k, c in enumerate(counts):
            sent[k] += (float(c.nx.double().sum()), float(c.nh.double().sum()))
        frames += (x.shape[0] - case.prefix) * x.shape[1]
    per_layer = []
    dense_ops = delta_ops = 0.0
    for k in range(case.dense.num_layers):
        inputs = case.dense.input_size if k == 0 else case.dense.hidden_size
        o_x, o_h = sent[k, 0] / (frames * inputs), sent[k, 1] / (frames * case.dense.hidden_size)
        per_layer.append((o_x, o_h))
        cost = layer_step_cost(case.kind, inputs, case.dense.hidden_size, o_x, o_h)
        dense_ops, delta_ops = dense_ops + cost.dense_ops, delta_ops + cost.delta_ops
    o_x = float(np.mean([p[0] for p in per_layer]))
    o_h = float(np.mean([p[1] for p in per_layer]))
    return per_layer, o_x, o_h, dense_ops / delta_ops


def run_case(
    case: StreamCase, config: StreamConfig, onnx_cache: dict | None = None
) -> list[StreamRow]:
    """Check, then time every available method on ``case``; one row per method."""
    batch = case.streams[0].shape[1]
    # Modules are built outside inference mode (its tensors cannot be used outside it), then
    # checked and timed inside it, as an application would run them.
    n_threads = config.threads
    runners = make_runners(case, config.methods, batch, n_threads, onnx_cache)
    with torch.no_grad():
        per_layer, o_x, o_h, bound = measure_occupancy(case)
    with threads(n_threads), torch.inference_mode():
        deviations = check_agreement(runners, case.streams[0])
        now = clock(n_threads)
        if config.warmup:
            time_frames(runners, case.streams[:1], case.prefix, config.block, config.warmup, now)
        times = time_frames(runners, case.streams, case.prefix, config.block, config.repeats, now)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    dense = [medians[m] for m in DENSE_METHODS if m in medians]
    fastest = min(dense) if dense else float("nan")
    torch_rnn = medians.get("torch_rnn", float("nan"))
    rows = []
    for name, ts in times.items():
        is_dense = name in DENSE_METHODS
        vs_rnn = torch_rnn / medians[name]
        extra = {"clock": now.__name__, "per_layer_occupancy": per_layer}
        if name in deviations:
            extra["max_abs_dev"] = deviations[name]
        rows.append(
            StreamRow(
                case=case.name,
                kind=case.kind,
                layers=case.dense.num_layers,
                input_size=case.dense.input_size,
                hidden_size=case.dense.hidden_size,
                batch=batch,
                theta_x=case.theta_x,
                theta_h=case.theta_h,
                target_occupancy=case.target,
                occupancy_x=o_x,
                occupancy_h=o_h,
                method=name,
                dense=is_dense,
                us_median=medians[name] * 1e6,
                us_p99=float(np.percentile(ts, 99)) * 1e6,
                frames=len(ts),
                vs_fastest_dense=fastest / medians[name],
                vs_torch_rnn=vs_rnn,
                bound=bound,
                fraction_of_bound=None if is_dense else vs_rnn / bound,
                extra=extra,
            )
        )
        log.info("%s %s: median %.1f us", case.name, name, medians[name] * 1e6)
    return rows


# -- cases ---------------------------------------------------------------------------------------


def random_rnn(kind: str, hidden: int, seed: int = 0) -> nn.Module:
    """A one-layer ``nn.GRU``/``nn.LSTM`` with I = H and torch's initialisation."""
    torch.manual_seed(seed)
    return (nn.GRU if kind == "GRU" else nn.LSTM)(hidden, hidden).eval()


def controlled_case(
    rnn: nn.Module,
    occupancy: float | None,
    *,
    frames: int = 200,
    prefix: int = 20,
    seed: int = 0,
    name: str | None = None,
) -> StreamCase:
    """``rnn`` (one layer, I = H) on a stream of a controlled occupancy.

    The input moves ``occupancy`` of its features per frame (:func:`controlled_sequence`,
    Θx = :data:`THETA_X`); Θh is calibrated so the hidden occupancy lands near the same value.
    ``occupancy=None`` is the Θ = 0 case: every feature moves, both thresholds 0 (dense).
    """
    kind, hidden = ("GRU" if isinstance(rnn, nn.GRU) else "LSTM"), rnn.hidden_size
    x = controlled_sequence(
        prefix + frames, 1, hidden, 1.0 if occupancy is None else occupancy, seed=seed
    )
    label = name or f"{kind.lower()}-{hidden}"
    if occupancy is None:
        return StreamCase(f"{label} Θ=0", rnn, 0.0, 0.0, (x,), prefix, None)

    def occupancy_h(theta_h: float) -> float:
        case = StreamCase(label, rnn, THETA_X, theta_h, (x,), prefix)
        return measure_occupancy(case)[2]

    with torch.no_grad():
        theta_h, _ = calibrate(occupancy_h, occupancy)
    return StreamCase(
        f"{label} {100 * occupancy:g}%", rnn, THETA_X, theta_h, (x,), prefix, occupancy
    )


@dataclass(frozen=True)
class StreamConfig:
    """What ``deltarnn bench --stream`` and ``benchmarks/streaming.py`` run.

    Attributes:
        occupancies: target occupancies of the controlled cases (fractions).
        gru_hidden: H of the one-layer GRU cases (I = H).
        lstm_hidden: H of the one-layer LSTM cases (``LSTMCell(H, H)``).
        theta0: also every network at Θ = 0 (dense inputs: the no-loss floor).
        frames, prefix: timed and untimed frames of each controlled stream.
        block, repeats, warmup: interleaving block (frames) and passes (timed, untimed).
        threads: torch, numba and onnxruntime threads.
        methods: subset of :data:`METHODS`.
        fsdd_run: folder of the FSDD model (:mod:`deltarnn.bench.fsdd_model`): trained there
            when it holds no finished selection; ``None``: no FSDD case.
        fsdd_theta: Θ to run a ``deltarnn train`` folder at (default: the folder's selection).
        fsdd_files: test recordings streamed (0: all 300).
    """

    occupancies: tuple[float, ...] = (0.05, 0.1, 0.2)
    gru_hidden: tuple[int, ...] = (256, 1024)
    lstm_hidden: tuple[int, ...] = (128,)
    theta0: bool = True
    frames: int = 200
    prefix: int = 20
    block: int = 50
    repeats: int = 3
    warmup: int = 1
    threads: int = 1
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    fsdd_run: str | None = "runs/streaming-fsdd"
    fsdd_theta: float | None = None
    fsdd_files: int = 0

    def __post_init__(self):
        check_config(
            self, METHODS, positive=("frames", "block", "repeats", "threads"),
            non_negative=("prefix", "warmup", "fsdd_files"),
        )  # fmt: skip
        if any(not 0.0 < o <= 1.0 for o in self.occupancies):
            raise ConfigError(f"occupancies must be in (0, 1], got {self.occupancies}")


def build_cases(config: StreamConfig) -> tuple[list[StreamCase], dict]:
    """Every case of ``config`` and what is known about the FSDD model (``{}`` without it)."""
    cases, info = [], {}
    if config.fsdd_run is not None:
        from . import fsdd_model

        if config.fsdd_theta is None:
            fsdd_model.prepare(config.fsdd_run)
        dense, theta, streams, info = fsdd_model.load(config.fsdd_run, config.fsdd_theta)
        if config.fsdd_files:
            streams = streams[: config.fsdd_files]
        name = f"fsdd-gru-{dense.num_layers}x{dense.hidden_size}"
        cases.append(StreamCase(f"{name} Θ={theta:g}", dense, theta, theta, tuple(streams)))
        if config.theta0 and theta:
            cases.append(StreamCase(f"{name} Θ=0", dense, 0.0, 0.0, tuple(streams)))
        info["case"] = cases[0].name
    networks = [("LSTM", h) for h in config.lstm_hidden] + [("GRU", h) for h in config.gru_hidden]
    for kind, hidden in networks:
        rnn = random_rnn(kind, hidden, config.seed)
        levels = list(config.occupancies) + ([None] if config.theta0 else [])
        for occupancy in levels:
            cases.append(
                controlled_case(
                    rnn, occupancy, frames=config.frames, prefix=config.prefix, seed=config.seed
                )
            )
    return cases, info


def run_streaming(config: StreamConfig) -> tuple[list[StreamRow], list[Target], dict]:
    """Run every case; the rows, the targets judged on them, and the FSDD model's info."""
    cases, info = build_cases(config)
    rows: list[StreamRow] = []
    onnx_cache: dict = {}
    for case in cases:
        log.info("case %s", case.name)
        rows += run_case(case, config, onnx_cache)
    return rows, check_targets(rows, info.get("case")), info


def to_json(
    rows: Sequence[StreamRow], targets: Sequence[Target], config: StreamConfig, info: dict
) -> str:
    """Rows, targets, config, the FSDD model's selection and the environment, as JSON."""
    import json

    doc = {
        "environment": environment(),
        "config": asdict(config),
        "fsdd_model": info,
        "targets": [asdict(t) for t in targets],
        "rows": [r.to_dict() for r in rows],
    }
    return json.dumps(doc, indent=1)


# -- tables and targets --------------------------------------------------------------------------

# (title, markdown alignment) of the columns of format_table
COLUMNS = (
    ("case", "---"), ("o_x", "---:"), ("o_h", "---:"), ("method", "---"),
    ("median µs", "---:"), ("p99 µs", "---:"), ("x fastest dense", "---:"),
    ("x torch_rnn", "---:"), ("bound", "---:"), ("of bound", "---:"),
)  # fmt: skip


def format_table(rows: Sequence[StreamRow]) -> str:
    """The rows as markdown: per-frame median and p99, speed-ups, the bound."""
    lines = ["| " + " | ".join(c[i] for c in COLUMNS) + " |" for i in (0, 1)]
    for r in rows:
        cells = [
            r.case,
            f"{100 * r.occupancy_x:.1f}%",
            f"{100 * r.occupancy_h:.1f}%",
            r.method,
            f"{r.us_median:.1f}",
            f"{r.us_p99:.1f}",
            f"{r.vs_fastest_dense:.2f}x",
            f"{r.vs_torch_rnn:.2f}x",
            "" if r.dense else f"{r.bound:.1f}x",
            "" if r.fraction_of_bound is None else f"{100 * r.fraction_of_bound:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: Sequence[StreamRow]) -> str:
    """One line per case: the fastest dense baseline and every delta method's median (µs per
    frame, with its speed-up over that baseline), and the cost-model bound."""
    delta = [m for m in DELTA_METHODS if any(r.method == m for r in rows)]
    lines = [
        "| case | o_x / o_h | fastest dense µs | " + " | ".join(delta) + " | bound |",
        "|---|---:|---:|" + "---:|" * len(delta) + "---:|",
    ]
    for case in dict.fromkeys(r.case for r in rows):
        mine = {r.method: r for r in rows if r.case == case}
        dense = min((r for r in mine.values() if r.dense), key=lambda r: r.us_median, default=None)
        first = next(iter(mine.values()))
        cells = [
            case,
            f"{100 * first.occupancy_x:.0f} / {100 * first.occupancy_h:.0f} %",
            "" if dense is None else f"{dense.us_median:.1f} ({dense.method})",
        ]
        for m in delta:
            r = mine.get(m)
            cells.append("" if r is None else f"{r.us_median:.1f} ({r.vs_fastest_dense:.2f}x)")
        cells.append(f"{first.bound:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Target:
    """One of the benchmark's targets, as measured."""

    name: str
    met: bool | None  # None: not measured (a row is missing)
    detail: str


def check_targets(rows: Sequence[StreamRow], fsdd_case: str | None = None) -> list[Target]:
    """The streaming targets (the FSDD one judged on the streamer with its module alive and
    released), each with the numbers it was judged on."""

    def row(case_prefix, method):
        found = [r for r in rows if r.case.startswith(case_prefix) and r.method == method]
        return found[0] if found else None

    def dense_row(case):
        dense = [r for r in rows if r.case == case and r.dense]
        return min(dense, key=lambda r: r.us_median) if dense else None

    targets = []
    if fsdd_case is not None:
        r = row(fsdd_case, "streamer")
        d = dense_row(fsdd_case)
        targets.append(
            _target("FSDD GRU at its Θ: streamer >= 3x the fastest dense per-frame baseline",
                    r, d, r and r.vs_fastest_dense >= 3.0,
                    lambda: f"{r.us_median:.1f} us vs {d.method} {d.us_median:.1f} us: {r.vs_fastest_dense:.2f}x")
        )  # fmt: skip
        a = row(fsdd_case, "streamer_alone")
        targets.append(
            _target("FSDD GRU at its Θ, module released (deployed): streamer >= 3x the fastest dense",
                    a, d, a and a.vs_fastest_dense >= 3.0,
                    lambda: f"{a.us_median:.1f} us vs {d.method} {d.us_median:.1f} us: {a.vs_fastest_dense:.2f}x")
        )  # fmt: skip
    r, d = row("lstm-128 10%", "cells"), row("lstm-128 10%", "torch_cells")
    targets.append(
        _target("LSTMCell(128,128) at 10 %: the delta cell >= 2x nn.LSTMCell", r, d,
                r and d and d.us_median / r.us_median >= 2.0,
                lambda: f"{r.us_median:.1f} us vs {d.us_median:.1f} us: {d.us_median / r.us_median:.2f}x")
    )  # fmt: skip
    r = row("gru-1024 10%", "streamer")
    targets.append(
        _target("GRU H=1024 at 10 %: streamer >= 60 % of the cost-model bound vs torch_rnn", r, r,
                r and r.fraction_of_bound >= 0.6,
                lambda: f"{r.vs_torch_rnn:.2f}x of a {r.bound:.2f}x bound: {100 * r.fraction_of_bound:.0f} %")
    )  # fmt: skip
    zero = [r for r in rows if r.case.endswith("Θ=0") and r.method == "streamer"]
    if not zero:
        targets.append(
            Target("Θ=0: streamer never slower than the fastest dense", None, "no streamer rows")
        )
    else:
        worst = min(zero, key=lambda r: r.vs_fastest_dense)
        targets.append(
            Target("Θ=0: streamer never slower than the fastest dense", all(r.vs_fastest_dense >= 1.0 for r in zero),
                   f"worst {worst.case}: {worst.vs_fastest_dense:.2f}x the fastest dense")
        )  # fmt: skip
    return targets


def _target(name, row, reference, met, detail) -> Target:
    if row is None or reference is None:
        return Target(name, None, "not measured: a row is missing (is module.streamer there?)")
    return Target(name, bool(met), detail())


def format_targets(targets: Sequence[Target]) -> str:
    marks = {True: "met", False: "MISSED", None: "not measured"}
    return "\n".join(f"- {marks[t.met]}: {t.name} ({t.detail})" for t in targets)


__all__ = [
    "METHODS",
    "BenchError",
    "StreamCase",
    "StreamConfig",
    "StreamRow",
    "Target",
    "build_cases",
    "check_targets",
    "controlled_case",
    "format_table",
    "format_targets",
    "run_case",
    "run_streaming",
    "summary_table",
    "to_json",
]
