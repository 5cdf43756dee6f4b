"""A deep CTC recogniser trained densely, then run and retrained as a delta network.

The paper's WSJ result (Neil et al., ICML 2017, §4.3): a large speech recogniser trained the
ordinary way already runs cheaper as a delta network, and retraining it with thresholds in the
forward pass (and an L1 cost on the deltas) lowers the cost further at a negligible loss. Here
the same three curves -- error rate against the accountant's MAC reduction on the test set --
are built for two tasks this project can fetch:

* ``strings``: connected FSDD digit strings, held-out speakers (digit error rate, DER);
* ``asterisk``: the Asterisk prompts, continuous English of one speaker, held-out prompts
  (character error rate, CER).

Model: log-mel features -> ``num_layers`` delta GRU layers -> linear -> log-softmax per frame.
Dense training uses torch's fused GRU (the Θ = 0 delta network computes exactly that function);
delta training uses the fast training path with the same values and gradients as the spec
(:func:`deltarnn.ops.triton_train.delta_gru_train`), falling back to the spec itself.

Run everything (writes ``results.json`` rows in the sweep format of :mod:`deltarnn.train.sweep`)::

    python -m deltarnn.train.large_speech --task strings --out runs/wsj-like \
        --results experiments/wsj-like/results.json

Shape legend: T frames, B batch, F features, H hidden units, C classes (blank = 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cost import CostReport, measure
from ..errors import ConfigError
from ..functional import DeltaCounts, delta_gru, gru_initial_state
from ..nn import DeltaGRU
from .config import flat_config_fields
from .ctc import edit_distance, greedy_decode
from .loop import batch_plan
from .methods import delta_l1_cost

log = logging.getLogger(__name__)

TASKS = ("strings", "asterisk")
METHODS = ("dense", "converted", "delta", "delta_l1")


# -- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass
class SpeechConfig:
    """One experiment: data, model, the dense run, the two retraining runs and the Θ sweep.

    Attributes:
        task: ``"strings"`` or ``"asterisk"``.
        root: data root (default ``$DELTARNN_DATA``).
        num_strings: training strings (``strings``); the test split gets a quarter as many.
        max_digits: longest digit string.
        max_seconds: drop longer prompts (``asterisk``).
        test_fraction: held-out share of the prompts (``asterisk``).
        hop_ms, win_ms: feature frame step and window (the frame rate the RNN runs at).
        num_layers, hidden_size: the GRU stack.
        batch_size: utterances per batch.
        dense_epochs, retrain_epochs: epochs of dense training and of each retraining run.
        align_epochs: ``strings`` only: epochs of frame-level cross-entropy against the known
            splice alignment (digit frames -> digit, pauses -> blank) before the CTC epochs.
            A deep GRU trained with CTC alone from scratch sits long on the all-blank plateau.
        lr, retrain_lr: Adam learning rates (cosine decay to 5 %).
        train_theta: Θx = Θh used in the forward pass of delta retraining.
        warmup_fraction: share of the retraining epochs over which Θ ramps up from 0.
        l1_x, l1_h: L1 weights on |Δx| and |Δh| per frame (the ``delta_l1`` run).
        thetas: the Θ (Θx = Θh) every model is evaluated at.
        seed: initialisation and data order.
        threads: torch intra-op threads.
        backend: delta backend for evaluation (``"auto"``: the fastest; ``"reference"``: the
            spec; they give the same values).
    """

    task: str = "strings"
    root: str | None = None
    num_strings: int = 800
    max_digits: int = 5
    max_seconds: float = 6.0
    test_fraction: float = 0.15
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
        for name in ("train_theta", "l1_x", "l1_h", *()):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}")
        if any(not (math.isfinite(t) and t >= 0) for t in self.thetas):
            raise ConfigError(f"thetas must be finite and >= 0, got {self.thetas}")
        return self


# -- data -------------------------------------------------------------------------------------


class _UtteranceNorm:
    """Subtract the utterance's own mean per band, then scale by the training set's statistics."""

    def __init__(self, normalizer) -> None:
        self.normalizer = normalizer

    def __call__(self, x):
        return self.normalizer(x - x.mean(0))


def load_speech(cfg: SpeechConfig) -> dict[str, Any]:
    """``{"train", "test"}`` datasets with normalisation, plus ``num_classes`` and ``blank``."""
    from ..data import FeatureNormalizer, FeatureParams

    params = FeatureParams(hop_ms=cfg.hop_ms, win_ms=cfg.win_ms)
    if cfg.task == "strings":
        from ..data import DigitStringConfig, load_digit_strings

        splits = load_digit_strings(
            cfg.root,
            split="speaker",
            num_examples={"train": cfg.num_strings, "test": max(1, cfg.num_strings // 4)},
            config=DigitStringConfig(max_digits=cfg.max_digits),
            seed=cfg.seed,
            params=params,
        )
    else:
        from ..data import load_asterisk

        splits = load_asterisk(
            cfg.root,
            test_fraction=cfg.test_fraction,
            max_seconds=cfg.max_seconds,
            params=params,
        )
    train, test = splits["train"], splits["test"]
    norm = FeatureNormalizer.fit([f - f.mean(0) for f in train.features])
    train.transform = test.transform = _UtteranceNorm(norm)
    return {
        "train": train,
        "test": test,
        "num_classes": train.num_classes,
        "blank": train.blank,
        "num_features": train.num_features,
    }


def ctc_batch(dataset, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(features (T, B, F), lengths (B,), targets (sum L,), target lengths (B,))."""
    from ..data import collate_ctc

    return collate_ctc([dataset[i] for i in indices])


# -- the GRU stack with three ways to run it --------------------------------------------------


def _fast_train():
    try:
        from ..ops.triton_train import delta_gru_train
    except ImportError:  # pragma: no cover - the spec below gives the same values and gradients
        return None
    return delta_gru_train


def run_gru(
    rnn: DeltaGRU, x: Tensor, *, delta: bool, count: bool = False
) -> tuple[Tensor, list[DeltaCounts] | None]:
    """Run ``rnn`` on (T, B, I) with gradients: fused dense GRU, or the delta network.

    Args:
        delta: use the module's thresholds in the forward pass (else Θ = 0, torch's fused GRU,
            which the Θ = 0 delta network equals exactly).
        count: also return per-layer counts (needs ``delta``), with differentiable ``abs_x`` and
            ``abs_h`` for the L1 cost.
    """
    if not delta:
        if count:
            raise ConfigError("count=True needs delta=True")
        weights = []
        for k in range(rnn.num_layers):
            weights.extend(w for w in rnn.layer_weights(k) if w is not None)
        h0 = x.new_zeros(rnn.num_layers, x.shape[1], rnn.hidden_size)
        out, _ = torch._VF.gru(
            x, h0, weights, rnn.bias, rnn.num_layers, rnn.dropout, rnn.training, False, False
        )
        return out, None
    fast = _fast_train()
    counts = []
    for k in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(k)
        theta_x, theta_h = rnn.thresholds(k)
        state = gru_initial_state(w_ih, b_ih, b_hh, x.shape[1])
        if fast is not None:
            x, _, c = fast(x, state, w_ih, w_hh, theta_x, theta_h, count=count)
        else:
            x, _, c = delta_gru(x, state, w_ih, w_hh, theta_x, theta_h, count=count)
        counts.append(c)
    return x, (counts if count else None)


class CTCRecognizer(nn.Module):
    """Features -> delta GRU stack -> per-frame log-probabilities over C classes.

    Inputs: ``x`` (T, B, F). Output: (T, B, C) log-probabilities (and counts with ``count``).
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_size: int,
        num_layers: int,
        backend: str = "auto",
    ):
        super().__init__()
        self.rnn = DeltaGRU(num_features, hidden_size, num_layers, backend=backend)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor, *, delta: bool = False, count: bool = False):
        out, counts = run_gru(self.rnn, x, delta=delta, count=count)
        logp = torch.log_softmax(self.head(out), dim=-1)
        return (logp, counts) if count else logp


# -- training and evaluation ------------------------------------------------------------------


def train_ctc(
    model: CTCRecognizer,
    data: dict[str, Any],
    cfg: SpeechConfig,
    *,
    epochs: int,
    lr: float,
    theta: float = 0.0,
    l1: bool = False,
) -> list[float]:
    """Train with CTC; Θ (ramped up over ``warmup_fraction`` of the epochs) when ``theta`` > 0.

    Returns:
        The mean CTC loss per frame of each epoch.
    """
    train = data["train"]
    lengths = train.lengths()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    plans = [batch_plan(lengths, cfg.batch_size, cfg.seed, e) for e in range(epochs)]
    total_steps = max(1, sum(len(p) for p in plans))
    warmup = max(1, round(cfg.warmup_fraction * total_steps))
    step, history = 0, []
    delta = theta > 0
    for epoch, plan in enumerate(plans):
        model.train()
        t0, loss_sum, frames = time.perf_counter(), 0.0, 0
        for idx in plan:
            frac = min(1.0, (step + 1) / warmup)
            model.rnn.set_thresholds(theta * frac, theta * frac)
            for g in opt.param_groups:
                g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total_steps)))
            x, xl, y, yl = ctc_batch(train, idx)
            out = model(x, delta=delta, count=l1)
            logp, counts = out if l1 else (out, None)
            ctc = nn.functional.ctc_loss(
                logp, y, xl, yl, blank=data["blank"], reduction="sum", zero_infinity=True
            )
            n_frames = int(xl.sum())
            loss = ctc / n_frames
            if l1:
                loss = loss + delta_l1_cost(counts, xl, cfg.l1_x, cfg.l1_h)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_sum += float(ctc.detach())
            frames += n_frames
            step += 1
        history.append(loss_sum / max(1, frames))
        log.info(
            "epoch %d/%d  ctc/frame %.4f  theta %.3f  %.1fs",
            epoch + 1,
            epochs,
            history[-1],
            theta,
            time.perf_counter() - t0,
        )
    model.rnn.set_thresholds(theta, theta)
    return history


def frame_labels(dataset) -> list[Tensor]:
    """Per-frame classes of digit strings from the splice: a frame whose centre lies inside a
    digit's samples gets that digit's class, every other frame the blank. (T_i,) int64 each."""
    import numpy as np

    from ..data import load_audio
    from ..data.digit_strings import synthesize

    rate = dataset.params.sample_rate
    hop = max(1, round(rate * dataset.params.hop_ms / 1000))
    audio: dict = {}
    out = []
    for plan, steps in zip(dataset.strings, dataset.lengths(), strict=True):
        for r in plan.recordings:
            if r.path not in audio:
                audio[r.path] = load_audio(r.path, rate)[0]
        _, segments = synthesize(plan, rate, dataset.config.noise_std, audio)
        centres = np.arange(steps) * hop  # frames are centred (see deltarnn.data.features)
        labels = np.zeros(steps, np.int64)
        for (a, b), c in zip(segments, plan.labels, strict=True):
            labels[(centres >= a) & (centres < b)] = c
        out.append(torch.from_numpy(labels))
    return out


def train_aligned(
    model: CTCRecognizer, data: dict[str, Any], labels: list[Tensor], cfg: SpeechConfig
) -> list[float]:
    """Dense frame-level cross-entropy against :func:`frame_labels` for ``align_epochs``."""
    from ..data import pad_sequences

    train = data["train"]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history = []
    for epoch in range(cfg.align_epochs):
        model.train()
        t0, total, frames = time.perf_counter(), 0.0, 0
        for idx in batch_plan(train.lengths(), cfg.batch_size, cfg.seed, 10_000 + epoch):
            x, xl, _, _ = ctc_batch(train, idx)
            y, _ = pad_sequences([labels[i] for i in idx], padding_value=-100)
            logp = model(x)
            loss = nn.functional.nll_loss(logp.flatten(0, 1), y.flatten(), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * int(xl.sum())
            frames += int(xl.sum())
        history.append(total / max(1, frames))
        log.info(
            "aligned epoch %d/%d  ce/frame %.4f  %.1fs",
            epoch + 1,
            cfg.align_epochs,
            history[-1],
            time.perf_counter() - t0,
        )
    return history


def evaluate_ctc(
    model: CTCRecognizer, dataset, theta: float, blank: int = 0, batch_size: int = 64
) -> dict[str, Any]:
    """Error rate (edit distance / reference length) and the accountant's cost at Θx = Θh = θ.

    The whole test set runs as a delta network (no gradients, the fastest backend); the cost
    counts only the valid (unpadded) frames.
    """
    model.eval()
    model.rnn.set_thresholds(theta, theta)
    order = sorted(range(len(dataset)), key=lambda i: dataset.lengths()[i])
    edits = ref_len = exact = 0
    report: CostReport | None = None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, xl, y, yl = ctc_batch(dataset, idx)
            out, _ = model.rnn(x)
            logp = torch.log_softmax(model.head(out), dim=-1)
            r = measure(model.rnn, x, lengths=xl)
            report = r if report is None else report + r
            refs = torch.split(y, yl.tolist())
            for hyp, ref in zip(greedy_decode(logp, xl, blank), refs, strict=True):
                d = edit_distance(hyp, ref.tolist())
                edits += d
                ref_len += len(ref)
                exact += d == 0
    return {
        "error_rate": edits / max(1, ref_len),
        "exact": exact / max(1, len(dataset)),
        "cost": report.to_dict(),
    }


def make_row(
    cfg: SpeechConfig, method: str, theta: float, result: dict, dense_value: float | None
) -> dict[str, Any]:
    """A results row in the sweep format (:func:`deltarnn.train.sweep.make_row`)."""
    total = result["cost"]["total"]
    return {
        "task": cfg.task,
        "split": "speaker" if cfg.task == "strings" else "utterance",
        "method": method,
        "theta_x": theta,
        "theta_h": theta,
        "seed": cfg.seed,
        "metric": "der" if cfg.task == "strings" else "cer",
        "value": result["error_rate"],
        "dense_value": dense_value,
        "mac_reduction": total["mac_reduction"],
        "byte_reduction": total["weight_byte_reduction"],
        "occupancy_x": total["occupancy_x"],
        "occupancy_h": total["occupancy_h"],
    }


def _row_key(row: dict) -> tuple:
    return tuple(row[k] for k in ("task", "split", "method", "theta_x", "theta_h", "seed"))


def append_rows(path: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into the JSON list at ``path`` (same key replaces), atomically."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    # Several experiments may share one results file: serialise the read-modify-write.
    import hashlib
    import tempfile

    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"deltarnn-results-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else []
        keys = {_row_key(r) for r in rows}
        merged = [r for r in old if _row_key(r) not in keys] + rows
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
        os.replace(tmp, path)


def save_model(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def run_experiment(cfg: SpeechConfig, out_dir: str | Path, results: str | Path) -> list[dict]:
    """Dense training, the converted sweep, delta and delta+L1 retraining, and their sweeps.

    Finished pieces (a ``<method>.safetensors`` in ``out_dir``) are reused, so a second call
    resumes. Rows are appended to ``results`` as each curve is done.

    Returns:
        All rows of this experiment.
    """
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results = Path(out_dir), Path(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    data = load_speech(cfg)
    log.info(
        "%s: %d train / %d test items, %d / %d frames",
        cfg.task,
        len(data["train"]),
        len(data["test"]),
        sum(data["train"].lengths()),
        sum(data["test"].lengths()),
    )

    def fresh() -> CTCRecognizer:
        torch.manual_seed(cfg.seed)
        return CTCRecognizer(
            data["num_features"], data["num_classes"], cfg.hidden_size, cfg.num_layers, cfg.backend
        )

    timings: dict[str, float] = {}
    dense = fresh()
    path = out / "dense.safetensors"
    if path.exists():
        load_weights(dense, path)
    else:
        t0 = time.perf_counter()
        if cfg.align_epochs:
            train_aligned(dense, data, frame_labels(data["train"]), cfg)
        train_ctc(dense, data, cfg, epochs=cfg.dense_epochs, lr=cfg.lr)
        timings["dense_train_s"] = time.perf_counter() - t0
        save_model(dense, path)
    base = evaluate_ctc(dense, data["test"], 0.0, data["blank"])
    dense_value = base["error_rate"]
    rows = [make_row(cfg, "dense", 0.0, base, dense_value)]
    rows += [
        make_row(
            cfg, "converted", t, evaluate_ctc(dense, data["test"], t, data["blank"]), dense_value
        )
        for t in cfg.thetas
        if t > 0
    ]
    append_rows(results, rows)
    for method, l1 in (("delta", False), ("delta_l1", True)):
        model = fresh()
        path = out / f"{method}.safetensors"
        if path.exists():
            load_weights(model, path)
        else:
            load_weights(model, out / "dense.safetensors")
            t0 = time.perf_counter()
            train_ctc(
                model,
                data,
                cfg,
                epochs=cfg.retrain_epochs,
                lr=cfg.retrain_lr,
                theta=cfg.train_theta,
                l1=l1,
            )
            timings[f"{method}_train_s"] = time.perf_counter() - t0
            save_model(model, path)
        new = [
            make_row(
                cfg, method, t, evaluate_ctc(model, data["test"], t, data["blank"]), dense_value
            )
            for t in cfg.thetas
            if t > 0
        ]
        append_rows(results, new)
        rows += new
    if timings:
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return rows


_ORDER = ("dense", "converted", "delta", "delta_l1")
_TITLES = {
    "strings": "connected FSDD digit strings, held-out speakers",
    "asterisk": "Asterisk prompts (continuous English), held-out prompts",
    "steering": "Udacity simulator steering, later part of each session",
}


def best_within(rows: list[dict], max_relative_loss: float = 0.05) -> dict | None:
    """The row with the largest MAC reduction whose error is at most ``1 + max_relative_loss``
    times the dense model's (lower is better for every metric here)."""
    ok = [
        r
        for r in rows
        if r["method"] != "dense" and r["value"] <= (1 + max_relative_loss) * r["dense_value"]
    ]
    return max(ok, key=lambda r: _reduction(r)) if ok else None


def _reduction(row: dict) -> float:
    # The accountant reports an infinite reduction (nothing sent) as None in JSON.
    return math.inf if row["mac_reduction"] is None else row["mac_reduction"]


def _fmt_x(v: float | None) -> str:
    return "inf" if v is None else f"{v:.1f}x"


def markdown_table(rows: list[dict], target: float, max_relative_loss: float = 0.05) -> str:
    """One table per task: every evaluated model, and the best point within the loss budget."""
    lines = []
    for task in sorted({r["task"] for r in rows}):
        rs = sorted(
            (r for r in rows if r["task"] == task),
            key=lambda r: (_ORDER.index(r["method"]), r["theta_x"]),
        )
        metric = rs[0]["metric"]
        lines += [
            f"### {task}: {_TITLES.get(task, task)} (metric: {metric}, seed {rs[0]['seed']})",
            "",
            f"| method | Θx = Θh | {metric} | change vs dense | MAC reduction "
            "| weight-byte reduction | occupancy x | occupancy h |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rs:
            rel = r["value"] / r["dense_value"] - 1 if r["dense_value"] else 0.0
            lines.append(
                f"| {r['method']} | {r['theta_x']:g} | {r['value']:.4f} | {100 * rel:+.1f}% "
                f"| {_fmt_x(r['mac_reduction'])} | {_fmt_x(r['byte_reduction'])} "
                f"| {100 * r['occupancy_x']:.2f}% | {100 * r['occupancy_h']:.2f}% |"
            )
        best = best_within(rs, max_relative_loss)
        lines.append("")
        if best is None:
            lines.append(
                f"No delta model is within {100 * max_relative_loss:.0f}% (relative) of dense."
            )
        else:
            reached = "meets" if _reduction(best) >= target else "falls short of"
            lines.append(
                f"Best within {100 * max_relative_loss:.0f}% (relative) of dense: "
                f"{best['method']} at Θ = {best['theta_x']:g}, {metric} {best['value']:.4f} "
                f"(dense {best['dense_value']:.4f}), {_fmt_x(best['mac_reduction'])} fewer MACs: "
                f"{reached} the {target:g}x target."
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, target: float) -> None:
    """Error against MAC reduction (log x), one panel per task, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rs = [r for r in rows if r["task"] == task and r["mac_reduction"] is not None]
        for method in _ORDER:
            pts = sorted((r for r in rs if r["method"] == method), key=_reduction)
            if pts:
                ax.plot(
                    [p["mac_reduction"] for p in pts],
                    [p["value"] for p in pts],
                    marker="*" if method == "dense" else "o",
                    markersize=12 if method == "dense" else 5,
                    label=method,
                )
        dense = rs[0]["dense_value"]
        ax.axhline(1.05 * dense, color="grey", ls=":", lw=1, label="dense + 5% (relative)")
        ax.axvline(target, color="red", ls="--", lw=1, label=f"target {target:g}x")
        ax.set_xscale("log")
        ax.set_xlabel("RNN MAC reduction vs dense (measured on the test set)")
        ax.set_ylabel(rs[0]["metric"])
        ax.set_title(_TITLES.get(task, task), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(results: str | Path, table: str | Path, plot_path: str | Path, target: float) -> str:
    """Write the markdown table and the plot of a results file; returns the table."""
    rows = json.loads(Path(results).read_text())
    text = markdown_table(rows, target)
    Path(table).write_text(text)
    plot(rows, plot_path, target)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder for weights and config (needed to train)")
    parser.add_argument("--results", required=True, help="results.json to append rows to")
    parser.add_argument(
        "--config", help="JSON file with SpeechConfig fields (flags below override it)"
    )
    parser.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    parser.add_argument(
        "--render",
        nargs=2,
        metavar=("TABLE", "PLOT"),
        help="only write the table (markdown) and plot (PNG) of --results, then exit",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render:
        print(render(args.results, args.render[0], args.render[1], target=5.7))
        return 0
    fields = flat_config_fields(SpeechConfig, args.config, args.set)
    if not args.out:
        parser.error("--out is required to run the experiment")
    run_experiment(SpeechConfig(**fields), args.out, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
