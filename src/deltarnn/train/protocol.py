"""The reporting protocol of an experiment: choose on validation, test once, say it with a CI.

Rows (:class:`~deltarnn.train.Row`) of an experiment come in two kinds, told apart by ``split``:

* ``"val"`` rows (``split`` = ``"val"`` or ``"val:<stratum>"``): every candidate configuration
  evaluated on the validation data; ``value`` and the costs are validation numbers.
* ``"test"`` rows (``"test"`` or ``"test:<stratum>"``): only the dense model, its control and
  the configuration chosen on validation, evaluated once on the test data. Their ``extra``
  holds the per-item outcomes ``item_num`` (and ``item_den``, default 1 per item) that the
  bootstrap resamples.

A stratum is a cross-validation fold (a held-out speaker); rows of one stratum and seed pair
across models. :func:`pooled_rows` turns the strata into replicates so that the results module
(:func:`~deltarnn.train.summarise`, tables, plots) summarises over folds and seeds together;
:func:`select_on_validation` applies the selection rule; :func:`summarise_test` computes the
numbers of ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .checkpoint import RunFolder
from .engine import fit_run
from .evaluate import evaluate
from .results import (
    HIGHER_IS_BETTER,
    ReportSpec,
    Row,
    Summary,
    best_within,
    markdown_table,
    summarise,
)
from .stats import Outcomes, bootstrap, mean_sd, pooled_value

log = logging.getLogger(__name__)

# Seeds of different strata become distinct replicates: seed + STRATUM_STRIDE * stratum index.
STRATUM_STRIDE = 1000


def kind_of(row: Row) -> str:
    """``"val"`` or ``"test"``: the part of ``row.split`` before any ``:``."""
    kind = row.split.split(":", 1)[0]
    if kind not in ("val", "test"):
        raise ConfigError(f"row split must be 'val[:stratum]' or 'test[:stratum]', got {row.split}")
    return kind


def stratum_of(row: Row) -> str:
    """The stratum named after ``:`` in ``row.split`` (``""`` without one)."""
    return row.split.split(":", 1)[1] if ":" in row.split else ""


def pooled_rows(rows: Sequence[Row], strata: Sequence[str] | None = None) -> list[Row]:
    """Rows with the stratum folded into the seed (``split`` becomes ``"val"`` / ``"test"``), so
    that per-configuration summaries run over every (stratum, seed) replicate."""
    names = list(strata) if strata is not None else sorted({stratum_of(r) for r in rows})
    index = {name: i for i, name in enumerate(names)}
    out = []
    for r in rows:
        k = index[stratum_of(r)]
        out.append(dataclasses.replace(r, split=kind_of(r), seed=r.seed + STRATUM_STRIDE * k))
    return out


def select_on_validation(rows: Sequence[Row], spec: ReportSpec) -> Summary | None:
    """The rule: among the candidates' validation rows, the configuration with the largest
    ``spec.reduction`` (mean over strata and seeds) whose mean validation loss against dense is
    within ``spec.budget``. Test rows are never read."""
    val = [r for r in pooled_rows(rows) if r.split == "val"]
    # The rows' own value is the validation value here, so the rule reads ``value``.
    on_rows = dataclasses.replace(spec, select_on="test")
    return best_within(summarise(val, on_rows), on_rows)


def _outcomes(rows: Sequence[Row], strata: Sequence[str], seeds: Sequence[int]) -> list[Outcomes]:
    by_key = {(stratum_of(r), r.seed): r for r in rows}
    out = []
    for stratum in strata:
        nums, dens = [], []
        for seed in seeds:
            r = by_key.get((stratum, seed))
            if r is None or "item_num" not in r.extra:
                raise ConfigError(
                    f"no test row with per-item outcomes for stratum {stratum!r}, seed {seed} "
                    f"({rows[0].method if rows else '?'})"
                )
            num = np.asarray(r.extra["item_num"], dtype=np.float64)
            den = np.asarray(r.extra.get("item_den", np.ones_like(num)), dtype=np.float64)
            nums.append(num)
            dens.append(den)
        out.append(Outcomes(np.stack(nums), np.stack(dens)))
    return out


def _ci(d: dict[str, float]) -> list[float]:
    return [d["low"], d["high"]]


def summarise_test(
    rows: Sequence[Row],
    spec: ReportSpec,
    selected: tuple[str, float, float],
    *,
    transform: str = "ratio",
    n_boot: int = 4000,
    others: Sequence[tuple[str, float, float]] = (),
) -> dict[str, Any]:
    """The test numbers of the dense model and the selected configuration (and ``others``, e.g.
    the control), with means and sample SDs over seeds and paired bootstrap CIs.

    Args:
        rows: every row of the experiment (only test rows are read).
        spec: budget (absolute or relative), target and headline reduction.
        selected: (method, Θx, Θh) chosen on validation.
        transform: how a ratio of per-item sums becomes the metric (``"sqrt"`` for RMSE).
        others: more configurations to report the same way.

    Returns:
        ``{"dense": ..., "selected": ..., <other method>: ..., "met": bool}``: each entry has
        ``metric`` (mean, sd over seeds, ci95, n_seeds), ``loss_vs_dense`` (mean, ci95; positive
        is worse, relative with ``spec.relative``) and the mean reductions.
    """
    test = [r for r in rows if kind_of(r) == "test"]
    wanted = {"dense": ("dense", 0.0, 0.0), "selected": selected}
    wanted.update({m: (m, tx, th) for m, tx, th in others})
    groups: dict[str, list[Row]] = {}
    for name, (method, tx, th) in wanted.items():
        groups[name] = [
            r for r in test if r.method == method and r.theta_x == tx and r.theta_h == th
        ]
        if not groups[name]:
            raise ConfigError(f"no test rows of {method} at Θx={tx}, Θh={th}")
    strata = sorted({stratum_of(r) for r in groups["dense"]})
    seeds = sorted({r.seed for r in groups["dense"]})
    models = {name: _outcomes(rs, strata, seeds) for name, rs in groups.items()}
    metric = groups["dense"][0].metric
    higher = metric in HIGHER_IS_BETTER

    def loss(v: dict[str, np.ndarray], name: str) -> np.ndarray:
        d, m = v["dense"], v[name]
        diff = (d - m) if higher else (m - d)
        return diff / np.abs(d) if spec.relative else diff

    stats = {f"value:{n}": (lambda v, n=n: v[n]) for n in models}
    stats.update({f"loss:{n}": (lambda v, n=n: loss(v, n)) for n in models if n != "dense"})
    ci = bootstrap(models, stats, transform=transform, n_boot=n_boot)
    out: dict[str, Any] = {}
    for name, rs in groups.items():
        per_seed = [
            pooled_value([Outcomes(o.num[[i]], o.den[[i]]) for o in models[name]], transform)
            for i in range(len(seeds))
        ]
        ms = mean_sd(per_seed)
        entry: dict[str, Any] = {
            "method": wanted[name][0],
            "theta_x": wanted[name][1],
            "theta_h": wanted[name][2],
            "metric": {
                "mean": ms["mean"],
                "sd": ms["sd"],
                "ci95": _ci(ci[f"value:{name}"]),
                "n_seeds": len(seeds),
                "per_seed": per_seed,
            },
            "n_strata": len(strata),
            "items_per_seed": int(sum(o.items for o in models[name])),
        }
        for red in ("mac_reduction", "ops_reduction", "byte_reduction"):
            values = [getattr(r, red) for r in rs]
            entry[red] = (
                None
                if any(v is None for v in values)
                else float(np.mean([v for v in values if v is not None]))
            )
        if name != "dense":
            entry["loss_vs_dense"] = {
                "mean": ci[f"loss:{name}"]["estimate"],
                "ci95": _ci(ci[f"loss:{name}"]),
                "relative": spec.relative,
            }
        out[name] = entry
    sel = out["selected"]
    headline = sel.get(spec.reduction)
    out["met"] = bool(
        sel["loss_vs_dense"]["ci95"][1] <= spec.budget
        and headline is not None
        and (spec.target is None or headline >= spec.target)
    )
    return out


def protocol_tables(pooled: Sequence[Row], spec: ReportSpec) -> str:
    """The results module's tables of :func:`pooled_rows`: the validation table ends with the
    configuration the rule selects; the test table with nothing chosen on it."""
    on_rows = dataclasses.replace(spec, select_on="test")
    parts = []
    for kind in ("val", "test"):
        rows = [r for r in pooled if r.split == kind]
        if not rows:
            continue
        text = markdown_table(summarise(rows, on_rows), on_rows)
        if kind == "val":
            text = text.replace("(chosen on test)", "(the selection rule, on validation)")
        else:
            text = "\n".join(
                line
                for line in text.splitlines()
                if not line.startswith(("Best within", "No delta configuration"))
            )
        parts.append(text.rstrip() + "\n")
    return "\n".join(parts)


def per_stratum_table(rows: Sequence[Row], methods: Sequence[tuple[str, float, float]]) -> str:
    """Markdown: the test metric of each method in each stratum, mean over seeds."""
    test = [r for r in rows if kind_of(r) == "test"]
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    strata = sorted({stratum_of(r) for r in test})
    for r in test:
        for i, (m, tx, th) in enumerate(methods):
            if (r.method, r.theta_x, r.theta_h) == (m, tx, th):
                cells[(stratum_of(r), i)].append(r.value)
    head = " | ".join(f"{m} Θx={tx:g} Θh={th:g}" for m, tx, th in methods)
    lines = [f"| stratum | {head} |", "|---|" + "---:|" * len(methods)]
    for s in strata:
        vals = [cells.get((s, i)) for i in range(len(methods))]
        text = " | ".join("-" if not v else f"{np.mean(v):.4f} (n={len(v)})" for v in vals)
        lines.append(f"| {s or 'all'} | {text} |")
    return "\n".join(lines) + "\n"


def finite(v: float | None) -> float | None:
    """JSON-safe: infinities become ``None``."""
    return None if v is None or not math.isfinite(v) else float(v)


# -- the pieces every experiment script uses ----------------------------------------------------


def item_outcomes(metric: Any) -> dict[str, list]:
    """A metric's ``per_item`` as the ``item_num`` / ``item_den`` of a test row's ``extra``:
    accuracy hits (den 1), error-rate (edits, reference length), or a stream's squared errors
    summed over blocks (see :func:`~deltarnn.train.stats.blocks`; den: frames per block)."""
    items = metric.per_item
    if items and isinstance(items[0], tuple):
        return {"item_num": [a for a, _ in items], "item_den": [b for _, b in items]}
    if items and isinstance(items[0], list):
        raise ConfigError("per-frame outcomes need blocks: use stats.blocks on each stream")
    return {"item_num": [int(v) if float(v).is_integer() else v for v in items]}


def evaluated_row(
    model: Any,
    batches: Sequence[Any],
    metric: Any,
    *,
    items: bool = False,
    dense_value: float | None = None,
    **fields: Any,
) -> Row:
    """Evaluate ``model`` once (:func:`~deltarnn.train.evaluate`) and make its :class:`Row`.

    Args:
        metric: a fresh metric (``metric.name`` becomes the row's metric).
        items: keep the per-item outcomes in ``extra`` (test rows).
        dense_value: the dense model's value on the same data (``None``: this is dense).
        fields: the other row fields (task, split, method, theta_x, theta_h, seed).
    """
    ev = evaluate(model, batches, metric)
    return Row.from_cost(
        ev.cost.to_dict(),
        metric=metric.name,
        value=ev.value,
        dense_value=ev.value if dense_value is None else dense_value,
        extra=item_outcomes(metric) if items else {},
        **fields,
    )


def dense_weights(model: Any) -> dict[str, Any]:
    """A model's weights without its thresholds, to start a retraining run at another Θ."""
    return {k: v for k, v in model.state_dict().items() if ".theta_" not in k}


def run_stage(
    path: Any,
    config: dict[str, Any],
    model: Any,
    batches: Any,
    loss_fn: Any,
    schedule: Any,
    *,
    params: Sequence[Any] | None = None,
    hooks: Any = None,
    force: bool = False,
) -> Any:
    """One resumable training stage (:func:`~deltarnn.train.fit_run` into ``path``, a run
    folder tied to ``config``): a finished folder only loads, an interrupted one resumes.
    ``params``: the parameters to train (default all); ``hooks``
    (:class:`~deltarnn.train.Hooks`): per-epoch validation and the choice of the epoch on it.
    Learned thresholds are baked into the model afterwards."""
    t0 = time.perf_counter()
    fit_run(
        model,
        batches,
        loss_fn,
        schedule=schedule,
        folder=RunFolder(path, config),
        params=params,
        hooks=hooks,
        force=force,
        progress=False,
    )
    log.info("%s: %.0f s", path, time.perf_counter() - t0)
    if hasattr(model, "bake_thresholds"):
        model.bake_thresholds()
    return model


def learned_theta_extra(rnn: Any) -> dict[str, list[float]]:
    """Mean, min and max over layers and features of learned Θx and Θh."""
    out = {}
    for side, k in (("x", 0), ("h", 1)):
        values = torch.cat([rnn.thresholds(layer)[k].flatten() for layer in range(rnn.num_layers)])
        out[f"learned_theta_{side}"] = [
            float(values.mean()),
            float(values.min()),
            float(values.max()),
        ]
    return out
