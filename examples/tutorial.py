"""Tutorial: your own GRU, your own data, your own figure.

A small torch model is trained on a synthetic sensor task, its GRU is swapped for a delta GRU in
place (``deltarnn.convert``), a sweep of thresholds shows what accuracy each saving costs, and a
short retraining with the thresholds in the forward pass wins most of it back.

Run from the repository root (a few minutes on one CPU core)::

    .venv/bin/python examples/tutorial.py --out docs/_static

It prints a table and writes ``tutorial.png`` into ``--out``. Replace ``make_data`` and
``Classifier`` by your own and the rest stays as it is.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

import deltarnn

CLASSES = ("sine", "square", "triangle")


# -- 1. your data ------------------------------------------------------------------------------


def make_data(n: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy 4-channel recordings (n, steps, 4) of one of three slow waveforms, and labels.

    Each channel sees the waveform at its own gain and phase, plus sensor noise: a slowly
    changing signal, the kind of input on which a delta network sends little.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    t = torch.arange(steps, dtype=torch.float32)
    freq = 1 / 40 + torch.rand(n, 1, 1, generator=g) / 40  # periods of 20 to 40 steps
    phase = 2 * math.pi * torch.rand(n, 1, 4, generator=g)
    angle = 2 * math.pi * freq * t[None, :, None] + phase
    sine = torch.sin(angle)
    waves = torch.stack((sine, torch.sign(sine), 2 / math.pi * torch.asin(sine)), dim=1)
    x = waves[torch.arange(n), labels]
    gain = 0.5 + torch.rand(n, 1, 4, generator=g)
    return gain * x + 0.05 * torch.randn(n, steps, 4, generator=g), labels


# -- 2. your model -----------------------------------------------------------------------------


class Classifier(nn.Module):
    """A plain torch model: a GRU over the recording, a linear layer on its last state."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.rnn(x)
        return self.head(h_n[-1])


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


# -- 3. the swap and the sweep -----------------------------------------------------------------


def sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, thetas: list[float]) -> list[dict]:
    """Accuracy and measured cost of the converted model at each Θ (Θx = Θh)."""
    rows = []
    with torch.no_grad():
        for theta in thetas:
            model.rnn.set_thresholds(theta, theta)
            accuracy = (model(x).argmax(-1) == y).float().mean().item()
            report = deltarnn.measure(model.rnn, x)  # counted from the send masks of this run
            rows.append(
                {
                    "theta": theta,
                    "accuracy": accuracy,
                    "mac_reduction": report.mac_reduction,
                    "occupancy_x": report.occupancy_x,
                    "occupancy_h": report.occupancy_h,
                }
            )
    return rows


def plot(curves: dict[str, list[dict]], dense_accuracy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, rows in curves.items():
        ax.plot([r["mac_reduction"] for r in rows], [100 * r["accuracy"] for r in rows], "o-",
                label=label)  # fmt: skip
        for r in rows:
            ax.annotate(f"{r['theta']:g}", (r["mac_reduction"], 100 * r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.axhline(100 * dense_accuracy, color="grey", ls="--", lw=1, label="torch.nn.GRU")
    ax.set_xscale("log")
    ax.set_xlabel("MAC reduction (dense MACs / delta MACs); labels: Θ")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for tutorial.png")
    parser.add_argument("--train-steps", type=int, default=600, help="dense training steps")
    parser.add_argument("--retrain-steps", type=int, default=150, help="delta retraining steps")
    parser.add_argument("--retrain-theta", type=float, default=0.2, help="Θ while retraining")
    parser.add_argument("--n", type=int, default=1000, help="training recordings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    x_train, y_train = make_data(args.n, 100, seed=args.seed)
    x_test, y_test = make_data(max(100, args.n // 4), 100, seed=args.seed + 1)
    model = Classifier()
    train(model, x_train, y_train, args.train_steps, args.seed)
    with torch.no_grad():
        dense_accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()

    deltarnn.convert(model)  # model.rnn is now a DeltaGRU with the same weights
    thetas = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    rows = sweep(model, x_test, y_test, thetas)

    # -- 4. retrain with the thresholds in the forward pass (the paper's delta training) --------
    model.rnn.set_thresholds(args.retrain_theta, args.retrain_theta)
    train(model, x_train, y_train, args.retrain_steps, args.seed + 2)
    retrained = sweep(model, x_test, y_test, thetas)
    deltarnn.revert(model)  # and back to nn.GRU, with the retrained weights

    print(f"torch.nn.GRU: test accuracy {100 * dense_accuracy:.1f}%")
    print("model       Θ  accuracy  MAC reduction  occupancy x  occupancy h")
    for name, table in (("converted", rows), ("retrained", retrained)):
        for r in table:
            print(
                f"{name:<9} {r['theta']:4.2f}  {100 * r['accuracy']:7.1f}%  "
                f"{r['mac_reduction']:12.1f}x  {100 * r['occupancy_x']:10.1f}%  "
                f"{100 * r['occupancy_h']:10.1f}%"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {"converted": rows, f"retrained at Θ={args.retrain_theta:g}": retrained}
    plot(curves, dense_accuracy, args.out / "tutorial.png")
    print(f"figure: {args.out / 'tutorial.png'}")
    return {"dense": dense_accuracy, "converted": rows, "retrained": retrained}


if __name__ == "__main__":
    main()
