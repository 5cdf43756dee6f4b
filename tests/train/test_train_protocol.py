"""The reporting protocol: validation selection never reads test rows; test summaries and CIs."""

from __future__ import annotations

import numpy as np
import pytest

from deltarnn.errors import ConfigError
from deltarnn.train import ReportSpec, Row
from deltarnn.train.protocol import (
    STRATUM_STRIDE,
    kind_of,
    per_stratum_table,
    pooled_rows,
    protocol_tables,
    select_on_validation,
    stratum_of,
    summarise_test,
)

SPEC = ReportSpec(title="t", target=9.0, budget=0.01, percent=True, select_on="val")


def _row(split, method, theta, seed, value, dense, mac, items=None):
    extra = {} if items is None else {"item_num": list(items)}
    return Row(
        task="t",
        split=split,
        method=method,
        theta_x=theta,
        theta_h=theta,
        seed=seed,
        metric="accuracy",
        value=value,
        dense_value=dense,
        mac_reduction=mac,
        byte_reduction=mac,
        occupancy_x=1 / mac,
        occupancy_h=1 / mac,
        ops_reduction=0.8 * mac,
        extra=extra,
    )


def test_split_names():
    r = _row("val:theo", "dense", 0.0, 0, 0.9, 0.9, 1.0)
    assert kind_of(r) == "val" and stratum_of(r) == "theo"
    assert stratum_of(_row("test", "dense", 0.0, 0, 0.9, 0.9, 1.0)) == ""
    with pytest.raises(ConfigError, match="split"):
        kind_of(_row("speaker", "dense", 0.0, 0, 0.9, 0.9, 1.0))


def test_pooled_rows_make_every_stratum_and_seed_a_replicate():
    rows = [_row(f"val:{s}", "dense", 0.0, seed, 0.9, 0.9, 1.0) for s in "ab" for seed in (0, 1)]
    pooled = pooled_rows(rows)
    assert {r.split for r in pooled} == {"val"}
    assert sorted(r.seed for r in pooled) == [0, 1, STRATUM_STRIDE, STRATUM_STRIDE + 1]


def _val_rows():
    rows = []
    for s in "ab":
        for seed in (0, 1):
            rows.append(_row(f"val:{s}", "dense", 0.0, seed, 0.90, 0.90, 1.0))
            rows.append(_row(f"val:{s}", "delta", 0.3, seed, 0.895, 0.90, 6.0))  # -0.5 pp
            rows.append(_row(f"val:{s}", "delta", 0.5, seed, 0.88, 0.90, 12.0))  # -2 pp
    return rows


def test_selection_reads_validation_rows_only():
    rows = _val_rows()
    best = select_on_validation(rows, SPEC)
    assert (best.method, best.theta_x, best.seeds) == ("delta", 0.3, 4)
    # Test rows where the large Θ looks perfect do not change the choice.
    rows += [_row("test:a", "delta", 0.5, 0, 0.99, 0.90, 12.0)]
    rows += [_row("test:a", "dense", 0.0, 0, 0.90, 0.90, 1.0)]
    best = select_on_validation(rows, SPEC)
    assert (best.method, best.theta_x) == ("delta", 0.3)
    assert select_on_validation(rows, ReportSpec(budget=0.001, percent=True)) is None


def _test_rows(n=400):
    rng = np.random.default_rng(0)
    rows = []
    for s in "ab":
        for seed in (0, 1, 2):
            dense = (rng.random(n) < 0.9).astype(int)
            chosen = dense.copy()
            chosen[np.flatnonzero(dense)[:4]] = 0  # exactly 4 more errors: -1 pp
            control = dense.copy()
            rows.append(
                _row(f"test:{s}", "dense", 0.0, seed, dense.mean(), dense.mean(), 1.0, dense)
            )
            rows.append(
                _row(f"test:{s}", "delta", 0.3, seed, chosen.mean(), dense.mean(), 10.0, chosen)
            )
            rows.append(
                _row(f"test:{s}", "control", 0.0, seed, control.mean(), dense.mean(), 1.0, control)
            )
    return rows


def test_test_summary_pairs_the_loss_and_judges_the_target():
    rows = _test_rows()
    out = summarise_test(
        rows, SPEC, ("delta", 0.3, 0.3), others=[("control", 0.0, 0.0)], n_boot=500
    )
    dense, sel = out["dense"], out["selected"]
    assert dense["metric"]["n_seeds"] == 3 and sel["n_strata"] == 2
    assert sel["items_per_seed"] == 800
    assert sel["loss_vs_dense"]["mean"] == pytest.approx(0.01)
    low, high = sel["loss_vs_dense"]["ci95"]
    assert 0 < low <= 0.01 <= high < 0.02
    assert sel["mac_reduction"] == 10.0 and sel["ops_reduction"] == 8.0
    assert out["control"]["loss_vs_dense"]["ci95"] == [0.0, 0.0]
    assert dense["metric"]["sd"] is not None and len(dense["metric"]["per_seed"]) == 3
    assert not out["met"]  # the interval reaches past the 1 pp budget
    loose = ReportSpec(target=9.0, budget=0.03, percent=True)
    assert summarise_test(rows, loose, ("delta", 0.3, 0.3), n_boot=200)["met"]
    short = ReportSpec(target=20.0, budget=0.03, percent=True)
    assert not summarise_test(rows, short, ("delta", 0.3, 0.3), n_boot=200)["met"]


def test_test_summary_needs_per_item_outcomes_and_the_rows():
    rows = _test_rows(50)
    with pytest.raises(ConfigError, match="no test rows"):
        summarise_test(rows, SPEC, ("delta", 0.4, 0.4))
    rows[1].extra.clear()
    with pytest.raises(ConfigError, match="per-item"):
        summarise_test(rows, SPEC, ("delta", 0.3, 0.3))


def test_tables_choose_on_validation_and_never_on_test():
    rows = _val_rows() + _test_rows(50)
    text = protocol_tables(pooled_rows(rows), SPEC)
    assert "split val" in text and "split test" in text
    val_part, test_part = text.split("split test")
    assert "the selection rule, on validation" in val_part
    assert "Best within" not in test_part
    per = per_stratum_table(rows, [("dense", 0.0, 0.0), ("delta", 0.3, 0.3)])
    assert per.count("\n") == 4 and "(n=3)" in per
