"""Thresholds are visible (repr, theta_x/theta_h) and survive save/load whatever their shape."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import deltarnn
from deltarnn.errors import ThresholdError

I, H = 5, 7


def per_feature(n, seed):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 0.3


# (module type, layers, theta_x, theta_h): scalars, per-feature tensors, per-layer mixes
CASES = [
    ("DeltaGRU", 1, 0.1, 0.2),
    ("DeltaGRU", 1, per_feature(I, 0), per_feature(H, 1)),
    ("DeltaGRU", 2, [per_feature(I, 2), 0.15], [0.05, per_feature(H, 3)]),
    ("DeltaLSTM", 2, [0.1, per_feature(H, 4)], per_feature(H, 5)),
    ("DeltaGRUCell", 1, per_feature(I, 6), 0.25),
    ("DeltaLSTMCell", 1, 0.125, per_feature(H, 7)),
]


def build(name, layers, theta_x=0.0, theta_h=0.0):
    cls = getattr(deltarnn, name)
    if name.endswith("Cell"):
        return cls(I, H, theta_x=theta_x, theta_h=theta_h)
    return cls(I, H, layers, theta_x=theta_x, theta_h=theta_h)


def stored(module):
    return [t.clone() for t in (*_flat(module.theta_x), *_flat(module.theta_h))]


def _flat(theta):
    return theta if isinstance(theta, tuple) else (theta,)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_thresholds_of_every_shape_round_trip_through_a_file(case, tmp_path):
    name, layers, theta_x, theta_h = case
    torch.manual_seed(0)
    saved = build(name, layers, theta_x, theta_h)
    save_file(saved.state_dict(), tmp_path / "m.safetensors")
    other = per_feature(I, 9) if layers == 1 else [per_feature(I, 9)] + [0.3] * (layers - 1)
    for fresh_theta in (0.0, other):
        fresh = build(name, layers, theta_x=fresh_theta)  # other shapes than the saved ones
        fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
        for a, b in zip(stored(fresh), stored(saved), strict=True):
            assert a.shape == b.shape and torch.equal(a, b)
        assert repr(fresh) == repr(saved)
        x = torch.randn(6, I) if name.endswith("Cell") else torch.randn(6, 2, I)
        with torch.no_grad():
            out_a = fresh(x[0] if name.endswith("Cell") else x)[0]
            out_b = saved(x[0] if name.endswith("Cell") else x)[0]
        torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)


def test_repr_and_attributes_show_the_thresholds():
    gru = deltarnn.DeltaGRU(4, 6, 2, theta_x=[torch.tensor([0.0, 0.1, 0.2, 0.3]), 0.1])
    assert repr(gru) == (
        "DeltaGRU(4, 6, num_layers=2, theta_x=[<4 values in [0, 0.3]>, 0.1], theta_h=0, "
        "backend='auto')"
    )
    assert [t.shape for t in gru.theta_x] == [torch.Size([4]), torch.Size([])]
    gru.theta_h = 0.25
    assert "theta_h=0.25" in repr(gru) and gru.thresholds(1)[1].tolist() == [0.25] * 6
    cell = deltarnn.DeltaGRUCell(3, 4, theta_h=0.5)
    assert cell.theta_h.item() == 0.5 and cell.theta_x.shape == ()


def test_a_torch_state_dict_keeps_the_module_thresholds():
    gru = deltarnn.DeltaGRU(I, H, theta_x=per_feature(I, 1))
    before = gru.theta_x[0].clone()
    gru.load_state_dict(torch.nn.GRU(I, H).state_dict())
    assert torch.equal(gru.theta_x[0], before)


@pytest.mark.parametrize(
    "bad, match",
    [(torch.tensor(-0.1), "finite and >= 0"), (torch.tensor([0.1, float("nan")] * 2 + [0.0]), "finite"),
     (torch.zeros(I + 1), rf"shape \({I},\)")],
)  # fmt: skip
def test_saved_thresholds_are_checked_on_load(bad, match):
    state = deltarnn.DeltaGRU(I, H).state_dict()
    state["theta_x_l0"] = bad
    with pytest.raises(ThresholdError, match=rf"theta_x_l0 must .*{match}"):
        deltarnn.DeltaGRU(I, H).load_state_dict(state)
