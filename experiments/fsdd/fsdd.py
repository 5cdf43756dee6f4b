"""Spoken digits (FSDD), leave one speaker out: how much cheaper a delta GRU is within 1 pp.

The paper's TIDIGITS claim (Neil et al., ICML 2017): 9x fewer operations with negligible loss.
Protocol, for each of the 6 FSDD speakers as the held-out test speaker (a fold), with the next
speaker in :data:`~deltarnn.data.fsdd.FSDD_SPEAKERS` order held out for validation and the other
four training:

1. ``dense``: a 2-layer GRU trained with speed perturbation (each epoch every training
   recording is drawn at speed 0.9, 1.0 or 1.1), for every seed.
2. Candidates (for the ``select_seeds``), evaluated on the validation speaker only: ``converted`` (the dense model with Θ,
   no retraining), ``delta`` (retrained from dense with Θ in the forward pass), ``delta_l1``
   (the same plus an L1 cost on the deltas), ``learnable`` (learned per-feature Θ, started at a
   Θ, pushed up by an occupancy cost), and ``control`` (the dense model trained for the same
   extra epochs at Θ = 0).
3. Selection (:func:`deltarnn.train.protocol.select_on_validation`): the candidate with the
   largest MAC reduction whose validation loss against dense, averaged over folds and seeds, is
   within 1 pp. It is written to ``selection.json`` before any test number exists.
4. Test, once: dense, control, the selected configuration and the learnable-threshold run, on
   the held-out test speaker of every fold. ``summary.json``: means, sample SDs over seeds,
   paired bootstrap CIs over seeds and test recordings (folds are strata).

Run (from the repository root; every stage is a resumable run folder under ``--out``)::

    python experiments/fsdd/fsdd.py --config experiments/fsdd/config.json \\
        --out runs/fsdd-loso --results experiments/fsdd/results.json
    python experiments/fsdd/fsdd.py --config experiments/fsdd/config.json \\
        --results experiments/fsdd/results.json --render experiments/fsdd/table.md \\
        experiments/fsdd/plot.png

Shape legend: T frames, B batch, F = 40 log-mel bands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from deltarnn.data import (
    FeatureParams,
    UtteranceNormalizer,
    list_recordings,
    pick_versions,
    speed_perturbed_features,
    split_by_speaker,
)
from deltarnn.data._dataset import FeatureSequenceDataset
from deltarnn.data.features import make_cache
from deltarnn.data.fsdd import FSDD_SPEAKERS
from deltarnn.errors import ConfigError
from deltarnn.train import (
    Accuracy,
    IndexBatches,
    MethodConfig,
    ModelConfig,
    ReportSpec,
    Row,
    Schedule,
    SequenceModel,
    TrainConfig,
    append_rows,
    classification_batch,
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

log = logging.getLogger("fsdd")

CLAIM = (
    "Neil et al. (ICML 2017): a delta GRU needs 9x fewer operations than the dense network on "
    "spoken digits (TIDIGITS) with negligible loss of accuracy."
)
REPORT = ReportSpec(
    title="FSDD, leave one speaker out", target=9.0, budget=0.01, percent=True, select_on="val"
)


@dataclasses.dataclass
class FSDDConfig:
    """Every setting of the experiment (saved beside the results as ``config.json``).

    Attributes:
        root: data root (default ``$DELTARNN_DATA``).
        folds: the test speakers, one fold each; the validation speaker of a fold is the next
            speaker of ``FSDD_SPEAKERS`` (cyclically).
        seeds: initialisation and data order of every model.
        select_seeds: the seeds whose candidates are trained and compared on validation (the
            selected configuration is then trained and tested for every seed).
        num_layers, hidden_size, dropout: the GRU stack (dropout between layers).
        speeds: speed-perturbation factors; each epoch every training item is drawn at one.
        batch_size: recordings per step.
        dense_epochs, lr: dense training (Adam, cosine decay to 0).
        retrain_epochs, retrain_lr: every retraining run and the control.
        warmup_epochs: Θ ramps from 0 over this many retraining epochs.
        thetas: Θx = Θh of the converted candidates.
        retrain_thetas: Θx = Θh of the delta and delta_l1 candidates.
        l1_x, l1_h: L1 weights on |Δx| and |Δh| per frame (``delta_l1``).
        learnable_theta: start of the learnable thresholds; ``occupancy_cost`` their push.
        learnable_epochs: epochs of the learnable run (it runs the encoders step by step).
        threads: torch intra-op threads.
    """

    root: str | None = None
    folds: list[str] = dataclasses.field(default_factory=lambda: list(FSDD_SPEAKERS))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    select_seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    num_layers: int = 2
    hidden_size: int = 128
    dropout: float = 0.0
    speeds: list[float] = dataclasses.field(default_factory=lambda: [0.9, 1.0, 1.1])
    batch_size: int = 64
    dense_epochs: int = 20
    lr: float = 3e-3
    retrain_epochs: int = 4
    retrain_lr: float = 1e-3
    warmup_epochs: float = 1.0
    thetas: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])
    retrain_thetas: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5])
    l1_x: float = 5e-4
    l1_h: float = 2e-3
    learnable_theta: float = 0.3
    occupancy_cost: float = 0.5
    learnable_epochs: int = 2
    threads: int = 1

    def validate(self) -> FSDDConfig:
        unknown = set(self.folds) - set(FSDD_SPEAKERS)
        if unknown or not self.folds:
            raise ConfigError(f"folds must be FSDD speakers {FSDD_SPEAKERS}, got {self.folds}")
        if not self.seeds or 1.0 not in self.speeds:
            raise ConfigError("need at least one seed, and 1.0 among the speeds")
        if not self.select_seeds or not set(self.select_seeds) <= set(self.seeds):
            raise ConfigError(f"select_seeds must be some of seeds {self.seeds}")
        return self

    def stage(self, fold: str, seed: int, name: str, **extra: Any) -> dict[str, Any]:
        """What a stage's run folder is tied to (the settings that shape its weights)."""
        keys = ("num_layers", "hidden_size", "dropout", "speeds", "batch_size")
        d = {k: getattr(self, k) for k in keys}
        if name == "dense":
            d.update(epochs=self.dense_epochs, lr=self.lr)
        else:
            d.update(dense_epochs=self.dense_epochs, lr=self.lr, retrain_lr=self.retrain_lr)
        return {"experiment": "fsdd", "fold": fold, "seed": seed, "stage": name, **d, **extra}


def val_speaker(test: str) -> str:
    return FSDD_SPEAKERS[(FSDD_SPEAKERS.index(test) + 1) % len(FSDD_SPEAKERS)]


# -- data -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fold:
    """One fold's data: speed-perturbed training copies, validation and test batches."""

    test_speaker: str
    val_speaker: str
    train_versions: list[list]
    train_targets: list[int]
    normalizer: UtteranceNormalizer
    val: list
    test: list


def load_fold(cfg: FSDDConfig, test: str) -> Fold:
    val = val_speaker(test)
    split = split_by_speaker(list_recordings(cfg.root), test_speakers=[test], val_speakers=[val])
    params, cache = FeatureParams(), make_cache(True, None)

    def features(recs, speed):
        return speed_perturbed_features([r.path for r in recs], params, speed, cache)

    versions = [features(split.train, s) for s in cfg.speeds]
    norm = UtteranceNormalizer.fit(versions[cfg.speeds.index(1.0)])

    def batches(recs):
        ds = FeatureSequenceDataset(features(recs, 1.0), [r.digit for r in recs], norm)
        return ordered_batches(ds, classification_batch, 250)

    return Fold(
        test,
        val,
        versions,
        [r.digit for r in split.train],
        norm,
        batches(split.val),
        batches(split.test),
    )


class SpeedPerturbedBatches:
    """``batches(epoch)`` for :func:`~deltarnn.train.fit`: each epoch draws every training
    item at one of the speeds (seeded by seed and epoch), then batches it as usual."""

    def __init__(self, fold: Fold, batch_size: int, seed: int) -> None:
        self.fold, self.batch_size, self.seed = fold, batch_size, seed

    def __call__(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        feats = pick_versions(self.fold.train_versions, g)
        ds = FeatureSequenceDataset(feats, self.fold.train_targets, self.fold.normalizer)
        return IndexBatches(ds, self.batch_size, self.seed, classification_batch)(epoch)


# -- stages -----------------------------------------------------------------------------------


def new_model(cfg: FSDDConfig, theta: float = 0.0) -> SequenceModel:
    mc = ModelConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        dropout=cfg.dropout,
        theta_x=theta,
        theta_h=theta,
    )
    return SequenceModel(mc, 40, 10)


def from_dense(cfg: FSDDConfig, dense: SequenceModel, theta: float) -> SequenceModel:
    model = new_model(cfg, theta)
    model.load_state_dict(dense_weights(dense), strict=False)
    return model


def train_stage(
    cfg: FSDDConfig,
    out: Path,
    fold: Fold,
    seed: int,
    name: str,
    model: SequenceModel,
    method: MethodConfig,
    epochs: int,
    lr: float,
    warmup: float = 0.0,
    force: bool = False,
) -> SequenceModel:
    torch.manual_seed(seed)
    return run_stage(
        out / fold.test_speaker / f"seed{seed}" / name,
        cfg.stage(fold.test_speaker, seed, name, method=dataclasses.asdict(method), epochs=epochs),
        model,
        SpeedPerturbedBatches(fold, cfg.batch_size, seed + 100 * (name != "dense")),
        loss_function(TrainConfig(method=method)),
        Schedule(epochs=epochs, lr=lr, theta_warmup_epochs=warmup, seed=seed),
        force=force,
    )


def row(
    split: str,
    method: str,
    theta: tuple[float, float],
    seed: int,
    model: SequenceModel,
    batches: list,
    dense_value: float | None,
    items: bool,
) -> Row:
    return evaluated_row(
        model,
        batches,
        Accuracy(),
        items=items,
        dense_value=dense_value,
        task="fsdd",
        split=split,
        method=method,
        theta_x=theta[0],
        theta_h=theta[1],
        seed=seed,
    )


def learnable_row(cfg, split, seed, model, batches, dense_value, items) -> Row:
    """The learnable-threshold run's row: Θ columns hold the starting Θ (so runs of every fold
    and seed group together); the learned Θ (mean, min, max over features) go to ``extra``."""
    r = row(
        split, "learnable", (cfg.learnable_theta,) * 2, seed, model, batches, dense_value, items
    )
    r.extra.update(learned_theta_extra(model.rnn))
    return r


# -- the experiment ---------------------------------------------------------------------------


def candidates(cfg: FSDDConfig, out: Path, fold: Fold, seed: int, force: bool) -> list[Row]:
    """Dense training, then every candidate on the validation speaker (rows ``val:<fold>``)."""
    split = f"val:{fold.test_speaker}"
    dense = train_stage(
        cfg,
        out,
        fold,
        seed,
        "dense",
        new_model(cfg),
        MethodConfig(),
        cfg.dense_epochs,
        cfg.lr,
        force=force,
    )
    d = row(split, "dense", (0.0, 0.0), seed, dense, fold.val, None, False)
    rows = [d]
    for t in cfg.thetas:
        dense.rnn.set_thresholds(t, t)
        rows.append(row(split, "converted", (t, t), seed, dense, fold.val, d.value, False))
    dense.rnn.set_thresholds(0.0, 0.0)
    extra_epochs = dict(epochs=cfg.retrain_epochs, lr=cfg.retrain_lr, force=force)
    control = train_stage(
        cfg, out, fold, seed, "control", from_dense(cfg, dense, 0.0), MethodConfig(), **extra_epochs
    )
    rows.append(row(split, "control", (0.0, 0.0), seed, control, fold.val, d.value, False))
    for name, l1 in (("delta", (0.0, 0.0)), ("delta_l1", (cfg.l1_x, cfg.l1_h))):
        for t in cfg.retrain_thetas:
            method = MethodConfig(delta=True, l1_x=l1[0], l1_h=l1[1])
            model = train_stage(
                cfg,
                out,
                fold,
                seed,
                f"{name}-{t:g}",
                from_dense(cfg, dense, t),
                method,
                warmup=cfg.warmup_epochs,
                **extra_epochs,
            )
            rows.append(row(split, name, (t, t), seed, model, fold.val, d.value, False))
    if cfg.learnable_epochs:
        model = learnable_stage(cfg, out, fold, seed, dense, force)
        rows.append(learnable_row(cfg, split, seed, model, fold.val, d.value, False))
    return rows


def learnable_stage(cfg, out, fold, seed, dense, force) -> SequenceModel:
    method = MethodConfig(delta=True, learnable_theta=True, occupancy_cost=cfg.occupancy_cost)
    model = from_dense(cfg, dense, cfg.learnable_theta)
    model.apply_method(method)
    return train_stage(
        cfg,
        out,
        fold,
        seed,
        f"learnable-{cfg.learnable_theta:g}",
        model,
        method,
        cfg.learnable_epochs,
        cfg.retrain_lr,
        force=force,
    )


def test_rows(
    cfg: FSDDConfig, out: Path, fold: Fold, seed: int, selection: dict, force: bool
) -> list[Row]:
    """The one test evaluation: dense, control, the selected configuration, learnable Θ."""
    split = f"test:{fold.test_speaker}"
    dense = train_stage(
        cfg,
        out,
        fold,
        seed,
        "dense",
        new_model(cfg),
        MethodConfig(),
        cfg.dense_epochs,
        cfg.lr,
        force=force,
    )
    d = row(split, "dense", (0.0, 0.0), seed, dense, fold.test, None, True)
    extra_epochs = dict(epochs=cfg.retrain_epochs, lr=cfg.retrain_lr, force=force)
    control = train_stage(
        cfg, out, fold, seed, "control", from_dense(cfg, dense, 0.0), MethodConfig(), **extra_epochs
    )
    rows = [d, row(split, "control", (0.0, 0.0), seed, control, fold.test, d.value, True)]
    m, t = selection["method"], selection["theta_x"]
    if m == "converted":
        dense.rnn.set_thresholds(t, t)
        chosen = dense
    elif m in ("delta", "delta_l1"):
        l1 = (cfg.l1_x, cfg.l1_h) if m == "delta_l1" else (0.0, 0.0)
        method = MethodConfig(delta=True, l1_x=l1[0], l1_h=l1[1])
        chosen = train_stage(
            cfg,
            out,
            fold,
            seed,
            f"{m}-{t:g}",
            from_dense(cfg, dense, t),
            method,
            warmup=cfg.warmup_epochs,
            **extra_epochs,
        )
    elif m == "learnable" and cfg.learnable_epochs:
        chosen = None  # its row is written below in any case
    else:
        raise ConfigError(f"selection {selection} is not a configuration of this experiment")
    if chosen is not None:
        rows.append(row(split, m, (t, t), seed, chosen, fold.test, d.value, True))
    if cfg.learnable_epochs:
        model = learnable_stage(cfg, out, fold, seed, dense, force)
        rows.append(learnable_row(cfg, split, seed, model, fold.test, d.value, True))
    return rows


def select(cfg: FSDDConfig, rows: list[Row], path: Path) -> dict:
    best = select_on_validation(rows, REPORT)
    if best is None:
        raise ConfigError("no candidate is within the budget on validation")
    selection = {
        "method": best.method,
        "theta_x": best.theta_x,
        "theta_h": best.theta_h,
        "chosen_on": "validation",
        "rule": "largest mean MAC reduction whose mean validation accuracy loss against dense "
        f"(over folds and seeds {cfg.select_seeds}) is within 1 pp; the control is not eligible",
        "val_loss_pp": 100 * best.loss,
        "val_mac_reduction": best.reductions["mac_reduction"],
        "val_replicates": best.seeds,
    }
    path.write_text(json.dumps(selection, indent=1) + "\n")
    log.info("selected on validation: %s", selection)
    return selection


def run_experiment(cfg: FSDDConfig, out_dir: str, results: str, *, force: bool = False) -> None:
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out, results_path = Path(out_dir), Path(results)
    here = results_path.parent
    here.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "root"}
    (here / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    folds = {}
    for test in cfg.folds:  # phase 1: dense and candidates, validation only
        folds[test] = load_fold(cfg, test)
        for seed in cfg.select_seeds:
            append_rows(results_path, candidates(cfg, out, folds[test], seed, force))
    eligible = [r for r in read_rows(results_path) if r.method != "control"]
    selection = select(cfg, eligible, here / "selection.json")  # phase 2: frozen before any test
    for test in cfg.folds:  # phase 3: the one test evaluation
        for seed in cfg.seeds:
            append_rows(results_path, test_rows(cfg, out, folds[test], seed, selection, force))
    write_summary(cfg, results_path)


def write_summary(cfg: FSDDConfig, results: Path) -> dict:
    rows = read_rows(results)
    selection = json.loads((results.parent / "selection.json").read_text())
    sel = (selection["method"], selection["theta_x"], selection["theta_h"])
    others = [("control", 0.0, 0.0)]
    if cfg.learnable_epochs and sel[0] != "learnable":
        others.append(("learnable", cfg.learnable_theta, cfg.learnable_theta))
    s = summarise_test(rows, REPORT, sel, others=others)
    dense, chosen = s["dense"], s["selected"]
    summary = {
        "claim": CLAIM,
        "target": ">= 9x fewer MACs than dense within 1 pp accuracy on held-out speakers",
        "budget": {"loss": REPORT.budget, "unit": "accuracy (fraction), absolute"},
        "metric": "accuracy on the held-out test speaker, leave one speaker out over "
        f"{len(cfg.folds)} speakers",
        "headline_reduction": "mac_reduction",
        "dense_test": dense["metric"],
        "selected": {**selection},
        "test": {
            "metric": chosen["metric"],
            "loss_vs_dense": chosen["loss_vs_dense"],
            "mac_reduction": chosen["mac_reduction"],
            "ops_reduction": chosen["ops_reduction"],
            "byte_reduction": chosen["byte_reduction"],
        },
        "control": s["control"],
        "learnable": s.get("learnable", s["selected"] if sel[0] == "learnable" else None),
        "met": s["met"],
        "command": "python experiments/fsdd/fsdd.py --config experiments/fsdd/config.json "
        "--out runs/fsdd-loso --results experiments/fsdd/results.json",
    }
    (results.parent / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def render_tables(cfg: FSDDConfig, results: str, table: str, plot_path: str) -> str:
    rows = read_rows(results)
    strata = list(cfg.folds)
    pooled = pooled_rows(rows, strata)
    text = [
        "Mean ± sample SD over every (fold, seed) run (the `seeds` column counts them); split "
        "`val`: the validation speakers, every candidate (the selection); split `test`: the "
        "held-out test speakers, only dense, the control, the selected configuration and the "
        "learnable-threshold run. Confidence intervals: `summary.json`.",
        "",
        protocol_tables(pooled, REPORT),
    ]
    sel_path = Path(results).parent / "selection.json"
    if sel_path.exists():
        sel = json.loads(sel_path.read_text())
        methods = [("dense", 0.0, 0.0), ("control", 0.0, 0.0)]
        methods.append((sel["method"], sel["theta_x"], sel["theta_h"]))
        if cfg.learnable_epochs and sel["method"] != "learnable":
            methods.append(("learnable", cfg.learnable_theta, cfg.learnable_theta))
        text += ["### Test accuracy per held-out speaker (mean over seeds)", ""]
        text.append(per_stratum_table(rows, methods))
    out = "\n".join(text)
    Path(table).write_text(out)
    val = [r for r in pooled if r.split == "val"]
    plot(summarise(val, REPORT), dataclasses.replace(REPORT, title="FSDD validation"), [plot_path])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for the stages' run folders (needed to train)")
    p.add_argument("--results", required=True)
    p.add_argument("--config", help="JSON file with FSDDConfig fields")
    p.add_argument("set", nargs="*", help="field=value overrides (values parsed as JSON)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--render", nargs=2, metavar=("TABLE", "PLOT"))
    p.add_argument("--summary", action="store_true", help="only rewrite summary.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = FSDDConfig(**flat_config_fields(FSDDConfig, args.config, args.set))
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
