"""``deltarnn export-c``: a trained model as dependency-free C99 for a small device."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a trained delta model (run folder or .safetensors) as C99 source for a small device"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        type=Path,
        help="a run folder of `deltarnn train` (RNN and head), or a .safetensors state_dict of a "
        "DeltaGRU/DeltaLSTM",
    )
    p.add_argument("--out", type=Path, required=True, help="folder to write <prefix>.h/.c into")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32")
    p.add_argument("--prefix", default="model", help="C name of the files, functions and state")
    p.add_argument(
        "--gates",
        choices=("rational", "libm"),
        default="rational",
        help="tanh/sigmoid: the CPU engine's rational approximations (no libm) or tanhf/expf",
    )
    p.add_argument(
        "--resync-every",
        type=int,
        help="recompute the memories densely every N steps (0: only after a huge or non-finite "
        "value); default: the streamer's period",
    )
    p.add_argument(
        "--with-main", action="store_true", help="also write <prefix>_main.c, a test driver"
    )


def load_module(path: Path):
    """The module to export: a run folder's trained model, or a delta RNN from a state_dict."""
    if path.is_dir():
        from ..train import load_model

        model, _, _ = load_model(path)
        return model
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(
            f"{path} must be a run folder or an existing .safetensors file of a delta RNN"
        )
    from ..errors import CheckpointError
    from ..export.state_dict import module_from_state_dict
    from ..tensor_files import read_tensors

    state_dict, _ = read_tensors(path, CheckpointError)  # truncated or foreign: names the file
    return module_from_state_dict(state_dict, str(path))


# The flags that are export_c's keyword arguments, under the same names.
OPTIONS = ("weights", "prefix", "with_main", "gates", "resync_every")


def run(args: argparse.Namespace) -> int:
    from ..export import export_c

    # An omitted --resync-every (None) leaves export_c's default, the streamer's period.
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    result = export_c(load_module(args.model), args.out, **options)
    written = [result.header, result.source] + ([result.driver] if result.driver else [])
    print(f"{result.model.source}: wrote {', '.join(str(p) for p in written)}")
    for line in result.memory.lines():
        print("  " + line)
    return 0
