"""Connected digit strings (a WSJ-like CTC recogniser), chosen on validation, tested once.

The paper's WSJ claim (Neil et al., ICML 2017): a deep recogniser retrained as a delta network
runs with 5.7x fewer operations at a negligible loss. Here: connected FSDD digit strings, a
GRU stack with a CTC head, two folds over the two held-out speakers (fold ``theo``: test theo,
validate on yweweler; fold ``yweweler``: the reverse), trained on the other four speakers.

1. ``dense``: frame-level cross-entropy against the splice alignment for ``align_epochs``, then
   CTC; every epoch draws ``train_strings`` fresh strings from the training recordings,
   spliced from per-recording features (:class:`~deltarnn.data.FeatureSplicer`), each digit at
   speed 0.9, 1.0 or 1.1.
2. Candidates on the validation strings (waveform splices of the validation speaker):
   ``converted`` at each Θ, ``delta`` and ``delta_l1`` retrained at each Θ, ``learnable``,
   and the ``control`` (dense + the same extra epochs at Θ = 0).
3. Selection: the largest MAC reduction whose mean validation DER is within 5 % (relative) of
   dense (``selection.json``), frozen before any test number.
4. Test, once, on ``test_strings`` waveform-spliced strings of the test speaker per fold:
   dense, control, selected, learnable. ``summary.json`` with paired bootstrap CIs.

Run (from the repository root)::

    python experiments/wsj-like/strings.py --config experiments/wsj-like/config.json \\
        --out runs/wsj-strings --results experiments/wsj-like/results.json
    python experiments/wsj-like/strings.py --config experiments/wsj-like/config.json \\
        --results experiments/wsj-like/results.json \\
        --render experiments/wsj-like/table.md experiments/wsj-like/plot.png

Shape legend: T frames, B batch, F = 40 log-mel bands, C = 11 classes (blank 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltarnn.data import (
    DigitStringConfig,
    DigitStringDataset,
    FeatureParams,
    FeatureSplicer,
    UtteranceNormalizer,
    list_recordings,
    split_by_speaker,
)
from deltarnn.data.features import make_cache
from deltarnn.errors import ConfigError
from deltarnn.train import (
    Batch,
    ErrorRate,
    IndexBatches,
    Loss,
    MethodConfig,
    ModelConfig,
    ReportSpec,
    Row,
    Schedule,
    SequenceModel,
    TrainConfig,
    append_rows,
    ctc_batch,
    frame_label_batch,
    ordered_batches,
    read_rows,
)
from deltarnn.train.config import flat_config_fields
from deltarnn.train.protocol import (
    dense_weights,
    evaluated_row,
    learned_theta_extra,
    per_stratum_table,
    pooled_rows,
    protocol_tables,
    run_stage,
    select_on_validation,
    summarise_test,
)
from deltarnn.train.results import plot, summarise
from deltarnn.train.runner import loss_function

log = logging.getLogger("strings")

CLAIM = (
    "Neil et al. (ICML 2017): a deep speech recogniser (WSJ) retrained as a delta network runs "
    "with 5.7x fewer operations than the dense one at a negligible loss of accuracy."
)
REPORT = ReportSpec(
    title="Digit strings (CTC GRU)", target=5.7, budget=0.05, relative=True, select_on="val"
)


@dataclasses.dataclass
class StringsConfig:
    """Every setting (saved beside the results as ``config.json``).

    Attributes:
        root: data root (default ``$DELTARNN_DATA``).
        folds: ``[test speaker, validation speaker]`` pairs; the other speakers train.
        seeds, select_seeds: every model's seeds; the seeds whose candidates are compared.
        max_digits: strings have 1..max_digits digits.
        train_strings: fresh strings drawn per epoch; val_strings, test_strings: fixed sets.
        hop_ms, win_ms: the frame rate the RNN runs at.
        num_layers, hidden_size, dropout: the GRU stack.
        speeds: speed-perturbation factors of the training digits.
        batch_size: strings per step.
        align_epochs, dense_epochs, lr: frame-level then CTC dense training.
        retrain_epochs, retrain_lr, warmup_epochs: every retraining run and the control.
        thetas, retrain_thetas: Θx = Θh of the converted and of the retrained candidates.
        l1_x, l1_h: L1 weights of ``delta_l1``.
        learnable_theta, occupancy_cost, learnable_epochs: the learnable-threshold run.
        threads: torch intra-op threads.
    """

    root: str | None = None
    folds: list[list[str]] = dataclasses.field(
        default_factory=lambda: [["theo", "yweweler"], ["yweweler", "theo"]]
    )
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    select_seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    max_digits: int = 5
    train_strings: int = 1000
    val_strings: int = 300
    test_strings: int = 600
    hop_ms: float = 10.0
    win_ms: float = 25.0
    num_layers: int = 3
    hidden_size: int = 128
    dropout: float = 0.0
    speeds: list[float] = dataclasses.field(default_factory=lambda: [0.9, 1.0, 1.1])
    batch_size: int = 32
    align_epochs: int = 3
    dense_epochs: int = 20
    lr: float = 2e-3
    retrain_epochs: int = 4
    retrain_lr: float = 5e-4
    warmup_epochs: float = 1.0
    thetas: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])
    retrain_thetas: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.3, 0.4])
    l1_x: float = 0.0
    l1_h: float = 5e-4
    learnable_theta: float = 0.2
    occupancy_cost: float = 0.5
    learnable_epochs: int = 1
    threads: int = 1

    def validate(self) -> StringsConfig:
        if not self.folds or any(len(f) != 2 or f[0] == f[1] for f in self.folds):
            raise ConfigError(f"folds must be [test, validation] speaker pairs, got {self.folds}")
        if not self.select_seeds or not set(self.select_seeds) <= set(self.seeds):
            raise ConfigError(f"select_seeds must be some of seeds {self.seeds}")
        if 1.0 not in self.speeds:
            raise ConfigError("speeds must include 1.0")
        return self

    def params(self) -> FeatureParams:
        return FeatureParams(hop_ms=self.hop_ms, win_ms=self.win_ms)

    def stage(self, fold: str, seed: int, name: str, **extra: Any) -> dict[str, Any]:
        keys = ("max_digits", "train_strings", "hop_ms", "win_ms", "num_layers", "hidden_size")
        keys += ("dropout", "speeds", "batch_size", "align_epochs", "dense_epochs", "lr")
        d = {k: getattr(self, k) for k in keys}
        if name not in ("align", "dense"):
            d["retrain_lr"] = self.retrain_lr
        return {"experiment": "strings", "fold": fold, "seed": seed, "stage": name, **d, **extra}


# -- data -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fold:
    name: str
    splicer: FeatureSplicer
    normalizer: UtteranceNormalizer
    val: list
    test: list


def load_fold(cfg: StringsConfig, test: str, val: str) -> Fold:
    split = split_by_speaker(list_recordings(cfg.root), test_speakers=[test], val_speakers=[val])
    params, strings = cfg.params(), DigitStringConfig(max_digits=cfg.max_digits)
    splicer = FeatureSplicer(split.train, params, strings, make_cache(True, None), cfg.speeds)
    norm = UtteranceNormalizer.fit(splicer.draw(cfg.train_strings, seed=(0, 0)).features)

    def fixed(recs, n, stream):
        # The same strings for every model seed, so every model meets the same test items.
        ds = DigitStringDataset(recs, n, seed=(0, stream), config=strings, params=params)
        ds.transform = norm
        return ordered_batches(ds, ctc_batch, 64)

    return Fold(
        test,
        splicer,
        norm,
        fixed(split.val, cfg.val_strings, 1),
        fixed(split.test, cfg.test_strings, 2),
    )


class FreshStrings:
    """``batches(epoch)`` for :func:`~deltarnn.train.fit`: new strings every epoch."""

    def __init__(self, cfg: StringsConfig, fold: Fold, seed: int, frame_targets: bool) -> None:
        self.cfg, self.fold, self.seed, self.frame_targets = cfg, fold, seed, frame_targets

    def __call__(self, epoch: int):
        ds = self.fold.splicer.draw(
            self.cfg.train_strings,
            seed=(self.seed, epoch, self.frame_targets),
            frame_targets=self.frame_targets,
        )
        ds.transform = self.fold.normalizer
        collate = frame_label_batch if self.frame_targets else ctc_batch
        return IndexBatches(ds, self.cfg.batch_size, self.seed, collate)(epoch)


def frame_loss(model: SequenceModel, batch: Batch) -> Loss:
    """Frame-level cross-entropy against the splice alignment (padded frames: -100)."""
    logp = model.run(batch.x, batch.lengths).y
    nll = nn.functional.nll_loss(
        logp.flatten(0, 1), batch.target.flatten(), ignore_index=-100, reduction="sum"
    )
    return Loss(nll / batch.frames, float(nll.detach()), float(batch.lengths.sum()))


# -- stages -----------------------------------------------------------------------------------


def new_model(cfg: StringsConfig, theta: float = 0.0) -> SequenceModel:
    mc = ModelConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        dropout=cfg.dropout,
        theta_x=theta,
        theta_h=theta,
    )
    return SequenceModel(mc, 40, 11, per_frame=True)


def stage(cfg, out, fold, seed, name, model, method, epochs, lr, warmup=0.0, force=False):
    path = out / fold.name / f"seed{seed}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    aligned = name == "align"
    # Processes may share the run folders (--prepare): one trains a stage while the others
    # wait on its lock, then load the finished folder.
    with open(path.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        torch.manual_seed(seed)
        return run_stage(
            path,
            cfg.stage(fold.name, seed, name, method=dataclasses.asdict(method), epochs=epochs),
            model,
            FreshStrings(cfg, fold, seed + 100 * (name not in ("align", "dense")), aligned),
            frame_loss if aligned else loss_function(TrainConfig(method=method)),
            Schedule(epochs=epochs, lr=lr, theta_warmup_epochs=warmup, seed=seed),
            force=force,
        )


def dense_model(cfg, out, fold, seed, force) -> SequenceModel:
    model = new_model(cfg)
    if cfg.align_epochs:
        stage(
            cfg,
            out,
            fold,
            seed,
            "align",
            model,
            MethodConfig(),
            cfg.align_epochs,
            cfg.lr,
            force=force,
        )
    return stage(
        cfg, out, fold, seed, "dense", model, MethodConfig(), cfg.dense_epochs, cfg.lr, force=force
    )


def retrained(cfg, out, fold, seed, dense, method_name, theta, force) -> SequenceModel:
    model = new_model(cfg, theta)
    model.load_state_dict(dense_weights(dense), strict=False)
    kw = dict(epochs=cfg.retrain_epochs, lr=cfg.retrain_lr, force=force)
    if method_name == "control":
        return stage(cfg, out, fold, seed, "control", model, MethodConfig(), **kw)
    if method_name == "learnable":
        method = MethodConfig(delta=True, learnable_theta=True, occupancy_cost=cfg.occupancy_cost)
        model.apply_method(method)
        kw["epochs"] = cfg.learnable_epochs
        return stage(cfg, out, fold, seed, f"learnable-{theta:g}", model, method, **kw)
    l1 = (cfg.l1_x, cfg.l1_h) if method_name == "delta_l1" else (0.0, 0.0)
    method = MethodConfig(delta=True, l1_x=l1[0], l1_h=l1[1])
    name = f"{method_name}-{theta:g}"
    return stage(cfg, out, fold, seed, name, model, method, warmup=cfg.warmup_epochs, **kw)


def row(split, method, theta, seed, model, batches, dense_value, items) -> Row:
    r = evaluated_row(
        model,
        batches,
        ErrorRate("der"),
        items=items,
        dense_value=dense_value,
        task="strings",
        split=split,
        method=method,
        theta_x=theta,
        theta_h=theta,
        seed=seed,
    )
    if method == "learnable":
        r.extra.update(learned_theta_extra(model.rnn))
    return r


def candidates(cfg, out, fold, seed, force) -> list[Row]:
    split = f"val:{fold.name}"
    dense = dense_model(cfg, out, fold, seed, force)
    d = row(split, "dense", 0.0, seed, dense, fold.val, None, False)
    rows = [d]
    for t in cfg.thetas:
        dense.rnn.set_thresholds(t, t)
        rows.append(row(split, "converted", t, seed, dense, fold.val, d.value, False))
    dense.rnn.set_thresholds(0.0, 0.0)
    runs = [("control", 0.0)]
    runs += [(m, t) for m in ("delta", "delta_l1") for t in cfg.retrain_thetas]
    if cfg.learnable_epochs:
        runs.append(("learnable", cfg.learnable_theta))
    for m, t in runs:
        model = retrained(cfg, out, fold, seed, dense, m, t, force)
        rows.append(row(split, m, t, seed, model, fold.val, d.value, False))
    return rows


def test_rows(cfg, out, fold, seed, selection, force) -> list[Row]:
    split = f"test:{fold.name}"
    dense = dense_model(cfg, out, fold, seed, force)
    d = row(split, "dense", 0.0, seed, dense, fold.test, None, True)
    runs = [("control", 0.0), (selection["method"], selection["theta_x"])]
    if cfg.learnable_epochs:
        runs.append(("learnable", cfg.learnable_theta))
    rows = [d]
    for m, t in dict.fromkeys(runs):
        if m == "converted":
            dense.rnn.set_thresholds(t, t)
            model = dense
        else:
            model = retrained(cfg, out, fold, seed, dense, m, t, force)
        rows.append(row(split, m, t, seed, model, fold.test, d.value, True))
    return rows


def run_experiment(cfg: StringsConfig, out_dir: str, results: str, *, force: bool = False) -> None:
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results_path = Path(out_dir), Path(results)
    here = results_path.parent
    here.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "root"}
    (here / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    folds = {t: load_fold(cfg, t, v) for t, v in cfg.folds}
    for fold in folds.values():
        for seed in cfg.select_seeds:
            append_rows(results_path, candidates(cfg, out, fold, seed, force))
    rows = [r for r in read_rows(results_path) if r.task == "strings" and r.method != "control"]
    best = select_on_validation(rows, REPORT)
    if best is None:
        raise ConfigError("no candidate is within the budget on validation")
    selection = {
        "method": best.method,
        "theta_x": best.theta_x,
        "theta_h": best.theta_h,
        "chosen_on": "validation",
        "rule": "largest mean MAC reduction whose mean validation DER is within 5 % (relative) "
        f"of dense, over folds and seeds {cfg.select_seeds}; the control is not eligible",
        "val_loss_relative": best.loss,
        "val_mac_reduction": best.reductions["mac_reduction"],
        "val_replicates": best.seeds,
    }
    (here / "selection.json").write_text(json.dumps(selection, indent=1) + "\n")
    log.info("selected on validation: %s", selection)
    for fold in folds.values():
        for seed in cfg.seeds:
            append_rows(results_path, test_rows(cfg, out, fold, seed, selection, force))
    write_summary(cfg, results_path)


def prepare(cfg: StringsConfig, out_dir: str, folds: list[str]) -> None:
    """Train what the test phase needs and the selection does not decide: dense, control and
    learnable-threshold models of the seeds outside ``select_seeds``, for the ``folds`` named
    (test speakers; empty: all). Processes started with ``--prepare`` run beside the main one
    and share its run folders (a stage's lock makes the others wait for it)."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    unknown = set(folds) - {t for t, _ in cfg.folds}
    if unknown:
        raise ConfigError(f"--prepare folds {sorted(unknown)} are not test speakers of {cfg.folds}")
    runs = [("control", 0.0)]
    if cfg.learnable_epochs:
        runs.append(("learnable", cfg.learnable_theta))
    for test, val in cfg.folds:
        if folds and test not in folds:
            continue
        fold = load_fold(cfg, test, val)
        for seed in cfg.seeds:
            if seed not in cfg.select_seeds:
                dense = dense_model(cfg, Path(out_dir), fold, seed, False)
                for m, t in runs:
                    retrained(cfg, Path(out_dir), fold, seed, dense, m, t, False)


def write_summary(cfg: StringsConfig, results: Path) -> dict:
    rows = [r for r in read_rows(results) if r.task == "strings"]
    selection = json.loads((results.parent / "selection.json").read_text())
    sel = (selection["method"], selection["theta_x"], selection["theta_h"])
    others = [("control", 0.0, 0.0)]
    if cfg.learnable_epochs and sel[0] != "learnable":
        others.append(("learnable", cfg.learnable_theta, cfg.learnable_theta))
    s = summarise_test(rows, REPORT, sel, others=others)
    chosen = s["selected"]
    summary = {
        "claim": CLAIM,
        "target": ">= 5.7x fewer MACs than dense within 5 % (relative) of the dense DER",
        "budget": {"loss": REPORT.budget, "unit": "relative to the dense DER"},
        "metric": "digit error rate (DER) of greedy CTC decoding on held-out speakers' strings",
        "headline_reduction": "mac_reduction",
        "dense_test": s["dense"]["metric"],
        "selected": selection,
        "test": {k: chosen[k] for k in ("metric", "loss_vs_dense", "mac_reduction")}
        | {"ops_reduction": chosen["ops_reduction"], "byte_reduction": chosen["byte_reduction"]},
        "control": s["control"],
        "learnable": s.get("learnable", chosen if sel[0] == "learnable" else None),
        "met": s["met"],
        "command": "python experiments/wsj-like/strings.py --config "
        "experiments/wsj-like/config.json --out runs/wsj-strings "
        "--results experiments/wsj-like/results.json",
    }
    (results.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def render_tables(cfg: StringsConfig, results: str, table: str, plot_path: str) -> str:
    rows = [r for r in read_rows(results) if r.task == "strings"]
    pooled = pooled_rows(rows, [t for t, _ in cfg.folds])
    text = [
        "Mean ± sample SD over every (fold, seed) run (the `seeds` column counts them); split "
        "`val`: validation strings, every candidate; split `test`: held-out test strings, "
        "only dense, control, the selected configuration and the learnable run. CIs: "
        "`summary.json`.",
        "",
        protocol_tables(pooled, REPORT),
    ]
    sel_path = Path(results).parent / "selection.json"
    if sel_path.exists():
        sel = json.loads(sel_path.read_text())
        methods = [("dense", 0.0, 0.0), ("control", 0.0, 0.0)]
        methods.append((sel["method"], sel["theta_x"], sel["theta_h"]))
        text += ["### Test DER per held-out speaker (mean over seeds)", ""]
        text.append(per_stratum_table(rows, methods))
    out = "\n".join(text)
    Path(table).write_text(out)
    val = [r for r in pooled if r.split == "val"]
    spec = dataclasses.replace(REPORT, title="Digit strings, validation")
    plot(summarise(val, spec), spec, [plot_path])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for the stages' run folders (needed to train)")
    p.add_argument("--results", required=True)
    p.add_argument("--config", help="JSON file with StringsConfig fields")
    p.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--render", nargs=2, metavar=("TABLE", "PLOT"))
    p.add_argument("--summary", action="store_true", help="only rewrite summary.json")
    p.add_argument(
        "--prepare",
        nargs="*",
        metavar="FOLD",
        help="only train the test phase's dense, control and learnable models of these folds "
        "(default all), in a process beside the main run",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = StringsConfig(**flat_config_fields(StringsConfig, args.config, args.set))
    if args.render:
        print(render_tables(cfg, args.results, *args.render))
    elif args.summary:
        print(json.dumps(write_summary(cfg, Path(args.results)), indent=1))
    elif not args.out:
        p.error("--out is required to run the experiment")
    elif args.prepare is not None:
        prepare(cfg, args.out, args.prepare)
    else:
        run_experiment(cfg, args.out, args.results, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
