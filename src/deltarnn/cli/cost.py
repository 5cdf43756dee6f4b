"""``deltarnn cost``: the cost report of a delta layer on a given or generated input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError, DTypeError, ShapeError
from .options import add_threshold_arguments

HELP = "cost report (occupancy, MACs, weight bytes, speed-ups) of a delta GRU/LSTM on an input"

SIGNALS = ("random-walk", "sines", "noise")


def positive_int(text: str) -> int:
    """argparse type: an int > 0 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        type=Path,
        metavar="RUN_DIR",
        help="cost of the trained network of a run folder (from `deltarnn train`) instead of "
        "random weights; for its cost on the run's test set use `deltarnn eval`",
    )
    p.add_argument("--kind", choices=("gru", "lstm"), help="random-weight network (default: gru)")
    p.add_argument(
        "--input-size",
        type=positive_int,
        default=40,
        help="I of the generated input (a given --input or --model has its own)",
    )
    p.add_argument("--hidden-size", type=positive_int, help="random-weight network (default: 256)")
    p.add_argument("--layers", type=positive_int, help="random-weight network (default: 1)")
    add_threshold_arguments(p, "0.1; with --model: the run's")
    p.add_argument("--input", type=Path, help="a .npy or .safetensors array (T, I) or (T, B, I)")
    p.add_argument(
        "--key", help="tensor name inside a .safetensors file (default: its only tensor)"
    )
    p.add_argument(
        "--signal", choices=SIGNALS, default="random-walk", help="generated input when no --input"
    )
    p.add_argument("--steps", type=positive_int, default=200, help="T of the generated input")
    p.add_argument("--batch", type=positive_int, default=1, help="B of the generated input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON (only JSON)")


def generate(signal: str, steps: int, batch: int, features: int, seed: int):
    """A reproducible test signal (T, B, I): slowly varying unless ``noise``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if signal == "random-walk":
        return torch.cumsum(torch.randn(steps, batch, features, generator=g) * 0.05, dim=0)
    if signal == "sines":
        t = torch.arange(steps, dtype=torch.float32)[:, None, None]
        freq = torch.rand(1, batch, features, generator=g) * 0.05
        phase = torch.rand(1, batch, features, generator=g) * 6.283
        return torch.sin(6.283 * freq * t + phase)
    return torch.randn(steps, batch, features, generator=g)


def load_array(path: Path, key: str | None):
    """The --input array as float32 (T, B, I); every way it can be wrong names the file."""
    import numpy as np
    import torch

    if not path.exists():
        raise ConfigError(f"--input {path} does not exist")
    if path.suffix == ".npy":
        if key is not None:
            raise ConfigError(
                f"--key selects a tensor of a .safetensors file; --input {path} is .npy"
            )
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(f"--input {path} is not a readable .npy array: {exc}") from exc
        if array.dtype.kind not in "iuf":  # complex would lose its imaginary part; str, bool, ...
            raise DTypeError(
                f"--input {path} must hold real numbers (int or float), got dtype {array.dtype}"
            )
        array = torch.from_numpy(array)
    elif path.suffix == ".safetensors":
        array = _load_safetensors_tensor(path, key)
    else:
        raise ConfigError(f"--input must be a .npy or .safetensors file, got {path.name}")
    if array.dim() not in (2, 3):
        raise ShapeError(
            f"--input {path} must be (T, I) or (T, B, I), got shape {tuple(array.shape)}"
        )
    if array.numel() == 0:
        raise ShapeError(f"--input {path} is empty (shape {tuple(array.shape)})")
    return array.float() if array.dim() == 3 else array.float().unsqueeze(1)


def _load_safetensors_tensor(path: Path, key: str | None):
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise ConfigError(f"--input {path} is not a readable .safetensors file: {exc}") from exc
    if key is None:
        if len(tensors) != 1:
            raise ConfigError(f"--input {path} holds {sorted(tensors)}; choose one with --key")
        key = next(iter(tensors))
    if key not in tensors:
        raise ConfigError(f"--key {key!r} is not in {path}; it holds {sorted(tensors)}")
    array = tensors[key]
    if array.is_complex() or array.dtype == torch.bool:
        raise DTypeError(
            f"--input {path}[{key!r}] must hold real numbers (int or float), got {array.dtype}"
        )
    return array


# The random-weight network of a bare `deltarnn cost`.
DEFAULTS = {"kind": "gru", "hidden_size": 256, "layers": 1, "theta_x": 0.1, "theta_h": 0.1}


def build_model(args: argparse.Namespace, input_size: int):
    """The network to cost: a run's trained RNN (``--model``) or one with random weights."""
    from .. import DeltaGRU, DeltaLSTM

    if args.model is not None:
        from ..train import load_model

        given = [f"--{k.replace('_', '-')}" for k in ("kind", "hidden_size", "layers")]
        given = [flag for flag, k in zip(given, ("kind", "hidden_size", "layers"), strict=True)
                 if getattr(args, k) is not None]  # fmt: skip
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be combined with --model: the run fixes them"
            )
        rnn = load_model(args.model)[0].rnn
        rnn.set_thresholds(args.theta_x, args.theta_h)  # None keeps the run's
        return rnn
    cfg = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in DEFAULTS.items()}
    cls = DeltaGRU if cfg["kind"] == "gru" else DeltaLSTM
    return cls(
        input_size,
        cfg["hidden_size"],
        cfg["layers"],
        theta_x=cfg["theta_x"],
        theta_h=cfg["theta_h"],
    )


def describe(rnn, x, args: argparse.Namespace) -> dict:
    """What was measured: the network, its thresholds and the input (JSON-ready)."""
    theta = []
    for k in range(rnn.num_layers):
        # 7 significant digits: the float32 value as it was typed (0.1, not 0.10000000149)
        tx, th = ([float(f"{v:.7g}") for v in t.tolist()] for t in rnn.thresholds(k))
        # a single value when the threshold is the same for every feature
        theta.append([v[0] if len(set(v)) == 1 else v for v in (tx, th)])
    return {
        "kind": rnn.mode.lower(),
        "input_size": x.shape[-1],
        "hidden_size": rnn.hidden_size,
        "layers": rnn.num_layers,
        "theta_x": [t[0] for t in theta],
        "theta_h": [t[1] for t in theta],
        "weights": str(args.model) if args.model is not None else f"random (seed {args.seed})",
        "input": str(args.input) if args.input is not None else f"{args.signal} (seed {args.seed})",
        "steps": x.shape[0],
        "batch": x.shape[1],
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import measure

    if args.key is not None and args.input is None:
        raise ConfigError("--key names a tensor inside a .safetensors --input; give --input too")
    torch.manual_seed(args.seed)
    x = None if args.input is None else load_array(args.input, args.key)
    rnn = build_model(args, args.input_size if x is None else x.shape[-1])
    if x is None:
        x = generate(args.signal, args.steps, args.batch, rnn.input_size, args.seed)
    report = measure(rnn, x)
    config = describe(rnn, x, args)
    if args.json:
        json.dump({"config": config, **report.to_dict()}, sys.stdout, indent=2)
        print()
        return 0
    c = config
    print(
        f"delta {c['kind'].upper()}: I={c['input_size']} H={c['hidden_size']} layers={c['layers']} "
        f"T={c['steps']} B={c['batch']} theta_x={_short(c['theta_x'])} theta_h={_short(c['theta_h'])} "
        f"weights: {c['weights']}, input: {c['input']}",
        file=sys.stderr,
    )
    print(report.table())
    return 0


def _short(per_layer: list) -> str:
    """One value when every layer has the same scalar threshold, else the list."""
    if all(not isinstance(v, list) for v in per_layer) and len(set(per_layer)) == 1:
        return f"{per_layer[0]:g}"
    return str(per_layer)
