"""``deltarnn train``: train a delta RNN on FSDD digits or digit strings (resumable)."""

from __future__ import annotations

import argparse
import json
import sys

from .options import add_download_argument, config_keys, fetch_fsdd

HELP = "train a delta GRU/LSTM (dense, rounding, noise, delta, L1, learnable thresholds)"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TrainConfig as .json or .toml (sections model, method, ...)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set model.hidden_size=128 --set method.delta=true",
    )
    p.add_argument("--epochs", type=int, help="shortcut for --set epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def config_from_args(args: argparse.Namespace):
    from ..train import TrainConfig

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return cfg.with_overrides(overrides)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, config, metrics)")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over: clear the folder's checkpoints and results (same config only)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="the folder holds a run of another config: discard it and start this one",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_download_argument(p)
    from ..train import TrainConfig

    p.epilog = "config keys for --set (with their defaults, as JSON):\n" + "\n".join(
        config_keys(TrainConfig)
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if args.download:
        fetch_fsdd(cfg.data.root)
    metrics = train(
        cfg, args.out, resume=not args.no_resume, force=args.force, progress=not args.quiet
    )
    if "interrupted_at_epoch" in metrics:
        return 1
    if "cost_table" in metrics:
        summary = {k: metrics[k] for k in ("metric", "value", "n_test") if k in metrics}
        print(json.dumps(summary))
        print(metrics["cost_table"], file=sys.stderr)
    print(f"run folder: {args.out}", file=sys.stderr)
    return 0
