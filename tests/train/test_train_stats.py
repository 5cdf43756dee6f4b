"""Reporting statistics: mean and sample SD, the paired stratified bootstrap, time blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deltarnn.errors import ConfigError, ShapeError
from deltarnn.train.stats import Outcomes, blocks, bootstrap, mean_sd, pooled_value


def test_mean_sd_is_the_sample_sd():
    out = mean_sd([1.0, 2.0, 4.0])
    assert out["mean"] == pytest.approx(7 / 3)
    assert out["sd"] == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert out["n"] == 3
    assert mean_sd([5.0]) == {"mean": 5.0, "sd": None, "n": 1}
    with pytest.raises(ConfigError):
        mean_sd([])


def test_pooled_value_is_a_ratio_of_sums():
    a = Outcomes(np.array([[1.0, 0.0, 1.0]]), np.ones(3))
    b = Outcomes(np.array([[2.0], [4.0]]), np.array([[2.0], [4.0]]))
    assert pooled_value([a]) == pytest.approx(2 / 3)
    assert pooled_value([a, b]) == pytest.approx((2 + 6) / (3 + 6))
    assert pooled_value([Outcomes(np.array([[4.0, 14.0]]), np.array([1.0, 1.0]))], "sqrt") == 3.0


def test_bootstrap_matches_the_binomial_standard_error():
    rng = np.random.default_rng(0)
    n = 2000
    correct = (rng.random((1, n)) < 0.8).astype(float)
    out = bootstrap(
        {"m": [Outcomes(correct, np.ones(n))]}, {"acc": lambda v: v["m"]}, n_boot=3000, seed=1
    )["acc"]
    p = correct.mean()
    se = math.sqrt(p * (1 - p) / n)
    assert out["estimate"] == pytest.approx(p)
    assert out["low"] == pytest.approx(p - 1.96 * se, abs=0.15 * se + 1e-3)
    assert out["high"] == pytest.approx(p + 1.96 * se, abs=0.15 * se + 1e-3)


def test_bootstrap_pairs_items_across_models():
    # b is a with 10 of 1000 items set to wrong in every seed: the two differ on about 25 of
    # 3000 seed-items, so the paired loss is about -0.8 pp with an interval about 1 pp wide.
    rng = np.random.default_rng(2)
    a = (rng.random((3, 1000)) < 0.7).astype(float)
    b = a.copy()
    right = np.flatnonzero(a[0] == 1)[:10]
    b[:, right] = 0.0
    models = {"a": [Outcomes(a, np.ones(1000))], "b": [Outcomes(b, np.ones(1000))]}
    out = bootstrap(models, {"loss": lambda v: v["b"] - v["a"]}, n_boot=2000)["loss"]
    assert out["estimate"] == pytest.approx(-(b != a).sum() / a.size)
    # Unpaired (independent draws for a and b) it would be about 4.5 pp wide.
    assert out["high"] - out["low"] < 0.02
    assert out["low"] < out["estimate"] < out["high"] <= 0


def test_bootstrap_resamples_seeds_too():
    # Items identical, seeds differ: all spread must come from the seed draws.
    num = np.array([[0.6] * 50, [0.8] * 50, [1.0] * 50])
    out = bootstrap(
        {"m": [Outcomes(num, np.ones(50))]}, {"v": lambda v: v["m"]}, n_boot=4000, seed=3
    )["v"]
    assert out["estimate"] == pytest.approx(0.8)
    assert out["low"] < 0.75 and out["high"] > 0.85
    assert out["low"] >= 0.6 - 1e-12 and out["high"] <= 1.0 + 1e-12


def test_bootstrap_is_stratified_and_reproducible():
    s1 = Outcomes(np.ones((2, 10)), np.ones(10))
    s2 = Outcomes(np.zeros((2, 30)), np.ones(30))
    models = {"m": [s1, s2]}
    out = bootstrap(models, {"v": lambda v: v["m"]}, n_boot=500)
    # Within each stratum every draw gives the same sums, so there is no spread at all.
    assert out["v"] == {"estimate": 0.25, "low": 0.25, "high": 0.25}
    again = bootstrap(models, {"v": lambda v: v["m"]}, n_boot=500)
    assert again == out


def test_bootstrap_sqrt_transform_for_rmse():
    se = np.array([[1.0, 4.0, 4.0, 7.0]])
    out = bootstrap(
        {"m": [Outcomes(se, np.ones(4))]}, {"rmse": lambda v: v["m"]}, transform="sqrt", n_boot=200
    )["rmse"]
    assert out["estimate"] == pytest.approx(2.0)
    assert 1.0 <= out["low"] <= 2.0 <= out["high"] <= math.sqrt(7.0)


def test_bootstrap_rejects_unpaired_or_bad_arguments():
    a = Outcomes(np.ones((2, 5)), np.ones(5))
    b = Outcomes(np.ones((3, 5)), np.ones(5))
    with pytest.raises(ShapeError, match="pair"):
        bootstrap({"a": [a], "b": [b]}, {"x": lambda v: v["a"]})
    with pytest.raises(ConfigError, match="transform"):
        bootstrap({"a": [a]}, {"x": lambda v: v["a"]}, transform="log")
    with pytest.raises(ConfigError, match="level"):
        bootstrap({"a": [a]}, {"x": lambda v: v["a"]}, level=1.0)
    with pytest.raises(ShapeError, match="num"):
        Outcomes(np.ones(5), np.ones(5))
    with pytest.raises(ShapeError, match="den"):
        Outcomes(np.ones((2, 5)), np.ones(4))
    with pytest.raises(ConfigError):
        Outcomes(np.ones((1, 2)), np.array([1.0, -1.0]))


def test_blocks_sum_consecutive_frames():
    v = np.arange(10, dtype=float)[None].repeat(2, 0)
    num, den = blocks(v, 4)
    np.testing.assert_array_equal(num, [[6, 22, 17], [6, 22, 17]])
    np.testing.assert_array_equal(den, [4, 4, 2])
    with pytest.raises(ConfigError):
        blocks(v, 0)
    with pytest.raises(ShapeError):
        blocks(np.ones(3), 2)


def test_metrics_keep_per_item_outcomes_that_add_up_to_the_metric():
    import torch

    from deltarnn.train import RMSE, Accuracy, Batch, ErrorRate

    acc = Accuracy()
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    acc.update(
        logits,
        Batch(torch.zeros(1, 3, 1), torch.ones(3, dtype=torch.int64), torch.tensor([0, 0, 0])),
    )
    assert acc.per_item == [1.0, 0.0, 1.0]
    assert acc.compute()["accuracy"] == pytest.approx(sum(acc.per_item) / 3)

    # CTC: frames (T=3, B=2, C=3); item 0 decodes [1, 2], item 1 (2 valid frames) decodes [2].
    logp = torch.full((3, 2, 3), -10.0)
    for t, c in enumerate([1, 2, 2]):
        logp[t, 0, c] = 0.0
    for t, c in enumerate([2, 0, 1]):
        logp[t, 1, c] = 0.0
    er = ErrorRate("der")
    er.update(
        logp,
        Batch(
            torch.zeros(3, 2, 1),
            torch.tensor([3, 2]),
            torch.tensor([1, 2, 1, 1]),
            target_lengths=torch.tensor([2, 2]),
        ),
    )
    assert er.per_item == [(0, 2), (2, 2)]
    edits, ref = map(sum, zip(*er.per_item, strict=True))
    assert er.compute()["der"] == pytest.approx(edits / ref)

    rmse = RMSE()
    pred = torch.tensor([[1.0, 0.0], [2.0, 5.0], [0.0, 9.0]])
    rmse.update(pred, Batch(torch.zeros(3, 2, 1), torch.tensor([3, 1]), torch.zeros(3, 2)))
    assert rmse.per_item == [[1.0, 4.0, 0.0], [0.0]]
    assert rmse.compute()["rmse"] == pytest.approx(math.sqrt(5.0 / 4))
