"""Steering angle from video: a small CNN per frame, a GRU over the frames, run as a delta network.

The paper's driving result (Neil et al., ICML 2017, §4.4): in a CNN-RNN that steers a car from
video, the CNN features change slowly from frame to frame, so the RNN run as a delta network on
them needs about 100x fewer operations. Here, on Udacity simulator frames with a temporal split:

1. ``dense``: CNN + GRU trained end to end on windows of frames (mean squared error).
2. ``converted``: the dense model with Θx on the CNN features and Θh on the hidden state.
3. ``delta``: the CNN frozen, its features computed once; the GRU and head retrained as a delta
   network at each Θ (Θ ramped up from 0).
4. ``delta_l1``: as ``delta`` plus an L1 cost on Δx and Δh.

The CNN is dense in every variant: its MACs per frame are counted from the layer shapes
(:func:`cnn_macs`), so the whole network's cost per frame is reported beside the RNN's.

Test sequences are whole test pieces of each session, run as one stream each (a car does not
restart its RNN every few frames), so the first, dense, step is counted once per session.

Shape legend: N frames, L window length, B batch, C channels, H x W image, D CNN features,
K hidden units.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cost import CostReport, measure
from ..errors import ConfigError
from ..nn import DeltaGRU
from .config import flat_config_fields
from .large_speech import append_rows, run_gru
from .methods import delta_l1_cost

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SteeringConfig:
    """The steering experiment.

    Attributes:
        root: data root (default ``$DELTARNN_DATA``), holding ``udacity-sim/``.
        train_fraction: share of each session's duration that trains (the rest tests).
        height, width: frames are resized to this.
        seq_len: window length for end-to-end training (frames).
        feature_seq_len: window length for retraining the GRU on frozen features.
        features: D, CNN output features (bounded by tanh, so Θx is in the units of h).
        hidden_size: K, GRU units (one layer).
        batch_size: windows per batch.
        dense_epochs, retrain_epochs: epochs of end-to-end training / of each GRU retraining.
        lr, retrain_lr: Adam learning rates (cosine decay to 5 %).
        flip: augment training windows with mirrored frames and negated angles.
        thetas: Θ (Θx = Θh) of the converted sweep.
        retrain_thetas: Θ of the retraining runs (one ``delta`` and one ``delta_l1`` run each).
        l1_x, l1_h: L1 weights on |Δx| and |Δh| per frame (``delta_l1``).
        warmup_fraction: share of the retraining steps over which Θ ramps up.
        seed, threads: as usual.
    """

    root: str | None = None
    train_fraction: float = 0.8
    height: int = 40
    width: int = 80
    seq_len: int = 32
    feature_seq_len: int = 64
    features: int = 64
    hidden_size: int = 64
    batch_size: int = 16
    dense_epochs: int = 25
    retrain_epochs: int = 30
    lr: float = 2e-3
    retrain_lr: float = 2e-3
    flip: bool = True
    thetas: list[float] = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.7])
    retrain_thetas: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.3, 0.5])
    l1_x: float = 0.0
    l1_h: float = 0.01
    warmup_fraction: float = 0.3
    seed: int = 0
    threads: int = 1

    def validate(self) -> SteeringConfig:
        for name in (
            "height",
            "width",
            "seq_len",
            "feature_seq_len",
            "features",
            "hidden_size",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.height < 16 or self.width < 16:
            raise ConfigError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        for name in ("l1_x", "l1_h", "warmup_fraction"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}")
        for name in ("thetas", "retrain_thetas"):
            if any(not (math.isfinite(t) and t > 0) for t in getattr(self, name)):
                raise ConfigError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        return self


# -- model ------------------------------------------------------------------------------------


class FrameCNN(nn.Module):
    """(N, 3, H, W) frames in [0, 1] -> (N, D) features in (-1, 1).

    Three strided convolutions (5x5/2, 3x3/2, 3x3/2) with ReLU, then a linear layer and tanh.
    The tanh bounds the features, so one Θ scale suits the features and the hidden state.
    """

    def __init__(self, height: int, width: int, features: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 48, 3, stride=2),
            nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, height, width)).numel()
        self.fc = nn.Linear(flat, features)
        self.input_shape = (3, height, width)

    def forward(self, frames: Tensor) -> Tensor:
        # Centre the pixels so the first layer's biases start near a useful operating point.
        return torch.tanh(self.fc(self.convs(frames - 0.5).flatten(1)))


class SteeringModel(nn.Module):
    """Frames -> :class:`FrameCNN` -> one-layer delta GRU -> linear -> angle per frame.

    Inputs: ``frames`` (L, B, 3, H, W). Output: (L, B) angles.
    """

    def __init__(self, cfg: SteeringConfig) -> None:
        super().__init__()
        self.cnn = FrameCNN(cfg.height, cfg.width, cfg.features)
        self.rnn = DeltaGRU(cfg.features, cfg.hidden_size, 1)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def features(self, frames: Tensor) -> Tensor:
        """(L, B, 3, H, W) -> (L, B, D)."""
        steps, batch = frames.shape[:2]
        return self.cnn(frames.flatten(0, 1)).view(steps, batch, -1)

    def forward_features(self, feats: Tensor, *, delta: bool = False, count: bool = False):
        out, counts = run_gru(self.rnn, feats, delta=delta, count=count)
        y = self.head(out).squeeze(-1)
        return (y, counts) if count else y

    def forward(self, frames: Tensor) -> Tensor:
        return self.forward_features(self.features(frames))


def cnn_macs(cnn: FrameCNN) -> dict[str, int]:
    """Multiply-accumulates per frame of each layer, from the layer shapes.

    Conv2d: C_out * H_out * W_out * (C_in / groups) * k_h * k_w; Linear: in * out. (The shapes
    are taken from one forward pass; the count itself is the formula.)
    """
    macs: dict[str, int] = {}
    hooks = []

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                c_out, h_out, w_out = out.shape[1:]
                k_h, k_w = mod.kernel_size
                macs[name] = c_out * h_out * w_out * (mod.in_channels // mod.groups) * k_h * k_w
            else:
                macs[name] = mod.in_features * mod.out_features

        return fn

    for name, mod in cnn.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            cnn(torch.zeros(1, *cnn.input_shape))
    finally:
        for h in hooks:
            h.remove()
    macs["total"] = sum(macs.values())
    return macs


# -- data -------------------------------------------------------------------------------------


def load_data(cfg: SteeringConfig) -> dict[str, Any]:
    """Training windows (``SteeringDataset``) and the whole test pieces as (frames, angles)."""
    from ..data import SteeringDataset, load_frames, load_sessions, temporal_split

    parts = temporal_split(load_sessions(cfg.root), cfg.train_fraction)
    size = (cfg.height, cfg.width)
    train = SteeringDataset(parts.train, cfg.seq_len, cfg.seq_len // 2, size)
    test = [
        (load_frames(s, size), torch.from_numpy(s.steering.copy()))
        for s in parts.test
        if len(s) > 1
    ]
    train_pieces = [
        (load_frames(s, size), torch.from_numpy(s.steering.copy())) for s in parts.train
    ]
    return {"train": train, "test": test, "train_pieces": train_pieces}


def baselines(data: dict[str, Any]) -> dict[str, float]:
    """RMSE on the test frames of trivial predictors: the training mean, zero, the previous label
    (which knows the true angle one frame late: a bound no camera-only model is given)."""
    train = torch.cat([y for _, y in data["train_pieces"]])
    test = torch.cat([y for _, y in data["test"]])
    prev = torch.cat([torch.cat((y[:1], y[:-1])) for _, y in data["test"]])
    return {
        "train_mean": float(((test - train.mean()) ** 2).mean().sqrt()),
        "zero": float((test**2).mean().sqrt()),
        "previous_label": float(((test - prev) ** 2).mean().sqrt()),
    }


def _cosine(lr: float, step: int, total: int) -> float:
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(1, total))))


def _order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()


# -- training ---------------------------------------------------------------------------------


def train_dense(model: SteeringModel, data: dict[str, Any], cfg: SteeringConfig) -> list[float]:
    """End-to-end CNN + GRU (Θ = 0) with mean squared error; returns the loss of each epoch."""
    ds = data["train"]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    per_epoch = math.ceil(len(ds) / cfg.batch_size)
    total, step, history = cfg.dense_epochs * per_epoch, 0, []
    flips = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.dense_epochs):
        model.train()
        order, t0, losses = _order(len(ds), cfg.seed, epoch), time.perf_counter(), []
        for start in range(0, len(order), cfg.batch_size):
            items = [ds[i] for i in order[start : start + cfg.batch_size]]
            frames = torch.stack([f for f, _ in items], 1)  # (L, B, 3, H, W)
            target = torch.stack([y for _, y in items], 1)  # (L, B)
            if cfg.flip:
                flip = torch.rand(frames.shape[1], generator=flips) < 0.5
                frames[:, flip] = frames[:, flip].flip(-1)
                target[:, flip] = -target[:, flip]
            for g in opt.param_groups:
                g["lr"] = _cosine(cfg.lr, step, total)
            loss = nn.functional.mse_loss(model(frames), target)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(sum(losses) / len(losses))
        log.info(
            "dense epoch %d/%d  mse %.4f  %.1fs",
            epoch + 1,
            cfg.dense_epochs,
            history[-1],
            time.perf_counter() - t0,
        )
    return history


@torch.no_grad()
def frozen_features(
    model: SteeringModel, pieces, flip: bool = False
) -> list[tuple[Tensor, Tensor]]:
    """CNN features of whole pieces: [(features (N, D), angles (N,))] (mirrored with ``flip``)."""
    model.eval()
    out = []
    for frames, y in pieces:
        feats = []
        for start in range(0, len(frames), 256):
            x = frames[start : start + 256].float().div_(255.0)
            feats.append(model.cnn(x.flip(-1) if flip else x))
        out.append((torch.cat(feats), -y if flip else y))
    return out


def feature_windows(pieces, length: int) -> tuple[Tensor, Tensor]:
    """Windows of ``length`` frames every ``length // 2``: (L, B, D) features, (L, B) angles."""
    xs, ys = [], []
    for feats, y in pieces:
        for start in range(0, len(feats) - length + 1, max(1, length // 2)):
            xs.append(feats[start : start + length])
            ys.append(y[start : start + length])
    if not xs:
        raise ConfigError(f"no training piece has {length} frames: lower feature_seq_len")
    return torch.stack(xs, 1), torch.stack(ys, 1)


def retrain_gru(
    model: SteeringModel,
    windows: tuple[Tensor, Tensor],
    cfg: SteeringConfig,
    theta: float,
    l1: bool,
) -> list[float]:
    """Retrain the GRU and head as a delta network on frozen features at Θx = Θh = ``theta``."""
    feats, target = windows
    params = list(model.rnn.parameters()) + list(model.head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.retrain_lr)
    n = feats.shape[1]
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.retrain_epochs * per_epoch
    warmup = max(1, round(cfg.warmup_fraction * total))
    step, history = 0, []
    lengths = torch.full((cfg.batch_size,), feats.shape[0], dtype=torch.int64)
    for epoch in range(cfg.retrain_epochs):
        model.train()
        order, losses = _order(n, cfg.seed, 1000 + epoch), []
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            t = theta * min(1.0, (step + 1) / warmup)
            model.rnn.set_thresholds(t, t)
            for g in opt.param_groups:
                g["lr"] = _cosine(cfg.retrain_lr, step, total)
            out = model.forward_features(feats[:, idx], delta=True, count=l1)
            pred, counts = out if l1 else (out, None)
            loss = nn.functional.mse_loss(pred, target[:, idx])
            if l1:
                loss = loss + delta_l1_cost(counts, lengths[: len(idx)], cfg.l1_x, cfg.l1_h)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(sum(losses) / len(losses))
    model.rnn.set_thresholds(theta, theta)
    log.info("retrained at theta %.3f (l1=%s): last loss %.4f", theta, l1, history[-1])
    return history


@torch.no_grad()
def evaluate(model: SteeringModel, test_features, theta: float) -> dict[str, Any]:
    """RMSE over every test frame, each test piece run as one stream, and the RNN's cost."""
    model.eval()
    model.rnn.set_thresholds(theta, theta)
    se, count = 0.0, 0
    report: CostReport | None = None
    for feats, y in test_features:
        x = feats[:, None]  # (N, 1, D): one stream
        out, _ = model.rnn(x)
        pred = model.head(out).squeeze(-1).squeeze(-1)
        se += float(((pred - y) ** 2).sum())
        count += len(y)
        r = measure(model.rnn, x)
        report = r if report is None else report + r
    return {"rmse": math.sqrt(se / max(1, count)), "cost": report.to_dict()}


def make_row(cfg: SteeringConfig, method: str, theta: float, result, dense_value) -> dict:
    """A results row in the sweep format (:func:`deltarnn.train.sweep.make_row`)."""
    total = result["cost"]["total"]
    return {
        "task": "steering",
        "split": "temporal",
        "method": method,
        "theta_x": theta,
        "theta_h": theta,
        "seed": cfg.seed,
        "metric": "rmse",
        "value": result["rmse"],
        "dense_value": dense_value,
        "mac_reduction": total["mac_reduction"],
        "byte_reduction": total["weight_byte_reduction"],
        "occupancy_x": total["occupancy_x"],
        "occupancy_h": total["occupancy_h"],
    }


def run_experiment(cfg: SteeringConfig, out_dir: str | Path, results: str | Path) -> dict:
    """The whole experiment; reuses finished weights in ``out_dir``. Writes rows to ``results``
    and ``summary.json`` (baselines, CNN and RNN MACs per frame, best points) beside it."""
    from .large_speech import load_weights, save_model

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results = Path(out_dir), Path(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    data = load_data(cfg)
    log.info(
        "steering: %d training windows, %d test frames",
        len(data["train"]),
        sum(len(y) for _, y in data["test"]),
    )
    torch.manual_seed(cfg.seed)
    model = SteeringModel(cfg)
    path = out / "dense.safetensors"
    timings = {}
    if path.exists():
        load_weights(model, path)
    else:
        t0 = time.perf_counter()
        train_dense(model, data, cfg)
        timings["dense_train_s"] = time.perf_counter() - t0
        save_model(model, path)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    test_feats = frozen_features(model, data["test"])
    base = evaluate(model, test_feats, 0.0)
    dense_value = base["rmse"]
    rows, rnn_macs = [], []

    def record(method: str, theta: float, result: dict) -> dict:
        rows.append(make_row(cfg, method, theta, result, dense_value))
        rnn_macs.append(result["cost"]["total"]["delta_macs"])
        return rows[-1]

    record("dense", 0.0, base)
    # The dense model runs as a plain GRU: every product in full, nothing skipped.
    rnn_macs[0] = base["cost"]["total"]["dense_macs"]
    for t in cfg.thetas:
        record("converted", t, evaluate(model, test_feats, t))
    append_rows(results, rows)
    train_feats = frozen_features(model, data["train_pieces"])
    if cfg.flip:
        train_feats += frozen_features(model, data["train_pieces"], flip=True)
    windows = feature_windows(train_feats, cfg.feature_seq_len)
    t0 = time.perf_counter()
    for method, l1 in (("delta", False), ("delta_l1", True)):
        new = []
        for theta in cfg.retrain_thetas:
            model.load_state_dict(dense_state)
            retrain_gru(model, windows, cfg, theta, l1)
            new.append(record(method, theta, evaluate(model, test_feats, theta)))
        append_rows(results, new)
    timings["retrain_s"] = time.perf_counter() - t0
    frames = sum(len(y) for _, y in data["test"])
    cnn = cnn_macs(model.cnn)
    summary = {
        "baselines_rmse": baselines(data),
        "dense_rmse": dense_value,
        "test_frames": frames,
        "cnn_macs_per_frame": cnn,
        "rnn_dense_macs_per_frame": rnn_macs[0] / frames,
        "head_macs_per_frame": cfg.hidden_size,
        "rows": [
            {
                **r,
                "rnn_macs_per_frame": macs / frames,
                "total_macs_per_frame": cnn["total"] + macs / frames + cfg.hidden_size,
            }
            for r, macs in zip(rows, rnn_macs, strict=True)
        ],
        "timings_s": timings,
    }
    (results.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def summary_table(summary: dict) -> str:
    """Markdown: trivial baselines, and the whole network's MACs per frame for every model."""
    b = summary["baselines_rmse"]
    cnn = summary["cnn_macs_per_frame"]["total"]
    dense_total = summary["rows"][0]["total_macs_per_frame"]
    lines = [
        f"Test frames: {summary['test_frames']}. RMSE of trivial predictors: training mean "
        f"{b['train_mean']:.4f}, zero {b['zero']:.4f}, previous label {b['previous_label']:.4f} "
        "(the true angle one frame late: information the model does not get). "
        f"Dense CNN-GRU: {summary['dense_rmse']:.4f}.",
        "",
        f"CNN (dense in every row): {cnn:,} MACs per frame "
        + ", ".join(f"{k} {v:,}" for k, v in summary["cnn_macs_per_frame"].items() if k != "total")
        + f". Dense GRU: {summary['rnn_dense_macs_per_frame']:,.0f} MACs per frame; "
        f"head: {summary['head_macs_per_frame']} MACs per frame.",
        "",
        "| method | Θ | RMSE | RNN MACs/frame | RNN reduction | total MACs/frame "
        "| whole-network reduction |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        red = "inf" if r["mac_reduction"] is None else f"{r['mac_reduction']:.1f}x"
        if r["method"] == "dense":
            red = "1.0x (plain GRU)"
        lines.append(
            f"| {r['method']} | {r['theta_x']:g} | {r['value']:.4f} "
            f"| {r['rnn_macs_per_frame']:,.0f} | {red} | {r['total_macs_per_frame']:,.0f} "
            f"| {dense_total / r['total_macs_per_frame']:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder for weights and config (needed to train)")
    parser.add_argument("--results", required=True, help="results.json to append rows to")
    parser.add_argument("--config", help="JSON file with SteeringConfig fields")
    parser.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    parser.add_argument(
        "--render",
        nargs=2,
        metavar=("TABLE", "PLOT"),
        help="only write the tables (markdown, with summary.json beside --results) and the plot",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render:
        from .large_speech import render

        text = render(args.results, args.render[0], args.render[1], target=100.0)
        summary = json.loads((Path(args.results).parent / "summary.json").read_text())
        text += "\n### Whole network, per frame\n\n" + summary_table(summary)
        Path(args.render[0]).write_text(text)
        print(text)
        return 0
    if not args.out:
        parser.error("--out is required to run the experiment")
    fields = flat_config_fields(SteeringConfig, args.config, args.set)
    run_experiment(SteeringConfig(**fields), args.out, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
