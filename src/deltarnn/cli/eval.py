"""``deltarnn eval``: evaluate a trained run on its test set, optionally at other thresholds."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate a run folder: accuracy or digit error rate, and the measured cost"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by `deltarnn train`")
    p.add_argument("--theta", type=float, help="evaluate with Θx = Θh = THETA")
    p.add_argument("--theta-x", type=float, help="Θx (overrides --theta)")
    p.add_argument("--theta-h", type=float, help="Θh (overrides --theta)")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--threads", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train import evaluate_run, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
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
    print(metrics["cost_table"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0
