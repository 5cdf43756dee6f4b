"""``measure`` refuses lengths and byte sizes that would give a nonsense report, naming them."""

from __future__ import annotations

import pytest
import torch

import deltarnn
from deltarnn.errors import ConfigError, ShapeError


@pytest.fixture
def model():
    return deltarnn.DeltaGRU(3, 4)


X = torch.zeros(5, 2, 3)  # T=5, B=2


@pytest.mark.parametrize(
    "lengths,match",
    [
        (torch.tensor([3, -1]), r"lengths must be in \[0, T=5\].*lengths\[1\]=-1"),
        (torch.tensor([6, 2]), r"lengths must be in \[0, T=5\].*lengths\[0\]=6"),
        (torch.tensor([3.0, 2.0]), "lengths must be an integer tensor.*float32"),
        (torch.tensor([True, False]), "lengths must be an integer tensor.*bool"),
        ([3, 2], "lengths must be an integer tensor of shape \\(B,\\), got list"),
    ],
)
def test_measure_rejects_bad_lengths(model, lengths, match):
    with pytest.raises(ConfigError, match=match):
        deltarnn.measure(model, X, lengths=lengths)


def test_measure_rejects_lengths_of_another_batch(model):
    with pytest.raises(ShapeError, match=r"lengths must have shape \(2,\), got \(3,\)"):
        deltarnn.measure(model, X, lengths=torch.tensor([1, 2, 3]))


def test_measure_takes_lengths_at_the_bounds(model):
    full = deltarnn.measure(model, X, lengths=torch.tensor([5, 5])).to_dict()["total"]
    assert full == deltarnn.measure(model, X).to_dict()["total"]
    deltarnn.measure(model, X, lengths=torch.tensor([0, 5]))


@pytest.mark.parametrize("name", ["weight_bytes", "act_bytes"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_measure_rejects_non_positive_int_bytes(model, name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a positive int, got {value!r}"):
        deltarnn.measure(model, X, **{name: value})
