"""``deltarnn cost``: the cost report of a delta layer on a given or generated input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError, DTypeError, ShapeError

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
    p.add_argument("--kind", choices=("gru", "lstm"), default="gru")
    p.add_argument(
        "--input-size",
        type=positive_int,
        default=40,
        help="I of the generated input (a given --input has its own)",
    )
    p.add_argument("--hidden-size", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=1)
    p.add_argument("--theta-x", type=float, default=0.1)
    p.add_argument("--theta-h", type=float, default=0.1)
    p.add_argument("--input", type=Path, help="a .npy or .safetensors array (T, I) or (T, B, I)")
    p.add_argument(
        "--key", help="tensor name inside a .safetensors file (default: its only tensor)"
    )
    p.add_argument(
        "--signal", choices=SIGNALS, default="random-walk", help="generated input when no --input"
    )
    p.add_argument("--steps", type=positive_int, default=200)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


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


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import DeltaGRU, DeltaLSTM, measure

    if args.key is not None and args.input is None:
        raise ConfigError("--key names a tensor inside a .safetensors --input; give --input too")
    torch.manual_seed(args.seed)
    if args.input is not None:
        x = load_array(args.input, args.key)
    else:
        x = generate(args.signal, args.steps, args.batch, args.input_size, args.seed)
    cls = DeltaGRU if args.kind == "gru" else DeltaLSTM
    model = cls(
        x.shape[-1], args.hidden_size, args.layers, theta_x=args.theta_x, theta_h=args.theta_h
    )
    report = measure(model, x)
    if args.json:
        out = {
            "config": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if not k.startswith("_")
            }
        }
        out.update(report.to_dict())
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(
            f"delta {args.kind.upper()}: I={x.shape[-1]} H={args.hidden_size} layers={args.layers} "
            f"T={x.shape[0]} B={x.shape[1]} theta_x={args.theta_x} theta_h={args.theta_h} (random weights)"
        )
        print(report.table())
    return 0
