"""Sweeps: every method x threshold x seed x split, one results row per evaluated model.

A sweep file (JSON or TOML) names a base :class:`TrainConfig`, the splits, seeds and thresholds,
and the methods. Method kinds:

* ``dense``: trained with Θ = 0 and evaluated at Θ = 0 (the baseline, and the starting point of
  the others).
* ``converted``: the dense model evaluated with each Θ (delta network at run time, no training).
* ``once``: trained once (e.g. rounding or noise, from the dense model), evaluated at each Θ.
* ``per_theta``: trained at each Θ (direct delta training, with or without L1).

Runs are resumable: a finished training run (``metrics.json`` present) is not repeated and a row
already in the results file is not recomputed, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .config import TrainConfig, load_mapping
from .loop import evaluate, load_model, train

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
    runs_dir: str = "runs/sweep"
    results: str = "results.json"

    @classmethod
    def load(cls, path: str | Path) -> SweepConfig:
        d = load_mapping(path)
        try:
            methods = [MethodSpec(name=k, **v) for k, v in d["methods"].items()]
            sweep = cls(
                base=TrainConfig.from_dict(d.get("base", {})),
                splits=list(d["splits"]),
                seeds=[int(s) for s in d["seeds"]],
                thetas=[float(t) for t in d["thetas"]],
                methods=methods,
                runs_dir=d.get("runs_dir", "runs/sweep"),
                results=d.get("results", "results.json"),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"sweep file {path}: {exc}") from exc
        for m in sweep.methods:
            if m.kind not in KINDS:
                raise ConfigError(f"method {m.name}: kind must be one of {KINDS}, got {m.kind!r}")
        if sum(m.kind == "dense" for m in sweep.methods) != 1:
            raise ConfigError("a sweep needs exactly one method of kind 'dense'")
        return sweep


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in ("task", "split", "method", "theta_x", "theta_h", "seed"))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to the JSON list in ``path`` (replacing a row with the same key), atomically."""
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)


def make_row(cfg: TrainConfig, method: str, metrics: dict, dense_value: float | None) -> dict:
    total = metrics["cost"]["total"]
    theta_x, theta_h = cfg.model.theta_x, cfg.model.theta_h
    return {
        "task": cfg.data.task,
        "split": cfg.data.split,
        "method": method,
        "theta_x": theta_x,
        "theta_h": theta_h,
        "seed": cfg.seed,
        "metric": metrics["metric"],
        "value": metrics["value"],
        "dense_value": dense_value,
        "mac_reduction": total["mac_reduction"],
        "byte_reduction": total["weight_byte_reduction"],
        "occupancy_x": total["occupancy_x"],
        "occupancy_h": total["occupancy_h"],
    }


def evaluate_at(run_dir: Path, theta: float) -> tuple[TrainConfig, dict]:
    """Evaluate a finished run's model with Θx = Θh = ``theta``."""
    model, cfg, data = load_model(run_dir)
    model.rnn.set_thresholds(theta, theta)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, theta_x=theta, theta_h=theta)
    )
    return cfg, evaluate(model, data)


def run_sweep(sweep: SweepConfig, progress: bool = True, render=None) -> Path:
    """Run every job not done yet; returns the results file. ``render(results)`` after each split/seed."""
    results = Path(sweep.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {row_key(r) for r in json.loads(results.read_text())} if results.exists() else set()
    runs = Path(sweep.runs_dir)
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
                """Train (or reuse) a run; returns its folder and final metrics."""
                run_dir = runs / tag / (name if theta is None else f"{name}-theta{theta:g}")
                if (run_dir / "metrics.json").exists():
                    return run_dir, json.loads((run_dir / "metrics.json").read_text())
                d = base.to_dict()
                d["epochs"] = epochs
                d["method"].update(overrides)
                if name != dense.name:
                    d["method"]["init_from"] = str(runs / tag / dense.name)
                th = 0.0 if theta is None else theta
                d["model"]["theta_x"] = d["model"]["theta_h"] = th
                log.info("training %s", run_dir)
                return run_dir, train(TrainConfig.from_dict(d), run_dir, progress=progress)

            dense_dir, dense_metrics = trained(dense.name, dense.method, dense.epochs, None)
            dense_value = dense_metrics["value"]
            if key(dense.name, 0.0) not in done:
                cfg = TrainConfig.load(dense_dir / "config.json")
                append_row(results, make_row(cfg, dense.name, dense_metrics, dense_value))
            for m in sweep.methods:
                if m.kind == "dense":
                    continue
                thetas = sweep.thetas if m.thetas is None else [float(t) for t in m.thetas]
                if m.kind == "per_theta":
                    for theta in thetas:
                        if key(m.name, theta) in done:
                            continue
                        run_dir, metrics = trained(m.name, m.method, m.epochs, theta)
                        cfg = TrainConfig.load(run_dir / "config.json")
                        append_row(results, make_row(cfg, m.name, metrics, dense_value))
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
                    cfg, metrics = evaluate_at(run_dir, theta)
                    append_row(results, make_row(cfg, m.name, metrics, dense_value))
            done = {row_key(r) for r in json.loads(results.read_text())}
            log.info("%s done in %.0f s", tag, time.time() - t0)
            if render is not None:
                render(results)
    return results


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)
