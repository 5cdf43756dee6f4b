"""Steering from video with a CNN-GRU, the GRU run as a delta network: chosen on validation.

The paper's driving claim (Neil et al., ICML 2017, §4.4): the CNN features of consecutive
frames change slowly, so the RNN on them run as a delta network needs about 100x fewer
operations at a negligible loss. Here, on Udacity simulator frames:

* Labels: steering smoothed by a centred 0.5 s moving average over time stamps (keyboard
  steering is a train of taps; the average is the turn meant). Frames: sky and hood cropped,
  resized. Temporal split of each session: the first 70 % of its duration trains, the next
  10 % validates, the last 20 % tests.
* Model: CNN per frame -> LayerNorm (no affine: Θx is in units of a frame's feature spread) ->
  GRU (256 units) -> linear -> angle per frame.
* Stages: ``cnn`` trains CNN and GRU end to end on short frame windows; ``dense`` freezes the
  CNN and trains the GRU and head on long windows of its features (mirrored copies included);
  candidates start from ``dense``: ``converted`` at each Θ, ``delta`` and ``delta_l1``
  retrained at each Θ, and the ``control`` (the same extra epochs at Θ = 0).
* Selection on validation: the largest RNN MAC reduction whose validation RMSE is within 5 %
  (relative) of dense *and* whose loss is at most 10 % of the dense model's gain over the
  training-mean predictor (``selection.json``). Test, once: dense, control, selected and the
  naive equal-cost baseline (the dense GRU run every k-th frame, its output held; k = the
  selected configuration's MAC reduction, rounded down).
* Each test piece runs as one stream. RMSE and R² (against the training-mean predictor) per
  piece, with and without the crash episode (frames below ``crash_speed``); bootstrap CIs
  resample blocks of ``block_frames`` frames and seeds.

Run (from the repository root)::

    python experiments/steering/steering.py --config experiments/steering/config.json \\
        --out runs/steering-v2 --results experiments/steering/results.json
    python experiments/steering/steering.py --config experiments/steering/config.json \\
        --results experiments/steering/results.json \\
        --render experiments/steering/table.md experiments/steering/plot.png

Shape legend: N frames, L window length, B batch, C channels, H x W image, D CNN features,
K hidden units.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deltarnn import DeltaGRU
from deltarnn.errors import ConfigError
from deltarnn.train import (
    RMSE,
    Batch,
    Loss,
    ModelOutput,
    ReportSpec,
    Row,
    Schedule,
    append_rows,
    delta_l1_cost,
    read_rows,
    run_rnn,
)
from deltarnn.train.config import flat_config_fields
from deltarnn.train.protocol import (
    dense_weights,
    evaluated_row,
    pooled_rows,
    protocol_tables,
    run_stage,
    select_on_validation,
    summarise_test,
)
from deltarnn.train.results import plot, summarise
from deltarnn.train.stats import blocks

log = logging.getLogger("steering")

CLAIM = (
    "Neil et al. (ICML 2017): in a CNN-RNN steering a car from video, the RNN run as a delta "
    "network needs about 100x fewer operations with negligible loss of accuracy."
)
REPORT = ReportSpec(
    title="Steering (CNN-GRU)", target=100.0, budget=0.05, relative=True, select_on="val"
)
# The second budget: the loss may be at most this share of dense's gain over a constant.
GAIN_SHARE = 0.10


@dataclasses.dataclass
class SteeringConfig:
    """Every setting (saved beside the results as ``config.json``).

    Attributes:
        root: data root (default ``$DELTARNN_DATA``), holding ``udacity-sim/``.
        train_fraction, val_fraction: the temporal split of every session.
        smooth_s: centred moving-average window of the labels, seconds (0: raw labels).
        crop: (top, bottom) rows of the stored 80-row frames dropped (sky, hood).
        height, width: cropped frames are resized to this.
        features: D, CNN features (LayerNorm-ed, no affine).
        hidden_size: K, GRU units.
        seeds, select_seeds: every model's seeds; the seeds whose candidates are compared.
        cnn_seq_len, cnn_epochs, cnn_lr: end-to-end training of the CNN with the GRU.
        seq_len: window length of the GRU stages on frozen features (>= 64).
        batch_size: windows per step.
        dense_epochs, lr: the ``dense`` GRU stage on frozen features.
        retrain_epochs, retrain_lr, warmup_epochs: every retraining run and the control.
        thetas, retrain_thetas: Θx = Θh of the converted and of the retrained candidates.
        l1_x, l1_h: L1 weights of ``delta_l1``.
        crash_speed: test frames slower than this are the crash episode (the cruise speed of
            every training and validation frame but a few is 30).
        block_frames: block length of the bootstrap (frames).
        threads: torch intra-op threads.
    """

    root: str | None = None
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    smooth_s: float = 0.5
    crop: list[int] = dataclasses.field(default_factory=lambda: [28, 10])
    height: int = 36
    width: int = 96
    features: int = 64
    hidden_size: int = 256
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    select_seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    cnn_seq_len: int = 16
    cnn_epochs: int = 12
    cnn_lr: float = 2e-3
    seq_len: int = 96
    batch_size: int = 16
    dense_epochs: int = 30
    lr: float = 2e-3
    retrain_epochs: int = 15
    retrain_lr: float = 1e-3
    warmup_epochs: float = 3.0
    thetas: list[float] = dataclasses.field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7]
    )
    retrain_thetas: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.3, 0.5])
    l1_x: float = 0.0
    l1_h: float = 0.01
    crash_speed: float = 20.0
    block_frames: int = 50
    threads: int = 1

    def validate(self) -> SteeringConfig:
        for name in ("features", "hidden_size", "batch_size", "cnn_seq_len", "block_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 64:
            raise ConfigError(f"seq_len must be >= 64 (long windows), got {self.seq_len}")
        if not (0 < self.train_fraction and 0 < self.val_fraction) or (
            self.train_fraction + self.val_fraction >= 1
        ):
            raise ConfigError("need train_fraction, val_fraction > 0 with a test part left")
        if not self.select_seeds or not set(self.select_seeds) <= set(self.seeds):
            raise ConfigError(f"select_seeds must be some of seeds {self.seeds}")
        if any(not (math.isfinite(t) and t > 0) for t in self.thetas + self.retrain_thetas):
            raise ConfigError("thetas and retrain_thetas must be finite and > 0")
        return self

    def stage(self, seed: int, name: str, **extra: Any) -> dict[str, Any]:
        keys = ("train_fraction", "val_fraction", "smooth_s", "crop", "height", "width")
        keys += ("features", "hidden_size", "cnn_seq_len", "cnn_epochs", "cnn_lr")
        if name != "cnn":
            keys += ("seq_len", "batch_size", "dense_epochs", "lr")
        if name not in ("cnn", "dense"):
            keys += ("retrain_epochs", "retrain_lr", "warmup_epochs")
        d = {k: getattr(self, k) for k in keys}
        return {"experiment": "steering", "seed": seed, "stage": name, **d, **extra}


# -- model ------------------------------------------------------------------------------------


class FrameCNN(nn.Module):
    """(N, 3, H, W) frames in [0, 1] -> (N, D) features, LayerNorm-ed per frame (no affine).

    Three strided convolutions (5x5/2, 3x3/2, 3x3/2) with ReLU, then a linear layer. The norm
    gives every frame's features zero mean and unit spread, so Θx means the same for all.
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
        self.norm = nn.LayerNorm(features, elementwise_affine=False)
        self.input_shape = (3, height, width)

    def forward(self, frames: Tensor) -> Tensor:
        # Centre the pixels so the first layer's biases start near a useful operating point.
        return self.norm(self.fc(self.convs(frames - 0.5).flatten(1)))


class SteeringModel(nn.Module):
    """Frames -> :class:`FrameCNN` -> one-layer delta GRU -> linear -> angle per frame.

    :meth:`run` takes frames (L, B, 3, H, W) or CNN features (L, B, D) and returns (L, B)
    angles as a :class:`~deltarnn.train.ModelOutput`.
    """

    def __init__(self, cfg: SteeringConfig, theta: float = 0.0) -> None:
        super().__init__()
        self.cnn = FrameCNN(cfg.height, cfg.width, cfg.features)
        self.rnn = DeltaGRU(cfg.features, cfg.hidden_size, 1, theta_x=theta, theta_h=theta)
        self.head = nn.Linear(cfg.hidden_size, 1)

    def features(self, frames: Tensor) -> Tensor:
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

    Conv2d: C_out * H_out * W_out * (C_in / groups) * k_h * k_w; Linear: in * out.
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


@dataclasses.dataclass
class Piece:
    """One session's part of a split: frames (N, 3, H, W) uint8, angles (N,), speed (N,)."""

    name: str
    frames: Tensor
    angles: Tensor
    speed: np.ndarray


def load_pieces(cfg: SteeringConfig) -> dict[str, list[Piece]]:
    from deltarnn.data import load_frames, load_sessions, smooth_steering, temporal_split

    sessions = load_sessions(cfg.root)
    if cfg.smooth_s:
        sessions = [smooth_steering(s, cfg.smooth_s) for s in sessions]
    parts = temporal_split(sessions, cfg.train_fraction, cfg.val_fraction)
    size, crop = (cfg.height, cfg.width), tuple(cfg.crop)
    return {
        part: [
            Piece(
                s.name,
                load_frames(s, size, crop=crop),
                torch.from_numpy(s.steering.copy()),
                s.speed.copy(),
            )
            for s in getattr(parts, part)
            if len(s) > 1
        ]
        for part in ("train", "val", "test")
    }


class _Shuffled(Sequence):
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


def frame_windows(pieces: list[Piece], length: int, seed: int, batch_size: int):
    """``batches(epoch)``: frame windows (L, B, 3, H, W) every ``length // 2`` frames, each
    mirrored (angle negated) with probability 1/2."""
    starts = [
        (k, s)
        for k, p in enumerate(pieces)
        for s in range(0, len(p.angles) - length + 1, max(1, length // 2))
    ]

    def batches(epoch: int) -> _Shuffled:
        def make(indices: list[int], i: int) -> Batch:
            frames = (
                torch.stack(
                    [pieces[k].frames[s : s + length] for k, s in (starts[j] for j in indices)], 1
                )
                .float()
                .div_(255.0)
            )
            target = torch.stack(
                [pieces[k].angles[s : s + length] for k, s in (starts[j] for j in indices)], 1
            ).clone()
            g = torch.Generator().manual_seed(seed * 7919 + epoch * 1009 + i)
            flip = torch.rand(frames.shape[1], generator=g) < 0.5
            frames[:, flip] = frames[:, flip].flip(-1)
            target[:, flip] = -target[:, flip]
            lengths = torch.full((len(indices),), length, dtype=torch.int64)
            return Batch(frames, lengths, target)

        return _Shuffled(len(starts), batch_size, seed * 7919 + epoch, make)

    return batches


@torch.no_grad()
def frozen_features(model: SteeringModel, pieces: list[Piece], flip: bool = False):
    """CNN features of whole pieces: [(features (N, D), angles (N,))], mirrored with ``flip``."""
    model.eval()
    out = []
    for p in pieces:
        feats = []
        for start in range(0, len(p.frames), 256):
            x = p.frames[start : start + 256].float().div_(255.0)
            feats.append(model.cnn(x.flip(-1) if flip else x))
        out.append((torch.cat(feats), -p.angles if flip else p.angles))
    return out


def feature_windows(pieces, length: int, seed: int, batch_size: int):
    """``batches(epoch)``: windows of frozen features (L, B, D) every ``length // 4`` frames."""
    xs, ys = [], []
    for feats, y in pieces:
        for start in range(0, len(feats) - length + 1, max(1, length // 4)):
            xs.append(feats[start : start + length])
            ys.append(y[start : start + length])
    if not xs:
        raise ConfigError(f"no training piece has {length} frames: lower seq_len")
    x, y = torch.stack(xs, 1), torch.stack(ys, 1)

    def batches(epoch: int) -> _Shuffled:
        def make(indices: list[int], i: int) -> Batch:
            lengths = torch.full((len(indices),), length, dtype=torch.int64)
            return Batch(x[:, indices], lengths, y[:, indices])

        return _Shuffled(x.shape[1], batch_size, seed * 7919 + 1000 + epoch, make)

    return batches


def stream_batches(features) -> list[Batch]:
    """Each piece as one stream: features (N, 1, D), angles (N, 1)."""
    return [
        Batch(f[:, None], torch.tensor([len(f)], dtype=torch.int64), y[:, None])
        for f, y in features
    ]


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


# -- stages -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Prepared:
    """The dense model of one seed and its frozen features."""

    model: SteeringModel
    train_windows: Any
    val: list[Batch]
    test: list[Batch]


def prepare(cfg: SteeringConfig, out: Path, data, seed: int, force: bool) -> Prepared:
    torch.manual_seed(seed)
    model = SteeringModel(cfg)
    run_stage(
        out / f"seed{seed}" / "cnn",
        cfg.stage(seed, "cnn"),
        model,
        frame_windows(data["train"], cfg.cnn_seq_len, seed, cfg.batch_size),
        mse_loss(),
        Schedule(epochs=cfg.cnn_epochs, lr=cfg.cnn_lr, lr_floor=0.05, seed=seed),
        force=force,
    )
    train = frozen_features(model, data["train"]) + frozen_features(model, data["train"], True)
    windows = feature_windows(train, cfg.seq_len, seed, cfg.batch_size)
    fit_gru(cfg, out, seed, "dense", model, windows, cfg.dense_epochs, cfg.lr, force=force)
    val = stream_batches(frozen_features(model, data["val"]))
    test = stream_batches(frozen_features(model, data["test"]))
    return Prepared(model, windows, val, test)


def fit_gru(
    cfg: SteeringConfig,
    out: Path,
    seed: int,
    name: str,
    model: SteeringModel,
    windows,
    epochs: int,
    lr: float,
    l1: tuple[float, float] | None = None,
    warmup: float = 0.0,
    force: bool = False,
) -> SteeringModel:
    """A GRU stage on frozen features (the CNN's weights are not trained)."""
    torch.manual_seed(seed)
    return run_stage(
        out / f"seed{seed}" / name,
        cfg.stage(seed, name, epochs=epochs, l1=l1),
        model,
        windows,
        mse_loss(l1),
        Schedule(epochs=epochs, lr=lr, lr_floor=0.05, theta_warmup_epochs=warmup, seed=seed),
        params=[*model.rnn.parameters(), *model.head.parameters()],
        force=force,
    )


def retrained(cfg, out, seed, prep: Prepared, method: str, theta: float, force: bool):
    model = SteeringModel(cfg, theta)
    model.load_state_dict(dense_weights(prep.model), strict=False)
    kw = dict(epochs=cfg.retrain_epochs, lr=cfg.retrain_lr, force=force)
    if method == "control":
        return fit_gru(cfg, out, seed, "control", model, prep.train_windows, **kw)
    l1 = (cfg.l1_x, cfg.l1_h) if method == "delta_l1" else None
    name = f"{method}-{theta:g}"
    return fit_gru(
        cfg, out, seed, name, model, prep.train_windows, l1=l1, warmup=cfg.warmup_epochs, **kw
    )


# -- rows, the equal-cost baseline ----------------------------------------------------------------


def row(cfg, split, method, theta, seed, model, batches, dense_value, items) -> Row:
    metric = RMSE()
    r = evaluated_row(
        model,
        batches,
        metric,
        dense_value=dense_value,
        task="steering",
        split=split,
        method=method,
        theta_x=theta,
        theta_h=theta,
        seed=seed,
    )
    if items:
        r.extra.update(stream_outcomes(cfg, metric.per_item))
    return r


def stream_outcomes(cfg: SteeringConfig, per_stream: list[list[float]]) -> dict:
    """Squared errors summed over blocks of every stream (the bootstrap's items), and every
    stream's per-frame squared errors (for the per-piece scores with and without the crash)."""
    num, den = [], []
    for se in per_stream:
        s, d = blocks(np.asarray([se]), cfg.block_frames)
        num += s[0].tolist()
        den += d.tolist()
    frame_se = [[round(float(v), 7) for v in se] for se in per_stream]  # keeps the file small
    return {"item_num": num, "item_den": den, "frame_se": frame_se}


@torch.no_grad()
def held_output_row(cfg, seed, prep: Prepared, k: int, dense_value: float) -> Row:
    """The naive equal-cost baseline: the dense GRU sees every k-th frame (state carried over
    those frames only) and its output is held for the k frames; RNN MACs are 1/k of dense."""
    model = prep.model
    model.rnn.set_thresholds(0.0, 0.0)
    per_stream = []
    for batch in prep.test:
        x = batch.x[::k]
        y = model.run(x).y  # (ceil(N / k), 1)
        held = y.repeat_interleave(k, dim=0)[: batch.x.shape[0]]
        per_stream.append(((held - batch.target) ** 2)[:, 0].tolist())
    frames = sum(len(s) for s in per_stream)
    rmse = math.sqrt(sum(map(sum, per_stream)) / frames)
    r = Row(
        task="steering",
        split="test",
        method=f"held_k{k}",
        theta_x=0.0,
        theta_h=0.0,
        seed=seed,
        metric="rmse",
        value=rmse,
        dense_value=dense_value,
        mac_reduction=float(k),
        byte_reduction=float(k),
        occupancy_x=1 / k,
        occupancy_h=1 / k,
        ops_reduction=float(k),
    )
    r.extra.update(stream_outcomes(cfg, per_stream))
    return r


# -- the experiment ---------------------------------------------------------------------------


def candidates(cfg, out, seed, prep: Prepared, force) -> list[Row]:
    model = prep.model
    d = row(cfg, "val", "dense", 0.0, seed, model, prep.val, None, False)
    rows = [d]
    for t in cfg.thetas:
        model.rnn.set_thresholds(t, t)
        rows.append(row(cfg, "val", "converted", t, seed, model, prep.val, d.value, False))
    model.rnn.set_thresholds(0.0, 0.0)
    runs = [("control", 0.0)] + [(m, t) for m in ("delta", "delta_l1") for t in cfg.retrain_thetas]
    for m, t in runs:
        r = retrained(cfg, out, seed, prep, m, t, force)
        rows.append(row(cfg, "val", m, t, seed, r, prep.val, d.value, False))
    return rows


def validation_budget(rows: list[Row], constant_val_rmse: float) -> float:
    """The relative budget on validation: the smaller of 5 % and 10 % of dense's gain over the
    constant predictor, relative to dense (both as fractions of the dense RMSE)."""
    dense = [r.value for r in rows if r.method == "dense" and r.split == "val"]
    d = float(np.mean(dense))
    # A dense model no better than the constant leaves no budget at all.
    return max(0.0, min(REPORT.budget, GAIN_SHARE * (constant_val_rmse - d) / d))


def constant_rmse(train: list[Piece], pieces: list[Piece], crash_speed: float | None = None):
    """RMSE of predicting the training mean angle (optionally only frames at cruise speed)."""
    mean = float(torch.cat([p.angles for p in train]).mean())
    se, n = 0.0, 0
    for p in pieces:
        keep = np.ones(len(p.angles), bool) if crash_speed is None else p.speed >= crash_speed
        err = (p.angles.numpy()[keep] - mean) ** 2
        se, n = se + float(err.sum()), n + int(keep.sum())
    return math.sqrt(se / max(1, n)), mean


def run_experiment(cfg: SteeringConfig, out_dir: str, results: str, *, force: bool = False) -> None:
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results_path = Path(out_dir), Path(results)
    here = results_path.parent
    here.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "root"}
    (here / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    data = load_pieces(cfg)
    prepared = {}
    for seed in cfg.select_seeds:
        prepared[seed] = prepare(cfg, out, data, seed, force)
        append_rows(results_path, candidates(cfg, out, seed, prepared[seed], force))
    rows = [r for r in read_rows(results_path) if r.method != "control"]
    const_val, _ = constant_rmse(data["train"], data["val"])
    budget = validation_budget(rows, const_val)
    best = select_on_validation(rows, dataclasses.replace(REPORT, budget=budget))
    if best is None:
        raise ConfigError("no candidate is within the budget on validation")
    selection = {
        "method": best.method,
        "theta_x": best.theta_x,
        "theta_h": best.theta_h,
        "chosen_on": "validation",
        "rule": "largest mean RNN MAC reduction whose mean validation RMSE loss against dense "
        "is within min(5 %, 10 % of dense's gain over the training-mean predictor), over seeds "
        f"{cfg.select_seeds}; the control is not eligible",
        "val_budget_relative": budget,
        "val_constant_rmse": const_val,
        "val_loss_relative": best.loss,
        "val_mac_reduction": best.reductions["mac_reduction"],
        "val_replicates": best.seeds,
    }
    (here / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")
    log.info("selected on validation: %s", selection)
    k = max(1, int(best.reductions["mac_reduction"]))
    for seed in cfg.seeds:
        prep = prepared.get(seed) or prepare(cfg, out, data, seed, force)
        model = prep.model
        model.rnn.set_thresholds(0.0, 0.0)
        d = row(cfg, "test", "dense", 0.0, seed, model, prep.test, None, True)
        new = [d]
        for m, t in dict.fromkeys([("control", 0.0), (best.method, best.theta_x)]):
            if m == "converted":
                model.rnn.set_thresholds(t, t)
                chosen = model
            else:
                chosen = retrained(cfg, out, seed, prep, m, t, force)
            new.append(row(cfg, "test", m, t, seed, chosen, prep.test, d.value, True))
        model.rnn.set_thresholds(0.0, 0.0)
        new.append(held_output_row(cfg, seed, prep, k, d.value))
        append_rows(results_path, new)
    write_summary(cfg, results_path, data)


def piece_scores(cfg, rows: list[Row], data, method: str, theta: float) -> list[dict]:
    """RMSE and R² (against the training mean) per test piece, with and without the crash."""
    mean = float(torch.cat([p.angles for p in data["train"]]).mean())
    out = []
    for k, p in enumerate(data["test"]):
        y = p.angles.numpy()
        cruise = p.speed >= cfg.crash_speed
        entry = {"piece": p.name, "frames": len(y), "crash_frames": int((~cruise).sum())}
        for name, keep in (("all", np.ones(len(y), bool)), ("without_crash", cruise)):
            const = float(((y[keep] - mean) ** 2).mean())
            per_seed = []
            for r in rows:
                if r.method == method and r.theta_x == theta and r.split == "test":
                    se = np.asarray(r.extra["frame_se"][k])[keep]
                    per_seed.append((math.sqrt(se.mean()), 1 - se.mean() / const))
            entry[name] = {
                "rmse": float(np.mean([a for a, _ in per_seed])),
                "r2": float(np.mean([b for _, b in per_seed])),
                "constant_rmse": math.sqrt(const),
                "seeds": len(per_seed),
            }
        out.append(entry)
    return out


def write_summary(cfg: SteeringConfig, results: Path, data=None) -> dict:
    data = data or load_pieces(cfg)
    rows = read_rows(results)
    selection = json.loads((results.parent / "selection.json").read_text())
    sel = (selection["method"], selection["theta_x"], selection["theta_h"])
    held = sorted({r.method for r in rows if r.method.startswith("held_k")})
    others = [("control", 0.0, 0.0)] + [(h, 0.0, 0.0) for h in held]
    s = summarise_test(rows, REPORT, sel, others=others, transform="sqrt")
    const_test, mean = constant_rmse(data["train"], data["test"])
    dense_rmse = s["dense"]["metric"]["mean"]
    chosen = s["selected"]
    gain = const_test - dense_rmse
    loss_abs = chosen["metric"]["mean"] - dense_rmse
    model = SteeringModel(cfg)
    cnn = cnn_macs(model.cnn)
    rnn_dense = 3 * cfg.hidden_size * (cfg.features + cfg.hidden_size)
    summary = {
        "claim": CLAIM,
        "target": ">= 100x fewer RNN MACs than dense within 5 % (relative) RMSE, and the loss "
        "at most 10 % of the dense model's gain over predicting the training mean",
        "budget": {"loss": REPORT.budget, "unit": "relative to the dense RMSE", "gain_share": 0.1},
        "metric": f"RMSE of the steering angle ({cfg.smooth_s} s centred moving average), every "
        "test frame, each test piece one stream",
        "headline_reduction": "mac_reduction (RNN only)",
        "dense_test": s["dense"]["metric"],
        "selected": selection,
        "test": {k: chosen[k] for k in ("metric", "loss_vs_dense", "mac_reduction")}
        | {"ops_reduction": chosen["ops_reduction"], "byte_reduction": chosen["byte_reduction"]},
        "gain_over_constant": {
            "constant_rmse": const_test,
            "training_mean": mean,
            "dense_gain": gain,
            "selected_loss": loss_abs,
            "loss_share_of_gain": loss_abs / gain if gain > 0 else None,
        },
        "control": s["control"],
        "equal_cost_baseline": {h: s[h] for h in held},
        "per_piece": {
            "dense": piece_scores(cfg, rows, data, "dense", 0.0),
            "selected": piece_scores(cfg, rows, data, sel[0], sel[1]),
        },
        "cnn_macs_per_frame": cnn,
        "rnn_dense_macs_per_frame": rnn_dense,
        "met": bool(s["met"] and gain > 0 and loss_abs <= GAIN_SHARE * gain),
        "command": "python experiments/steering/steering.py --config "
        "experiments/steering/config.json --out runs/steering-v2 "
        "--results experiments/steering/results.json",
    }
    (results.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def render_tables(cfg: SteeringConfig, results: str, table: str, plot_path: str) -> str:
    rows = read_rows(results)
    pooled = pooled_rows(rows)
    text = [
        "Mean ± sample SD over seeds; split `val`: the validation slice of each session, every "
        "candidate; split `test`: dense, control, the selected configuration and the "
        "equal-cost held-output baseline only. Reductions are of the RNN's MACs (the CNN is "
        "dense in every row). CIs and per-piece RMSE / R²: `summary.json`.",
        "",
        protocol_tables(pooled, REPORT),
    ]
    out = "\n".join(text)
    Path(table).write_text(out)
    val = [r for r in pooled if r.split == "val"]
    spec = dataclasses.replace(REPORT, title="Steering, validation")
    plot(summarise(val, spec), spec, [plot_path])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for the stages' run folders (needed to train)")
    p.add_argument("--results", required=True)
    p.add_argument("--config", help="JSON file with SteeringConfig fields")
    p.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--render", nargs=2, metavar=("TABLE", "PLOT"))
    p.add_argument("--summary", action="store_true", help="only rewrite summary.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = SteeringConfig(**flat_config_fields(SteeringConfig, args.config, args.set))
    if args.render:
        print(render_tables(cfg, args.results, *args.render))
    elif args.summary:
        print(json.dumps(write_summary(cfg, Path(args.results)), indent=1))
    elif not args.out:
        p.error("--out is required to run the experiment")
    else:
        run_experiment(cfg, args.out, args.results, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
