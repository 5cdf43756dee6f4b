"""A deep CTC recogniser trained densely, then run and retrained as a delta network.

The paper's WSJ result (Neil et al., ICML 2017, §4.3): a large speech recogniser trained the
ordinary way already runs cheaper as a delta network, and retraining it with thresholds in the
forward pass (and an L1 cost on the deltas) lowers the cost further at a negligible loss. The
three curves -- error rate against the MAC reduction on the test set -- for two tasks:

* ``strings``: connected FSDD digit strings, held-out speakers (digit error rate, DER);
* ``asterisk``: the Asterisk prompts, continuous English of one speaker, held-out prompts
  (character error rate, CER).

Model: log-mel features -> ``num_layers`` delta GRU layers -> linear -> log-softmax per frame
(:class:`deltarnn.train.SequenceModel`, the package's CTC head), trained with
:func:`deltarnn.train.fit`; every stage (dense, delta, delta_l1) is a resumable run folder under
``--out``. With a validation split (``val_speakers`` / ``val_fraction``) every epoch records
the validation error and occupancy, and every row its validation error.

Run (from the repository root)::

    python experiments/wsj-like/speech.py --config experiments/wsj-like/strings.json \\
        --out runs/wsj-like/strings --results experiments/wsj-like/results.json
    python experiments/wsj-like/speech.py --results experiments/wsj-like/results.json \\
        --render experiments/wsj-like/table.md experiments/wsj-like/plot.png

Shape legend: T frames, B batch, F features, C classes (blank = 0).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltarnn.cli.experiment import experiment_main
from deltarnn.data import FeatureParams, UtteranceNormalizer
from deltarnn.errors import ConfigError
from deltarnn.train import (
    Batch,
    ErrorRate,
    Hooks,
    IndexBatches,
    Loss,
    ModelConfig,
    ReportSpec,
    Row,
    RunFolder,
    Schedule,
    SequenceModel,
    append_rows,
    ctc_batch,
    delta_l1_cost,
    evaluate,
    fit_run,
    frame_label_batch,
    ordered_batches,
    render,
)

log = logging.getLogger("wsj-like")

TASKS = ("strings", "asterisk")
REPORT = ReportSpec(
    title="WSJ-like (CTC GRU)", target=5.7, budget=0.05, relative=True, reduction="mac_reduction"
)


@dataclasses.dataclass
class SpeechConfig:
    """One experiment: data, model, the dense run, the two retraining runs and the Θ sweep.

    Attributes:
        task: ``"strings"`` or ``"asterisk"``.
        root: data root (default ``$DELTARNN_DATA``).
        num_strings: training strings (``strings``); validation and test get a quarter as many.
        max_digits: longest digit string.
        val_speakers: validation speakers (``strings``; empty: no validation split).
        max_seconds: drop longer prompts (``asterisk``).
        test_fraction, val_fraction: held-out shares of the prompts (``asterisk``).
        hop_ms, win_ms: feature frame step and window (the frame rate the RNN runs at).
        num_layers, hidden_size: the GRU stack.
        batch_size: utterances per batch.
        dense_epochs, retrain_epochs: epochs of dense training and of each retraining run.
        align_epochs: ``strings`` only: epochs of frame-level cross-entropy against the known
            splice alignment before the CTC epochs (CTC alone from scratch sits long on the
            all-blank plateau).
        lr, retrain_lr: Adam learning rates (cosine decay to 5 %).
        train_theta: Θx = Θh in the forward pass of delta retraining.
        warmup_fraction: share of the retraining epochs over which Θ ramps up from 0.
        l1_x, l1_h: L1 weights on |Δx| and |Δh| per frame (the ``delta_l1`` run).
        thetas: the Θ (Θx = Θh) every model is evaluated at.
        seed: initialisation and data order.
        threads: torch intra-op threads.
        backend: delta backend for evaluation (they give the same values).
    """

    task: str = "strings"
    root: str | None = None
    num_strings: int = 800
    max_digits: int = 5
    val_speakers: list[str] = dataclasses.field(default_factory=list)
    max_seconds: float = 6.0
    test_fraction: float = 0.15
    val_fraction: float = 0.0
    hop_ms: float = 10.0
    win_ms: float = 25.0
    num_layers: int = 3
    hidden_size: int = 128
    batch_size: int = 32
    dense_epochs: int = 30
    align_epochs: int = 0
    retrain_epochs: int = 8
    lr: float = 3e-3
    retrain_lr: float = 1e-3
    train_theta: float = 0.3
    warmup_fraction: float = 0.25
    l1_x: float = 0.0
    l1_h: float = 0.02
    thetas: list[float] = dataclasses.field(
        default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7]
    )
    seed: int = 0
    threads: int = 1
    backend: str = "auto"

    def validate(self) -> SpeechConfig:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("num_strings", "max_digits", "num_layers", "hidden_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.align_epochs and self.task != "strings":
            raise ConfigError("align_epochs needs task='strings' (the only known alignment)")
        for name in ("dense_epochs", "retrain_epochs", "align_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("train_theta", "l1_x", "l1_h", "warmup_fraction"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}")
        if any(not (math.isfinite(t) and t >= 0) for t in self.thetas):
            raise ConfigError(f"thetas must be finite and >= 0, got {self.thetas}")
        return self

    def stage_config(self, stage: str) -> dict[str, Any]:
        """What a stage's run folder is tied to (evaluation-only fields left out)."""
        d = dataclasses.asdict(self)
        for name in ("thetas", "threads", "backend"):
            d.pop(name)
        return {"experiment": "wsj-like", "stage": stage, **d}


# -- data -------------------------------------------------------------------------------------


def load_speech(cfg: SpeechConfig) -> dict[str, Any]:
    """``train``, ``test`` (and ``val``) datasets, normalised, plus ``num_classes``, ``blank``."""
    params = FeatureParams(hop_ms=cfg.hop_ms, win_ms=cfg.win_ms)
    if cfg.task == "strings":
        from deltarnn.data import DigitStringConfig, load_digit_strings

        n = cfg.num_strings
        splits = load_digit_strings(
            cfg.root,
            split="speaker",
            num_examples={"train": n, "val": max(1, n // 4), "test": max(1, n // 4)},
            config=DigitStringConfig(max_digits=cfg.max_digits),
            seed=cfg.seed,
            params=params,
            val_speakers=tuple(cfg.val_speakers),
        )
    else:
        from deltarnn.data import load_asterisk

        splits = load_asterisk(
            cfg.root,
            test_fraction=cfg.test_fraction,
            val_fraction=cfg.val_fraction,
            max_seconds=cfg.max_seconds,
            params=params,
        )
    norm = UtteranceNormalizer.fit(splits["train"].features)
    for ds in splits.values():
        ds.transform = norm
    train = splits["train"]
    return {**splits, "num_classes": train.num_classes, "blank": train.blank}


class _FrameLabelled:
    """A dataset's features with per-frame labels as targets (for frame-level training)."""

    def __init__(self, dataset, labels: list[torch.Tensor]) -> None:
        self.dataset, self.labels = dataset, labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i][0], self.labels[i]

    def lengths(self) -> list[int]:
        return self.dataset.lengths()


# -- losses -----------------------------------------------------------------------------------


def ctc_loss(blank: int, l1: tuple[float, float] | None):
    """CTC per frame (plus the L1 cost on the deltas per frame when ``l1`` = (λx, λh))."""

    def loss_fn(model: SequenceModel, batch: Batch) -> Loss:
        out = model.run(batch.x, batch.lengths, count=l1 is not None)
        ctc = nn.functional.ctc_loss(
            out.y,
            batch.target,
            batch.lengths,
            batch.target_lengths,
            blank=blank,
            reduction="sum",
            zero_infinity=True,
        )
        loss = ctc / batch.frames
        if l1 is not None:
            loss = loss + delta_l1_cost(out.counts, batch.lengths, *l1, frames=batch.frames)
        return Loss(loss, float(ctc.detach()), float(batch.lengths.sum()))

    return loss_fn


def frame_loss(model: SequenceModel, batch: Batch) -> Loss:
    """Frame-level cross-entropy against the splice alignment (padded frames: -100)."""
    logp = model.run(batch.x, batch.lengths).y
    nll = nn.functional.nll_loss(
        logp.flatten(0, 1), batch.target.flatten(), ignore_index=-100, reduction="sum"
    )
    return Loss(nll / batch.frames, float(nll.detach()), float(batch.lengths.sum()))


# -- the experiment ---------------------------------------------------------------------------


def run_experiment(
    cfg: SpeechConfig, out_dir: str | Path, results: str | Path, force: bool = False
) -> list[Row]:
    """Dense training, the converted sweep, delta and delta+L1 retraining, and their sweeps.

    Each stage is a run folder under ``out_dir``; finished stages are reused, interrupted ones
    resume. Rows are appended to ``results`` as each curve is done.
    """
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    data = load_speech(cfg)
    train, val = data["train"], data.get("val")
    log.info("%s: %d train / %d test items", cfg.task, len(train), len(data["test"]))
    metric = "der" if cfg.task == "strings" else "cer"
    test_batches = ordered_batches(data["test"], ctc_batch, 64)
    val_batches = None if val is None else ordered_batches(val, ctc_batch, 64)
    hooks = Hooks()
    if val_batches is not None:
        hooks = Hooks(
            validate=lambda m: evaluate(m, val_batches, ErrorRate(metric, data["blank"])).summary()
        )

    def fresh(theta: float) -> SequenceModel:
        torch.manual_seed(cfg.seed)
        model_cfg = ModelConfig(
            num_layers=cfg.num_layers,
            hidden_size=cfg.hidden_size,
            theta_x=theta,
            theta_h=theta,
            backend=cfg.backend,
        )
        return SequenceModel(model_cfg, train.num_features, data["num_classes"], per_frame=True)

    def stage(
        name: str, model: SequenceModel, batches, loss_fn, epochs: int, lr: float, warmup=0.0
    ):
        schedule = Schedule(
            epochs=epochs, lr=lr, lr_floor=0.05, theta_warmup_epochs=warmup, seed=cfg.seed
        )
        folder = RunFolder(out / name, cfg.stage_config(name))
        return fit_run(
            model, batches, loss_fn, schedule=schedule, folder=folder, hooks=hooks, force=force
        )

    ctc_batches = IndexBatches(train, cfg.batch_size, cfg.seed, ctc_batch)
    dense = fresh(0.0)
    if cfg.align_epochs:
        aligned = _FrameLabelled(train, train.frame_labels())
        # Another order than the CTC epochs' (seed offset), as the aligned epochs come first.
        align_batches = IndexBatches(aligned, cfg.batch_size, cfg.seed + 10_000, frame_label_batch)
        stage("align", dense, align_batches, frame_loss, cfg.align_epochs, cfg.lr)
    stage("dense", dense, ctc_batches, ctc_loss(data["blank"], None), cfg.dense_epochs, cfg.lr)

    def rows_at(model: SequenceModel, method: str, thetas: list[float], dense_row: Row | None):
        rows = []
        for t in thetas:
            model.rnn.set_thresholds(t, t)
            test = evaluate(model, test_batches, ErrorRate(metric, data["blank"]))
            val_value = None
            if val_batches is not None:
                val_value = evaluate(model, val_batches, ErrorRate(metric, data["blank"])).value
            rows.append(
                Row.from_cost(
                    test.cost.to_dict(),
                    task=cfg.task,
                    split="speaker" if cfg.task == "strings" else "utterance",
                    method=method,
                    theta_x=t,
                    theta_h=t,
                    seed=cfg.seed,
                    metric=metric,
                    value=test.value,
                    dense_value=test.value if dense_row is None else dense_row.value,
                    val_value=val_value,
                    dense_val_value=val_value if dense_row is None else dense_row.val_value,
                )
            )
        return rows

    (dense_row,) = rows_at(dense, "dense", [0.0], None)
    rows = [dense_row, *rows_at(dense, "converted", [t for t in cfg.thetas if t > 0], dense_row)]
    append_rows(results, rows)
    warmup = cfg.warmup_fraction * cfg.retrain_epochs
    for method, l1 in (("delta", None), ("delta_l1", (cfg.l1_x, cfg.l1_h))):
        model = fresh(cfg.train_theta)
        model.load_state_dict(
            {k: v for k, v in dense.state_dict().items() if not k.startswith("rnn.theta")},
            strict=False,
        )
        loss_fn = ctc_loss(data["blank"], l1)
        stage(method, model, ctc_batches, loss_fn, cfg.retrain_epochs, cfg.retrain_lr, warmup)
        new = rows_at(model, method, [t for t in cfg.thetas if t > 0], dense_row)
        append_rows(results, new)
        rows += new
    return rows


def render_tables(results: str, table: str, plot: str) -> str:
    return render(results, REPORT, table, [plot])


def main(argv: list[str] | None = None) -> int:
    return experiment_main(argv, __doc__, SpeechConfig, run_experiment, render_tables)


if __name__ == "__main__":
    raise SystemExit(main())
