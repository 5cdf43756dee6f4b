"""``deltarnn eval``: evaluate a trained run on its test set, optionally at other thresholds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_download_argument, add_threshold_arguments, fetch_fsdd, thresholds

HELP = "evaluate a run folder: accuracy or digit error rate, and the measured cost"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by `deltarnn train`")
    p.add_argument(
        "--theta",
        type=thresholds,
        help="evaluate with Θx = Θh = THETA, or one per layer (0.1,0.2) (default: the run's)",
    )
    add_threshold_arguments(p, "--theta")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    add_download_argument(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train import TrainConfig, evaluate_run, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (Path(args.run) / "config.json").is_file():
        raise FileNotFoundError(f"{args.run} is not a run folder (it holds no config.json)")
    if args.download:
        fetch_fsdd(TrainConfig.load(Path(args.run) / "config.json").data.root)
    model, cfg, data = load_model(args.run)
    theta_x = args.theta_x if args.theta_x is not None else args.theta
    theta_h = args.theta_h if args.theta_h is not None else args.theta
    model.rnn.set_thresholds(theta_x, theta_h)
    metrics = evaluate_run(model, data, progress=True).to_dict()
    total = metrics["cost"]["total"]
    print(
        json.dumps(
            {
                "metric": metrics["metric"],
                "value": metrics["value"],
                **{k: metrics[k] for k in ("exact",) if k in metrics},
                "mac_reduction": total["mac_reduction"],
                "ops_reduction": total["compute_speedup"],
                "weight_byte_reduction": total["weight_byte_reduction"],
            }
        )
    )
    print(metrics["cost_table"], file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0
