"""Steering angle from video: a small CNN per frame, a GRU over the frames, run as a delta network.

The paper's driving result (Neil et al., ICML 2017, §4.4): in a CNN-RNN that steers a car from
video, the CNN features change slowly from frame to frame, so the RNN run as a delta network on
them needs about 100x fewer operations. Here, on Udacity simulator frames with a temporal split:

1. ``dense``: CNN + GRU trained end to end on windows of frames (mean squared error).
2. ``converted``: the dense model with Θx on the CNN features and Θh on the hidden state.
3. ``delta``: the CNN frozen, its features computed once; the GRU and head retrained as a delta
   network at each Θ (Θ ramped up from 0).
4. ``delta_l1``: as ``delta`` plus an L1 cost on Δx and Δh.

Every training stage runs on :func:`deltarnn.train.fit` in a resumable run folder under
``--out``. The CNN is dense in every variant: its MACs per frame are counted from the layer
shapes (:func:`cnn_macs`), so the whole network's cost per frame is reported beside the RNN's.
Test sequences are whole test pieces of each session, run as one stream each (a car does not
restart its RNN every few frames).

Run (from the repository root)::

    python experiments/steering/steering.py --config experiments/steering/config.json \\
        --out runs/steering --results experiments/steering/results.json
    python experiments/steering/steering.py --results experiments/steering/results.json \\
        --render experiments/steering/table.md experiments/steering/plot.png

Shape legend: N frames, L window length, B batch, C channels, H x W image, D CNN features,
K hidden units.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deltarnn import DeltaGRU
from deltarnn.cli.experiment import experiment_main
from deltarnn.errors import ConfigError
from deltarnn.train import (
    RMSE,
    Batch,
    Hooks,
    Loss,
    ModelOutput,
    ReportSpec,
    Row,
    RunFolder,
    Schedule,
    append_rows,
    delta_l1_cost,
    evaluate,
    fit_run,
    render,
    run_rnn,
)

log = logging.getLogger("steering")

REPORT = ReportSpec(title="Steering (CNN-GRU)", target=100.0, budget=0.05, relative=True)


@dataclasses.dataclass
class SteeringConfig:
    """The steering experiment.

    Attributes:
        root: data root (default ``$DELTARNN_DATA``), holding ``udacity-sim/``.
        train_fraction: share of each session's duration that trains (the rest tests).
        val_fraction: share, after the training part, that validates (0: no validation split).
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
        warmup_fraction: share of the retraining epochs over which Θ ramps up.
        seed, threads: as usual.
    """

    root: str | None = None
    train_fraction: float = 0.8
    val_fraction: float = 0.0
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
        for name in ("seq_len", "feature_seq_len", "features", "hidden_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.height < 16 or self.width < 16:
            raise ConfigError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if not 0 <= self.val_fraction < 1 - self.train_fraction:
            raise ConfigError(
                f"val_fraction must be in [0, 1 - train_fraction), got {self.val_fraction}"
            )
        for name in ("l1_x", "l1_h", "warmup_fraction"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}")
        for name in ("thetas", "retrain_thetas"):
            if any(not (math.isfinite(t) and t > 0) for t in getattr(self, name)):
                raise ConfigError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        return self

    def stage_config(self, stage: str) -> dict[str, Any]:
        """What a stage's run folder is tied to (evaluation-only fields left out)."""
        d = dataclasses.asdict(self)
        for name in ("thetas", "retrain_thetas", "threads"):
            d.pop(name)
        return {"experiment": "steering", "stage": stage, **d}


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

    :meth:`run` takes frames (L, B, 3, H, W) or already computed CNN features (L, B, D) and
    returns (L, B) angles (a :class:`~deltarnn.train.ModelOutput`).
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

    def run(self, x: Tensor, lengths: Tensor | None = None, count: bool = False) -> ModelOutput:
        feats = self.features(x) if x.dim() == 5 else x
        out, counts = run_rnn(self.rnn, feats, count=count)
        return ModelOutput(self.head(out).squeeze(-1), counts, out.new_zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x).y


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
    """Training windows, and the whole pieces of each split as (frames uint8, angles)."""
    from deltarnn.data import SteeringDataset, load_frames, load_sessions, temporal_split

    parts = temporal_split(load_sessions(cfg.root), cfg.train_fraction, cfg.val_fraction)
    size = (cfg.height, cfg.width)

    def pieces(sessions):
        return [
            (load_frames(s, size), torch.from_numpy(s.steering.copy()))
            for s in sessions
            if len(s) > 1
        ]

    return {
        "train": SteeringDataset(parts.train, cfg.seq_len, cfg.seq_len // 2, size),
        "train_pieces": pieces(parts.train),
        "val": pieces(parts.val),
        "test": pieces(parts.test),
    }


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


class _ShuffledBatches(Sequence):
    """One epoch of batches over ``n`` items in a seeded order, made by ``make(indices, i)``."""

    def __init__(self, n: int, batch_size: int, seed: int, make) -> None:
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g).tolist()
        self.plan = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        self.make = make

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        return self.make(self.plan[i], i)


def window_batches(ds, cfg: SteeringConfig):
    """Frame windows (L, B, 3, H, W) per epoch, each mirrored (angle negated) with p = 0.5."""

    def batches(epoch: int) -> _ShuffledBatches:
        def make(indices: list[int], i: int) -> Batch:
            items = [ds[j] for j in indices]
            frames = torch.stack([f for f, _ in items], 1)
            target = torch.stack([y for _, y in items], 1)
            if cfg.flip:
                g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 1009 + i)
                flip = torch.rand(frames.shape[1], generator=g) < 0.5
                frames[:, flip] = frames[:, flip].flip(-1)
                target[:, flip] = -target[:, flip]
            lengths = torch.full((len(indices),), frames.shape[0], dtype=torch.int64)
            return Batch(frames, lengths, target)

        return _ShuffledBatches(len(ds), cfg.batch_size, cfg.seed * 7919 + epoch, make)

    return batches


def feature_batches(feats: Tensor, target: Tensor, cfg: SteeringConfig):
    """Windows of frozen features (L, B, D) per epoch, in a seeded order."""

    def batches(epoch: int) -> _ShuffledBatches:
        def make(indices: list[int], i: int) -> Batch:
            lengths = torch.full((len(indices),), feats.shape[0], dtype=torch.int64)
            return Batch(feats[:, indices], lengths, target[:, indices])

        return _ShuffledBatches(
            feats.shape[1], cfg.batch_size, cfg.seed * 7919 + 1000 + epoch, make
        )

    return batches


def mse_loss(l1: tuple[float, float] | None = None):
    """Mean squared error per frame (plus the L1 cost on the deltas per frame with ``l1``)."""

    def loss_fn(model: SteeringModel, batch: Batch) -> Loss:
        out = model.run(batch.x, batch.lengths, count=l1 is not None)
        se = nn.functional.mse_loss(out.y, batch.target, reduction="sum")
        loss = se / batch.frames
        if l1 is not None:
            loss = loss + delta_l1_cost(out.counts, batch.lengths, *l1, frames=batch.frames)
        return Loss(loss, float(se.detach()), batch.frames)

    return loss_fn


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


def stream_batches(pieces) -> list[Batch]:
    """Each piece as one stream: features (N, 1, D), angles (N, 1)."""
    return [
        Batch(f[:, None], torch.tensor([len(f)], dtype=torch.int64), y[:, None]) for f, y in pieces
    ]


# -- the experiment ---------------------------------------------------------------------------


def run_experiment(
    cfg: SteeringConfig, out_dir: str | Path, results: str | Path, force: bool = False
) -> dict:
    """The whole experiment; each stage a resumable run folder in ``out_dir``. Writes rows to
    ``results`` and ``summary.json`` (baselines, CNN and RNN MACs per frame) beside it."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results = Path(out_dir), Path(results)
    data = load_data(cfg)
    log.info(
        "steering: %d training windows, %d test frames",
        len(data["train"]),
        sum(len(y) for _, y in data["test"]),
    )
    torch.manual_seed(cfg.seed)
    model = SteeringModel(cfg)
    dense_schedule = Schedule(epochs=cfg.dense_epochs, lr=cfg.lr, lr_floor=0.05, seed=cfg.seed)
    fit_run(
        model,
        window_batches(data["train"], cfg),
        mse_loss(),
        schedule=dense_schedule,
        folder=RunFolder(out / "dense", cfg.stage_config("dense")),
        force=force,
    )
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    test = stream_batches(frozen_features(model, data["test"]))
    val = stream_batches(frozen_features(model, data["val"])) if data["val"] else None
    hooks = Hooks() if val is None else Hooks(validate=lambda m: evaluate(m, val, RMSE()).summary())
    rows: list[Row] = []
    rnn_macs: list[float] = []

    def record(method: str, theta: float) -> Row:
        model.rnn.set_thresholds(theta, theta)
        result = evaluate(model, test, RMSE())
        val_value = None if val is None else evaluate(model, val, RMSE()).value
        dense = rows[0] if rows else None
        rows.append(
            Row.from_cost(
                result.cost.to_dict(),
                task="steering",
                split="temporal",
                method=method,
                theta_x=theta,
                theta_h=theta,
                seed=cfg.seed,
                metric="rmse",
                value=result.value,
                dense_value=result.value if dense is None else dense.value,
                val_value=val_value,
                dense_val_value=val_value if dense is None else dense.val_value,
            )
        )
        # The dense model runs as a plain GRU: every product in full, nothing skipped.
        total = result.cost.to_dict()["total"]
        rnn_macs.append(total["dense_macs"] if dense is None else total["delta_macs"])
        return rows[-1]

    record("dense", 0.0)
    for t in cfg.thetas:
        record("converted", t)
    append_rows(results, rows)
    train_feats = frozen_features(model, data["train_pieces"])
    if cfg.flip:
        train_feats += frozen_features(model, data["train_pieces"], flip=True)
    feats, target = feature_windows(train_feats, cfg.feature_seq_len)
    params = [*model.rnn.parameters(), *model.head.parameters()]
    for method, l1 in (("delta", None), ("delta_l1", (cfg.l1_x, cfg.l1_h))):
        new = []
        for theta in cfg.retrain_thetas:
            model.load_state_dict(dense_state)
            model.rnn.set_thresholds(theta, theta)
            schedule = Schedule(
                epochs=cfg.retrain_epochs,
                lr=cfg.retrain_lr,
                lr_floor=0.05,
                theta_warmup_epochs=cfg.warmup_fraction * cfg.retrain_epochs,
                seed=cfg.seed,
            )
            stage = f"{method}-theta{theta:g}"
            fit_run(
                model,
                feature_batches(feats, target, cfg),
                mse_loss(l1),
                schedule=schedule,
                folder=RunFolder(out / stage, {**cfg.stage_config(stage), "theta": theta}),
                hooks=hooks,
                params=params,
                force=force,
            )
            new.append(record(method, theta))
        append_rows(results, new)
    frames = sum(len(y) for _, y in data["test"])
    cnn = cnn_macs(model.cnn)
    summary = {
        "baselines_rmse": baselines(data),
        "dense_rmse": rows[0].value,
        "test_frames": frames,
        "cnn_macs_per_frame": cnn,
        "rnn_dense_macs_per_frame": rnn_macs[0] / frames,
        "head_macs_per_frame": cfg.hidden_size,
        "rows": [
            {
                **r.to_dict(),
                "rnn_macs_per_frame": macs / frames,
                "total_macs_per_frame": cnn["total"] + macs / frames + cfg.hidden_size,
            }
            for r, macs in zip(rows, rnn_macs, strict=True)
        ],
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


def render_tables(results: str, table: str, plot: str) -> str:
    """The generic table and plot of ``results``, plus the whole network's cost per frame (from
    ``summary.json`` beside ``results``)."""
    text = render(results, REPORT, None, [plot])
    summary = json.loads((Path(results).parent / "summary.json").read_text())
    text += "\n### Whole network, per frame\n\n" + summary_table(summary)
    Path(table).write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    return experiment_main(argv, __doc__, SteeringConfig, run_experiment, render_tables)


if __name__ == "__main__":
    raise SystemExit(main())
