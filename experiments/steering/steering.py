"""Steering from video with a CNN-GRU, the GRU run as a delta network: chosen on validation.

The paper's driving claim (Neil et al., ICML 2017, §4.4): the CNN features of consecutive
frames change slowly, so the RNN on them run as a delta network needs about 100x fewer
operations at a negligible loss. Here, on Udacity simulator frames:

* Labels: the steering angle smoothed by a centred 0.5 s moving average over the time stamps
  (keyboard steering is a train of taps; the average is the turn meant). Frames: sky and hood
  cropped, resized. Temporal split of each session: the first 70 % of its duration trains (less
  its last ``gap_frames`` frames, so no training window touches validation), the next 10 %
  validates, the last 20 % tests.
* Model: CNN per frame -> LayerNorm (no affine: Θx is in units of a frame's feature spread) ->
  GRU (256 units) -> linear -> angle per frame.
* ``dense``: CNN and GRU trained end to end on windows of ``seq_len`` (>= 64) frames, mirrored
  windows as augmentation; the epoch with the best validation RMSE is kept.
* The CNN is then frozen and its features computed once per seed; every candidate runs on
  them: ``converted`` (the dense model at each (Θx, Θh) of a grid), ``delta`` (GRU and head
  retrained with the thresholds), ``delta_l1`` / ``delta_l1_strong`` (the same plus an L1 cost
  on |Δh| of two weights), ``learnable`` (per-feature Θ learned under an occupancy cost) and
  the ``control`` (the dense model trained for the same extra epochs at Θ = 0).
* Selection on validation only (``selection.json``, written before any test number exists):
  the largest mean RNN MAC reduction whose mean validation RMSE is within 5 % (relative) of
  dense *and* whose loss is at most 10 % of the dense model's gain over predicting the
  training mean.
* The claim's operating point, also chosen on validation only: of the candidates whose mean
  validation RNN MAC reduction reaches 100x, the one with the smallest mean validation loss
  (``at_target`` in ``selection.json``); its test numbers say what 100x costs, whether or not
  it is within the budget.
* Test, once per seed: dense, control, the selected configuration, the one at the target, the
  learnable run, and the naive equal-cost baseline beside each delta row (the dense GRU run every k-th frame, its
  output held, k = that row's RNN MAC reduction). Each test piece runs as one stream.
  ``summary.json``: means, sample SDs and block-bootstrap CIs (blocks of ``block_frames``
  frames, resampled with the seeds); ``details.json``: per-piece RMSE and R², with and without
  the crash episode, the constant predictors, the controls and the whole network's costs.

Run (from the repository root; every stage is a resumable run folder under ``--out``)::

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deltarnn.cli.experiment import experiment_main
from deltarnn.errors import ConfigError
from deltarnn.train import (
    RMSE,
    Batch,
    Hooks,
    Loss,
    MethodConfig,
    ModelConfig,
    ModelOutput,
    ReportSpec,
    Row,
    Schedule,
    SequenceModel,
    append_rows,
    delta_l1_cost,
    evaluate,
    read_rows,
)
from deltarnn.train.protocol import (
    dense_weights,
    evaluated_row,
    learned_theta_extra,
    pooled_rows,
    protocol_tables,
    run_stage,
    select_on_validation,
    summarise_test,
)
from deltarnn.train.results import plot, summarise
from deltarnn.train.stats import Outcomes, blocks, bootstrap, mean_sd

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
RETRAINED = ("delta", "delta_l1", "delta_l1_strong")
COMMAND = (
    "python experiments/steering/steering.py --config experiments/steering/config.json "
    "--out runs/steering --results experiments/steering/results.json"
)


@dataclasses.dataclass
class SteeringConfig:
    """Every setting of the experiment (saved beside the results as ``config.json``).

    Attributes:
        root: data root (default ``$DELTARNN_DATA``), holding ``udacity-sim/``.
        train_fraction, val_fraction: the temporal split of every session (the rest tests).
        gap_frames: frames dropped from the end of every training piece (>= ``seq_len``: no
            training window reaches the validation slice).
        smooth_s: centred moving-average window of the labels, seconds (0: raw labels).
        crop: (top, bottom) rows of the stored 80-row frames dropped (sky, hood).
        height, width: cropped frames are resized to this.
        features: D, CNN features (LayerNorm-ed, no affine).
        hidden_size: K, GRU units (one layer).
        seeds: every model's seeds (initialisation and data order).
        seq_len, stride: training windows (frames) and the step between their starts.
        batch_size: windows per step.
        dense_epochs, lr, weight_decay: the end-to-end dense stage (Adam, cosine to 5 %); the
            epoch with the best validation RMSE is kept.
        feature_dropout, brightness: its regularisation: dropout on the CNN features, and a
            random brightness factor in [1 - b, 1 + b] per training window.
        retrain_epochs, retrain_lr, warmup_epochs: every GRU retraining run and the control
            (the best validation epoch is kept; Θ ramps up over ``warmup_epochs``).
        thetas_x, thetas_h: the grid of the converted candidates.
        retrain: (Θx, Θh) pairs of the delta, delta_l1 and delta_l1_strong candidates.
        l1_h, l1_h_strong: L1 weights on |Δh| per frame of delta_l1 and delta_l1_strong (with
            the CNN frozen an L1 cost on |Δx| has nothing to act on).
        learnable: starting (Θx, Θh) of the learnable-threshold candidate (empty: none).
        occupancy_cost, learnable_epochs: its push on the thresholds, and its epochs (it runs
            the encoders step by step; its last epoch is kept, as its cost moves with them).
        crash_speed: test frames slower than this are the crash episode and its aftermath (the
            car cruises at 30 otherwise).
        block_frames: block length of the bootstrap (frames).
        threads: torch intra-op threads.
    """

    root: str | None = None
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    gap_frames: int = 64
    smooth_s: float = 0.5
    crop: list[int] = dataclasses.field(default_factory=lambda: [30, 10])
    height: int = 32
    width: int = 96
    features: int = 64
    hidden_size: int = 256
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    seq_len: int = 64
    stride: int = 16
    batch_size: int = 16
    dense_epochs: int = 30
    lr: float = 2e-3
    weight_decay: float = 0.0
    feature_dropout: float = 0.0
    brightness: float = 0.0
    retrain_epochs: int = 10
    retrain_lr: float = 5e-4
    warmup_epochs: float = 2.0
    thetas_x: list[float] = dataclasses.field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
    )
    thetas_h: list[float] = dataclasses.field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.3])
    retrain: list[list[float]] = dataclasses.field(
        default_factory=lambda: [[0.3, 0.1], [0.5, 0.2], [1.0, 0.3]]
    )
    l1_h: float = 0.01
    l1_h_strong: float = 0.05
    learnable: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.2])
    occupancy_cost: float = 0.05
    learnable_epochs: int = 3
    crash_speed: float = 20.0
    block_frames: int = 50
    threads: int = 1

    def validate(self) -> SteeringConfig:
        for name in ("features", "hidden_size", "batch_size", "stride", "block_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.height < 17 or self.width < 17:  # three strided convolutions need 17 pixels
            raise ConfigError(f"frames must be at least 17x17, got {self.height}x{self.width}")
        if self.seq_len < 64:
            raise ConfigError(f"seq_len must be >= 64 (long windows), got {self.seq_len}")
        if self.gap_frames < self.seq_len:
            raise ConfigError(
                f"gap_frames must be >= seq_len={self.seq_len}, got {self.gap_frames}"
            )
        if not (0 < self.train_fraction and 0 < self.val_fraction) or (
            self.train_fraction + self.val_fraction >= 1
        ):
            raise ConfigError("need train_fraction, val_fraction > 0 with a test part left")
        if not self.seeds:
            raise ConfigError("seeds is empty: need at least one seed")
        thetas = self.thetas_x + self.thetas_h + [t for p in self.retrain for t in p]
        if any(not (math.isfinite(t) and t > 0) for t in thetas + list(self.learnable)):
            raise ConfigError("every Θ of the candidates must be finite and > 0")
        if any(len(p) != 2 for p in self.retrain) or len(self.learnable) not in (0, 2):
            raise ConfigError("retrain pairs and learnable are [Θx, Θh]")
        return self

    def stage(self, seed: int, name: str, **extra: Any) -> dict[str, Any]:
        """What a stage's run folder is tied to (the settings that shape its weights)."""
        keys = ("train_fraction", "val_fraction", "gap_frames", "smooth_s", "crop", "height")
        keys += ("width", "features", "hidden_size", "seq_len", "stride", "batch_size")
        keys += ("dense_epochs", "lr", "weight_decay", "feature_dropout", "brightness")
        d = {k: getattr(self, k) for k in keys}
        return {"experiment": "steering", "seed": seed, "stage": name, **d, **extra}


# -- model ------------------------------------------------------------------------------------


class FrameCNN(nn.Module):
    """(N, 3, H, W) frames in [0, 1] -> (N, D) features, LayerNorm-ed per frame (no affine).

    Three strided convolutions (5x5/2, 3x3/2, 3x3/2) with ReLU, then a linear layer. The norm
    gives every frame's features zero mean and unit spread, so Θx means the same for all.
    ``dropout`` acts on the normed features in training only.
    """

    def __init__(self, height: int, width: int, features: int, dropout: float = 0.0) -> None:
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
        self.dropout = nn.Dropout(dropout)
        self.input_shape = (3, height, width)

    def forward(self, frames: Tensor) -> Tensor:
        # Centre the pixels so the first layer's biases start near a useful operating point.
        return self.dropout(self.norm(self.fc(self.convs(frames - 0.5).flatten(1))))


class GRURegressor(nn.Module):
    """Features (L, B, D) -> one-layer delta GRU -> linear -> (L, B) angles.

    The package's :class:`~deltarnn.train.SequenceModel` with a per-frame regression head, so
    the learnable thresholds and every training method are its own.
    """

    def __init__(self, cfg: SteeringConfig, theta: Sequence[float] = (0.0, 0.0)) -> None:
        super().__init__()
        mc = ModelConfig(
            num_layers=1, hidden_size=cfg.hidden_size, theta_x=theta[0], theta_h=theta[1]
        )
        self.seq = SequenceModel(mc, cfg.features, 1, per_frame=True, regression=True)

    @property
    def rnn(self) -> nn.Module:
        return self.seq.rnn

    def apply_method(self, method: MethodConfig) -> None:
        self.seq.apply_method(method)

    def bake_thresholds(self) -> None:
        self.seq.bake_thresholds()

    def run(self, x: Tensor, lengths: Tensor | None = None, count: bool = False) -> ModelOutput:
        if lengths is None:
            lengths = torch.full((x.shape[1],), x.shape[0], dtype=torch.int64)
        out = self.seq.run(x, lengths, count=count)
        return ModelOutput(out.y.squeeze(-1), out.counts, out.soft_occupancy)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x).y


class SteeringModel(nn.Module):
    """Frames (L, B, 3, H, W) -> :class:`FrameCNN` -> :class:`GRURegressor` -> (L, B) angles."""

    def __init__(self, cfg: SteeringConfig) -> None:
        super().__init__()
        self.cnn = FrameCNN(cfg.height, cfg.width, cfg.features, cfg.feature_dropout)
        self.gru = GRURegressor(cfg)

    @property
    def rnn(self) -> nn.Module:
        return self.gru.rnn

    def features(self, frames: Tensor) -> Tensor:
        """(L, B, 3, H, W) -> (L, B, D)."""
        steps, batch = frames.shape[:2]
        return self.cnn(frames.flatten(0, 1)).view(steps, batch, -1)

    def run(self, x: Tensor, lengths: Tensor | None = None, count: bool = False) -> ModelOutput:
        return self.gru.run(self.features(x), lengths, count)

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


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """Per-frame costs of the parts of the network (the CNN and the head are dense in every
    row). Weight bytes: float32, every weight fetched once per frame."""

    cnn_macs: int
    cnn_weight_bytes: int
    rnn_macs: int
    rnn_weight_bytes: int
    head_macs: int

    @classmethod
    def of(cls, cfg: SteeringConfig) -> NetworkCost:
        cnn = FrameCNN(cfg.height, cfg.width, cfg.features)
        k, d = cfg.hidden_size, cfg.features
        # The GRU's three gates: 3K(D + K) weights, each one MAC per frame when dense.
        rnn = 3 * k * (d + k)
        params = sum(p.numel() for p in cnn.parameters())
        return cls(cnn_macs(cnn)["total"], 4 * params, rnn, 4 * rnn, k)

    def whole(self, row: Row) -> dict[str, float | None]:
        """The whole network's MAC, ops and weight-byte reductions of a row (from its RNN
        reductions; ``None`` in a row is infinite: nothing sent)."""
        if row.method.startswith("held_k"):  # CNN and GRU both run every k-th frame
            k = row.mac_reduction
            return {f"network_{n}": k for n in ("mac_reduction", "ops_reduction", "byte_reduction")}

        def ratio(dense_rnn: float, reduction: float | None, rest: float) -> float:
            delta_rnn = 0.0 if reduction is None else dense_rnn / reduction
            return (rest + dense_rnn) / (rest + delta_rnn)

        rest_macs = self.cnn_macs + self.head_macs
        return {
            "network_mac_reduction": ratio(self.rnn_macs, row.mac_reduction, rest_macs),
            "network_ops_reduction": ratio(self.rnn_macs, row.ops_reduction, rest_macs),
            "network_byte_reduction": ratio(
                self.rnn_weight_bytes,
                row.byte_reduction,
                self.cnn_weight_bytes + 4 * self.head_macs,
            ),
        }


# -- data -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Piece:
    """One session's part of a split: frames (N, 3, H, W) uint8, angles (N,), speed (N,) and
    time stamps (N,) in seconds."""

    name: str
    frames: Tensor
    angles: Tensor
    speed: np.ndarray
    time_s: np.ndarray


def load_pieces(cfg: SteeringConfig) -> dict[str, list[Piece]]:
    """The train, val and test pieces of every session (smoothed labels, cropped frames)."""
    from deltarnn.data import load_frames, load_sessions, smooth_steering, temporal_split

    sessions = load_sessions(cfg.root)
    if cfg.smooth_s:
        sessions = [smooth_steering(s, cfg.smooth_s) for s in sessions]
    parts = temporal_split(sessions, cfg.train_fraction, cfg.val_fraction)
    size, crop = (cfg.height, cfg.width), tuple(cfg.crop)
    out = {}
    for part in ("train", "val", "test"):
        pieces = getattr(parts, part)
        if part == "train":  # the gap: no training window ends near the validation slice
            pieces = [s.slice(0, max(0, len(s) - cfg.gap_frames)) for s in pieces]
        out[part] = [
            Piece(
                s.name,
                load_frames(s, size, crop=crop),
                torch.from_numpy(s.steering.copy()),
                s.speed.copy(),
                s.time_s.copy(),
            )
            for s in pieces
            if len(s) > 1
        ]
    return out


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


def window_starts(lengths: Sequence[int], length: int, stride: int) -> list[tuple[int, int]]:
    """(piece, start) of every window of ``length`` frames, one every ``stride`` frames."""
    starts = [(k, s) for k, n in enumerate(lengths) for s in range(0, n - length + 1, stride)]
    if not starts:
        raise ConfigError(f"no training piece has {length} frames: lower seq_len")
    return starts


def frame_windows(pieces: list[Piece], cfg: SteeringConfig, seed: int):
    """``batches(epoch)``: frame windows (L, B, 3, H, W), each mirrored (angle negated) with
    probability 1/2 and its brightness scaled by a factor in [1 - b, 1 + b] (``brightness``)."""
    length = cfg.seq_len
    starts = window_starts([len(p.angles) for p in pieces], length, cfg.stride)

    def batches(epoch: int) -> _Shuffled:
        def make(indices: list[int], i: int) -> Batch:
            picked = [starts[j] for j in indices]
            frames = torch.stack([pieces[k].frames[s : s + length] for k, s in picked], 1)
            frames = frames.float().div_(255.0)
            target = torch.stack([pieces[k].angles[s : s + length] for k, s in picked], 1)
            target = target.clone()
            g = torch.Generator().manual_seed(seed * 7919 + epoch * 1009 + i)
            if cfg.brightness:
                gain = 1 + cfg.brightness * (2 * torch.rand(frames.shape[1], generator=g) - 1)
                frames = (frames * gain[None, :, None, None, None]).clamp_(0.0, 1.0)
            flip = torch.rand(frames.shape[1], generator=g) < 0.5
            frames[:, flip] = frames[:, flip].flip(-1)
            target[:, flip] = -target[:, flip]
            lengths = torch.full((len(indices),), length, dtype=torch.int64)
            return Batch(frames, lengths, target)

        return _Shuffled(len(starts), cfg.batch_size, seed * 7919 + epoch, make)

    return batches


def frame_streams(pieces: list[Piece]) -> list[Batch]:
    """Each piece as one stream of frames: (N, 1, 3, H, W), angles (N, 1)."""
    return [
        Batch(
            p.frames[:, None].float().div_(255.0),
            torch.tensor([len(p.angles)], dtype=torch.int64),
            p.angles[:, None],
        )
        for p in pieces
    ]


@torch.no_grad()
def frozen_features(
    cnn: FrameCNN, pieces: list[Piece], flip: bool = False
) -> list[tuple[Tensor, Tensor]]:
    """CNN features of whole pieces: [(features (N, D), angles (N,))], mirrored with ``flip``."""
    cnn.eval()
    out = []
    for p in pieces:
        feats = []
        for start in range(0, len(p.frames), 256):
            x = p.frames[start : start + 256].float().div_(255.0)
            feats.append(cnn(x.flip(-1) if flip else x))
        out.append((torch.cat(feats), -p.angles if flip else p.angles))
    return out


def feature_windows(pieces: list[tuple[Tensor, Tensor]], cfg: SteeringConfig, seed: int):
    """``batches(epoch)``: windows of frozen features (L, B, D) and angles (L, B)."""
    length = cfg.seq_len
    starts = window_starts([len(y) for _, y in pieces], length, cfg.stride)
    xs = torch.stack([pieces[k][0][s : s + length] for k, s in starts], 1)
    ys = torch.stack([pieces[k][1][s : s + length] for k, s in starts], 1)

    def batches(epoch: int) -> _Shuffled:
        def make(indices: list[int], i: int) -> Batch:
            lengths = torch.full((len(indices),), length, dtype=torch.int64)
            return Batch(xs[:, indices], lengths, ys[:, indices])

        return _Shuffled(xs.shape[1], cfg.batch_size, seed * 7919 + 1000 + epoch, make)

    return batches


def feature_streams(pieces: list[tuple[Tensor, Tensor]]) -> list[Batch]:
    """Each piece as one stream of features: (N, 1, D), angles (N, 1)."""
    return [
        Batch(f[:, None], torch.tensor([len(f)], dtype=torch.int64), y[:, None]) for f, y in pieces
    ]


def mse_loss(l1_h: float = 0.0, occupancy_cost: float = 0.0):
    """Mean squared error per frame, plus the L1 cost on |Δh| per frame (``l1_h``) and the
    learnable thresholds' occupancy cost (``occupancy_cost``)."""

    def loss_fn(model: nn.Module, batch: Batch) -> Loss:
        out = model.run(batch.x, batch.lengths, count=bool(l1_h))
        se = nn.functional.mse_loss(out.y, batch.target, reduction="sum")
        loss = se / batch.frames
        if l1_h:
            loss = loss + delta_l1_cost(out.counts, batch.lengths, 0.0, l1_h, frames=batch.frames)
        if occupancy_cost:
            loss = loss + occupancy_cost * out.soft_occupancy
        return Loss(loss, float(se.detach()), batch.frames)

    return loss_fn


def rmse_validation(batches: list[Batch]) -> Callable[[nn.Module], dict[str, float | None]]:
    """The per-epoch validation hook: RMSE (and the costs) on the validation streams."""

    def validate(model: nn.Module) -> dict[str, float | None]:
        return evaluate(model, batches, RMSE()).summary()

    return validate


# -- stages -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Prepared:
    """One seed's dense model, its frozen features (as training windows and as streams)."""

    dense: SteeringModel
    train_windows: Any
    val: list[Batch]
    test: list[Batch]


def prepare(cfg: SteeringConfig, out: Path, data, seed: int, force: bool) -> Prepared:
    """The dense stage of ``seed`` (trained or loaded), then the frozen features."""
    torch.manual_seed(seed)
    model = SteeringModel(cfg)
    run_stage(
        out / f"seed{seed}" / "dense",
        cfg.stage(seed, "dense"),
        model,
        frame_windows(data["train"], cfg, seed),
        mse_loss(),
        Schedule(
            epochs=cfg.dense_epochs,
            lr=cfg.lr,
            lr_floor=0.05,
            weight_decay=cfg.weight_decay,
            seed=seed,
        ),
        hooks=Hooks(
            validate=rmse_validation(frame_streams(data["val"])), select="rmse", maximize=False
        ),
        force=force,
    )
    train = frozen_features(model.cnn, data["train"])
    train += frozen_features(model.cnn, data["train"], flip=True)
    return Prepared(
        model,
        feature_windows(train, cfg, seed),
        feature_streams(frozen_features(model.cnn, data["val"])),
        feature_streams(frozen_features(model.cnn, data["test"])),
    )


def converted(prep: Prepared, theta: Sequence[float]) -> GRURegressor:
    """The dense GRU at (Θx, Θh), not retrained (thresholds set on the dense model itself)."""
    prep.dense.rnn.set_thresholds(*theta)
    return prep.dense.gru


def retrained(
    cfg: SteeringConfig,
    out: Path,
    seed: int,
    prep: Prepared,
    method: str,
    theta: Sequence[float],
    force: bool,
) -> GRURegressor:
    """A GRU stage on frozen features, started from the dense weights: ``control`` (Θ = 0),
    ``delta``, ``delta_l1``, ``delta_l1_strong`` or ``learnable``."""
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    model = GRURegressor(cfg, theta)
    model.load_state_dict(dense_weights(prep.dense.gru), strict=False)
    l1_h = {"delta_l1": cfg.l1_h, "delta_l1_strong": cfg.l1_h_strong}.get(method, 0.0)
    epochs, hooks, occupancy = cfg.retrain_epochs, None, 0.0
    if method == "learnable":
        occupancy = cfg.occupancy_cost
        model.apply_method(MethodConfig(delta=True, learnable_theta=True, occupancy_cost=occupancy))
        epochs = cfg.learnable_epochs
    else:
        hooks = Hooks(validate=rmse_validation(prep.val), select="rmse", maximize=False)
    warmup = 0.0 if method in ("control", "learnable") else cfg.warmup_epochs
    name = method if method == "control" else f"{method}-{theta[0]:g}-{theta[1]:g}"
    settings = dict(epochs=epochs, lr=cfg.retrain_lr, warmup=warmup, l1_h=l1_h)
    torch.manual_seed(seed)
    return run_stage(
        out / f"seed{seed}" / name,
        cfg.stage(seed, name, theta=list(theta), occupancy_cost=occupancy, **settings),
        model,
        prep.train_windows,
        mse_loss(l1_h, occupancy),
        Schedule(
            epochs=epochs,
            lr=cfg.retrain_lr,
            lr_floor=0.05,
            theta_warmup_epochs=warmup,
            seed=seed,
        ),
        hooks=hooks,
        force=force,
    )


# -- rows -------------------------------------------------------------------------------------


def stream_extra(cfg: SteeringConfig, per_stream: list[list[float]], speeds: list[np.ndarray]):
    """A test row's per-item outcomes (squared errors summed over blocks of every stream, the
    bootstrap's items) and per-piece sums (all frames, and the cruise frames only)."""
    num, den, pieces = [], [], []
    for se, speed in zip(per_stream, speeds, strict=True):
        s, d = blocks(np.asarray([se]), cfg.block_frames)
        num += s[0].tolist()
        den += d.tolist()
        se = np.asarray(se)
        cruise = speed >= cfg.crash_speed
        pieces.append({"sse": float(se.sum()), "sse_cruise": float(se[cruise].sum())})
    return {"item_num": num, "item_den": den, "pieces": pieces}


def row(
    cfg: SteeringConfig,
    split: str,
    method: str,
    theta: Sequence[float],
    seed: int,
    model: nn.Module,
    batches: list[Batch],
    dense_value: float | None,
    speeds: list[np.ndarray] | None = None,
) -> Row:
    """Evaluate once; test rows (``speeds`` given) keep their per-item outcomes."""
    metric = RMSE()
    r = evaluated_row(
        model,
        batches,
        metric,
        dense_value=dense_value,
        task="steering",
        split=split,
        method=method,
        theta_x=float(theta[0]),
        theta_h=float(theta[1]),
        seed=seed,
    )
    if speeds is not None:
        r.extra.update(stream_extra(cfg, metric.per_item, speeds))
    return r


@torch.no_grad()
def held_output_row(
    cfg: SteeringConfig, seed: int, prep: Prepared, k: int, dense_value: float, speeds
) -> Row:
    """The naive equal-cost baseline: the dense GRU sees every k-th frame (its state carried
    over those frames only) and its output is held for the k frames; RNN MACs are 1/k of
    dense (and the CNN too need run only on those frames)."""
    gru = prep.dense.gru
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    gru.eval()
    per_stream = []
    for batch in prep.test:
        y = gru.run(batch.x[::k]).y  # (ceil(N / k), 1)
        held = y.repeat_interleave(k, dim=0)[: batch.x.shape[0]]
        per_stream.append(((held - batch.target) ** 2)[:, 0].tolist())
    frames = sum(len(s) for s in per_stream)
    r = Row(
        task="steering",
        split="test",
        method=f"held_k{k}",
        theta_x=0.0,
        theta_h=0.0,
        seed=seed,
        metric="rmse",
        value=math.sqrt(sum(map(sum, per_stream)) / frames),
        dense_value=dense_value,
        mac_reduction=float(k),
        byte_reduction=float(k),
        occupancy_x=1 / k,
        occupancy_h=1 / k,
        ops_reduction=float(k),
    )
    r.extra.update(stream_extra(cfg, per_stream, speeds))
    return r


def with_network_cost(rows: list[Row], cost: NetworkCost) -> list[Row]:
    for r in rows:
        r.extra.update(cost.whole(r))
    return rows


# -- the experiment ---------------------------------------------------------------------------


def candidate_list(cfg: SteeringConfig) -> list[tuple[str, tuple[float, float]]]:
    """Every retrained candidate (method, (Θx, Θh)), the control first."""
    out = [("control", (0.0, 0.0))]
    out += [(m, (p[0], p[1])) for m in RETRAINED for p in cfg.retrain]
    if cfg.learnable:
        out.append(("learnable", (cfg.learnable[0], cfg.learnable[1])))
    return out


def candidates(cfg: SteeringConfig, out: Path, seed: int, prep: Prepared, force: bool):
    """Dense and every candidate on the validation streams (rows ``val``)."""
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    d = row(cfg, "val", "dense", (0.0, 0.0), seed, prep.dense.gru, prep.val, None)
    rows = [d]
    for tx in cfg.thetas_x:
        for th in cfg.thetas_h:
            model = converted(prep, (tx, th))
            rows.append(row(cfg, "val", "converted", (tx, th), seed, model, prep.val, d.value))
    for method, theta in candidate_list(cfg):
        model = retrained(cfg, out, seed, prep, method, theta, force)
        r = row(cfg, "val", method, theta, seed, model, prep.val, d.value)
        if method == "learnable":
            r.extra.update(learned_theta_extra(model.rnn))
        rows.append(r)
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    return rows


def training_mean(data) -> float:
    """The constant predictor: the mean angle of the (unmirrored) training frames."""
    return float(torch.cat([p.angles for p in data["train"]]).mean())


def constant_rmse(pieces: list[Piece], value: float) -> float:
    y = torch.cat([p.angles for p in pieces])
    return float(((y - value) ** 2).mean().sqrt())


def select(rows: list[Row], constant_val: float, path: Path) -> dict[str, Any]:
    """The rule, on validation rows only; written to ``path`` before any test row exists."""
    dense = float(np.mean([r.value for r in rows if r.method == "dense"]))
    budget = max(0.0, min(REPORT.budget, GAIN_SHARE * (constant_val - dense) / dense))
    eligible = [r for r in rows if r.method != "control"]
    spec = dataclasses.replace(REPORT, budget=budget)
    best = select_on_validation(eligible, spec)
    within = best is not None
    if best is None:  # nothing within the budget: the candidate that loses least
        sums = summarise(pooled_rows(eligible), dataclasses.replace(spec, select_on="test"))
        best = min((s for s in sums if s.method != "dense"), key=lambda s: s.loss)
    selection = {
        "method": best.method,
        "theta_x": best.theta_x,
        "theta_h": best.theta_h,
        "chosen_on": "validation",
        "rule": "largest mean RNN MAC reduction whose mean validation RMSE loss against dense "
        "(over seeds) is within min(5 %, 10 % of the dense model's gain over the training-mean "
        "predictor), relative to the dense RMSE (none within: the smallest loss); the control "
        "is not eligible",
        "within_budget": within,
        "val_dense_rmse": dense,
        "val_constant_rmse": constant_val,
        "val_budget_relative": budget,
        "val_loss_relative": best.loss,
        "val_mac_reduction": best.reductions["mac_reduction"],
        "val_seeds": best.seeds,
    }
    selection["at_target"] = at_target(eligible, spec)
    path.write_text(json.dumps(selection, indent=1) + "\n")
    log.info("selected on validation: %s", selection)
    return selection


def at_target(rows: list[Row], spec: ReportSpec) -> dict[str, Any] | None:
    """The claim's operating point, on validation rows only: of the candidates whose mean RNN
    MAC reduction reaches ``spec.target``, the one with the smallest mean loss against dense
    (``None``: no candidate reaches it). Not a second selection: it is reported beside the
    selected configuration to say what the target costs."""
    val = [r for r in pooled_rows(rows) if r.split == "val"]
    sums = summarise(val, dataclasses.replace(spec, select_on="test"))  # the rows' own values

    def reduction(s) -> float:
        return s.reductions.get("mac_reduction", math.inf)

    reaching = [s for s in sums if s.method != "dense" and reduction(s) >= spec.target]
    if not reaching:
        return None
    best = min(reaching, key=lambda s: s.loss)
    return {
        "method": best.method,
        "theta_x": best.theta_x,
        "theta_h": best.theta_h,
        "chosen_on": "validation",
        "rule": f"smallest mean validation RMSE loss against dense among the candidates whose "
        f"mean validation RNN MAC reduction is >= {spec.target:g}x",
        "val_loss_relative": best.loss,
        "val_mac_reduction": reduction(best),
    }


def test_rows(cfg, out, seed, prep: Prepared, selection, speeds, force) -> list[Row]:
    """The one test evaluation of one seed: dense, control, selected, at the target,
    learnable."""
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    d = row(cfg, "test", "dense", (0.0, 0.0), seed, prep.dense.gru, prep.test, None, speeds)
    rows = [d]
    wanted = [("control", (0.0, 0.0)), (selection["method"], selected_theta(selection))]
    if selection.get("at_target"):
        wanted.append((selection["at_target"]["method"], selected_theta(selection["at_target"])))
    if cfg.learnable:
        wanted.append(("learnable", (cfg.learnable[0], cfg.learnable[1])))
    for method, theta in dict.fromkeys(wanted):
        if method == "converted":
            model = converted(prep, theta)
        else:
            model = retrained(cfg, out, seed, prep, method, theta, force)
        r = row(cfg, "test", method, theta, seed, model, prep.test, d.value, speeds)
        if method == "learnable":
            r.extra.update(learned_theta_extra(model.rnn))
        rows.append(r)
    prep.dense.rnn.set_thresholds(0.0, 0.0)
    return rows


def selected_theta(selection: dict) -> tuple[float, float]:
    return (selection["theta_x"], selection["theta_h"])


def delta_test_rows(rows: list[Row]) -> list[tuple[str, float, float]]:
    """The delta configurations on test (each gets an equal-cost baseline)."""
    out = {(r.method, r.theta_x, r.theta_h) for r in rows if r.split == "test"}
    return sorted(m for m in out if m[0] not in ("dense", "control") and "held" not in m[0])


def equal_cost_k(rows: list[Row], config: tuple[str, float, float]) -> int:
    """k of the held-output baseline: the configuration's mean test RNN MAC reduction."""
    reds = [
        math.inf if r.mac_reduction is None else r.mac_reduction
        for r in rows
        if r.split == "test" and (r.method, r.theta_x, r.theta_h) == config
    ]
    return max(1, round(min(float(np.mean(reds)), 1e6)))


def run_experiment(cfg: SteeringConfig, out_dir: str, results: str, *, force: bool = False) -> None:
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results_path = Path(out_dir), Path(results)
    here = results_path.parent
    here.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "root"}
    (here / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    # The file holds this run's rows only; every stage reloads from its run folder.
    results_path.unlink(missing_ok=True)
    data = load_pieces(cfg)
    cost = NetworkCost.of(cfg)
    speeds = [p.speed for p in data["test"]]
    prepared, val_rows = {}, []
    for seed in cfg.seeds:  # phase 1: dense and every candidate, validation only
        prepared[seed] = prepare(cfg, out, data, seed, force)
        rows = with_network_cost(candidates(cfg, out, seed, prepared[seed], force), cost)
        append_rows(results_path, rows)
        val_rows += rows
    constant_val = constant_rmse(data["val"], training_mean(data))
    selection = select(val_rows, constant_val, here / "selection.json")  # phase 2, frozen
    test = []
    for seed in cfg.seeds:  # phase 3: the one test evaluation
        rows = test_rows(cfg, out, seed, prepared[seed], selection, speeds, force)
        append_rows(results_path, with_network_cost(rows, cost))
        test += rows
    for config in delta_test_rows(test):  # the equal-cost baselines
        k = equal_cost_k(test, config)
        rows = [
            held_output_row(cfg, seed, prepared[seed], k, d.value, speeds)
            for seed in cfg.seeds
            for d in test
            if d.method == "dense" and d.seed == seed
        ]
        append_rows(results_path, with_network_cost(rows, cost))
    write_summary(cfg, results_path, data)


# -- summary ----------------------------------------------------------------------------------


def piece_scores(cfg: SteeringConfig, rows: list[Row], data, config) -> list[dict[str, Any]]:
    """RMSE and R² (1 - SSE / the piece's own variance) per test piece and over all test
    frames, with and without the crash episode; mean and sample SD over seeds."""
    pieces = data["test"]
    chosen = [r for r in rows if r.split == "test" and (r.method, r.theta_x, r.theta_h) == config]
    masks = [(p.speed >= cfg.crash_speed) for p in pieces]
    parts = [(p.name, [k]) for k, p in enumerate(pieces)] + [("all", list(range(len(pieces))))]
    out = []
    for name, ks in parts:
        entry: dict[str, Any] = {"piece": name}
        for scope, key in (("all_frames", "sse"), ("without_crash", "sse_cruise")):
            keep = [np.ones(len(pieces[k].angles), bool) if key == "sse" else masks[k] for k in ks]
            y = np.concatenate([pieces[k].angles.numpy()[m] for k, m in zip(ks, keep, strict=True)])
            sst = float(((y - y.mean()) ** 2).sum())
            rmse, r2 = [], []
            for r in chosen:
                sse = sum(r.extra["pieces"][k][key] for k in ks)
                rmse.append(math.sqrt(sse / len(y)))
                r2.append(1 - sse / sst)
            entry[scope] = {
                "frames": len(y),
                "rmse": mean_sd(rmse),
                "r2": mean_sd(r2),
                "label_sd": float(y.std()),
            }
        entry["crash_frames"] = int(sum((~masks[k]).sum() for k in ks))
        out.append(entry)
    return out


def constant_outcomes(cfg: SteeringConfig, data, seeds: int) -> Outcomes:
    """The training-mean predictor's per-block outcomes (the same for every seed)."""
    mean = training_mean(data)
    num, den = [], []
    for p in data["test"]:
        s, d = blocks(((p.angles.numpy()[None] - mean) ** 2), cfg.block_frames)
        num += s[0].tolist()
        den += d.tolist()
    return Outcomes(np.repeat(np.asarray([num]), seeds, 0), np.asarray(den))


def gain_share(cfg: SteeringConfig, rows: list[Row], data, config) -> dict[str, Any]:
    """The loss of ``config`` as a share of the dense model's gain over the training-mean
    predictor, (RMSE - dense) / (constant - dense), with its paired block-bootstrap CI."""
    test = [r for r in rows if r.split == "test"]
    seeds = sorted({r.seed for r in test if r.method == "dense"})

    def outcomes(c) -> Outcomes:
        by_seed = {r.seed: r for r in test if (r.method, r.theta_x, r.theta_h) == c}
        num = np.asarray([by_seed[s].extra["item_num"] for s in seeds])
        return Outcomes(num, np.asarray(by_seed[seeds[0]].extra["item_den"]))

    models = {
        "dense": [outcomes(("dense", 0.0, 0.0))],
        "chosen": [outcomes(config)],
        "constant": [constant_outcomes(cfg, data, len(seeds))],
    }
    ci = bootstrap(
        models,
        {"share": lambda v: (v["chosen"] - v["dense"]) / (v["constant"] - v["dense"])},
        transform="sqrt",
    )["share"]
    return {"mean": ci["estimate"], "ci95": [ci["low"], ci["high"]], "budget": GAIN_SHARE}


def configuration(entry: dict[str, Any]) -> tuple[str, float, float]:
    return (entry["method"], entry["theta_x"], entry["theta_h"])


def test_summary(entry: dict[str, Any], share: dict[str, Any]) -> dict[str, Any]:
    """A configuration's test numbers in ``summary.json``: metric, losses, reductions."""
    return {
        "metric": {k: v for k, v in entry["metric"].items() if k != "per_seed"},
        "loss_vs_dense": {
            **entry["loss_vs_dense"],
            "share_of_dense_gain": {k: share[k] for k in ("mean", "ci95")},
        },
        "mac_reduction": entry["mac_reduction"],
        "ops_reduction": entry["ops_reduction"],
    }


def write_summary(cfg: SteeringConfig, results: Path, data=None) -> dict:
    """``summary.json`` (the issue's fields) and ``details.json`` (everything else)."""
    data = data or load_pieces(cfg)
    rows = read_rows(results)
    selection = json.loads((results.parent / "selection.json").read_text())
    sel = (selection["method"], selection["theta_x"], selection["theta_h"])
    deltas = delta_test_rows(rows)
    held = sorted({(r.method, 0.0, 0.0) for r in rows if r.method.startswith("held_k")})
    others = [("control", 0.0, 0.0)] + [c for c in deltas if c != sel] + held
    s = summarise_test(rows, REPORT, sel, transform="sqrt", others=others)
    shares = {c: gain_share(cfg, rows, data, c) for c in [sel, *others]}
    chosen = s["selected"]
    met_share = shares[sel]["ci95"][1] <= GAIN_SHARE
    test_frames = sum(len(p.angles) for p in data["test"])
    summary = {
        "claim": CLAIM,
        "target": ">= 100x fewer RNN MACs than the dense GRU, with the test RMSE within 5 % "
        "(relative) of dense and the loss at most 10 % of the dense model's gain over "
        "predicting the training-mean angle; met when the 95 % CIs of both losses lie inside",
        "budget": {
            "relative_rmse_loss": REPORT.budget,
            "share_of_dense_gain_over_constant": GAIN_SHARE,
            "headline_reduction": "RNN MACs (the GRU only; the CNN is dense in every row)",
        },
        "metric": f"RMSE of the steering angle ({cfg.smooth_s:g} s centred moving average) over "
        f"all {test_frames} test frames, each session's test piece one stream; CIs: paired "
        f"bootstrap over seeds and blocks of {cfg.block_frames} frames",
        "dense_test": {k: v for k, v in s["dense"]["metric"].items() if k != "per_seed"},
        "selected": {k: selection[k] for k in ("method", "theta_x", "theta_h", "chosen_on")},
        "test": test_summary(chosen, shares[sel]),
        "met": bool(s["met"] and met_share),
        "command": COMMAND,
    }
    target = selection.get("at_target")
    if target:  # the claim's operating point (chosen on validation), beside the selection
        t = (target["method"], target["theta_x"], target["theta_h"])
        entry = next(e for k, e in s.items() if k != "met" and configuration(e) == t)
        within = entry["loss_vs_dense"]["ci95"][1] <= REPORT.budget
        summary["at_target"] = {
            **{k: target[k] for k in ("method", "theta_x", "theta_h", "chosen_on", "rule")},
            "test": test_summary(entry, shares[t]),
            "within_budget": bool(within and shares[t]["ci95"][1] <= GAIN_SHARE),
        }
    (results.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_details(cfg, results.parent / "details.json", rows, data, s, shares, selection)
    return summary


def label_predictability(pieces: list[Piece]) -> list[dict[str, Any]]:
    """How much of the labels' variance is slow, per piece: R² of the labels' own centred
    moving averages over 1, 2 and 3 s (which know the future: no camera model gets them), and of
    the label 0.5 s late. A model that sees the road, not the driver's finger, can hope for
    about the slow part."""
    from deltarnn.data.steering import moving_average

    out = []
    for p in pieces:
        y = p.angles.numpy().astype(np.float64)
        sst = float(((y - y.mean()) ** 2).sum())
        entry: dict[str, Any] = {"piece": p.name, "frames": len(y)}
        for window in (1.0, 2.0, 3.0):
            smooth = moving_average(y, p.time_s, window)
            entry[f"r2_centred_average_{window:g}s"] = 1 - float(((y - smooth) ** 2).sum()) / sst
        late = np.searchsorted(p.time_s, p.time_s - 0.5, side="right") - 1
        late_y = np.where(late >= 0, y[np.clip(late, 0, None)], y[0])
        entry["r2_label_0.5s_late"] = 1 - float(((y - late_y) ** 2).sum()) / sst
        out.append(entry)
    return out


def write_details(cfg, path: Path, rows, data, s, shares, selection) -> dict:
    """``details.json``: the test numbers of every reported configuration, their per-piece
    scores and whole-network costs, the constant predictors and the selection."""
    cost = NetworkCost.of(cfg)
    mean = training_mean(data)
    test = [r for r in rows if r.split == "test"]
    configs: dict[str, Any] = {}
    for name, entry in s.items():
        if name == "met":
            continue
        c = configuration(entry)
        mine = [r for r in test if (r.method, r.theta_x, r.theta_h) == c]
        network = {
            k: float(np.mean([r.extra[k] for r in mine]))
            for k in ("network_mac_reduction", "network_ops_reduction", "network_byte_reduction")
        }
        learned = {k: mine[0].extra[k] for k in mine[0].extra if k.startswith("learned_theta")}
        configs[name] = {
            **entry,
            "share_of_dense_gain": shares.get(c),
            "whole_network": network,
            "pieces": piece_scores(cfg, rows, data, c),
            **({"learned_theta_seed0": learned} if learned else {}),
        }
    details = {
        "selection": selection,
        "constant_predictors_rmse": {
            "training_mean": {
                "value": mean,
                "val": constant_rmse(data["val"], mean),
                "test": constant_rmse(data["test"], mean),
            },
            "zero": {
                "val": constant_rmse(data["val"], 0.0),
                "test": constant_rmse(data["test"], 0.0),
            },
        },
        "label_predictability": {
            part: label_predictability(data[part]) for part in ("val", "test")
        },
        "per_frame_cost": dataclasses.asdict(cost),
        "configurations": configs,
    }
    path.write_text(json.dumps(details, indent=1) + "\n")
    return details


# -- tables and plot --------------------------------------------------------------------------


def pareto(rows: list[Row], spec: ReportSpec) -> list[Row]:
    """Validation rows of the configurations no other configuration of the same method beats
    in both mean RMSE and mean MAC reduction (the converted grid is 2-D; its frontier is the
    curve worth drawing), plus every dense row."""
    sums = summarise(rows, spec)
    keep = set()
    for s in sums:
        red = s.reductions.get("mac_reduction", 0.0)
        beaten = any(
            o.method == s.method
            and o is not s
            and o.value <= s.value
            and o.reductions.get("mac_reduction", 0.0) >= red
            and (o.value < s.value or o.reductions.get("mac_reduction", 0.0) > red)
            for o in sums
        )
        if s.method == "dense" or not beaten:
            keep.add((s.method, s.theta_x, s.theta_h))
    return [r for r in rows if (r.method, r.theta_x, r.theta_h) in keep]


def piece_table(details: dict) -> str:
    """Markdown: RMSE and R² per test piece, with and without the crash episode."""
    lines = [
        "| configuration | piece | frames | RMSE | R² | frames w/o crash | RMSE w/o crash "
        "| R² w/o crash |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(d: dict, fmt: str) -> str:
        return format(d["mean"], fmt) + ("" if d["sd"] is None else " ± " + format(d["sd"], fmt))

    for name, c in details["configurations"].items():
        label = f"{name} ({c['method']} Θx={c['theta_x']:g} Θh={c['theta_h']:g})"
        for p in c["pieces"]:
            a, w = p["all_frames"], p["without_crash"]
            lines.append(
                f"| {label} | {p['piece']} | {a['frames']} | {ms(a['rmse'], '.4f')} "
                f"| {ms(a['r2'], '.3f')} | {w['frames']} | {ms(w['rmse'], '.4f')} "
                f"| {ms(w['r2'], '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def predictability_table(details: dict) -> str:
    """Markdown: R² of the labels' own smoothed and late versions per piece."""
    lines = [
        "| split | piece | frames | centred 1 s average | 2 s | 3 s | label 0.5 s late |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for part, pieces in details["label_predictability"].items():
        for p in pieces:
            lines.append(
                f"| {part} | {p['piece']} | {p['frames']} | {p['r2_centred_average_1s']:.2f} "
                f"| {p['r2_centred_average_2s']:.2f} | {p['r2_centred_average_3s']:.2f} "
                f"| {p['r2_label_0.5s_late']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def network_table(details: dict) -> str:
    """Markdown: the RNN's and the whole network's reductions of every test configuration."""
    cost = details["per_frame_cost"]
    lines = [
        f"Per frame: CNN {cost['cnn_macs']:,} MACs and {cost['cnn_weight_bytes']:,} weight "
        f"bytes (dense in every row), dense GRU {cost['rnn_macs']:,} MACs and "
        f"{cost['rnn_weight_bytes']:,} weight bytes, head {cost['head_macs']} MACs.",
        "",
        "| configuration | RNN MAC | RNN ops | RNN weight bytes | network MAC | network ops "
        "| network weight bytes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def x(v):
        return "inf" if v is None else f"{v:.1f}x" if v >= 10 else f"{v:.3f}x"

    for name, c in details["configurations"].items():
        n = c["whole_network"]
        lines.append(
            f"| {name} ({c['method']} Θx={c['theta_x']:g} Θh={c['theta_h']:g}) "
            f"| {x(c['mac_reduction'])} | {x(c['ops_reduction'])} | {x(c['byte_reduction'])} "
            f"| {x(n['network_mac_reduction'])} | {x(n['network_ops_reduction'])} "
            f"| {x(n['network_byte_reduction'])} |"
        )
    return "\n".join(lines) + "\n"


def render_tables(results: str, table: str, plot_path: str) -> str:
    """``table.md`` and the plot, from ``results.json`` (and the summaries beside it)."""
    here = Path(results).parent
    rows = read_rows(results)
    pooled = pooled_rows(rows)
    selection = json.loads((here / "selection.json").read_text())
    spec = dataclasses.replace(REPORT, budget=selection["val_budget_relative"])
    text = [
        "Mean ± sample SD over seeds. Split `val`: the validation slice of each session, every "
        "candidate (the budget of the selection rule there is min(5 %, 10 % of dense's gain "
        f"over the training mean) = {100 * spec.budget:.2f} % of the dense RMSE). Split `test`: "
        "dense, the control, the selected configuration, the learnable run and the equal-cost "
        "held-output baselines (`held_k<k>`) only. MAC, ops and weight-byte reductions are the "
        "RNN's (the whole network's: below). CIs: `summary.json`, `details.json`.",
        "",
        protocol_tables(pooled, spec),
    ]
    details_path = here / "details.json"
    if details_path.exists():
        details = json.loads(details_path.read_text())
        text += ["### Test RMSE and R² per piece (R²: against the piece's own mean)", ""]
        text += [piece_table(details), "### The whole network (CNN included), test", ""]
        text += [network_table(details), "### How much of the labels' variance is slow", ""]
        text += [
            "R² against the labels of their own centred moving averages (they know the future) "
            "and of the label 0.5 s late: a model that sees the road, not the keyboard, can "
            "hope for about the slow part.",
            "",
            predictability_table(details),
        ]
    out = "\n".join(text)
    Path(table).write_text(out)
    val = pareto([r for r in pooled if r.split == "val"], spec)
    plot(summarise(val, spec), dataclasses.replace(spec, title="Steering, validation"), [plot_path])
    return out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(argv, __doc__, SteeringConfig, run_experiment, render_tables)


if __name__ == "__main__":
    raise SystemExit(main())
