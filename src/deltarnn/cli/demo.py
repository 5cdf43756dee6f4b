"""``deltarnn demo``: a delta GRU on real spoken digits, with its cost table at several thresholds."""

from __future__ import annotations

import argparse

HELP = "run a converted GRU over log-mel features of real FSDD recordings at several thresholds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data root holding fsdd/recordings (default: $DELTARNN_DATA)")
    p.add_argument("--recordings", type=int, default=8, help="how many recordings to run")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--thetas", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.4])
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import from_torch, measure
    from ..data.features import log_mel_file
    from ..data.fsdd import list_recordings

    torch.manual_seed(args.seed)
    recordings = list_recordings(args.root)[: args.recordings]
    feats = [torch.from_numpy(log_mel_file(r.path)) for r in recordings]
    x = torch.nn.utils.rnn.pad_sequence(feats)  # (T, B, 40)
    lengths = torch.tensor([f.shape[0] for f in feats])
    # Per-band standardisation over these recordings, so a threshold means a fraction of a std.
    valid = torch.arange(x.shape[0])[:, None] < lengths[None, :]
    frames = x[valid]
    x = (x - frames.mean(0)) / frames.std(0)
    x = x * valid[..., None]
    dense = torch.nn.GRU(x.shape[-1], args.hidden_size, num_layers=2)
    print(
        f"{len(feats)} FSDD recordings, {int(lengths.sum())} frames of 40 log-mel bands; "
        f"nn.GRU(40, {args.hidden_size}, num_layers=2) with random weights, converted"
    )
    with torch.no_grad():
        reference, _ = dense(x)
    for theta in args.thetas:
        model = from_torch(dense, theta_x=theta, theta_h=theta)
        report = measure(model, x, lengths=lengths)
        with torch.no_grad():
            out, _ = model(x)
        err = (out - reference)[valid].abs().max().item()
        print(f"\ntheta_x = theta_h = {theta}: max |h - h_dense| = {err:.4f}")
        print(report.table())
    return 0
