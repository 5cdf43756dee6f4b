"""``deltarnn demo``: train a small delta GRU on spoken digits and show what the thresholds save."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .options import add_download_argument, fetch_fsdd

HELP = "train a small GRU on FSDD, retrain it as a delta network, print accuracy and cost tables"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data root holding fsdd/recordings (default: $DELTARNN_DATA)")
    p.add_argument("--out", default="runs/demo", help="folder for runs and the plot")
    p.add_argument("--split", default="take", choices=("take", "speaker"))
    p.add_argument("--epochs", type=int, default=5, help="dense training epochs")
    p.add_argument("--delta-epochs", type=int, default=1, help="delta retraining epochs")
    p.add_argument("--theta", type=float, default=0.3, help="Θx = Θh of the delta model")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_download_argument(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train import ReportSpec, TrainConfig, evaluate_run, load_data, load_model, train
    from ..train.results import plot, summarise
    from ..train.sweep import make_row

    torch.set_num_threads(args.threads)
    start = time.time()
    if args.download:
        fetch_fsdd(args.root)
    out = Path(args.out)
    base = TrainConfig.from_dict(
        {
            "model": {"hidden_size": args.hidden_size, "num_layers": 1},
            "data": {"split": args.split, "root": args.root, "batch_size": 64},
            "epochs": args.epochs,
            "seed": args.seed,
        }
    )
    data = load_data(base.data)
    print(
        f"FSDD split by {args.split}: {len(data.train)} train, {len(data.test)} test recordings "
        f"(features ready after {time.time() - start:.0f} s)",
        file=sys.stderr,
    )
    dense_dir = out / "dense"
    dense = train(base, dense_dir, resume=False, force=True, progress=True)
    delta_cfg = base.with_overrides(
        [
            f"epochs={args.delta_epochs}",
            f"model.theta_x={args.theta}",
            f"model.theta_h={args.theta}",
            "method.delta=true",
            "method.l1_h=0.002",
            f"method.init_from={str(dense_dir)!r}".replace("'", '"'),
        ]
    )
    delta = train(delta_cfg, out / "delta", resume=False, force=True, progress=True)
    rows = [make_row(base, "dense", dense, None, None)]
    model, cfg, _ = load_model(dense_dir)
    model.rnn.set_thresholds(args.theta, args.theta)
    cfg.model.theta_x = cfg.model.theta_h = args.theta
    rows.append(make_row(cfg, "converted", evaluate_run(model, data).to_dict(), rows[0], None))
    rows.append(make_row(delta_cfg, "delta", delta, rows[0], None))
    print(f"\ndense GRU: test accuracy {100 * dense['value']:.1f}%")
    print(dense["cost_table"])
    print(
        f"\ndelta GRU (retrained {args.delta_epochs} epochs with Θ = {args.theta}, L1 on Δh): "
        f"test accuracy {100 * delta['value']:.1f}%"
    )
    print(delta["cost_table"])
    print("\nmethod      Θ    accuracy  MAC reduction  occupancy x  occupancy h")
    for r in rows:
        print(
            f"{r.method:<10} {r.theta_x:4.2f}  {100 * r.value:7.1f}%  "
            f"{r.mac_reduction:12.1f}x  {100 * r.occupancy_x:10.1f}%  "
            f"{100 * r.occupancy_h:10.1f}%"
        )
    spec = ReportSpec(f"FSDD digits, split by {args.split}", target=9.0, percent=True)
    plot(summarise(rows, spec), spec, [out / "plot.png"])
    print(f"\nplot: {out / 'plot.png'}   ({time.time() - start:.0f} s in all)", file=sys.stderr)
    return 0
