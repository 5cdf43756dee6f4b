"""Sweeps: every method x threshold x seed x split, one results row per evaluated model.

A sweep file (JSON or TOML) names a base :class:`TrainConfig`, the splits, seeds and thresholds,
the methods, and how to report them (``report``: the fields of
:class:`~deltarnn.train.ReportSpec`). ``runs_dir`` and ``results`` are relative to the sweep
file. Method kinds:

* ``dense``: trained with Θ = 0 and evaluated at Θ = 0 (the baseline, and the starting point of
  the others).
* ``converted``: the dense model evaluated with each Θ (delta network at run time, no training).
* ``once``: trained once from the dense model (e.g. rounding or noise), evaluated at each Θ. With
  no method overrides, ``"thetas": []`` and the retraining runs' epochs it is the control
  "dense + the same extra epochs at Θ = 0".
* ``per_theta``: trained at each Θ from the dense model (direct delta training, with or
  without L1).

With a validation split in the base config every row also carries the validation metric (and
the dense model's), so configurations can be chosen on validation (``report.select_on``).

Runs are resumable: a finished training run (a complete run folder of the same config) is not
repeated and a row already in the results file is not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checkpoint import RunFolder, read_json
from .config import TrainConfig, load_mapping
from .results import ReportSpec, Row, append_rows, read_rows
from .runner import evaluate_run, load_model, train

log = logging.getLogger(__name__)

KINDS = ("dense", "converted", "once", "per_theta")


@dataclasses.dataclass
class MethodSpec:
    """One curve of the sweep: ``kind`` (see module doc), ``epochs``, method overrides, and
    optionally its own ``thetas`` (else the sweep's)."""

    name: str
    kind: str
    epochs: int = 0
    method: dict[str, Any] = dataclasses.field(default_factory=dict)
    thetas: list[float] | None = None


@dataclasses.dataclass
class SweepConfig:
    base: TrainConfig
    splits: list[str]
    seeds: list[int]
    thetas: list[float]
    methods: list[MethodSpec]
    runs_dir: Path = Path("runs/sweep")
    results: Path = Path("results.json")
    report: ReportSpec = dataclasses.field(default_factory=ReportSpec)

    @classmethod
    def load(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        d = load_mapping(path)
        here = path.resolve().parent
        try:
            methods = [MethodSpec(name=k, **v) for k, v in d["methods"].items()]
            sweep = cls(
                base=TrainConfig.from_dict(d.get("base", {})),
                splits=list(d["splits"]),
                seeds=[int(s) for s in d["seeds"]],
                thetas=[float(t) for t in d["thetas"]],
                methods=methods,
                runs_dir=here / d.get("runs_dir", "runs/sweep"),
                results=here / d.get("results", "results.json"),
                report=ReportSpec(**d.get("report", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"sweep file {path}: {exc}") from exc
        for m in sweep.methods:
            if m.kind not in KINDS:
                raise ConfigError(f"method {m.name}: kind must be one of {KINDS}, got {m.kind!r}")
        if sum(m.kind == "dense" for m in sweep.methods) != 1:
            raise ConfigError("a sweep needs exactly one method of kind 'dense'")
        return sweep


def make_row(
    cfg: TrainConfig, method: str, test: dict[str, Any], dense: Row | None, val: float | None
) -> Row:
    """A results row from a run's test metrics (a ``metrics.json`` or an evaluation's dict)."""
    return Row.from_cost(
        test["cost"],
        task=cfg.data.task,
        split=cfg.data.split,
        method=method,
        theta_x=cfg.model.theta_x,
        theta_h=cfg.model.theta_h,
        seed=cfg.seed,
        metric=test["metric"],
        value=test["value"],
        dense_value=test["value"] if dense is None else dense.value,
        val_value=val,
        dense_val_value=val if dense is None else dense.val_value,
    )


def evaluate_at(run_dir: Path, theta: float) -> tuple[TrainConfig, dict[str, Any], float | None]:
    """Evaluate a finished run's model with Θx = Θh = ``theta`` on test (and validation)."""
    model, cfg, data = load_model(run_dir)
    model.rnn.set_thresholds(theta, theta)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, theta_x=theta, theta_h=theta)
    )
    val = None if data.val is None else evaluate_run(model, data, data.val).value
    return cfg, evaluate_run(model, data).to_dict(), val


def _val_at_end(metrics: dict[str, Any]) -> float | None:
    """The validation metric of a finished run's final model (the last or the selected epoch)."""
    history = metrics.get("history") or []
    if not history or f"val_{metrics['metric']}" not in history[-1]:
        return None
    epoch = metrics.get("best_epoch") or len(history)
    return history[epoch - 1][f"val_{metrics['metric']}"]


def run_sweep(sweep: SweepConfig, progress: bool = True, render=None) -> Path:
    """Run every job not done yet; returns the results file. ``render(results)`` after each
    split and seed."""
    results = sweep.results
    done = {r.key for r in read_rows(results)}
    dense = next(m for m in sweep.methods if m.kind == "dense")
    for split in sweep.splits:
        for seed in sweep.seeds:
            t0 = time.time()
            base = sweep.base.with_overrides([f"data.split={json.dumps(split)}", f"seed={seed}"])
            task = base.data.task
            tag = f"{task}-{split}-s{seed}"

            def key(method, theta, task=task, split=split, seed=seed):
                return (task, split, method, theta, theta, seed)

            def trained(name, overrides, epochs, theta, base=base, tag=tag):
                """Train (or reuse) a run; returns its folder, config and final metrics."""
                run_dir = (
                    sweep.runs_dir / tag / (name if theta is None else f"{name}-theta{theta:g}")
                )
                d = base.to_dict()
                d["epochs"] = epochs
                d["method"].update(overrides)
                if name != dense.name:
                    d["method"]["init_from"] = str(sweep.runs_dir / tag / dense.name)
                th = 0.0 if theta is None else theta
                d["model"]["theta_x"] = d["model"]["theta_h"] = th
                cfg = TrainConfig.from_dict(d)
                if RunFolder(run_dir, cfg.to_dict()).is_finished():
                    return run_dir, cfg, read_json(run_dir / "metrics.json")
                log.info("training %s", run_dir)
                return run_dir, cfg, train(cfg, run_dir, progress=progress)

            dense_dir, cfg, dense_metrics = trained(dense.name, dense.method, dense.epochs, None)
            dense_row = make_row(cfg, dense.name, dense_metrics, None, _val_at_end(dense_metrics))
            if key(dense.name, 0.0) not in done:
                append_rows(results, [dense_row])
            for m in sweep.methods:
                if m.kind == "dense":
                    continue
                thetas = sweep.thetas if m.thetas is None else [float(t) for t in m.thetas]
                if m.kind == "per_theta":
                    for theta in thetas:
                        if key(m.name, theta) in done:
                            continue
                        run_dir, cfg, metrics = trained(m.name, m.method, m.epochs, theta)
                        row = make_row(cfg, m.name, metrics, dense_row, _val_at_end(metrics))
                        append_rows(results, [row])
                    continue
                todo = [t for t in [0.0, *thetas] if key(m.name, t) not in done]
                if m.kind == "converted" and 0.0 in todo:
                    todo.remove(0.0)  # identical to the dense row
                if not todo:
                    continue
                run_dir = (
                    dense_dir
                    if m.kind == "converted"
                    else trained(m.name, m.method, m.epochs, None)[0]
                )
                for theta in todo:
                    cfg, metrics, val = evaluate_at(run_dir, theta)
                    append_rows(results, [make_row(cfg, m.name, metrics, dense_row, val)])
            done = {r.key for r in read_rows(results)}
            log.info("%s done in %.0f s", tag, time.time() - t0)
            if render is not None:
                render(results)
    return results
