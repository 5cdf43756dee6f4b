"""The timing harness: dense baselines and delta engines side by side, in one run, one table.

For each case (a layer size, an input sequence and thresholds) every method runs the same
sequence, repeats interleaved (method A, B, C, A, B, C, ...) so that a drift of the machine's
speed hits all of them alike; the figure is the median over repeats of the time per step.

Methods:

* ``torch_gru``: ``torch.nn.GRU`` over the whole sequence (its input GEMM covers all steps).
* ``torch_grucell``: ``torch.nn.GRUCell`` stepped from Python.
* ``reference``: the reference backend (the functional spec), ``deltarnn.ops.reference.gru``.
* ``cpu``: the compiled engine over the whole sequence, ``deltarnn.ops.cpu.gru``.
* ``cpu_stream``: :class:`deltarnn.ops.cpu.CPUStreamer`, one frame per call from Python.
* ``cpu_int8``: the compiled engine with 8-bit weights (:func:`deltarnn.ops.cpu.pack_int8`, one
  scale per column), float32 state; its largest output deviation from the float32 engine on the
  timed sequence is in ``extra["max_abs_dev"]``.

Each delta method's speed-up over ``torch_gru`` is divided by the cost model's bound
(:func:`deltarnn.cost.compute_speedup_bound`) at the occupancies measured on the timed steps.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .. import functional as F
from ..errors import ConfigError
from ..ops import load_backend
from ..ops import reference as reference_backend
from .bound import compute_speedup_bound
from .inputs import THETA_X, calibrate, controlled_sequence, fsdd_log_mel

log = logging.getLogger(__name__)

METHODS = ("torch_gru", "torch_grucell", "reference", "cpu", "cpu_stream", "cpu_int8")
DELTA_METHODS = ("reference", "cpu", "cpu_stream", "cpu_int8")


def check_config(
    config, methods: tuple[str, ...], positive: tuple[str, ...], non_negative: tuple[str, ...]
) -> None:
    """The checks every benchmark config makes: ``config.methods`` among ``methods``, the
    fields named in ``positive`` >= 1 and in ``non_negative`` >= 0.

    Raises:
        ConfigError: naming the first field that fails.
    """
    unknown = set(config.methods) - set(methods)
    if unknown:
        raise ConfigError(f"methods must be among {methods}, got {sorted(unknown)}")
    for names, low in ((positive, 1), (non_negative, 0)):
        for name in names:
            if getattr(config, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(config, name)}")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. Synthetic cases: every hidden size at every occupancy; real cases: FSDD
    log-mel features through a GRU of ``real_hidden`` units at each of ``real_thetas``.

    Attributes:
        hidden_sizes: H of the synthetic cases.
        occupancies: target input occupancies (fractions). The hidden threshold is calibrated so
            the hidden occupancy lands near the same value; both are measured and reported.
        input_size: I, or ``None`` for I = H.
        batch: B.
        steps: timed steps per sequence.
        prefix_steps: steps run before the timed part (not timed) so that the timed part starts
            from a warm stream, not from x̂ = ĥ = 0 where the first step is dense.
        repeats, warmup: timed and untimed repeats of every method.
        threads: torch and numba threads.
        methods: subset of :data:`METHODS`.
        real_thetas: Θ (same for x and h) of the real-input cases; empty for none.
        real_files: FSDD recordings concatenated into the real-input sequence.
        data_root: data root (default ``$DELTARNN_DATA`` or ``../shared/data``).
    """

    hidden_sizes: tuple[int, ...] = (1024,)
    occupancies: tuple[float, ...] = (0.1,)
    input_size: int | None = None
    batch: int = 1
    steps: int = 100
    prefix_steps: int = 20
    repeats: int = 7
    warmup: int = 1
    threads: int = 1
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    real_thetas: tuple[float, ...] = ()
    real_hidden: int = 1024
    real_files: int = 5
    data_root: str | None = None

    def __post_init__(self):
        check_config(
            self, METHODS,
            positive=("batch", "steps", "repeats", "threads", "real_hidden", "real_files"),
            non_negative=("prefix_steps", "warmup"),
        )  # fmt: skip
        if any(not 0.0 <= o <= 1.0 for o in self.occupancies):
            raise ConfigError(f"occupancies must be in [0, 1], got {self.occupancies}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(f"hidden_sizes must be >= 1, got {self.hidden_sizes}")


@dataclass
class BenchRow:
    """One method on one case. Times in microseconds per step (median over repeats)."""

    case: str
    kind: str
    input_size: int
    hidden_size: int
    batch: int
    steps: int
    threads: int
    theta_x: float
    theta_h: float
    target_occupancy: float | None
    occupancy_x: float
    occupancy_h: float
    method: str
    us_per_step: float
    us_per_step_min: float
    speedup: float  # torch_gru time over this method's time
    bound: float  # cost-model speed-up at the measured occupancies
    fraction_of_bound: float | None  # speedup / bound, delta methods only
    repeats: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Case:
    """A prepared case: the layer, the timed input, the warm state and the thresholds."""

    name: str
    gru: nn.GRU
    x: Tensor  # (T, B, I), the timed part
    state: F.DeltaGRUState  # after the prefix
    theta_x: Tensor
    theta_h: Tensor
    target: float | None


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch and numba threads, restoring the previous settings after."""
    old_torch = torch.get_num_threads()
    torch.set_num_threads(n)
    numba = _numba()
    old_numba = numba.get_num_threads() if numba else None
    if numba:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        if numba:
            numba.set_num_threads(old_numba)


def _numba():
    try:
        import numba
    except ImportError:
        return None
    return numba


def _weights(gru: nn.GRU) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        gru.weight_ih_l0.detach(),
        gru.weight_hh_l0.detach(),
        gru.bias_ih_l0.detach(),
        gru.bias_hh_l0.detach(),
    )


def _delta_runner() -> Callable:
    """The fastest available engine to run untimed passes (prefix, calibration, counts)."""
    module = load_backend("cpu")
    if module is None:
        return lambda x, s, w_ih, w_hh, tx, th, count: reference_backend.gru(
            x, s, reference_backend.pack(w_ih, w_hh), tx, th, count=count
        )
    cache = {}

    def run(x, s, w_ih, w_hh, tx, th, count):
        key = (w_ih.data_ptr(), w_hh.data_ptr())
        if key not in cache:
            cache[key] = module.pack(w_ih, w_hh)
        return module.gru(x, s, cache[key], tx, th, count=count)

    return run


def _prepare_synthetic(
    config: BenchConfig, hidden: int, occupancy: float, run_delta: Callable
) -> _Case:
    inputs = config.input_size or hidden
    torch.manual_seed(config.seed)
    gru = nn.GRU(inputs, hidden)
    w_ih, w_hh, b_ih, b_hh = _weights(gru)
    x_all = controlled_sequence(
        config.prefix_steps + config.steps, config.batch, inputs, occupancy, seed=config.seed
    )
    prefix, x = x_all[: config.prefix_steps], x_all[config.prefix_steps :]
    theta_x = torch.full((inputs,), THETA_X)
    fresh = F.gru_initial_state(w_ih, b_ih, b_hh, config.batch)

    def warm(theta_h: float):
        th = torch.full((hidden,), theta_h)
        _, state, _ = run_delta(prefix, fresh, w_ih, w_hh, theta_x, th, False)
        return state, th

    def occupancy_h(theta_h: float) -> float:
        state, th = warm(theta_h)
        _, _, counts = run_delta(x, state, w_ih, w_hh, theta_x, th, True)
        return counts.nh.double().mean().item() / hidden

    theta_h, _ = calibrate(occupancy_h, occupancy)
    state, th = warm(theta_h)
    return _Case(f"synthetic-{occupancy:g}", gru, x, state, theta_x, th, occupancy)


def _prepare_real(config: BenchConfig, theta: float, feats: Tensor) -> _Case:
    torch.manual_seed(config.seed)
    gru = nn.GRU(feats.shape[2], config.real_hidden)
    w_ih, _, b_ih, b_hh = _weights(gru)
    x = feats.expand(-1, config.batch, -1).contiguous()
    state = F.gru_initial_state(w_ih, b_ih, b_hh, config.batch)  # a fresh stream, as deployed
    return _Case(
        f"fsdd-theta{theta:g}",
        gru,
        x,
        state,
        torch.full((feats.shape[2],), theta),
        torch.full((config.real_hidden,), theta),
        None,
    )


def _timers(case: _Case, methods: tuple[str, ...]) -> dict[str, Callable[[], None]]:
    """One zero-argument callable per method that runs the whole timed sequence once."""
    gru, x, state = case.gru, case.x, case.state
    w_ih, w_hh, _, _ = _weights(gru)
    steps = x.shape[0]
    timers: dict[str, Callable[[], None]] = {}
    h0 = state.h.unsqueeze(0).contiguous()
    if "torch_gru" in methods:
        timers["torch_gru"] = lambda: gru(x, h0)
    if "torch_grucell" in methods:
        cell = nn.GRUCell(gru.input_size, gru.hidden_size)
        cell.load_state_dict({name.removesuffix("_l0"): p for name, p in gru.state_dict().items()})

        def grucell():
            h = state.h
            for t in range(steps):
                h = cell(x[t], h)

        timers["torch_grucell"] = grucell
    if "reference" in methods:
        timers["reference"] = lambda: reference_backend.gru(
            x, state, reference_backend.pack(w_ih, w_hh), case.theta_x, case.theta_h
        )
    cpu = load_backend("cpu")
    if cpu is None:
        missing = [m for m in methods if m.startswith("cpu")]
        if missing:
            log.warning("cpu backend unavailable (numba missing): skipping %s", missing)
        return timers
    packed = cpu.pack(w_ih, w_hh)
    if "cpu" in methods:
        timers["cpu"] = lambda: cpu.gru(x, state, packed, case.theta_x, case.theta_h)
    if "cpu_stream" in methods:
        streamer = cpu.CPUStreamer(packed, state, case.theta_x, case.theta_h)

        def stream():
            streamer.load_state(state)  # a copy of a few vectors, negligible against T steps
            step = streamer.step
            for t in range(steps):
                step(x[t])

        timers["cpu_stream"] = stream
    if "cpu_int8" in methods:
        packed_q = cpu.pack_int8(w_ih, w_hh)
        timers["cpu_int8"] = lambda: cpu.gru(x, state, packed_q, case.theta_x, case.theta_h)
    return timers


def _int8_deviation(case: _Case) -> float:
    """Largest |h| difference between the 8-bit-weight and the float engine on the timed run."""
    cpu = load_backend("cpu")
    w_ih, w_hh, _, _ = _weights(case.gru)
    args = (case.x, case.state)
    out_f = cpu.gru(*args, cpu.pack(w_ih, w_hh), case.theta_x, case.theta_h)[0]
    out_q = cpu.gru(*args, cpu.pack_int8(w_ih, w_hh), case.theta_x, case.theta_h)[0]
    return float((out_f - out_q).abs().max())


def clock(n_threads: int) -> Callable[[], float]:
    """The clock a run is timed with.

    One thread: the CPU time of the calling thread (``time.thread_time``), so that time spent
    descheduled while other processes share the cores is not counted (it would inflate long runs
    more than short ones and bias the ratios). Several threads: wall time.
    """
    return time.thread_time if n_threads == 1 else time.perf_counter


def time_interleaved(
    timers: dict[str, Callable[[], None]], repeats: int, warmup: int, now: Callable[[], float]
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in timers}
    for r in range(warmup + repeats):
        for name, fn in timers.items():
            start = now()
            fn()
            elapsed = now() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def _measure_case(case: _Case, config: BenchConfig, run_delta: Callable) -> list[BenchRow]:
    w_ih, w_hh, _, _ = _weights(case.gru)
    steps, batch, inputs = case.x.shape
    hidden = case.gru.hidden_size
    _, _, counts = run_delta(case.x, case.state, w_ih, w_hh, case.theta_x, case.theta_h, True)
    occ_x = counts.nx.double().mean().item() / inputs
    occ_h = counts.nh.double().mean().item() / hidden
    bound = compute_speedup_bound("GRU", inputs, hidden, occ_x, occ_h)
    timers = _timers(case, config.methods)
    with torch.inference_mode():
        times = time_interleaved(timers, config.repeats, config.warmup, clock(config.threads))
    medians = {name: statistics.median(ts) / steps for name, ts in times.items()}
    base = medians.get("torch_gru")
    extras = {}
    if "cpu_int8" in medians:
        extras["cpu_int8"] = {"max_abs_dev": _int8_deviation(case)}
    rows = []
    for name in config.methods:
        if name not in medians:
            continue
        speedup = base / medians[name] if base else float("nan")
        rows.append(
            BenchRow(
                case=case.name,
                kind="GRU",
                input_size=inputs,
                hidden_size=hidden,
                batch=batch,
                steps=steps,
                threads=config.threads,
                theta_x=float(case.theta_x.max()),
                theta_h=float(case.theta_h.max()),
                target_occupancy=case.target,
                occupancy_x=occ_x,
                occupancy_h=occ_h,
                method=name,
                us_per_step=medians[name] * 1e6,
                us_per_step_min=min(times[name]) / steps * 1e6,
                speedup=speedup,
                bound=bound,
                fraction_of_bound=speedup / bound if name in DELTA_METHODS else None,
                repeats=config.repeats,
                extra={"clock": clock(config.threads).__name__, **extras.get(name, {})},
            )
        )
        log.info("%s %s: %.1f us/step", case.name, name, medians[name] * 1e6)
    return rows


def run_benchmark(config: BenchConfig) -> list[BenchRow]:
    """Run every case of ``config`` and return one row per (case, method)."""
    rows: list[BenchRow] = []
    run_delta = _delta_runner()
    with threads(config.threads):
        for hidden in config.hidden_sizes:
            for occupancy in config.occupancies:
                case = _prepare_synthetic(config, hidden, occupancy, run_delta)
                rows += _measure_case(case, config, run_delta)
        if config.real_thetas:
            feats = fsdd_log_mel(config.data_root, config.real_files)
            for theta in config.real_thetas:
                rows += _measure_case(_prepare_real(config, theta, feats), config, run_delta)
    return rows


def environment() -> dict:
    """Versions and machine, saved next to the rows."""
    numba = _numba()
    return {
        "torch": torch.__version__,
        "numba": numba.__version__ if numba else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was around the run."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
